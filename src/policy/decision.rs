//! The decision: everything a run and `--check` decide from bridge.conf,
//! bridge-helper.conf's grants and port lines, the account names and the
//! caller, before anything touches the kernel.

use crate::policy::accounts::{Accounts, Identity, Who};
use crate::policy::bridge_conf::includes::{ConfigError, Origin};
use crate::policy::bridge_conf::{self, Rule, Target, Verdict};
use crate::policy::helper_conf::lines::{Grant, PortRule};

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
    /// Whether a line of bridge-helper.conf is for a group.
    pub fn names_groups(&self) -> bool {
        crate::policy::helper_conf::lines::names_groups(&self.grants, &self.ports)
    }

    /// The caller's name in the accounts read for this policy, if they
    /// were read (a line names an account): `Some(None)` when
    /// /etc/passwd has no line for the caller. The audit line takes it
    /// from here rather than read the file again.
    pub fn caller_name(&self) -> Option<Option<&[u8]>> {
        crate::policy::helper_conf::lines::names_accounts(&self.grants, &self.ports)
            .then(|| self.accounts.user_name(self.me.uid))
    }

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

    /// The first grant of bridge-helper.conf for `bridge` (by its name,
    /// or `all`), for a refusal to name: after [`Verdict::NoAllow`] on
    /// `bridge`, a grant for someone other than the caller. It decides
    /// nothing; the verdict is [`decide`]'s.
    pub fn grant_for(&self, bridge: &[u8]) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| target_matches(&g.target, bridge))
    }

    /// See [`unresolved`].
    pub fn unresolved(&self) -> Vec<(&Origin, &Who, Option<&[u8]>)> {
        unresolved(&self.grants, &self.ports, &self.accounts)
    }
}

/// The decision for a caller on a bridge known by several names (the
/// kernel finds the bridge by each): a deny in bridge.conf of any name
/// wins; every name in `must_allow` (the one asked for, the bridge's real
/// one) needs an allow from bridge.conf or a grant to this caller. Then exactly one port line applies: a `user=` line beats a
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
        if let denied @ Verdict::Denied(_) = bridge_conf::decide(acl_rules, name) {
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
        match bridge_conf::decide(acl_rules, name) {
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
    // A line for a name that does not resolve may be meant for this
    // caller; taking another line instead would fail open (issue 23).
    if let Some(p) = ports
        .iter()
        .find(|p| bridge_names.contains(&p.bridge.as_slice()) && !p.who.resolves(names))
    {
        return Err(ConfigError::UnresolvedPort(p.origin.clone(), p.who.clone()));
    }
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

/// Lines whose user or group name does not resolve (a grant matches no
/// one; a port line refuses every run on its bridge), for `--check` to
/// flag: each with the bridge of a port line, `None` for a grant.
pub fn unresolved<'a>(
    grants: &'a [Grant],
    ports: &'a [PortRule],
    names: &Accounts,
) -> Vec<(&'a Origin, &'a Who, Option<&'a [u8]>)> {
    let mut v: Vec<(&Origin, &Who, Option<&[u8]>)> = grants
        .iter()
        .map(|g| (&g.origin, &g.who, None))
        .chain(
            ports
                .iter()
                .map(|p| (&p.origin, &p.who, Some(p.bridge.as_slice()))),
        )
        .filter(|(_, w, _)| !w.resolves(names))
        .collect();
    v.sort_by_key(|(o, _, _)| o.line);
    v
}

#[cfg(test)]
mod tests;
