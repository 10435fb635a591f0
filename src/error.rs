//! Every way a run can fail, and the exit status each class maps to.
#![forbid(unsafe_code)]

use crate::aclfile::AclError;
use crate::args::{UsageError, USAGE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} ({USAGE})")]
    Usage(#[from] UsageError),
    #[error("{0}")]
    AclConfig(#[from] AclError),
    #[error("access to bridge {bridge} denied by {rule}")]
    DeniedBy { bridge: String, rule: String },
    #[error(
        "access to bridge {bridge} denied: no rule in {file} (or a file it includes) allows it"
    )]
    NotAllowed { bridge: String, file: String },
    #[error("missing CAP_NET_ADMIN: install this program setuid root, or give it the capability with 'setcap cap_net_admin+ep'")]
    NoNetAdmin,
    #[error("cannot open /dev/net/tun: {0}")]
    TunDevice(String),
    #[error("cannot drop privileges: {0}")]
    Privileges(String),
    #[error("--fd={fd}: {why}")]
    BadFd { fd: i32, why: String },
    #[error("--fd={fd}: cannot send the tap: {why}")]
    Send { fd: i32, why: String },
    #[error("bridge {0} does not exist")]
    NoBridge(String),
    #[error("{0} is not a bridge (its kind is {1})")]
    NotABridge(String, String),
    #[error("{what}: {why}")]
    Kernel { what: String, why: String },
    #[error("internal error, this is a bug; no tap was handed out")]
    Internal,
}

/// Exit statuses, one per class of failure, as documented in the README.
pub mod status {
    pub const USAGE: u8 = 2;
    pub const ACL_CONFIG: u8 = 3;
    pub const DENIED: u8 = 4;
    pub const INSTALLATION: u8 = 5;
    pub const FD: u8 = 6;
    pub const BRIDGE: u8 = 7;
    pub const KERNEL: u8 = 8;
    pub const INTERNAL: u8 = 70;
}

impl Error {
    pub fn status(&self) -> u8 {
        match self {
            Error::Usage(_) => status::USAGE,
            Error::AclConfig(AclError::Resources(..)) => status::INSTALLATION,
            Error::AclConfig(_) => status::ACL_CONFIG,
            Error::DeniedBy { .. } | Error::NotAllowed { .. } => status::DENIED,
            Error::NoNetAdmin | Error::TunDevice(_) | Error::Privileges(_) => status::INSTALLATION,
            Error::BadFd { .. } | Error::Send { .. } => status::FD,
            Error::NoBridge(_) | Error::NotABridge(..) => status::BRIDGE,
            Error::Kernel { .. } => status::KERNEL,
            Error::Internal => status::INTERNAL,
        }
    }

    /// A kernel call that failed, naming what it was for.
    pub fn kernel(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Kernel {
            what: what.into(),
            why: why.to_string(),
        }
    }
}
