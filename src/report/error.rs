//! Every way a run can fail, and the exit status each class maps to.

use std::fmt;

use nix::errno::Errno;
use nix::unistd::{ResGid, ResUid};

use crate::cli::{UsageError, USAGE};
use crate::policy::accounts::Who;
use crate::policy::bridge_conf::includes::{ConfigError, Origin};
use crate::policy::compiled::SOCKET_PATH;
use crate::policy::helper_conf::lines::PortSettings;
use crate::report::escape::{Bytes, Pasted};
use crate::report::status;
use crate::service::identity::Refusal;
use crate::service::wire::WireError;
use crate::system::caps::CapSets;
use crate::system::netlink::NlError;
use crate::system::process;
use crate::system::service::ListenError;

/// How to start the service, on hosts with systemd and without, for every
/// line that tells a caller to start it.
pub const START_SERVICE: &str = "('systemctl enable --now bridge-helper.socket' with its units installed, or 'bridge-helper --serve' as root without systemd: bridge-helper(8) SERVICE)";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} ({USAGE})")]
    Usage(#[from] UsageError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("access to bridge {bridge} denied by {rule}; see bridge-helper --check --br={}", Pasted(.asked.as_bytes()))]
    DeniedBy {
        bridge: Bytes,
        rule: Origin,
        /// The bridge as asked for, shown ready to paste after `--br=`.
        asked: Bytes,
    },
    #[error(
        "access to bridge {bridge} denied: no rule in {file} (or a file it includes) allows it{}; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br={}", ForOthers(.grant.as_deref()), Pasted(.asked.as_bytes())
    )]
    NotAllowed {
        bridge: Bytes,
        file: &'static str,
        asked: Bytes,
        /// A grant of bridge-helper.conf for this bridge, which is for
        /// another user or a group the run is not in.
        grant: Option<Box<(Origin, Who)>>,
    },
    #[error("missing CAP_NET_ADMIN: fix: {setuid} (setuid root), or, where /dev/net/tun is 0666, {setcap}; from the package: dpkg-reconfigure bridge-helper", setuid = Setuid(.0), setcap = Setcap(.0))]
    NoNetAdmin(Program),
    /// Shown as `io::Error` shows an errno (`... (os error 13)`).
    #[error("cannot open /dev/net/tun: {cause}{hint}", cause = std::io::Error::from(*.0), hint = TunHint(*.0, .1))]
    TunDevice(Errno, Program),
    #[error("--queues={0}: multiqueue needs /dev/net/tun usable by the caller; here only root may open it, and a run (setuid, or through the service) opens it past its mode only once, for the first queue, before it reads its arguments; fix: make the node mode 0666, as Debian's udev rule does")]
    QueuesNeedTun(u16),
    #[error(
        "--queues={queues}: RLIMIT_NOFILE ({limit}) leaves no room for {queues} tap descriptors"
    )]
    FdLimit { queues: u16, limit: u64 },
    #[error("cannot drop privileges: {0}")]
    Privileges(Dropping),
    #[error("--fd={fd}: {why}")]
    BadFd { fd: i32, why: &'static str },
    #[error("--fd={fd}: cannot send the tap: {why}")]
    Send { fd: i32, why: KernelCause },
    #[error("bridge {name} does not exist{hint}", name = .0, hint = libvirt_hint(.0))]
    NoBridge(Bytes),
    /// The link's name and its kind (`None`: a plain device).
    #[error("{0} is not a bridge (its kind is {kind})", kind = kind(.1.as_ref()))]
    NotABridge(Bytes, Option<Bytes>),
    /// A port line asks for VLANs on a bridge that cannot filter by
    /// VLAN: attaching untagged would put the VM on every VLAN's traffic.
    #[error("{rule}: {settings} needs VLAN filtering on bridge {bridge}, which is off; refused rather than attached untagged (ip link set {bridge} type bridge vlan_filtering 1)")]
    NoVlanFiltering {
        bridge: Bytes,
        rule: Origin,
        settings: PortSettings,
    },
    #[error("{doing}: {why}")]
    Kernel {
        doing: Doing,
        #[source]
        why: KernelCause,
    },
    /// The tap is not what was set up (renamed under us, say): never
    /// handed out.
    #[error("{tap}: {step}: {what}")]
    Mismatch {
        tap: Bytes,
        step: &'static str,
        what: &'static str,
    },
    /// Bytes sent to the service that are not a request (wire format).
    #[error("bad request to the bridge-helper service: {0}")]
    BadRequest(#[from] WireError),
    /// A peer the service does not answer for (see service::identity).
    #[error("refused by the bridge-helper service: {0}")]
    PeerRefused(Refusal),
    /// The service, or the way to it, failed.
    #[error("service: {0}")]
    Service(#[from] ServiceFault),
    /// The forwarder (no privilege) found no service to ask.
    #[error("cannot create a tap: this copy has no privilege (neither setuid root nor cap_net_admin) and no bridge-helper service answers at {SOCKET_PATH} ({cause}); start the service {how}, or {setuid} (setuid root), or, where /dev/net/tun is 0666, {setcap}", cause = .why.desc(), how = START_SERVICE, setuid = Setuid(.program), setcap = Setcap(.program))]
    NoPrivilegeNoService {
        why: Errno,
        /// The copy that ran, for the fixes.
        program: Program,
    },
    /// The forwarder may not connect to the service's socket: its owner,
    /// group and mode (or its directory's) leave this user out. Whom the
    /// service admits is the administrator's choice (the package carries
    /// a restriction of QEMU's helper onto the socket), so no install of
    /// this copy is named as a fix: it would undo that choice.
    #[error("cannot create a tap: the bridge-helper service's socket {SOCKET_PATH} does not admit {who} ({cause}){admits}; who may use the service is the administrator's choice{fix}, set in bridge-helper.socket (SocketGroup=, SocketMode=; bridge-helper(8) SERVICE)", cause = .why.desc(), admits = Admits(.access.as_deref()), fix = Admit(.access.as_deref(), .who))]
    ServiceClosed {
        why: Errno,
        /// The caller, as this process's real uid shows it.
        who: Named,
        /// What a stat of the socket (or its directory) showed, if it could.
        access: Option<Box<Access>>,
    },
    /// The same for a run privileged only in a user namespace that does
    /// not own its network namespace: no install of the binary helps it.
    #[error("cannot create a tap: this process is privileged only in a user namespace that does not own its network namespace (unshare --user on the host's network), and no bridge-helper service answers at {SOCKET_PATH} ({cause}); start the service on the host {how}, or run outside that user namespace", cause = .why.desc(), how = START_SERVICE)]
    NamespaceNoService { why: Errno },
    /// A state the code holds impossible, returned as a value.
    #[error("internal error, this is a bug; no tap was handed out")]
    Internal,
    /// A panic, caught: the panic hook has printed its line (the same
    /// words as [`Error::Internal`]'s).
    #[error("internal error, this is a bug; no tap was handed out")]
    Panicked,
    /// `--check` has reported on stdout; exit with the status a run would.
    #[error("")]
    Checked(u8),
}

/// An account as a stat or a uid shows it: its id, and its name where
/// /etc/passwd or /etc/group has one (only text, for a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub id: u32,
    pub name: Option<Bytes>,
}

impl Named {
    /// The word for a command: the name, else the id.
    fn pasted(&self) -> String {
        match &self.name {
            Some(name) => Pasted(name.as_bytes()).to_string(),
            None => self.id.to_string(),
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => write!(f, "{} (no name)", self.id),
        }
    }
}

/// The owner, group and mode of the service's socket, or of its directory
/// where the socket itself could not be looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The socket, or else its directory.
    pub path: &'static str,
    pub directory: bool,
    pub owner: Named,
    pub group: Named,
    /// The permission bits.
    pub mode: u32,
}

impl Access {
    /// The bit a connect needs for the class whose bits are at `shift`
    /// (6 owner, 3 group, 0 others): write on the socket, search on its
    /// directory.
    fn lets(&self, shift: u32) -> bool {
        let need = if self.directory { 0o1 } else { 0o2 };
        self.mode & (need << shift) != 0
    }
}

/// What the socket's stat says of whom it admits.
struct Admits<'a>(Option<&'a Access>);

impl fmt::Display for Admits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(a) = self.0 else {
            return Ok(());
        };
        let what = if a.directory {
            "its directory"
        } else {
            "the socket"
        };
        write!(
            f,
            "; {what} {} is owner {}, group {}, mode {:04o}: ",
            a.path, a.owner, a.group, a.mode
        )?;
        if a.lets(0) {
            f.write_str("its mode admits everyone, so a POSIX ACL or a security module refused")
        } else if a.lets(3) {
            write!(
                f,
                "it admits its owner and the members of group {} only",
                a.group
            )
        } else {
            f.write_str("it admits its owner only")
        }
    }
}

/// How the administrator admits the caller: into the socket's group,
/// where its mode admits the group. Never into group 0: root's own group
/// (the unit's SocketGroup=root with a mode of 0660) means root only, and
/// membership grants whatever that group may read or write, far beyond
/// the service.
struct Admit<'a>(Option<&'a Access>, &'a Named);

impl fmt::Display for Admit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) if a.lets(3) && !a.lets(0) && a.group.id != 0 => match &self.1.name {
                Some(_) => write!(
                    f,
                    ": to admit this user, as root: usermod -aG {} {} (it applies from the user's next login)",
                    a.group.pasted(),
                    self.1.pasted()
                ),
                None => write!(f, ": to admit uid {}, add its account to group {}", self.1.id, a.group),
            },
            _ => Ok(()),
        }
    }
}

/// libvirt creates its `virbrN` bridges only when their network starts,
/// the most common reason one is missing.
fn libvirt_hint(name: &Bytes) -> &'static str {
    if name.as_bytes().starts_with(b"virbr") {
        "; libvirt creates it when its network starts (virsh net-start default)"
    } else {
        "; fix: name a bridge that exists (bridge-helper --check lists them), or create it first"
    }
}

/// The grant a refused caller is not covered by, so that a user added to
/// a group since logging in, or granted under another name, learns where
/// to look.
struct ForOthers<'a>(Option<&'a (Origin, Who)>);

impl fmt::Display for ForOthers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, who @ Who::Group(_))) => write!(
                f,
                ", and {line} grants it to {who}, a group this run is not in"
            ),
            Some((line, who @ Who::User(_))) => {
                write!(f, ", and {line} grants it to {who}, which this run is not")
            }
            _ => Ok(()),
        }
    }
}

/// The fix for the two ways the node fails an installed helper: a mode
/// that lets only root open it (a file capability is not enough), and no
/// node at all.
struct TunHint<'a>(Errno, &'a Program);

impl fmt::Display for TunHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Errno::EACCES => write!(f, "; fix: {} (setuid root; from the package: dpkg-reconfigure bridge-helper), or make the node mode 0666, as Debian's udev rule does", Setuid(self.1)),
            Errno::ENOENT => f.write_str("; fix: the tun driver is missing: modprobe tun, or give the container a /dev/net/tun"),
            _ => Ok(()),
        }
    }
}

/// The file of the program that ran, for the fixes that name it: the
/// kernel's path for it ([`process::executable`]: a symbolic link's
/// target), so that the command works when pasted, whichever link QEMU
/// or the user ran it by. `None`: the kernel's path no longer leads to it
/// (or /proc is missing), shown as a placeholder.
///
/// Only text, never a reason for anything: a caller may run a copy, or a
/// hard link, under a path of its choosing, and see that path named: it is
/// shown as one shell word ([`Pasted`]), so that the fix, pasted by root,
/// runs on that path and runs nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(Option<Bytes>);

impl Program {
    /// The file this process runs, read now.
    pub fn running() -> Program {
        Program(process::executable().map(Bytes))
    }

    /// A program file at `path` (tests, and lines composed elsewhere).
    pub fn at(path: &[u8]) -> Program {
        Program(Some(Bytes::from(path)))
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => Pasted(path.as_bytes()).fmt(f),
            None => f.write_str("/path/to/bridge-helper"),
        }
    }
}

/// Setuid root, the install that works with any /dev/net/tun mode, as
/// commands on the program's own file (bridge-helper(8), INSTALLATION).
struct Setuid<'a>(&'a Program);

impl fmt::Display for Setuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chown root:root {0} && chmod 4755 {0}", self.0)
    }
}

/// The file capability, enough only where /dev/net/tun is 0666.
struct Setcap<'a>(&'a Program);

impl fmt::Display for Setcap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setcap cap_net_admin+ep {}", self.0)
    }
}

/// Where a service that fails says why.
pub const SERVICE_LOG: &str = "its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service (without systemd: the stderr of 'bridge-helper --serve')";

/// How much of an answer came before the close.
struct Received(usize);

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("without answering"),
            n => write!(f, "after {n} bytes of its answer"),
        }
    }
}

/// What went wrong between a forwarder, the service and its runs.
#[derive(Debug, thiserror::Error)]
pub enum ServiceFault {
    #[error("{0}")]
    Listen(#[from] ListenError),
    #[error("asking the service at {SOCKET_PATH}: {}; {SERVICE_LOG}", .0.desc())]
    Asking(Errno),
    /// Bytes that are not an answer frame.
    #[error("the service at {SOCKET_PATH} sent an answer this copy cannot read ({0})")]
    NoAnswer(WireError),
    /// The connection closed before the answer was whole: the service
    /// failed, or never started (systemd accepts for it).
    #[error("the service at {SOCKET_PATH} closed the connection {}: it failed, or could not start; {SERVICE_LOG}", Received(*.got))]
    Unanswered {
        /// Bytes of the answer that came before the close.
        got: usize,
    },
    /// `--check`'s empty connection was not read: with systemd, the
    /// socket accepts for a service that does not start.
    #[error("the socket at {SOCKET_PATH} accepts connections, but no service read this check's connection within {secs} s: the service did not start, or is stuck; {SERVICE_LOG}")]
    NotRead { secs: u64 },
    #[error("the service granted a tap but sent none")]
    NoTap,
    #[error("busy: {max} requests of uid {uid} already running; try again")]
    BusyUser { max: usize, uid: u32 },
    #[error("busy: {max} requests already running; try again")]
    Busy { max: usize },
    #[error("no complete request within {secs} s")]
    NoRequest { secs: u64 },
}

/// Why giving up privilege failed (the drop checks what it did).
#[derive(Debug, thiserror::Error)]
pub enum Dropping {
    #[error("{}", .0.desc())]
    Errno(Errno),
    #[error("{call}: {cause}", call = .0, cause = .1.desc())]
    Call(&'static str, Errno),
    #[error("becoming another user needs CAP_SETUID and CAP_SETGID")]
    CannotBecome,
    #[error("still running with uids {0:?} and gids {1:?}")]
    Ids(ResUid, ResGid),
    #[error("capabilities are {now:x?}, wanted {want:x?}")]
    Caps { now: CapSets, want: CapSets },
    /// The caller's own id, set again by the drop, has no mapping in its
    /// user namespace (EINVAL from setresuid or setresgid).
    #[error("the caller's {0} has no mapping in its user namespace (setres{0}: {einval}), as in one made by 'unshare --user' without a map; fix: map it ('unshare --user --map-current-user', or --map-user= and --map-group=), or run bridge-helper outside that namespace", einval = Errno::EINVAL.desc())]
    Unmapped(IdKind),
}

/// Which of the caller's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Uid,
    Gid,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        })
    }
}

fn kind(kind: Option<&Bytes>) -> String {
    kind.map_or_else(|| "none: a plain device".into(), Bytes::to_string)
}

impl Error {
    pub fn status(&self) -> u8 {
        match self {
            Error::Usage(_) => status::USAGE,
            Error::Config(ConfigError::Resources(..)) => status::INSTALLATION,
            Error::Config(_) => status::ACL_CONFIG,
            Error::DeniedBy { .. } | Error::NotAllowed { .. } | Error::PeerRefused(_) => {
                status::DENIED
            }
            Error::BadRequest(_) => status::USAGE,
            Error::Service(_)
            | Error::NoPrivilegeNoService { .. }
            | Error::ServiceClosed { .. }
            | Error::NamespaceNoService { .. } => status::INSTALLATION,
            Error::NoNetAdmin(_)
            | Error::TunDevice(..)
            | Error::QueuesNeedTun(_)
            | Error::FdLimit { .. }
            | Error::Privileges(_) => status::INSTALLATION,
            Error::BadFd { .. } | Error::Send { .. } => status::FD,
            Error::NoBridge(_) | Error::NotABridge(..) | Error::NoVlanFiltering { .. } => {
                status::BRIDGE
            }
            Error::Kernel { .. } | Error::Mismatch { .. } => status::KERNEL,
            Error::Internal | Error::Panicked => status::INTERNAL,
            Error::Checked(status) => *status,
        }
    }

    /// The one line a failure prints on stderr, unless it has been said
    /// already: a panic's by the panic hook, `--check`'s verdict on stdout.
    pub fn line(&self) -> Option<String> {
        match self {
            Error::Panicked | Error::Checked(_) => None,
            e => Some(e.to_string()),
        }
    }

    /// The message as `--check` gives it: a denial does not point at the
    /// check that is reporting it.
    pub fn in_check(&self) -> String {
        match self {
            Error::DeniedBy { bridge, rule, .. } => {
                format!("access to bridge {bridge} denied by {rule}")
            }
            Error::NotAllowed {
                bridge,
                file,
                grant,
                ..
            } => format!(
                "access to bridge {bridge} denied: no rule in {file} (or a file it includes) allows it{}; see bridge.conf(5) and bridge-helper.conf(5)",
                ForOthers(grant.as_deref())
            ),
            e => e.to_string(),
        }
    }

    /// The forwarder's error for a run privileged only in a user
    /// namespace that does not own its network namespace: finding no
    /// service, it names the fixes that apply there.
    pub fn in_user_namespace(self) -> Error {
        match self {
            Error::NoPrivilegeNoService { why, .. } => Error::NamespaceNoService { why },
            e => e,
        }
    }

    /// No CAP_NET_ADMIN, with the fixes for the file that ran.
    pub fn no_net_admin() -> Error {
        Error::NoNetAdmin(Program::running())
    }

    /// /dev/net/tun does not open, with the fix for the file that ran.
    pub fn tun_device(errno: Errno) -> Error {
        Error::TunDevice(errno, Program::running())
    }

    /// A copy with no privilege found no service, with the fixes for the
    /// copy that ran.
    pub fn no_privilege_no_service(why: Errno) -> Error {
        Error::NoPrivilegeNoService {
            why,
            program: Program::running(),
        }
    }

    /// A copy with no privilege may not connect to the service's socket
    /// (`why`: EACCES or EPERM), with what the socket's stat shows (only
    /// text: a stat after the refusal, which may race a change).
    pub fn service_closed(why: Errno, who: Named, access: Option<Access>) -> Error {
        Error::ServiceClosed {
            why,
            who,
            access: access.map(Box::new),
        }
    }

    /// A kernel call that failed, naming what it was for.
    pub fn kernel(doing: impl Into<Doing>, why: impl Into<KernelCause>) -> Error {
        Error::Kernel {
            doing: doing.into(),
            why: why.into(),
        }
    }
}

/// What a run was doing when the kernel stopped it: the names in it are
/// kept as bytes and escaped only when shown.
#[derive(Debug)]
pub enum Doing {
    /// A step with nothing variable in it.
    Step(&'static str),
    /// A step on the new tap: `'tap0': SIOCGIFHWADDR`.
    OnTap(Bytes, &'static str),
    LookUpBridge(Bytes),
    AddToBridge {
        tap: Bytes,
        bridge: Bytes,
    },
    SetPort {
        tap: Bytes,
        port: PortSettings,
    },
    RemoveAbandoned {
        tap: Bytes,
    },
    AddAltname {
        tap: Bytes,
        altname: Bytes,
    },
}

impl From<&'static str> for Doing {
    fn from(step: &'static str) -> Self {
        Doing::Step(step)
    }
}

impl fmt::Display for Doing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Doing::Step(step) => f.write_str(step),
            Doing::OnTap(tap, step) => write!(f, "{tap}: {step}"),
            Doing::LookUpBridge(bridge) => write!(f, "looking up bridge {bridge}"),
            Doing::AddToBridge { tap, bridge } => write!(f, "{tap}: adding to bridge {bridge}"),
            Doing::SetPort { tap, port } => write!(f, "{tap}: setting port options {port}"),
            Doing::RemoveAbandoned { tap } => write!(f, "removing abandoned persistent tap {tap}"),
            Doing::AddAltname { tap, altname } => write!(f, "{tap}: adding altname {altname}"),
        }
    }
}

/// Why the kernel stopped a run, kept typed until it is printed.
#[derive(Debug, thiserror::Error)]
pub enum KernelCause {
    #[error("{}", .0.desc())]
    Errno(#[from] Errno),
    #[error("{0}")]
    Netlink(#[from] NlError),
    /// An answer that is not what was asked for.
    #[error("{0}")]
    Unexpected(&'static str),
    /// The caller's other runs kept taking the free slots.
    #[error("uid {uid}'s other requests took every free slot {rounds} times in a row")]
    SlotsTaken { uid: u32, rounds: usize },
}

impl From<&'static str> for KernelCause {
    fn from(why: &'static str) -> Self {
        KernelCause::Unexpected(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::accounts::Account;

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::from(bytes)
    }

    fn settings_line(line: usize) -> Origin {
        Origin {
            file: "/etc/qemu/bridge-helper.conf".into(),
            line,
        }
    }

    fn named(id: u32, name: Option<&[u8]>) -> Named {
        Named {
            id,
            name: name.map(Bytes::from),
        }
    }

    /// Where README.md's source install puts the program.
    fn exe() -> Program {
        Program::at(b"/usr/local/libexec/bridge-helper")
    }

    /// A run prints one line on failure: an impossible state returned as
    /// a value prints its own; a panic's was printed by the hook, and
    /// `--check` has said its verdict on stdout, so those print none.
    #[test]
    fn an_internal_error_prints_its_line_a_panic_and_a_check_do_not() {
        let line = Error::Internal.line();
        assert_eq!(
            line.as_deref(),
            Some("internal error, this is a bug; no tap was handed out")
        );
        assert_eq!(Error::Internal.status(), status::INTERNAL);
        assert_eq!(Error::Panicked.line(), None);
        assert_eq!(Error::Panicked.status(), status::INTERNAL);
        assert_eq!(Error::Checked(4).line(), None);
        assert_eq!(Error::Checked(4).status(), 4);
    }

    /// The lines as they read when their text was composed where the error
    /// was made: typed values must show the same bytes, escaped once.
    #[test]
    fn typed_variants_read_as_the_composed_text_did() {
        let errno = Errno::EPERM;
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::kernel(Doing::OnTap(b(b"t\x1b"), "TUNSETOWNER"), errno),
                "'t\\x1b': TUNSETOWNER: Operation not permitted",
            ),
            (
                Error::kernel(Doing::LookUpBridge(b(b"br0")), errno),
                "looking up bridge 'br0': Operation not permitted",
            ),
            (
                Error::kernel(
                    Doing::AddToBridge {
                        tap: b(b"tap0"),
                        bridge: b(b"br\n0"),
                    },
                    errno,
                ),
                "'tap0': adding to bridge 'br\\n0': Operation not permitted",
            ),
            (
                Error::kernel(
                    Doing::SetPort {
                        tap: b(b"tap0"),
                        port: PortSettings {
                            isolated: true,
                            ..PortSettings::default()
                        },
                    },
                    errno,
                ),
                "'tap0': setting port options isolated: Operation not permitted",
            ),
            (
                Error::kernel(Doing::RemoveAbandoned { tap: b(b"x'") }, errno),
                "removing abandoned persistent tap 'x\\'': Operation not permitted",
            ),
            (
                Error::kernel(
                    Doing::AddAltname {
                        tap: b(b"tap0"),
                        altname: b(b"bh-1000-0"),
                    },
                    errno,
                ),
                "'tap0': adding altname 'bh-1000-0': Operation not permitted",
            ),
            (
                Error::kernel(
                    Doing::OnTap(b(b"tap0"), "adding an altname"),
                    KernelCause::SlotsTaken {
                        uid: 1000,
                        rounds: 64,
                    },
                ),
                "'tap0': adding an altname: uid 1000's other requests took every free slot 64 times in a row",
            ),
            (
                Error::TunDevice(Errno::ENOENT, exe()),
                "cannot open /dev/net/tun: No such file or directory (os error 2); fix: the tun driver is missing: modprobe tun, or give the container a /dev/net/tun",
            ),
            // Each fix names where it works: the package's command as the
            // package's, a file capability only with a 0666 node.
            (
                Error::TunDevice(Errno::EACCES, exe()),
                "cannot open /dev/net/tun: Permission denied (os error 13); fix: chown root:root /usr/local/libexec/bridge-helper && chmod 4755 /usr/local/libexec/bridge-helper (setuid root; from the package: dpkg-reconfigure bridge-helper), or make the node mode 0666, as Debian's udev rule does",
            ),
            (
                Error::NoNetAdmin(exe()),
                "missing CAP_NET_ADMIN: fix: chown root:root /usr/local/libexec/bridge-helper && chmod 4755 /usr/local/libexec/bridge-helper (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep /usr/local/libexec/bridge-helper; from the package: dpkg-reconfigure bridge-helper",
            ),
            // A path a shell would split or expand is quoted, and its odd
            // bytes escaped, once; without a path, a placeholder.
            (
                Error::NoNetAdmin(Program::at(b"/home/al ice/bh\n\x1b")),
                "missing CAP_NET_ADMIN: fix: chown root:root '/home/al ice/bh\\n\\x1b' && chmod 4755 '/home/al ice/bh\\n\\x1b' (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep '/home/al ice/bh\\n\\x1b'; from the package: dpkg-reconfigure bridge-helper",
            ),
            (
                Error::TunDevice(Errno::EACCES, Program(None)),
                "cannot open /dev/net/tun: Permission denied (os error 13); fix: chown root:root /path/to/bridge-helper && chmod 4755 /path/to/bridge-helper (setuid root; from the package: dpkg-reconfigure bridge-helper), or make the node mode 0666, as Debian's udev rule does",
            ),
            (
                Error::TunDevice(Errno::ENXIO, exe()),
                "cannot open /dev/net/tun: No such device or address (os error 6)",
            ),
            (
                Error::Privileges(Dropping::Call("setresuid", errno)),
                "cannot drop privileges: setresuid: Operation not permitted",
            ),
            (
                Error::Privileges(Dropping::Unmapped(IdKind::Gid)),
                "cannot drop privileges: the caller's gid has no mapping in its user namespace (setresgid: Invalid argument), as in one made by 'unshare --user' without a map; fix: map it ('unshare --user --map-current-user', or --map-user= and --map-group=), or run bridge-helper outside that namespace",
            ),
            (
                Error::Privileges(Dropping::Caps {
                    now: CapSets::default(),
                    want: CapSets {
                        effective: 0x1000,
                        permitted: 0x1000,
                        inheritable: 0,
                    },
                }),
                "cannot drop privileges: capabilities are CapSets { effective: 0, permitted: 0, inheritable: 0 }, wanted CapSets { effective: 1000, permitted: 1000, inheritable: 0 }",
            ),
            (
                Error::Send {
                    fd: 3,
                    why: errno.into(),
                },
                "--fd=3: cannot send the tap: Operation not permitted",
            ),
            (
                ServiceFault::BusyUser { max: 64, uid: 7 }.into(),
                "service: busy: 64 requests of uid 7 already running; try again",
            ),
            (
                ServiceFault::Asking(Errno::ECONNRESET).into(),
                "service: asking the service at /run/bridge-helper/socket: Connection reset by peer; its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service (without systemd: the stderr of 'bridge-helper --serve')",
            ),
            (
                ServiceFault::Unanswered { got: 0 }.into(),
                "service: the service at /run/bridge-helper/socket closed the connection without answering: it failed, or could not start; its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service (without systemd: the stderr of 'bridge-helper --serve')",
            ),
            (
                ServiceFault::Unanswered { got: 5 }.into(),
                "service: the service at /run/bridge-helper/socket closed the connection after 5 bytes of its answer: it failed, or could not start; its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service (without systemd: the stderr of 'bridge-helper --serve')",
            ),
            (
                ServiceFault::NotRead { secs: 3 }.into(),
                "service: the socket at /run/bridge-helper/socket accepts connections, but no service read this check's connection within 3 s: the service did not start, or is stuck; its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service (without systemd: the stderr of 'bridge-helper --serve')",
            ),
            // A socket restricted to a group: the group is the fix, never
            // an install of this copy; names escaped once, pasted as one
            // shell word in the command.
            (
                Error::service_closed(
                    Errno::EACCES,
                    named(1000, Some(b"al ice")),
                    Some(Access {
                        path: "/run/bridge-helper/socket",
                        directory: false,
                        owner: named(0, Some(b"root")),
                        group: named(994, Some(b"kvm")),
                        mode: 0o660,
                    }),
                ),
                "cannot create a tap: the bridge-helper service's socket /run/bridge-helper/socket does not admit 'al ice' (1000) (Permission denied); the socket /run/bridge-helper/socket is owner 'root' (0), group 'kvm' (994), mode 0660: it admits its owner and the members of group 'kvm' (994) only; who may use the service is the administrator's choice: to admit this user, as root: usermod -aG kvm 'al ice' (it applies from the user's next login), set in bridge-helper.socket (SocketGroup=, SocketMode=; bridge-helper(8) SERVICE)",
            ),
            (
                Error::service_closed(
                    Errno::EACCES,
                    named(1000, None),
                    Some(Access {
                        path: "/run/bridge-helper",
                        directory: true,
                        owner: named(0, Some(b"root")),
                        group: named(0, None),
                        mode: 0o700,
                    }),
                ),
                "cannot create a tap: the bridge-helper service's socket /run/bridge-helper/socket does not admit 1000 (no name) (Permission denied); its directory /run/bridge-helper is owner 'root' (0), group 0 (no name), mode 0700: it admits its owner only; who may use the service is the administrator's choice, set in bridge-helper.socket (SocketGroup=, SocketMode=; bridge-helper(8) SERVICE)",
            ),
            (
                Error::service_closed(Errno::EPERM, named(1000, Some(b"alice")), None),
                "cannot create a tap: the bridge-helper service's socket /run/bridge-helper/socket does not admit 'alice' (1000) (Operation not permitted); who may use the service is the administrator's choice, set in bridge-helper.socket (SocketGroup=, SocketMode=; bridge-helper(8) SERVICE)",
            ),
            (
                Error::NoPrivilegeNoService {
                    why: Errno::ENOENT,
                    program: exe(),
                },
                "cannot create a tap: this copy has no privilege (neither setuid root nor cap_net_admin) and no bridge-helper service answers at /run/bridge-helper/socket (No such file or directory); start the service ('systemctl enable --now bridge-helper.socket' with its units installed, or 'bridge-helper --serve' as root without systemd: bridge-helper(8) SERVICE), or chown root:root /usr/local/libexec/bridge-helper && chmod 4755 /usr/local/libexec/bridge-helper (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep /usr/local/libexec/bridge-helper",
            ),
            (
                Error::NoPrivilegeNoService {
                    why: Errno::ECONNREFUSED,
                    program: exe(),
                }
                .in_user_namespace(),
                "cannot create a tap: this process is privileged only in a user namespace that does not own its network namespace (unshare --user on the host's network), and no bridge-helper service answers at /run/bridge-helper/socket (Connection refused); start the service on the host ('systemctl enable --now bridge-helper.socket' with its units installed, or 'bridge-helper --serve' as root without systemd: bridge-helper(8) SERVICE), or run outside that user namespace",
            ),
            (
                Error::PeerRefused(Refusal::SubUid {
                    uid: 100_000,
                    owner: b(b"al\tice"),
                }),
                "refused by the bridge-helper service: uid 100000 is a subordinate uid of 'al\\tice' (/etc/subuid): a container's user acting for 'al\\tice'; ask as 'al\\tice' itself",
            ),
            (
                Error::PeerRefused(Refusal::SetgroupsAllowed { uid: 5, depth: 3 }),
                "refused by the bridge-helper service: uid 5 connected from a user namespace nested 3 deep whose first level allows setgroups (made with newuidmap/newgidmap or by root, as rootless containers are), where a group could have been dropped to escape a deny; connect from the host, or from a sandbox whose setgroups is deny (bubblewrap, Flatpak)",
            ),
            (
                Error::PeerRefused(Refusal::SetgroupsUnread {
                    uid: 5,
                    depth: 1,
                    why: errno,
                }),
                "refused by the bridge-helper service: uid 5 connected from a user namespace; the service could not read its setgroups (Operation not permitted): let the service enter user namespaces (RestrictNamespaces=user in its unit), or connect from the host",
            ),
            (
                Error::NotAllowed {
                    bridge: b(b"br0"),
                    file: "/etc/qemu/bridge.conf",
                    asked: b(b"br0"),
                    grant: None,
                },
                "access to bridge 'br0' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br=br0",
            ),
            // A grant for others names its line and whom it is for.
            (
                Error::NotAllowed {
                    bridge: b(b"br-lab"),
                    file: "/etc/qemu/bridge.conf",
                    asked: b(b"br-lab"),
                    grant: Some(Box::new((
                        settings_line(2),
                        Who::Group(Account::Name(b"stu\x1bdents".to_vec())),
                    ))),
                },
                "access to bridge 'br-lab' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it, and /etc/qemu/bridge-helper.conf:2 grants it to group='stu\\x1bdents', a group this run is not in; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br=br-lab",
            ),
            (
                Error::NotAllowed {
                    bridge: b(b"br-lab"),
                    file: "/etc/qemu/bridge.conf",
                    asked: b(b"br-lab"),
                    grant: Some(Box::new((settings_line(7), Who::User(Account::Id(1000))))),
                },
                "access to bridge 'br-lab' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it, and /etc/qemu/bridge-helper.conf:7 grants it to user=1000, which this run is not; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br=br-lab",
            ),
            (
                Error::NotAllowed {
                    bridge: b(b"br 0"),
                    file: "/etc/qemu/bridge.conf",
                    asked: b(b"br 0"),
                    grant: None,
                },
                "access to bridge 'br 0' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br='br 0'",
            ),
        ];
        for (error, line) in cases {
            assert_eq!(error.to_string(), line);
        }
    }

    /// A socket 0660 root:root (the group the unit and systemd give it;
    /// also what the package's postinst writes where QEMU's helper was
    /// restricted with a plain `chmod o-x`) is closed to everyone but
    /// root: the line must not tell root to put the user into group
    /// root (gid 0), which grants every file root's group may read or
    /// write (/etc/sudoers is 0440 root:root) and, with pam_wheel, su.
    #[test]
    fn a_socket_closed_to_all_but_group_root_suggests_no_usermod_into_root() {
        let root_only = |who: Named| {
            Error::service_closed(
                Errno::EACCES,
                who,
                Some(Access {
                    path: "/run/bridge-helper/socket",
                    directory: false,
                    owner: named(0, Some(b"root")),
                    group: named(0, Some(b"root")),
                    mode: 0o660,
                }),
            )
            .to_string()
        };
        for line in [
            root_only(named(1000, Some(b"alice"))),
            root_only(named(1000, None)),
        ] {
            assert!(
                !line.contains("usermod") && !line.contains("add its account to group"),
                "{line}"
            );
        }
    }

    /// A socket closed to the user, and a service that does not answer,
    /// are installation failures, as a missing service is.
    #[test]
    fn a_closed_socket_and_a_dead_service_exit_as_a_missing_service_does() {
        let closed = Error::service_closed(Errno::EACCES, named(1, None), None);
        assert_eq!(closed.status(), status::INSTALLATION);
        assert_eq!(closed.in_user_namespace().status(), status::INSTALLATION);
        let dead: Error = ServiceFault::Unanswered { got: 0 }.into();
        assert_eq!(dead.status(), status::INSTALLATION);
    }
}
