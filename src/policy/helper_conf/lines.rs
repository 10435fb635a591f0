//! bridge-helper.conf's rule lines: grants to users and groups, and port
//! lines (what a port of the bridge is set to for whom). The file around
//! them is [`super`]; the decision that combines them with bridge.conf is
//! [`crate::policy::decision`].
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

use crate::policy::accounts::{self, Account, Who};
use crate::policy::bridge_conf::includes::Origin;
use crate::policy::bridge_conf::{BadSetting, LineError, Target};
use crate::policy::ifname;
use crate::report::escape::Bytes;

/// A name longer than any real account's is a typo or an attack.
pub(crate) const MAX_ACCOUNT_NAME: usize = 256;

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
    let bad = |why| Some(Err(LineError::BadSetting(why)));
    let rule = |why| bad(BadSetting::Rule(why));
    match words {
        [b"deny", ..] => {
            rule("deny belongs in bridge.conf: this file can only add grants and port settings")
        }
        [b"allow", target, qualifier] => {
            let target = match bridge_or_all(target) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            match who(qualifier) {
                Ok(Some(w)) => Some(Ok(Line::Grant(target, w))),
                Ok(None) => bad(BadSetting::NotAQualifier(Bytes::from(*qualifier))),
                Err(e) => Some(Err(e)),
            }
        }
        [b"allow", _] => rule(
            "allow here needs user=NAME or group=NAME; an allow for everyone belongs in bridge.conf",
        ),
        [b"allow", ..] => rule("allow takes a bridge (or all) and one user= or group="),
        [b"port", bridge, rest @ ..] => Some(port(bridge, rest)),
        [b"port"] => rule("port needs a bridge"),
        _ => None,
    }
}

fn bridge_or_all(word: &[u8]) -> Result<Target, LineError> {
    if word == b"all" {
        return Ok(Target::All);
    }
    ifname::validate(word).map_err(|why| LineError::BadName(Bytes::from(word), why))?;
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
    let bad = |why| {
        Err(LineError::BadSetting(BadSetting::Word(
            Bytes::from(word),
            why,
        )))
    };
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
    let bad = |why| Err(LineError::BadSetting(why));
    if bridge == b"all" {
        return bad(BadSetting::Rule(
            "port needs one bridge; 'all' is not accepted here",
        ));
    }
    ifname::validate(bridge).map_err(|why| LineError::BadName(Bytes::from(bridge), why))?;
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
            return bad(BadSetting::Twice(Bytes::from(key)));
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
                    return bad(BadSetting::Rule("tagged= needs a list of VLANs"));
                }
                for item in list.split(|&b| b == b',') {
                    let (from, to) = match item.iter().position(|&b| b == b'-') {
                        Some(at) => (vid(&item[..at])?, vid(&item[at + 1..])?),
                        None => (vid(item)?, vid(item)?),
                    };
                    if from > to {
                        return bad(BadSetting::EmptyRange(Bytes::from(item)));
                    }
                    s.tagged.extend(from..=to);
                }
                s.tagged.sort_unstable();
                s.tagged.dedup();
            }
            _ if who(word)?.is_some() => {
                return bad(BadSetting::Word(
                    Bytes::from(word),
                    "one user= or group= a line, right after the bridge",
                ))
            }
            _ => return bad(BadSetting::UnknownPortSetting(Bytes::from(word))),
        }
    }
    if let Some(n) = s.vlan {
        if s.tagged.contains(&n) {
            return bad(BadSetting::UntaggedAndTagged(n));
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
        .ok_or_else(|| LineError::BadSetting(BadSetting::NotAVlan(Bytes::from(text))))
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

/// Whether some grant or port line names a user or group by name, so
/// that /etc/passwd and /etc/group must be read.
pub fn names_accounts(grants: &[Grant], ports: &[PortRule]) -> bool {
    grants
        .iter()
        .map(|g| &g.who)
        .chain(ports.iter().map(|p| &p.who))
        .any(Who::needs_lookup)
}

/// Whether some grant or port line is for a group, so that the caller's
/// groups must be asked of the kernel.
pub fn names_groups(grants: &[Grant], ports: &[PortRule]) -> bool {
    grants
        .iter()
        .map(|g| &g.who)
        .chain(ports.iter().map(|p| &p.who))
        .any(|w| matches!(w, Who::Group(_)))
}
