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
use crate::policy::compiled::SOCKET_PATH;
use crate::report::error::{Error, ServiceFault};
use crate::service::wire::{self, Answer, WireError};
use crate::service::SESSION_DEADLINE;
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
    let conn = sys::connect(Path::new(SOCKET_PATH)).map_err(Error::no_privilege_no_service)?;
    // The service answers within its deadline or closes; a second more
    // for the answer to travel.
    let deadline = Instant::now() + SESSION_DEADLINE + std::time::Duration::from_secs(1);
    let asking = |e| Error::from(ServiceFault::Asking(e));
    sys::send_request(conn.as_fd(), &frame).map_err(asking)?;
    // The tap's message comes first, and only from a run that succeeded,
    // as its last act (see wire): it goes on to `--fd` the moment it
    // arrives, as a setuid run's last act sends it, not once the session
    // has answered and exited. The answer after it gives the line and the
    // status, which QEMU waits for anyway (it reaps its helper).
    let mut bytes = Vec::new();
    let mut relayed = false;
    let answer = loop {
        let room = wire::MAX_ANSWER.saturating_sub(bytes.len());
        let (got, fds) = sys::receive(conn.as_fd(), room, deadline).map_err(asking)?;
        if !fds.is_empty() && bytes.is_empty() && got == [0] {
            let queues: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            fd_passing::send(socket, request.fd, &queues)?;
            relayed = true;
        }
        // Any other descriptors are closed here: not a tap.
        drop(fds);
        let closed = got.is_empty();
        bytes.extend_from_slice(&got);
        // The answer's own length ends it: no wait for the session's exit.
        match Answer::decode(&bytes) {
            Err(WireError::Short) if !closed => {}
            other => break other.map_err(ServiceFault::NoAnswer)?.1,
        }
    };
    if answer.status == 0 && !relayed {
        return Err(ServiceFault::NoTap.into());
    }
    // What the run printed, byte for byte (it escaped it already).
    let _ = std::io::stderr().write_all(&answer.line);
    match answer.status {
        0 => Ok(()),
        status => Err(Error::Checked(status)),
    }
}

/// Whether the service answers at its socket (for `--check` on a copy
/// without privilege): a connection, closed at once.
pub fn service_reachable() -> Result<(), nix::errno::Errno> {
    sys::connect(Path::new(SOCKET_PATH)).map(drop)
}
