//! What can go wrong, typed so that a VMM can decide what to tell its user.

use std::io;

/// Why no tap was returned. Whatever the error, every descriptor that
/// arrived has been closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is not one the helper could satisfy (no bridge,
    /// queues out of range, a child descriptor below 3).
    #[error("invalid request: {0}")]
    Request(String),
    /// The helper could not be started (missing, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program as given.
        program: String,
        /// The error from the exec.
        #[source]
        source: io::Error,
    },
    /// The helper ran and refused: its exit status, classified as the
    /// helper documents it, and the one line it printed.
    #[error("{}", refused_text(.class, .status, .message))]
    Refused {
        /// What kind of failure the status means.
        class: Failure,
        /// The exit status itself.
        status: i32,
        /// The helper's stderr, without its `bridge-helper: ` prefix.
        message: String,
    },
    /// The helper was killed by a signal (by the OOM killer, a timeout, a
    /// user), before or after sending anything.
    #[error("the helper was killed by signal {signal}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Killed {
        /// The signal's number.
        signal: i32,
        /// Whatever it printed first.
        message: String,
    },
    /// The helper exited 0 but what arrived on the socket is not exactly
    /// the tap that was asked for.
    #[error("the helper broke the protocol: {0}")]
    Protocol(#[from] Protocol),
    /// A descriptor that arrived is not a queue of the tap asked for.
    #[error("descriptor {queue} of {count} is not the tap asked for: {why}")]
    NotTheTap {
        /// Its position in the message, from 1.
        queue: usize,
        /// How many arrived.
        count: usize,
        /// What is wrong with it.
        why: Mismatch,
    },
    /// A system call of the client itself failed.
    #[error("{doing}: {source}")]
    Io {
        /// What the client was doing.
        doing: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn refused_text(class: &Failure, status: &i32, message: &str) -> String {
    if message.is_empty() {
        format!("the helper failed ({class}, exit status {status}) and said nothing")
    } else {
        format!("{message} ({class}, exit status {status})")
    }
}

/// The helper's exit statuses, as bridge-helper(8) (EXIT STATUS) lists
/// them. QEMU's own helper exits 1 for everything: [`Failure::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// 2: the command line (a bad `--queues`, say).
    #[error("usage")]
    Usage,
    /// 3: the ACL file or a file it includes cannot be used.
    #[error("ACL file")]
    AclConfig,
    /// 4: the ACL does not allow this user this bridge.
    #[error("access denied")]
    Denied,
    /// 5: the installation or environment (no CAP_NET_ADMIN, a 0600
    /// /dev/net/tun with `--queues`, RLIMIT_NOFILE).
    #[error("installation or environment")]
    Installation,
    /// 6: the `--fd` socket, or sending on it.
    #[error("socket")]
    Fd,
    /// 7: the bridge is missing or not a bridge.
    #[error("bridge")]
    Bridge,
    /// 8: the kernel refused an operation.
    #[error("kernel")]
    Kernel,
    /// 70: a bug in the helper.
    #[error("helper bug")]
    Bug,
    /// Any other status.
    #[error("unknown failure")]
    Other,
}

impl Failure {
    /// The class of an exit status.
    pub fn from_status(status: i32) -> Failure {
        match status {
            2 => Failure::Usage,
            3 => Failure::AclConfig,
            4 => Failure::Denied,
            5 => Failure::Installation,
            6 => Failure::Fd,
            7 => Failure::Bridge,
            8 => Failure::Kernel,
            70 => Failure::Bug,
            _ => Failure::Other,
        }
    }
}

/// What was wrong with the message on the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Protocol {
    /// It exited 0 and sent nothing at all.
    #[error("it exited 0 without sending a tap")]
    NothingSent,
    /// Data came without any descriptor.
    #[error("data arrived without a descriptor")]
    NoDescriptors,
    /// A wrong number of descriptors.
    #[error("{got} descriptors arrived, {expected} were asked for")]
    WrongCount {
        /// How many were asked for.
        expected: usize,
        /// How many arrived.
        got: usize,
    },
    /// Not exactly one SCM_RIGHTS message (or other control messages).
    #[error("{0} control messages arrived instead of one")]
    Messages(usize),
    /// The descriptors or data did not fit (MSG_CTRUNC, MSG_TRUNC): too
    /// many descriptors, or an RLIMIT_NOFILE too small for them here.
    #[error("the message was truncated (too many descriptors, or RLIMIT_NOFILE too small)")]
    Truncated,
    /// Not exactly one data byte with the descriptors.
    #[error("{0} data bytes came with the descriptors instead of one")]
    DataBytes(usize),
    /// More arrived after the message.
    #[error("more arrived after the descriptors")]
    Trailing,
    /// The service's answer is not one (wire format version 1).
    #[error("the service's answer is malformed")]
    Answer,
}

/// Why a descriptor is not a queue of the tap asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// TUNGETIFF failed: not a tun descriptor (a pipe, a socket, a file),
    /// or one that holds no interface.
    #[error("TUNGETIFF failed ({0}): not a tap")]
    NotTun(io::Error),
    /// It holds another interface than the first descriptor.
    #[error("it holds {got:?}, the first holds {first:?}")]
    OtherInterface {
        /// The first descriptor's interface.
        first: String,
        /// This one's.
        got: String,
    },
    /// Its flags are not TAP, NO_PI, VNET_HDR as asked, MULTI_QUEUE iff
    /// more than one queue, PERSIST clear.
    #[error("tun flags {got:#06x}, expected {expected:#06x}")]
    Flags {
        /// The flags that matter, as they should be.
        expected: i16,
        /// As they are.
        got: i16,
    },
}
