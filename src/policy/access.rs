//! bridge-helper.conf's rules for users and groups, and the decision that
//! combines them with bridge.conf.
//!
//! ```text
//! allow br-lab group=students
//! allow all user=alice
//! port br-lab group=students isolated vlan=20
//! port br-lab user=teacher vlan=20
//! port br0 isolated
//! ```
//!
//! These lines only ever add: an `allow` here grants a bridge to a user or
//! group; restrictions stay `deny` lines in bridge.conf, which win over
//! both files. QEMU's helper never reads this file, so going back to it
//! only ever removes access.

use std::fmt;

use crate::policy::accounts::{self, Accounts};
use crate::policy::acl::{self, LineError, Rule, Target, Verdict};
use crate::policy::acl_files::{ConfigError, Origin};
use crate::policy::ifname;
use crate::report::escape::quote;

/// A name longer than any real account's is a typo or an attack.
const MAX_ACCOUNT_NAME: usize = 256;

/// Who a line is for, as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    Id(u32),
    Name(Vec<u8>),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Id(n) => write!(f, "{n}"),
            Account::Name(n) => f.write_str(&quote(n)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    Everyone,
    User(Account),
    Group(Account),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Everyone => f.write_str("everyone"),
            Who::User(a) => write!(f, "user={a}"),
            Who::Group(a) => write!(f, "group={a}"),
        }
    }
}

/// The caller as the kernel reports it: real uid, and real, effective and
/// supplementary gids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Who {
    /// A name that does not resolve matches no one: a deleted account must
    /// not stop every request on the host. For a grant that never widens
    /// access; for a port line it means the next line applies (a
    /// bridge-wide one, or none), which `--check` warns about.
    pub fn matches(&self, me: &Identity, names: &Accounts) -> bool {
        match self {
            Who::Everyone => true,
            Who::User(a) => resolve(a, |n| names.user(n)) == Some(me.uid),
            Who::Group(a) => resolve(a, |n| names.group(n)).is_some_and(|g| me.gids.contains(&g)),
        }
    }

    /// The name, if resolving it needs /etc/passwd or /etc/group.
    pub fn needs_lookup(&self) -> bool {
        matches!(
            self,
            Who::User(Account::Name(_)) | Who::Group(Account::Name(_))
        )
    }

    /// Whether the name resolves (numbers always do).
    pub fn resolves(&self, names: &Accounts) -> bool {
        match self {
            Who::Everyone => true,
            Who::User(a) => resolve(a, |n| names.user(n)).is_some(),
            Who::Group(a) => resolve(a, |n| names.group(n)).is_some(),
        }
    }
}

fn resolve(a: &Account, lookup: impl Fn(&[u8]) -> Option<u32>) -> Option<u32> {
    match a {
        Account::Id(n) => Some(*n),
        Account::Name(n) => lookup(n),
    }
}

/// What a port line sets on the tap's bridge port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortSettings {
    /// The kernel's port isolation: isolated ports reach only
    /// non-isolated ones.
    pub isolated: bool,
    /// `learning=off|on`; `None` leaves the kernel's default (on).
    pub learning: Option<bool>,
    /// The port's only untagged VLAN and its PVID.
    pub vlan: Option<u16>,
    /// VLANs the guest tags itself, sorted, without duplicates.
    pub tagged: Vec<u16>,
}

impl PortSettings {
    pub fn is_empty(&self) -> bool {
        *self == PortSettings::default()
    }

    /// Whether the bridge needs VLAN filtering for these settings.
    pub fn wants_vlans(&self) -> bool {
        self.vlan.is_some() || !self.tagged.is_empty()
    }

    /// The VLANs the port ends up with, as (vid, pvid-and-untagged),
    /// sorted by vid.
    pub fn vlans(&self) -> Vec<(u16, bool)> {
        let mut v: Vec<(u16, bool)> = self.tagged.iter().map(|&t| (t, false)).collect();
        if let Some(n) = self.vlan {
            v.push((n, true));
        }
        v.sort_unstable();
        v
    }
}

impl fmt::Display for PortSettings {
    /// The settings in the file's own words, `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        if self.isolated {
            words.push("isolated".to_string());
        }
        if let Some(l) = self.learning {
            words.push(format!("learning={}", if l { "on" } else { "off" }));
        }
        if let Some(n) = self.vlan {
            words.push(format!("vlan={n}"));
        }
        if !self.tagged.is_empty() {
            let list: Vec<String> = self.tagged.iter().map(u16::to_string).collect();
            words.push(format!("tagged={}", list.join(",")));
        }
        if words.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&words.join(" "))
        }
    }
}

/// One rule line of bridge-helper.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `allow BRIDGE|all user=|group=`: never for everyone (that is
    /// bridge.conf's `allow`).
    Grant(Target, Who),
    Port(Vec<u8>, Who, PortSettings),
}

/// Parses a rule line split into words; `None` if `words` is not an
/// `allow`, `deny` or `port` line (the caller knows its other settings).
pub fn parse_words(words: &[&[u8]]) -> Option<Result<Line, LineError>> {
    let bad = |why: String| Some(Err(LineError::BadSetting(why)));
    match words {
        [b"deny", ..] => bad(
            "deny belongs in bridge.conf: this file can only add grants and port settings".into(),
        ),
        [b"allow", target, qualifier] => {
            let target = match bridge_or_all(target) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            match who(qualifier) {
                Ok(Some(w)) => Some(Ok(Line::Grant(target, w))),
                Ok(None) => bad(format!(
                    "{} is not user=NAME or group=NAME",
                    quote(qualifier)
                )),
                Err(e) => Some(Err(e)),
            }
        }
        [b"allow", _] => bad(
            "allow here needs user=NAME or group=NAME; an allow for everyone belongs in bridge.conf"
                .into(),
        ),
        [b"allow", ..] => bad("allow takes a bridge (or all) and one user= or group=".into()),
        [b"port", bridge, rest @ ..] => Some(port(bridge, rest)),
        [b"port"] => bad("port needs a bridge".into()),
        _ => None,
    }
}

fn bridge_or_all(word: &[u8]) -> Result<Target, LineError> {
    if word == b"all" {
        return Ok(Target::All);
    }
    ifname::validate(word).map_err(|why| LineError::BadName(quote(word), why))?;
    Ok(Target::Bridge(word.to_vec()))
}

/// `user=NAME|ID` or `group=NAME|ID`; `Ok(None)` if the word is neither.
fn who(word: &[u8]) -> Result<Option<Who>, LineError> {
    let (make, value): (fn(Account) -> Who, &[u8]) = if let Some(v) = word.strip_prefix(b"user=") {
        (Who::User, v)
    } else if let Some(v) = word.strip_prefix(b"group=") {
        (Who::Group, v)
    } else {
        return Ok(None);
    };
    let bad = |why: &str| Err(LineError::BadSetting(format!("{}: {why}", quote(word))));
    if value.is_empty() {
        return bad("empty name");
    }
    if value.iter().all(u8::is_ascii_digit) {
        return match accounts::number(value) {
            Some(n) => Ok(Some(make(Account::Id(n)))),
            None => bad("not an id from 0 to 4294967294"),
        };
    }
    // What a line of /etc/passwd or /etc/group can hold as a name.
    if value.len() > MAX_ACCOUNT_NAME
        || value
            .iter()
            .any(|&b| b == b':' || b == b',' || b == b'=' || !b.is_ascii_graphic())
    {
        return bad("not a user or group name");
    }
    Ok(Some(make(Account::Name(value.to_vec()))))
}

fn port(bridge: &[u8], rest: &[&[u8]]) -> Result<Line, LineError> {
    let bad = |why: String| Err(LineError::BadSetting(why));
    if bridge == b"all" {
        return bad("port needs one bridge; 'all' is not accepted here".into());
    }
    ifname::validate(bridge).map_err(|why| LineError::BadName(quote(bridge), why))?;
    let (whom, settings) = match rest {
        [first, settings @ ..] => match who(first)? {
            Some(w) => (w, settings),
            None => (Who::Everyone, rest),
        },
        [] => (Who::Everyone, rest),
    };
    let mut s = PortSettings::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    for &word in settings {
        let key = word.split(|&b| b == b'=').next().unwrap_or(word);
        if seen.contains(&key) {
            return bad(format!("{} is given twice", quote(key)));
        }
        seen.push(key);
        match word {
            b"isolated" => s.isolated = true,
            b"learning=off" => s.learning = Some(false),
            b"learning=on" => s.learning = Some(true),
            _ if word.starts_with(b"vlan=") => s.vlan = Some(vid(&word[5..])?),
            _ if word.starts_with(b"tagged=") => {
                let list = &word[7..];
                if list.is_empty() {
                    return bad("tagged= needs a list of VLANs".into());
                }
                for item in list.split(|&b| b == b',') {
                    let (from, to) = match item.iter().position(|&b| b == b'-') {
                        Some(at) => (vid(&item[..at])?, vid(&item[at + 1..])?),
                        None => (vid(item)?, vid(item)?),
                    };
                    if from > to {
                        return bad(format!("{} is an empty range", quote(item)));
                    }
                    s.tagged.extend(from..=to);
                }
                s.tagged.sort_unstable();
                s.tagged.dedup();
            }
            _ if who(word)?.is_some() => {
                return bad(format!(
                    "{}: one user= or group= a line, right after the bridge",
                    quote(word)
                ))
            }
            _ => {
                return bad(format!(
                    "unknown port setting {} (expected isolated, vlan=N, tagged=LIST or learning=on|off)",
                    quote(word)
                ))
            }
        }
    }
    if let Some(n) = s.vlan {
        if s.tagged.contains(&n) {
            return bad(format!(
                "VLAN {n} cannot be both the untagged vlan= and in tagged="
            ));
        }
    }
    Ok(Line::Port(bridge.to_vec(), whom, s))
}

/// A VLAN id: 1 to 4094 (0 and 4095 are reserved by 802.1Q).
fn vid(text: &[u8]) -> Result<u16, LineError> {
    let n = accounts::number(text).unwrap_or(0);
    u16::try_from(n)
        .ok()
        .filter(|n| (1..=4094).contains(n))
        .ok_or_else(|| {
            LineError::BadSetting(format!("{} is not a VLAN id from 1 to 4094", quote(text)))
        })
}

/// A grant from bridge-helper.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub origin: Origin,
    pub target: Target,
    pub who: Who,
}

/// A port line from bridge-helper.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub origin: Origin,
    pub bridge: Vec<u8>,
    pub who: Who,
    pub settings: PortSettings,
}

/// Everything a run decides before it touches the kernel, for the run
/// itself and for `--check`.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a, 'n> {
    /// The name the verdict turned on.
    pub bridge: &'n [u8],
    /// Allowed by a line of bridge.conf or bridge-helper.conf, denied by a
    /// line of bridge.conf, or allowed by none.
    pub verdict: Verdict<'a, Origin>,
    /// The one port line that applies (only when allowed).
    pub port: Option<&'a PortRule>,
}

impl<'a> Decision<'a, '_> {
    /// The port line that must refuse the run (status 7) on a bridge
    /// whose VLAN filtering is `filtering`: VLAN settings are never
    /// applied as an untagged port.
    pub fn vlan_refusal(&self, filtering: bool) -> Option<&'a PortRule> {
        self.port.filter(|p| p.settings.wants_vlans() && !filtering)
    }
}

/// Everything a decision is made from: both files, the account names, and
/// the caller. What a run and `--check` both decide with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// bridge.conf and its includes.
    pub acl: Vec<Rule<Origin>>,
    /// bridge-helper.conf's grants and port lines.
    pub grants: Vec<Grant>,
    pub ports: Vec<PortRule>,
    pub accounts: Accounts,
    pub me: Identity,
}

impl Policy {
    /// See [`decide`].
    pub fn decide<'n>(
        &self,
        must_allow: &[&'n [u8]],
        also: &[&'n [u8]],
    ) -> Result<Decision<'_, 'n>, ConfigError> {
        decide(
            &self.acl,
            &self.grants,
            &self.ports,
            &self.me,
            &self.accounts,
            must_allow,
            also,
        )
    }

    /// See [`unresolved`].
    pub fn unresolved(&self) -> Vec<(&Origin, &Who)> {
        unresolved(&self.grants, &self.ports, &self.accounts)
    }
}

/// The decision for a caller on a bridge known by several names (see
/// [`acl::decide_names`]): a deny in bridge.conf of any name wins; every
/// name in `must_allow` needs an allow from bridge.conf or a grant to
/// this caller. Then exactly one port line applies: a `user=` line beats a
/// `group=` line beats a bridge-wide one, matching the bridge by any of
/// its names. Two `user=` lines for this caller are an error; two group
/// (or bridge-wide) lines that disagree are an error naming both.
pub fn decide<'a, 'n>(
    acl_rules: &'a [Rule<Origin>],
    grants: &'a [Grant],
    ports: &'a [PortRule],
    me: &Identity,
    names: &Accounts,
    must_allow: &[&'n [u8]],
    also: &[&'n [u8]],
) -> Result<Decision<'a, 'n>, ConfigError> {
    let (bridge, verdict) = verdict(acl_rules, grants, me, names, must_allow, also);
    let port = match verdict {
        Verdict::Allowed(_) => {
            let all: Vec<&[u8]> = must_allow.iter().chain(also).copied().collect();
            select_port(ports, me, names, &all)?
        }
        _ => None,
    };
    Ok(Decision {
        bridge,
        verdict,
        port,
    })
}

fn verdict<'a, 'n>(
    acl_rules: &'a [Rule<Origin>],
    grants: &'a [Grant],
    me: &Identity,
    names: &Accounts,
    must_allow: &[&'n [u8]],
    also: &[&'n [u8]],
) -> (&'n [u8], Verdict<'a, Origin>) {
    for &name in must_allow.iter().chain(also) {
        if let denied @ Verdict::Denied(_) = acl::decide(acl_rules, name) {
            return (name, denied);
        }
    }
    let mut last = None;
    for &name in must_allow {
        let granted = || {
            grants
                .iter()
                .find(|g| target_matches(&g.target, name) && g.who.matches(me, names))
                .map(|g| &g.origin)
        };
        match acl::decide(acl_rules, name) {
            Verdict::Allowed(o) => last = Some((name, Verdict::Allowed(o))),
            _ => match granted() {
                Some(o) => last = Some((name, Verdict::Allowed(o))),
                None => return (name, Verdict::NoAllow),
            },
        }
    }
    last.unwrap_or((b"", Verdict::NoAllow))
}

fn target_matches(target: &Target, bridge: &[u8]) -> bool {
    match target {
        Target::All => true,
        Target::Bridge(n) => n == bridge,
    }
}

fn select_port<'a>(
    ports: &'a [PortRule],
    me: &Identity,
    names: &Accounts,
    bridge_names: &[&[u8]],
) -> Result<Option<&'a PortRule>, ConfigError> {
    let matching = |level: fn(&Who) -> bool| -> Vec<&'a PortRule> {
        ports
            .iter()
            .filter(|p| level(&p.who))
            .filter(|p| bridge_names.contains(&p.bridge.as_slice()))
            .filter(|p| p.who.matches(me, names))
            .collect()
    };
    let users = matching(|w| matches!(w, Who::User(_)));
    match users.as_slice() {
        [] => {}
        [one] => return Ok(Some(one)),
        [first, second, ..] => {
            return Err(ConfigError::DuplicatePort(
                second.origin.clone(),
                first.origin.clone(),
            ))
        }
    }
    for level in [
        (|w: &Who| matches!(w, Who::Group(_))) as fn(&Who) -> bool,
        |w| *w == Who::Everyone,
    ] {
        let lines = matching(level);
        if let Some(first) = lines.first() {
            if let Some(other) = lines.iter().find(|p| p.settings != first.settings) {
                return Err(ConfigError::PortConflict(
                    first.origin.clone(),
                    other.origin.clone(),
                ));
            }
            return Ok(Some(first));
        }
    }
    Ok(None)
}

/// Lines whose user or group name does not resolve (they match no one):
/// for `--check` to flag.
pub fn unresolved<'a>(
    grants: &'a [Grant],
    ports: &'a [PortRule],
    names: &Accounts,
) -> Vec<(&'a Origin, &'a Who)> {
    let mut v: Vec<(&Origin, &Who)> = grants
        .iter()
        .map(|g| (&g.origin, &g.who))
        .chain(ports.iter().map(|p| (&p.origin, &p.who)))
        .filter(|(_, w)| !w.resolves(names))
        .collect();
    v.sort_by_key(|(o, _)| o.line);
    v
}

#[cfg(test)]
mod tests;
