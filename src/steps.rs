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

use crate::policy::acl::{self, Rule, Verdict};
use crate::policy::acl_files::{self, Files, Origin};
use crate::policy::ifname::IfName;
use crate::policy::settings::{self, Settings};
use crate::policy::{compiled, ifname};
use crate::report::error::Error;
use crate::report::escape::quote;
use crate::system::netlink::{Link, Rtnetlink};
use crate::taps::tap;

/// The ACL file and everything it includes, read with `files` (as the
/// caller: both paths call this after the privilege drop).
pub fn rules(files: &impl Files) -> Result<Vec<Rule<Origin>>, Error> {
    Ok(acl_files::load(files, Path::new(compiled::ACL_FILE))?)
}

/// This helper's settings, compiled-in defaults where the file is silent.
pub fn settings(files: &impl Files) -> Result<Settings, Error> {
    let defaults = Settings {
        max_abandoned_taps: compiled::MAX_ABANDONED,
    };
    Ok(settings::load(
        files,
        Path::new(compiled::SETTINGS_FILE),
        defaults,
    )?)
}

/// Whose decision it is. Grants by user and group (issue 15) read it.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    pub uid: Uid,
}

/// A bridge this user may join, and why.
#[derive(Debug)]
pub struct Access {
    pub bridge: Link,
    /// The line that allowed it.
    pub rule: Origin,
    // Issue 15: the port settings in force for this user on this bridge,
    // and their deciding line, go here; `check` prints them from it.
}

/// Whether `who` may join the bridge asked for, as a run decides it: on
/// the name alone first, so that a refused caller learns nothing about
/// which bridges exist, then on the bridge the kernel finds by that name
/// (it finds a bridge by its altnames too: a deny of any of its names
/// holds, and its real name must be allowed as well).
pub fn access(
    rules: &[Rule<Origin>],
    route: &mut Rtnetlink,
    who: Who,
    asked: &IfName,
) -> Result<Access, Error> {
    access_by_name(rules, who, asked)?;
    let asked_bytes = asked.as_bytes();
    let bridge = tap::find_bridge(route, asked)?;
    let altnames: Vec<&[u8]> = bridge.altnames.iter().map(Vec::as_slice).collect();
    let rule = authorize(
        acl::decide_names(rules, &[asked_bytes, &bridge.name], &altnames),
        asked,
    )?;
    Ok(Access { bridge, rule })
}

/// The first half of [`access`], on the name alone: a run takes it before
/// it opens a netlink socket.
pub fn access_by_name(rules: &[Rule<Origin>], _who: Who, asked: &IfName) -> Result<(), Error> {
    authorize(acl::decide_names(rules, &[asked.as_bytes()], &[]), asked).map(drop)
}

/// Turns the ACL's verdict on a bridge name into the run's outcome.
fn authorize(
    (name, verdict): (&[u8], Verdict<'_, Origin>),
    asked: &IfName,
) -> Result<Origin, Error> {
    match verdict {
        Verdict::Allowed(rule) => Ok(rule.clone()),
        Verdict::Denied(rule) => Err(Error::DeniedBy {
            bridge: quote(name),
            rule: rule.to_string(),
            asked: check_arg(asked),
        }),
        Verdict::NoAllow => Err(Error::NotAllowed {
            bridge: quote(name),
            file: compiled::ACL_FILE.into(),
            asked: check_arg(asked),
        }),
    }
}

/// `--br=NAME` as the user would type it after `--check`; names are
/// checked [`ifname`]s, so only the quoting of odd bytes matters.
fn check_arg(asked: &IfName) -> String {
    let bytes = asked.as_bytes();
    if ifname::validate(bytes).is_ok()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(b))
    {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        quote(bytes)
    }
}
