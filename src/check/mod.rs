//! `bridge-helper --check [--br=BRIDGE]`: what a run would decide for the
//! caller, as a report on stdout, one fact a line, with nothing created,
//! changed or sent.
//!
//! The order is a run's (`main.rs`), through the same [`steps`]: the
//! privilege a run needs, the ACL files, the bridge's verdict, the
//! settings, /dev/net/tun. The exit status is that of the first step a run
//! would fail at, so for every outcome decided before a tap is made the
//! check and the run agree. What only a run can find out (the `--fd`
//! socket, the kernel refusing a tap, a full bridge) is said, not guessed.
//!
//! Here: the order of the check, its verdict and exit status. The lines of
//! each section are in `lines.rs`; `recording.rs` keeps what each read of
//! an ACL or settings file found.

use std::io::Write;

use crate::cli::{CheckRequest, UsageError};
use crate::policy::accounts::{self, User};
use crate::policy::bridge_conf::includes::Origin;
use crate::policy::bridge_conf::{Rule, Target};
use crate::policy::compiled;
use crate::policy::decision::Policy;
use crate::policy::helper_conf::Settings;
use crate::report::error::{Error, START_SERVICE};
use crate::report::escape::{Bytes, Pasted, Quoted};
use crate::report::status;
use crate::service::identity::Refusal;
use crate::steps;
use crate::system::caps;
use crate::system::netlink::{Link, Rtnetlink};
use crate::system::privileges::{self, Caller};
use crate::system::trusted_files::SystemFiles;
use crate::system::users;
use nix::unistd::{Gid, Uid};

mod lines;
mod recording;

use lines::{
    abandoned_tap_lines, bridge_address_lines, bridge_lines, exists, group_lines, helper_tap_lines,
    missing_bridge_lines, port_words, settings_lines, user_name, Report,
};
use recording::Recording;

/// The gid a check for a user that /etc/passwd does not list runs with:
/// (gid_t)-2, which no group or file has (65534, the kernel's overflow
/// gid, is `nogroup` and may own files).
const NO_GID: u32 = u32::MAX - 1;

/// Runs the check, prints the report, and returns the status a run would
/// exit with (as [`Error::Checked`], already reported) or success.
pub fn run(mut caller: Caller, request: &CheckRequest) -> Result<(), Error> {
    let root = caller.uid.is_root();
    let mut report = Report::default();
    // Read once: whether the service could examine a process that is not
    // dumpable, and whose uid it decides by.
    let uid_map = privileges::nested_uid_map();
    let nested = uid_map.is_some();
    let install = match &request.user {
        None => {
            caller.settle()?;
            let service = caller
                .install
                .asks_service()
                .then(|| probe_service(&mut report, caller.install));
            // Said next to the service's line, answering or not: once
            // started, the service refuses this process all the same.
            let unexaminable = service
                .is_some()
                .then(|| unexaminable(&caller, nested))
                .flatten();
            if unexaminable.is_some() {
                let refuses = match service {
                    Some(Ok(())) => "refuses this process",
                    _ => "would refuse this process once started",
                };
                report.line(format!("service: {refuses}: it is not dumpable (it started with its real and effective ids apart, or as a setuid, setgid or file-capability program), so its own user may not examine it; fix: run from an ordinary process of this user, started with its real and effective ids the same (root, or a process with CAP_NET_ADMIN, runs bridge-helper itself)"));
            }
            // The verdict is the refusal only where the service answers:
            // without one, a run stops first for want of it.
            let refused = matches!(service, Some(Ok(())))
                .then_some(unexaminable)
                .flatten();
            Install {
                how: caller.install,
                from_file: false,
                service,
                refused,
                net_admin: caller.require_net_admin(),
                tun: caller.tun.check(),
            }
        }
        Some(spec) => {
            if !root {
                return Err(UsageError::NotRoot(Bytes::from(spec)).into());
            }
            // A uid /etc/passwd does not list (LDAP, sssd) is checked with
            // a gid that no file has and no other group: this static
            // binary cannot learn its groups.
            let (user, groups) = match users::find(spec) {
                Some(user) => {
                    let groups = users::groups(&user);
                    (user, groups)
                }
                None => {
                    // Not in /etc/passwd, just read: only a decimal uid
                    // names such a user (users::uid_of, without reading
                    // the file a second time).
                    let uid = accounts::number(spec)
                        .ok_or_else(|| UsageError::NoUser(Bytes::from(spec)))?;
                    let user = User {
                        name: Vec::new(),
                        uid,
                        gid: NO_GID,
                    };
                    (user, Vec::new())
                }
            };
            let how = privileges::installed_binary();
            let net_admin = match how {
                privileges::Install::SetuidRoot | privileges::Install::Capability => Ok(()),
                _ => Err(Error::no_net_admin()),
            };
            // A setuid run opens /dev/net/tun during its drop, as the user
            // with CAP_DAC_OVERRIDE: what root can open, it can.
            let early_tun = (how == privileges::Install::SetuidRoot).then(|| caller.tun.check());
            let gids: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
            caller.become_user(Uid::from_raw(user.uid), Gid::from_raw(user.gid), &gids)?;
            // Probed as the user: the socket's owner, group and mode may
            // leave the user out (the administrator's choice), as they
            // would the user's runs. The probe is not a request.
            let service = how.asks_service().then(|| probe_service(&mut report, how));
            let shown: Vec<String> = groups.iter().map(u32::to_string).collect();
            report.line(if groups.is_empty() {
                format!(
                    "groups: none known (uid {} is not in /etc/passwd: checked with gid {NO_GID} and no other group; a login through sssd or LDAP has groups this check cannot see)",
                    user.uid
                )
            } else {
                format!(
                    "groups: {} (from /etc/passwd and /etc/group only: a login through PAM or sssd may have others)",
                    shown.join(", ")
                )
            });
            Install {
                how,
                from_file: true,
                service,
                // How the user would start a run is not known here.
                refused: None,
                net_admin,
                tun: early_tun.unwrap_or_else(|| caller.tun.check()),
            }
        }
    };
    // Asked from a user namespace, the service decides by the uid the
    // caller has on the host, not the one it has here.
    let host_uid = uid_map
        .filter(|_| install.service.is_some())
        .map(|map| HostUid::seen(privileges::uid_in_parent_namespace(&map, caller.uid)));
    // Everything from here only reads: with no capability left, nothing
    // the check does can change what the caller could not change anyway.
    privileges::drop_all()?;
    // The last two lines, whatever stopped the check: the verdict, and
    // the status, which agree.
    let verdict = check(&caller, install, host_uid, root, request, &mut report);
    report.line(match &verdict {
        Ok(allowed) => format!("verdict: {allowed}"),
        Err(Stop::NoBridge(_)) => format!(
            "verdict: no bridge here that a run could attach uid {} to",
            caller.uid
        ),
        Err(Stop::Error(e)) => format!("verdict: a run would stop: {}", e.in_check()),
    });
    let outcome = verdict.map(drop).map_err(|stop| match stop {
        Stop::NoBridge(status) => Error::Checked(status),
        Stop::Error(e) => e,
    });
    let code = match &outcome {
        Ok(()) => 0,
        Err(e) => e.status(),
    };
    report.line(format!("exit status: {code}"));
    let text = format!("{}{}", header(&caller, host_uid), report.text);
    let _ = std::io::stdout().write_all(text.as_bytes());
    // The verdict line has said why: the run prints nothing more.
    outcome.map_err(|e| Error::Checked(e.status()))
}

/// What a check from a user namespace can tell of the uid the service
/// decides by, the caller's on the host: only the uid one level up shows.
#[derive(Clone, Copy)]
enum HostUid {
    /// The parent namespace maps none (a map not written yet).
    Unmapped,
    /// 0 one level up. No user but root can map the host's uid 0 into a
    /// namespace it makes, so this one is nested in another (bubblewrap's
    /// `--dev`, in every Flatpak, maps the user to 0 in the first and back
    /// in a second) or root made it. Which of the two, and so the uid on
    /// the host, nothing here tells: naming 0 would read as "the service
    /// takes this sandbox for root", which it does not.
    Zero,
    /// The uid one level up: the host's if this namespace was made there
    /// (nothing inside one tells how deeply it is nested).
    OneUp(u32),
}

impl HostUid {
    fn seen(one_up: Option<u32>) -> HostUid {
        match one_up {
            None => HostUid::Unmapped,
            Some(0) => HostUid::Zero,
            Some(uid) => HostUid::OneUp(uid),
        }
    }

    /// Whom the service's verdict is for, in the verdict's line.
    fn who(self) -> String {
        match self {
            HostUid::Unmapped => "this process's uid on the host".into(),
            HostUid::Zero => "this user's uid on the host (which cannot be seen from here)".into(),
            HostUid::OneUp(uid) => {
                format!("uid {uid} (its uid on the host if this namespace was made there)")
            }
        }
    }
}

/// The first line: whom the check is for. `host_uid`: for a check that
/// asks the service from a user namespace, what shows of the uid the
/// service decides by.
fn header(caller: &Caller, host_uid: Option<HostUid>) -> String {
    let by = match host_uid {
        None => String::new(),
        Some(HostUid::Unmapped) => {
            " in a user namespace: the service decides by its uid on the host".into()
        }
        Some(HostUid::Zero) => " in a user namespace nested in another one (as bubblewrap's --dev and every Flatpak make it) or made by root: one level up it is uid 0, which only root can map from the host; the service decides by this user's uid on the host, which cannot be seen from here".into(),
        Some(HostUid::OneUp(uid)) => format!(
            " in a user namespace: the service decides by its uid on the host, {uid} if this namespace was made there"
        ),
    };
    format!(
        "bridge-helper {} check for uid {}{}{by}\n",
        env!("CARGO_PKG_VERSION"),
        caller.uid,
        user_name(caller.uid)
    )
}

/// The service's refusal of a run from this process, where it can be told
/// for certain: the service refuses a peer its own user may not examine
/// ([`Refusal::Unexaminable`]), and in the initial user namespace a
/// process that is not dumpable is one (the forwarder, started as this
/// process was and after the same drop, is exactly as dumpable; it holds
/// no capability and its ids are one). Below a user namespace the user
/// made (`nested`), the service may examine it all the same.
fn unexaminable(caller: &Caller, nested: bool) -> Option<Refusal> {
    let dumpable = caps::dumpable().unwrap_or(true);
    (!dumpable && !nested).then(|| Refusal::Unexaminable(caller.uid.as_raw()))
}

/// Without privilege a run asks the service, which runs as root: the line
/// saying whether the service answers, and the error a run would stop
/// with if not. The probe is a connection closed before its first byte,
/// which the service reads and closes without logging or answering it:
/// its close is what shows a live service (see
/// [`crate::service::forward::service_reachable`]); the wire format has
/// no request that runs nothing, and a request would be logged as a
/// refusal. `how`: the install, for the fix (a caller in another user
/// namespace needs the host's service).
fn probe_service(report: &mut Report, how: privileges::Install) -> Result<(), Error> {
    let socket = compiled::SOCKET_PATH;
    let reached = crate::service::forward::service_reachable();
    report.line(match &reached {
        Ok(()) => format!(
            "service: answers at {socket} (it read and closed this check's empty connection, which it does not log); a run asks the service there, as this copy has no privilege"
        ),
        Err(Error::NoPrivilegeNoService { why, .. }) => {
            let host = match how {
                privileges::Install::OtherUserNamespace => " on the host",
                _ => "",
            };
            format!(
                "service: no service answers at {socket} ({}); fix: start the service{host} {START_SERVICE}",
                why.desc()
            )
        }
        Err(Error::Service(fault)) => format!("service: {fault}"),
        Err(e) => format!("service: {e}"),
    });
    reached
}

/// What a run by the user checked for would start with.
struct Install {
    how: privileges::Install,
    /// Told from the program file (root checking for another user), not
    /// from how this process started.
    from_file: bool,
    /// For a copy without privilege: whether the service answers, or the
    /// error a run would stop with (`None`: a run does not ask it).
    service: Option<Result<(), Error>>,
    /// The service's refusal of this process, known in advance.
    refused: Option<Refusal>,
    net_admin: Result<(), Error>,
    tun: Result<(), Error>,
}

/// `host_uid`: as for [`header`]; `Some` exactly when the service decides
/// from the host's view.
fn check(
    caller: &Caller,
    install: Install,
    host_uid: Option<HostUid>,
    root: bool,
    request: &CheckRequest,
    out: &mut Report,
) -> Result<String, Stop> {
    // Installation: decided first by a run, too.
    let from = if install.from_file {
        " (from this program's file)"
    } else {
        ""
    };
    out.line(format!("installed: {}{from}", install.how));
    let (privilege, tun) = match install.service {
        // What the service provides, not checked here: it runs as root.
        // A service that is installed but does not serve this user (its
        // socket's permissions) or does not start is still the install:
        // its line is the verdict, and no setuid install is suggested.
        Some(Err(e)) if !matches!(e, Error::NoPrivilegeNoService { .. }) => {
            out.line("CAP_NET_ADMIN: through the service (a run asks it; it runs as root)");
            out.line("/dev/net/tun: through the service (it opens the device for the run)");
            (Err(e), Ok(()))
        }
        Some(Ok(())) => {
            out.line("CAP_NET_ADMIN: through the service (a run asks it; it runs as root)");
            out.line("/dev/net/tun: through the service (it opens the device for the run)");
            // The refusal's line is next to the service's (`run`).
            let privilege = install
                .refused
                .map_or(Ok(()), |why| Err(Error::PeerRefused(why)));
            (privilege, Ok(()))
        }
        _ => {
            out.line(match &install.net_admin {
                Ok(()) => "CAP_NET_ADMIN: a run gets it".into(),
                Err(e) => format!("CAP_NET_ADMIN: a run does not get it: {e}"),
            });
            out.line(match &install.tun {
                Ok(()) => "/dev/net/tun: opens the way a run opens it".into(),
                Err(e) => format!("/dev/net/tun: {e}"),
            });
            // Without privilege and without a service, a run stops with
            // the forwarder's line, which names both fixes.
            let privilege = match install.service {
                Some(Err(e)) => Err(match install.how {
                    privileges::Install::OtherUserNamespace => e.in_user_namespace(),
                    _ => e,
                }),
                _ => install.net_admin,
            };
            (privilege, install.tun)
        }
    };

    out.line(format!("ACL file: {}", compiled::ACL_FILE));
    out.line(format!("settings file: {}", compiled::SETTINGS_FILE));
    if let Some(host_uid) = host_uid {
        // Root's files show here as the overflow uid's: judged from this
        // view they would all be untrusted, and the fix named (chown)
        // harmful. A run is decided by the service, which reads them from
        // the host's view.
        // The same check outside says it all: the uid, the files, the
        // bridge's verdict.
        let br = request
            .bridge
            .as_ref()
            .map_or(String::new(), |b| format!(" --br={}", Pasted(b.as_bytes())));
        out.line(format!("ACL: not judged here: this process is in a user namespace of its own (a sandbox such as bubblewrap or Flatpak, or unshare --user), where the owners of the host's files do not show; the service judges them, from the host's view, for each run; to see its verdict, run 'bridge-helper --check{br}' as this user outside this user namespace, or 'bridge-helper --check --user=USER{br}' as root"));
        out.line("not checked: the ACL files and the bridges' verdicts (the service decides), the --fd socket, whether the kernel creates the tap, whether the bridge takes another port");
        privilege?;
        tun?;
        return Ok(format!(
            "a run asks the service, which decides from the host's view whether {} may attach to {}",
            host_uid.who(),
            request
                .bridge
                .as_ref()
                .map_or("a bridge".to_string(), |b| Quoted(b.as_bytes()).to_string())
        ));
    }
    let system = SystemFiles::default();
    let files = Recording::new(&system);
    let rules = steps::rules(&files);
    files.report(out);
    files.syntax_errors(out);
    if let Err(e) = &rules {
        out.line(format!("ACL: {e}"));
    }
    let mut settings_files = Recording::new(&system);
    settings_files.optional = true;
    let settings = steps::settings(&settings_files);
    settings_files.report(out);
    // The same policy a run decides with (for --user, as that user: the
    // groups are this process's, set from /etc/group above).
    let policy = match (&rules, &settings) {
        (Ok(rules), Ok(conf)) => {
            let policy = steps::policy(rules.clone(), conf.clone(), &system, caller.uid);
            if let Err(e) = &policy {
                out.line(format!("accounts: {e}"));
            }
            Some(policy)
        }
        _ => None,
    };
    settings_lines(
        &settings,
        policy.as_ref().and_then(|p| p.as_ref().ok()),
        out,
    );

    let mut route = Rtnetlink::open().map_err(|e| Error::kernel("opening a netlink socket", e))?;
    let bridges = route
        .bridges()
        .map_err(|e| Error::kernel("listing bridges", e))?;
    let decided = match &policy {
        Some(Ok(policy)) => Some(bridge_lines(policy, &mut route, &bridges, out)?),
        _ => {
            for bridge in &bridges {
                out.line(format!(
                    "bridge {}: no verdict: the configuration stops every run (above)",
                    Quoted(&bridge.name)
                ));
            }
            None
        }
    };
    if let (Some(Ok(policy)), None) = (&policy, &request.user) {
        group_lines(policy, &mut route, &bridges, out);
    }
    if let Ok(rules) = &rules {
        missing_bridge_lines(rules, &bridges, out);
    }
    abandoned_tap_lines(&mut route, caller, out);
    bridge_address_lines(&mut route, &bridges, out);
    if root {
        helper_tap_lines(&mut route, &bridges, out);
    }
    out.line("not checked: the --fd socket, whether the kernel creates the tap, whether the bridge takes another port");

    // The verdict and the exit status: the first step a run fails at, in
    // a run's order, said on one line whatever it is.
    let steps = Steps {
        privilege,
        rules,
        settings,
        policy,
        tun,
    };
    verdict(request, &mut route, &bridges, decided, steps)
}

/// Why a run would stop: a step's error, or (without `--br`) no bridge
/// here that the caller may use, with the status that would stop a run.
enum Stop {
    NoBridge(u8),
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

/// What a run would do, in words, or where it would stop.
fn verdict(
    request: &CheckRequest,
    route: &mut Rtnetlink,
    bridges: &[Link],
    decided: Option<Vec<Vec<u8>>>,
    steps: Steps,
) -> Result<String, Stop> {
    steps.privilege?;
    let rules = steps.rules?;
    steps.settings?;
    let policy = steps.policy.ok_or(Error::Internal)??;
    let allowed = match &request.bridge {
        Some(asked) => {
            let a = steps::access(&policy, route, asked)?;
            format!(
                "a run would attach a tap to {} (allowed by {}){}",
                Quoted(&a.bridge.name),
                a.rule,
                port_words(a.port.as_ref()).map_or(String::new(), |words| format!(", {words}"))
            )
        }
        None => {
            let allowed = decided.unwrap_or_default();
            if allowed.is_empty() {
                steps.tun?;
                return Err(Stop::NoBridge(no_bridge_status(&rules, bridges)));
            }
            let names: Vec<String> = allowed.iter().map(|n| Quoted(n).to_string()).collect();
            format!("a run could attach to {}", names.join(", "))
        }
    };
    steps.tun?;
    Ok(allowed)
}

/// The outcome of each step a run takes before it makes a tap, in its
/// order.
struct Steps {
    privilege: Result<(), Error>,
    rules: Result<Vec<Rule<Origin>>, Error>,
    settings: Result<Settings, Error>,
    policy: Option<Result<Policy, Error>>,
    tun: Result<(), Error>,
}

/// A check cannot fail at a bridge in general: without `--br` it stops
/// with the class that would stop this user's runs. A rule allowing a
/// bridge that does not exist (libvirt's virbr0 before its network starts)
/// is the likelier fix than a denial.
fn no_bridge_status(rules: &[Rule<Origin>], bridges: &[Link]) -> u8 {
    let allows_missing = rules
        .iter()
        .any(|r| r.allow && matches!(&r.target, Target::Bridge(name) if !exists(bridges, name)));
    if allows_missing || bridges.is_empty() {
        status::BRIDGE
    } else {
        status::DENIED
    }
}
