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

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cli::{CheckRequest, UsageError};
use crate::policy::accounts::User;
use crate::policy::accounts::Who;
use crate::policy::bridge_conf::includes::Origin;
use crate::policy::bridge_conf::{self, Rule, Target};
use crate::policy::compiled;
use crate::policy::decision::Policy;
use crate::policy::files::{FileText, Files, OpenError};
use crate::policy::helper_conf::lines::PortRule;
use crate::policy::helper_conf::Settings;
use crate::report::error::Error;
use crate::report::escape::{Bytes, Escaped, Quoted};
use crate::report::status;
use crate::steps;
use crate::system::netlink::{Link, Rtnetlink};
use crate::system::privileges::{self, Caller};
use crate::system::trusted_files::SystemFiles;
use crate::system::users;
use crate::taps::reaper;
use nix::unistd::{Gid, Uid};

/// The gid a check for a user that /etc/passwd does not list runs with:
/// (gid_t)-2, which no group or file has (65534, the kernel's overflow
/// gid, is `nogroup` and may own files).
const NO_GID: u32 = u32::MAX - 1;

/// Runs the check, prints the report, and returns the status a run would
/// exit with (as [`Error::Checked`], already reported) or success.
pub fn run(mut caller: Caller, request: &CheckRequest) -> Result<(), Error> {
    let root = caller.uid.is_root();
    let mut report = Report::default();
    let install = match &request.user {
        None => {
            caller.settle()?;
            // Without privilege a run asks the service, which has both.
            let service = (caller.install == privileges::Install::Neither)
                .then(crate::service::forward::service_reachable);
            if let Some(reached) = &service {
                let socket = crate::service::SOCKET_PATH;
                report.line(match reached {
                    Ok(()) => format!(
                        "service: {socket} answers; a run asks it, as this copy has no privilege"
                    ),
                    Err(e) => format!("service: no service answers at {socket} ({})", e.desc()),
                });
            }
            match service {
                Some(Ok(())) => Install {
                    how: caller.install,
                    from_file: false,
                    net_admin: Ok(()),
                    tun: Ok(()),
                },
                _ => Install {
                    how: caller.install,
                    from_file: false,
                    net_admin: caller.require_net_admin(),
                    tun: caller.tun.check(),
                },
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
                    let uid = users::uid_of(spec)
                        .ok_or_else(|| UsageError::NoUser(Bytes::from(spec)))?
                        .as_raw();
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
                _ => Err(Error::NoNetAdmin),
            };
            // A setuid run opens /dev/net/tun during its drop, as the user
            // with CAP_DAC_OVERRIDE: what root can open, it can.
            let early_tun = (how == privileges::Install::SetuidRoot).then(|| caller.tun.check());
            let gids: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
            caller.become_user(Uid::from_raw(user.uid), Gid::from_raw(user.gid), &gids)?;
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
                net_admin,
                tun: early_tun.unwrap_or_else(|| caller.tun.check()),
            }
        }
    };
    // Everything from here only reads: with no capability left, nothing
    // the check does can change what the caller could not change anyway.
    privileges::drop_all()?;
    // The last two lines, whatever stopped the check: the verdict, and
    // the status, which agree.
    let verdict = check(&caller, install, root, request, &mut report);
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
    let text = format!("{}{}", header(&caller), report.text);
    let _ = std::io::stdout().write_all(text.as_bytes());
    match outcome {
        Ok(()) => Ok(()),
        Err(Error::Internal) => Err(Error::Internal),
        Err(e) => Err(Error::Checked(e.status())),
    }
}

fn header(caller: &Caller) -> String {
    format!(
        "bridge-helper {} check for uid {}{}\n",
        env!("CARGO_PKG_VERSION"),
        caller.uid,
        user_name(caller.uid)
    )
}

/// What a run by the user checked for would start with.
struct Install {
    how: privileges::Install,
    /// Told from the program file (root checking for another user), not
    /// from how this process started.
    from_file: bool,
    net_admin: Result<(), Error>,
    tun: Result<(), Error>,
}

/// The report's lines, in order.
#[derive(Default)]
pub struct Report {
    pub text: String,
}

impl Report {
    pub fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }
}

fn check(
    caller: &Caller,
    install: Install,
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
    let privilege = install.net_admin;
    out.line(match &privilege {
        Ok(()) => "CAP_NET_ADMIN: a run gets it".into(),
        Err(e) => format!("CAP_NET_ADMIN: a run does not get it: {e}"),
    });
    let tun = install.tun;
    out.line(match &tun {
        Ok(()) => "/dev/net/tun: opens the way a run opens it".into(),
        Err(e) => format!("/dev/net/tun: {e}"),
    });

    out.line(format!("ACL file: {}", compiled::ACL_FILE));
    out.line(format!("settings file: {}", compiled::SETTINGS_FILE));
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

fn exists(bridges: &[Link], name: &[u8]) -> bool {
    bridges
        .iter()
        .any(|b| b.name == name || b.altnames.iter().any(|a| a == name))
}

/// Every bridge in the namespace with the verdict a run reaches on it;
/// returns the names of those allowed.
fn bridge_lines(
    policy: &Policy,
    route: &mut Rtnetlink,
    bridges: &[Link],
    out: &mut Report,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut allowed = Vec::new();
    if bridges.is_empty() {
        out.line("bridges: none in this network namespace");
    }
    for bridge in bridges {
        let Ok(name) = crate::policy::ifname::IfName::new(&bridge.name) else {
            out.line(format!(
                "bridge {}: a name a run cannot be asked for",
                Quoted(&bridge.name)
            ));
            continue;
        };
        let mut port = None;
        let verdict = match steps::access(policy, route, &name) {
            Ok(access) => {
                allowed.push(bridge.name.clone());
                port = port_words(access.port.as_ref());
                format!("allowed by {}", access.rule)
            }
            Err(Error::DeniedBy { rule, .. }) => format!("denied by {rule}"),
            Err(Error::NotAllowed { .. }) => "denied: no rule allows it".into(),
            // Gone between the listing and the lookup, or a kernel error.
            Err(e) => e.to_string(),
        };
        out.line(format!("bridge {}: {verdict}", Quoted(&bridge.name)));
        if let Some(port) = port {
            out.line(format!("bridge {}: {port}", Quoted(&bridge.name)));
        }
    }
    Ok(allowed)
}

/// A user's own check, when bridge-helper.conf has group= lines: the
/// groups of this process, which a run decides them with, and what a new
/// login would change when /etc/group gives the user groups this process
/// lacks (added to a group after logging in).
fn group_lines(policy: &Policy, route: &mut Rtnetlink, bridges: &[Link], out: &mut Report) {
    if !policy.names_groups() {
        return;
    }
    let named = |gid: &u32| match policy.accounts.groups.iter().find(|(_, id)| id == gid) {
        Some((name, _)) => format!("{gid} ({})", Escaped(name)),
        None => gid.to_string(),
    };
    let now: Vec<String> = policy.me.gids.iter().map(named).collect();
    out.line(format!(
        "groups: {} (this process's: a run matches group= lines against these)",
        now.join(", ")
    ));
    let Some(user) = users::find(policy.me.uid.to_string().as_bytes()) else {
        return;
    };
    let lacking: Vec<u32> = users::groups(&user)
        .into_iter()
        .filter(|g| !policy.me.gids.contains(g))
        .collect();
    if lacking.is_empty() {
        return;
    }
    let mut later = policy.clone();
    later.me.gids.extend(&lacking);
    let mut gained = Vec::new();
    for bridge in bridges {
        let Ok(name) = crate::policy::ifname::IfName::new(&bridge.name) else {
            continue;
        };
        if steps::access(policy, route, &name).is_err() {
            if let Ok(access) = steps::access(&later, route, &name) {
                gained.push(format!(
                    "{} (allowed by {})",
                    Quoted(&bridge.name),
                    access.rule
                ));
            }
        }
    }
    let shown: Vec<String> = lacking.iter().map(named).collect();
    out.line(format!(
        "groups: /etc/group also puts uid {} in {}, which this process lacks (added since this login); after logging in again, {}",
        policy.me.uid,
        shown.join(", "),
        if gained.is_empty() {
            "no verdict here changes".to_string()
        } else {
            format!("a run could also attach to {}", gained.join(", "))
        }
    ));
}

/// Rules naming a bridge that is not in this namespace: a typo, or a
/// bridge made later (libvirt's).
fn missing_bridge_lines(rules: &[Rule<Origin>], bridges: &[Link], out: &mut Report) {
    for rule in rules {
        if let Target::Bridge(name) = &rule.target {
            if !exists(bridges, name) {
                out.line(format!(
                    "rule {}: names bridge {}, which does not exist here",
                    rule.origin,
                    Quoted(name)
                ));
            }
        }
    }
}

/// The settings in force, and the lines of bridge-helper.conf with a name
/// that does not resolve: a grant matches no one, a port line stops every
/// run on its bridge.
fn settings_lines(settings: &Result<Settings, Error>, policy: Option<&Policy>, out: &mut Report) {
    match settings {
        Ok(s) => {
            out.line(format!("max-abandoned-taps: {}", s.max_abandoned_taps));
            out.line(if s.ports.is_empty() {
                "port settings: none".to_string()
            } else {
                format!(
                    "port settings: {} port line(s); each bridge below says which applies",
                    s.ports.len()
                )
            });
        }
        Err(e) => out.line(format!("settings: {e}")),
    }
    for (origin, who, port) in policy.map(Policy::unresolved).unwrap_or_default() {
        out.line(match port {
            None => format!(
                "warning: {origin}: {who} does not resolve in /etc/passwd or /etc/group; the line matches no one"
            ),
            Some(bridge) => format!(
                "warning: {origin}: {who} does not resolve in /etc/passwd or /etc/group; every run on bridge {} stops at this line",
                Quoted(bridge)
            ),
        });
    }
}

/// What a run would set on the port, and the line that chose it; `None`
/// when no port line applies (a plain port, as QEMU's helper makes).
fn port_words(port: Option<&PortRule>) -> Option<String> {
    let p = port?;
    let what = if p.settings.is_empty() {
        format!("port: plain, chosen by {}", p.origin)
    } else {
        format!("port: {}, chosen by {}", p.settings, p.origin)
    };
    // Groups are the process's: a run started without the group (a login
    // from before the user joined it) gets another line, or none.
    Some(match &p.who {
        Who::Group(g) => {
            format!("{what} (group={g}: only while the caller's process has that group)")
        }
        _ => what,
    })
}

/// Taps this helper made for the caller that are persistent: they outlive
/// the VM, and stay in the bridge.
fn abandoned_tap_lines(route: &mut Rtnetlink, caller: &Caller, out: &mut Report) {
    let Ok(taps) = route.tun_links() else {
        out.line("warning: could not list tap devices");
        return;
    };
    for tap in taps {
        let persistent = tap.tun.as_ref().is_some_and(|t| t.persist);
        if persistent && reaper::made_for(&tap) == Some(caller.uid) {
            let state = if tap.carrier == Some(false) {
                "abandoned (no process holds it)"
            } else {
                "held by a process"
            };
            out.line(format!(
                "warning: tap {} of uid {} was made persistent and is {state}; it outlives its VM (runs remove the oldest abandoned ones beyond max-abandoned-taps; root removes them all with 'bridge-helper --remove-abandoned --user={}')",
                Quoted(&tap.name),
                caller.uid,
                caller.uid
            ));
        }
    }
}

/// A bridge whose address is one of its ports' most likely has none of its
/// own and follows the lowest port address, which the holder of a tap can
/// set. No netlink attribute says how a bridge's address was assigned, and
/// sysfs may belong to another network namespace, so a bridge without
/// ports, or with an address of its own equal to a port's, goes unnoticed.
fn bridge_address_lines(route: &mut Rtnetlink, bridges: &[Link], out: &mut Report) {
    let Ok(links) = route.all_links() else {
        return;
    };
    for bridge in bridges {
        let Some(port) = links
            .iter()
            .find(|l| l.master == Some(bridge.index) && l.address == bridge.address)
        else {
            continue;
        };
        // The fix pins an address no VM controls: a port that is not a
        // tap (the uplink), never a tap's.
        let is_tap = |l: &Link| l.kind.as_deref() == Some(b"tun") || l.tun.is_some();
        let fixed = if is_tap(port) {
            links
                .iter()
                .find(|l| l.master == Some(bridge.index) && !is_tap(l))
                .map(|l| &l.address)
        } else {
            Some(&port.address)
        };
        let fix = match fixed {
            Some(address) => {
                let mac: Vec<String> = address.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "ip link set {} address {}",
                    Escaped(&bridge.name),
                    mac.join(":")
                )
            }
            None => format!(
                "give it an address of its own, not a tap's: ip link set {} address ADDRESS (a locally administered one, such as 02:00:00:00:00:01)",
                Escaped(&bridge.name)
            ),
        };
        out.line(format!(
            "warning: bridge {} has the address of its port {}: it probably has no fixed address, and then takes the lowest address among its ports, which a VM can set on its tap; fix: {fix}",
            Quoted(&bridge.name),
            Quoted(&port.name),
        ));
    }
}

/// For root: every tap this helper made in the namespace, whose, where,
/// and whether anything holds it.
fn helper_tap_lines(route: &mut Rtnetlink, bridges: &[Link], out: &mut Report) {
    let Ok(taps) = route.tun_links() else {
        out.line("warning: could not list tap devices");
        return;
    };
    let mut any = false;
    for tap in &taps {
        let Some(uid) = reaper::made_for(tap) else {
            continue;
        };
        any = true;
        let bridge = tap
            .master
            .and_then(|m| bridges.iter().find(|b| b.index == m))
            .map_or("no bridge".to_string(), |b| {
                format!("bridge {}", Quoted(&b.name))
            });
        let persistent = tap.tun.as_ref().is_some_and(|t| t.persist);
        let remove = format!(
            "abandoned (persistent, nothing attached); remove with 'bridge-helper --remove-abandoned --user={uid}'"
        );
        let state = match (persistent, tap.carrier) {
            (true, Some(false)) => remove.as_str(),
            (true, _) => "held (persistent)",
            (false, _) => "held",
        };
        out.line(format!(
            "helper tap {}: uid {uid}{}, {bridge}, {state}",
            Quoted(&tap.name),
            user_name(uid)
        ));
    }
    if !any {
        out.line("helper taps: none in this network namespace");
    }
}

/// ` (NAME)` from /etc/passwd, or nothing.
fn user_name(uid: Uid) -> String {
    users::name_of_uid(uid)
        .map(|n| format!(" ({})", Escaped(&n)))
        .unwrap_or_default()
}

/// [`Files`] that remembers what each read found, for the report.
struct Recording<'f, F> {
    inner: &'f F,
    /// The text of each file read, for every syntax error in it.
    texts: RefCell<Vec<(PathBuf, Vec<u8>)>>,
    /// A missing file is no fault (the settings file).
    optional: bool,
    seen: RefCell<Vec<(PathBuf, String)>>,
}

impl<'f, F: Files> Recording<'f, F> {
    fn new(inner: &'f F) -> Self {
        Recording {
            inner,
            texts: RefCell::new(Vec::new()),
            optional: false,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Every syntax error in the ACL files read, not only the first one,
    /// at which a run stops.
    fn syntax_errors(&self, out: &mut Report) {
        for (path, text) in self.texts.borrow().iter() {
            for (line, bytes) in bridge_conf::lines(text) {
                if let Err(e) = bridge_conf::parse_line(bytes) {
                    let origin = Origin {
                        file: path.clone(),
                        line,
                    };
                    out.line(format!("syntax error: {origin}: {e}"));
                }
            }
        }
    }

    fn report(&self, out: &mut Report) {
        for (path, what) in self.seen.borrow().iter() {
            out.line(format!(
                "file {}: {what}",
                Escaped(path.as_os_str().as_bytes())
            ));
        }
    }
}

impl<F: Files> Files for Recording<'_, F> {
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
        let result = self.inner.read(path, limit);
        let what = match &result {
            Ok(text) => {
                self.texts
                    .borrow_mut()
                    .push((path.to_path_buf(), text.bytes.clone()));
                "trusted, read".to_string()
            }
            Err(OpenError::Missing) if self.optional => {
                "does not exist (optional: compiled-in defaults apply)".into()
            }
            Err(OpenError::Missing) => "does not exist".into(),
            Err(OpenError::Unreadable) => "not readable by this user".into(),
            Err(OpenError::Refused(why)) => format!("not trusted: {why}"),
            Err(OpenError::TooBig) => "too big".into(),
            Err(OpenError::Io(e) | OpenError::Resources(e)) => e.to_string(),
        };
        self.seen.borrow_mut().push((path.to_path_buf(), what));
        result
    }
}
