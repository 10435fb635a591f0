//! The decisions a run takes before it creates anything, one function a
//! step, shared by a run (`main.rs`) and `--check` ([`crate::check`]): a
//! check cannot disagree with a run on any outcome decided here, because it
//! runs this code.
//!
//! Where later grants and port settings (bridge-helper.conf) join the
//! decision: [`access`] returns an [`Access`], the one value both paths
//! read the verdict, its deciding line, and what a run would set on the
//! port from.

use std::path::Path;

use nix::unistd::Uid;

use crate::policy::accounts::{self, Accounts, Identity};
use crate::policy::bridge_conf::includes::{self, ConfigError, Origin};
use crate::policy::bridge_conf::{Rule, Verdict};
use crate::policy::compiled;
use crate::policy::decision::Policy;
use crate::policy::files::Files;
use crate::policy::helper_conf::lines::PortRule;
use crate::policy::helper_conf::{self, Settings};
use crate::policy::ifname::IfName;
use crate::report::error::Error;
use crate::report::escape::Bytes;
use crate::system::netlink::{Link, Rtnetlink};
use crate::system::privileges;
use crate::taps::tap;

/// The ACL file and everything it includes, read with `files` (as the
/// caller: both paths call this after the privilege drop).
pub fn rules(files: &impl Files) -> Result<Vec<Rule<Origin>>, Error> {
    Ok(includes::load(files, Path::new(compiled::ACL_FILE))?)
}

/// This helper's settings and grants (bridge-helper.conf), compiled-in
/// defaults where the file is silent.
pub fn settings(files: &impl Files) -> Result<Settings, Error> {
    let defaults = Settings::with_limit(compiled::MAX_ABANDONED);
    Ok(helper_conf::load(
        files,
        Path::new(compiled::SETTINGS_FILE),
        defaults,
    )?)
}

/// Everything the decision is made from, for the process's user now (the
/// caller after the drop; the user checked for after `--check --user`):
/// the account files only if a line names an account, and the groups as
/// the kernel reports them for this process only if a line is for a group.
pub fn policy(
    acl: Vec<Rule<Origin>>,
    conf: Settings,
    files: &impl Files,
    uid: Uid,
) -> Result<Policy, Error> {
    let accounts = if conf.names_accounts() {
        accounts::load(files).map_err(|(path, e)| {
            ConfigError::opening_file(Path::new(path), e, accounts::MAX_BYTES)
        })?
    } else {
        Accounts::default()
    };
    // Only group= lines look at the groups: two system calls saved in
    // every other run.
    let gids = if conf.names_groups() {
        privileges::groups()?
    } else {
        Vec::new()
    };
    let me = Identity {
        uid: uid.as_raw(),
        gids,
    };
    Ok(Policy {
        acl,
        grants: conf.grants,
        ports: conf.ports,
        accounts,
        me,
    })
}

/// A bridge this user may join, and why.
#[derive(Debug)]
pub struct Access {
    pub bridge: Link,
    /// The line that allowed it.
    pub rule: Origin,
    /// The one port line that applies, if any: what a run sets on the
    /// port, and the line that chose it.
    pub port: Option<PortRule>,
}

/// Whether the policy's user may join the bridge asked for, as a run
/// decides it: on the name alone first, so that a refused caller learns
/// nothing about which bridges exist, then on the bridge the kernel finds
/// by that name (it finds a bridge by its altnames too: a deny of any of
/// its names holds, and its real name must be allowed as well). VLAN
/// settings on a bridge that cannot filter VLANs stop the run here too.
pub fn access(policy: &Policy, route: &mut Rtnetlink, asked: &IfName) -> Result<Access, Error> {
    access_by_name(policy, asked)?;
    let asked_bytes = asked.as_bytes();
    let bridge = tap::find_bridge(route, asked)?;
    let altnames: Vec<&[u8]> = bridge.altnames.iter().map(Vec::as_slice).collect();
    let decision = policy.decide(&[asked_bytes, &bridge.name], &altnames)?;
    let vlan_refusal = decision.vlan_refusal(bridge.vlan_filtering == Some(true));
    let port = decision.port.cloned();
    let rule = authorize(policy, (decision.bridge, decision.verdict), asked)?;
    if let Some(rule) = vlan_refusal {
        return Err(Error::NoVlanFiltering {
            bridge: Bytes::from(&bridge.name),
            rule: rule.origin.clone(),
            settings: rule.settings.clone(),
        });
    }
    Ok(Access { bridge, rule, port })
}

/// The first half of [`access`], on the name alone: a run takes it before
/// it opens a netlink socket.
pub fn access_by_name(policy: &Policy, asked: &IfName) -> Result<(), Error> {
    let decision = policy.decide(&[asked.as_bytes()], &[])?;
    authorize(policy, (decision.bridge, decision.verdict), asked).map(drop)
}

/// Turns the ACL's verdict on a bridge name into the run's outcome.
fn authorize(
    policy: &Policy,
    (name, verdict): (&[u8], Verdict<'_, Origin>),
    asked: &IfName,
) -> Result<Origin, Error> {
    match verdict {
        Verdict::Allowed(rule) => Ok(rule.clone()),
        Verdict::Denied(rule) => Err(Error::DeniedBy {
            bridge: Bytes::from(name),
            rule: rule.clone(),
            asked: Bytes::from(asked.as_bytes()),
        }),
        Verdict::NoAllow => Err(Error::NotAllowed {
            bridge: Bytes::from(name),
            file: compiled::ACL_FILE,
            asked: Bytes::from(asked.as_bytes()),
            // Read as the caller, as every line here: nothing the caller
            // could not read itself.
            grant: policy
                .grant_for(name)
                .map(|g| Box::new((g.origin.clone(), g.who.clone()))),
        }),
    }
}
