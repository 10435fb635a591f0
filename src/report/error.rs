//! Every way a run can fail, and the exit status each class maps to.

use std::fmt;

use nix::errno::Errno;

use crate::cli::{UsageError, USAGE};
use crate::policy::bridge_conf::includes::{ConfigError, Origin};
use crate::policy::helper_conf::lines::PortSettings;
use crate::report::escape::Bytes;
use crate::report::status;
use crate::system::netlink::NlError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} ({USAGE})")]
    Usage(#[from] UsageError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("access to bridge {bridge} denied by {rule}; see bridge-helper --check --br={asked}")]
    DeniedBy {
        bridge: Bytes,
        rule: Origin,
        /// The bridge as asked for, ready to paste after `--br=`.
        asked: String,
    },
    #[error(
        "access to bridge {bridge} denied: no rule in {file} (or a file it includes) allows it; see bridge-helper --check --br={asked} and bridge.conf(5)"
    )]
    NotAllowed {
        bridge: Bytes,
        file: &'static str,
        asked: String,
    },
    #[error("missing CAP_NET_ADMIN: install this program setuid root, or give it the capability with 'setcap cap_net_admin+ep' (from the package: dpkg-reconfigure bridge-helper)")]
    NoNetAdmin,
    #[error("cannot open /dev/net/tun: {0}{hint}", hint = tun_hint(.0))]
    TunDevice(String),
    #[error("--queues={0}: multiqueue needs /dev/net/tun usable by the caller (mode 0666, as on most distributions); here only root may open it, and a setuid run opens it with CAP_DAC_OVERRIDE only once, before it reads its arguments")]
    QueuesNeedTun(u16),
    #[error(
        "--queues={queues}: RLIMIT_NOFILE ({limit}) leaves no room for {queues} tap descriptors"
    )]
    FdLimit { queues: u16, limit: u64 },
    #[error("cannot drop privileges: {0}")]
    Privileges(String),
    #[error("--fd={fd}: {why}")]
    BadFd { fd: i32, why: String },
    #[error("--fd={fd}: cannot send the tap: {why}")]
    Send { fd: i32, why: String },
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
    BadRequest(#[from] crate::service::wire::WireError),
    /// A peer the service does not answer for (see service::identity).
    #[error("refused by the bridge-helper service: {0}")]
    PeerRefused(String),
    /// The service, or the way to it, failed.
    #[error("bridge-helper service: {0}")]
    Service(String),
    /// The forwarder (no privilege) found no service to ask.
    #[error("cannot create a tap: this copy has no privilege (neither setuid root nor cap_net_admin) and no bridge-helper service answers at {socket} ({why}); start the service ('systemctl enable --now bridge-helper.socket'), or install this program setuid root or with 'setcap cap_net_admin+ep'")]
    NoPrivilegeNoService { socket: &'static str, why: String },
    #[error("internal error, this is a bug; no tap was handed out")]
    Internal,
    /// `--check` has reported on stdout; exit with the status a run would.
    #[error("")]
    Checked(u8),
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

/// The fix for the two ways the node fails an installed helper: a mode
/// that lets only root open it (a file capability is not enough), and no
/// node at all. The cause is `io::Error`'s text, which ends in its errno.
fn tun_hint(cause: &str) -> &'static str {
    if cause.ends_with(&format!("(os error {})", libc::EACCES)) {
        "; fix: dpkg-reconfigure bridge-helper (the package then installs this program setuid root), or make the node mode 0666, as Debian's udev rule does"
    } else if cause.ends_with(&format!("(os error {})", libc::ENOENT)) {
        "; fix: the tun driver is missing: modprobe tun, or give the container a /dev/net/tun"
    } else {
        ""
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
            Error::Service(_) | Error::NoPrivilegeNoService { .. } => status::INSTALLATION,
            Error::NoNetAdmin
            | Error::TunDevice(_)
            | Error::QueuesNeedTun(_)
            | Error::FdLimit { .. }
            | Error::Privileges(_) => status::INSTALLATION,
            Error::BadFd { .. } | Error::Send { .. } => status::FD,
            Error::NoBridge(_) | Error::NotABridge(..) | Error::NoVlanFiltering { .. } => {
                status::BRIDGE
            }
            Error::Kernel { .. } | Error::Mismatch { .. } => status::KERNEL,
            Error::Internal => status::INTERNAL,
            Error::Checked(status) => *status,
        }
    }

    /// The message as `--check` gives it: a denial does not point at the
    /// check that is reporting it.
    pub fn in_check(&self) -> String {
        match self {
            Error::DeniedBy { bridge, rule, .. } => {
                format!("access to bridge {bridge} denied by {rule}")
            }
            Error::NotAllowed { bridge, file, .. } => format!(
                "access to bridge {bridge} denied: no rule in {file} (or a file it includes) allows it; see bridge.conf(5) and bridge-helper.conf(5)"
            ),
            e => e.to_string(),
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
