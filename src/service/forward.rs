//! The forwarder: a copy of the binary without privilege (how it is
//! installed on a service host, or shipped inside a sandbox) asks the
//! service instead, and leaves its caller exactly what a setuid run
//! would: the tap's fds on `--fd`, the one line on stderr, the exit
//! status. QEMU and libvirt cannot tell the difference.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use crate::cli;
use crate::report::error::{Error, ServiceFault};
use crate::service::wire::{self, Answer};
use crate::service::{SESSION_DEADLINE, SOCKET_PATH};
use crate::system::fd_passing;
use crate::system::service as sys;

/// `request`, through the service. `--fd` is checked first, as a run
/// checks it, so a bad one gets the same line without asking anyone.
pub fn attach(request: &cli::Request) -> Result<(), Error> {
    let socket = fd_passing::verify(request.fd, &[])?;
    let frame = wire::Request {
        bridge: request.bridge.as_bytes().to_vec(),
        use_vnet: request.use_vnet,
        queues: request.queues,
    }
    .encode()?;
    let conn = sys::connect(Path::new(SOCKET_PATH)).map_err(|e| Error::NoPrivilegeNoService {
        socket: SOCKET_PATH,
        why: e,
    })?;
    // The service answers within its deadline or closes; a second more
    // for the answer to travel.
    let deadline = Instant::now() + SESSION_DEADLINE + std::time::Duration::from_secs(1);
    let (bytes, fds) = sys::exchange(conn.as_fd(), &frame, wire::MAX_ANSWER, deadline)
        .map_err(ServiceFault::Asking)?;
    let (tap, answer) = Answer::decode(&bytes).map_err(ServiceFault::NoAnswer)?;
    relay(request.fd, socket, tap, &fds, &answer)
}

/// Whether the service answers at its socket (for `--check` on a copy
/// without privilege): a connection, closed at once.
pub fn service_reachable() -> Result<(), nix::errno::Errno> {
    sys::connect(Path::new(SOCKET_PATH)).map(drop)
}

/// Hands the tap on and repeats the run's line and status.
fn relay(
    fd: i32,
    socket: std::os::fd::BorrowedFd<'_>,
    tap: bool,
    fds: &[std::os::fd::OwnedFd],
    answer: &Answer,
) -> Result<(), Error> {
    if answer.status == 0 {
        if !tap || fds.is_empty() {
            return Err(ServiceFault::NoTap.into());
        }
        let queues: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        fd_passing::send(socket, fd, &queues)?;
    }
    // What the run printed, byte for byte (it escaped it already).
    let _ = std::io::stderr().write_all(&answer.line);
    match answer.status {
        0 => Ok(()),
        status => Err(Error::Checked(status)),
    }
}
