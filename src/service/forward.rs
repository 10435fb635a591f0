//! The forwarder: a copy of the binary without privilege (how it is
//! installed on a service host, or shipped inside a sandbox) asks the
//! service instead, and leaves its caller exactly what a setuid run
//! would: the tap's fds on `--fd`, the one line on stderr, the exit
//! status. QEMU and libvirt cannot tell the difference.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::unistd::getuid;

use crate::cli;
use crate::policy::compiled::SOCKET_PATH;
use crate::report::error::{Access, Error, Named, ServiceFault};
use crate::report::escape::Bytes;
use crate::service::wire::{self, Answer, WireError};
use crate::service::SESSION_DEADLINE;
use crate::system::service as sys;
use crate::system::{fd_passing, users};

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
    let conn = connect()?;
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
            // Closed short: the service failed or never started (with
            // systemd, the socket accepts for a service that cannot).
            Err(WireError::Short) => {
                return Err(ServiceFault::Unanswered { got: bytes.len() }.into())
            }
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

/// How long `--check` waits for the service to close its empty
/// connection: started by systemd on that connection, it may first have
/// to start.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Whether the service answers at its socket (for `--check` on a copy
/// without privilege), with the error a run would stop with if not. The
/// probe sends no byte and ends its side: the service reads the empty
/// connection and closes it, neither logging nor answering it (a
/// request would be logged as a refusal). That close is what tells a
/// live service from a socket systemd accepts on for a service that
/// cannot start: there, nothing reads the connection, and systemd resets
/// it once it gives up (start-limit-hit) or the wait ends.
pub fn service_reachable() -> Result<(), Error> {
    let conn = connect()?;
    match sys::closed_by_peer(conn.as_fd(), Instant::now() + PROBE_DEADLINE) {
        // An answer (busy, say) comes from a service too.
        Ok(_) => Ok(()),
        Err(Errno::ECONNRESET | Errno::EPIPE) => Err(ServiceFault::Unanswered { got: 0 }.into()),
        Err(Errno::ETIMEDOUT) => Err(ServiceFault::NotRead {
            secs: PROBE_DEADLINE.as_secs(),
        }
        .into()),
        Err(e) => Err(ServiceFault::Asking(e).into()),
    }
}

/// A connection to the service, or the line a run stops with: a socket
/// whose owner, group or mode leave the caller out is the
/// administrator's choice, told apart from a missing service.
fn connect() -> Result<OwnedFd, Error> {
    sys::connect(Path::new(SOCKET_PATH)).map_err(|why| match why {
        Errno::EACCES | Errno::EPERM => Error::service_closed(why, caller(), access()),
        why => Error::no_privilege_no_service(why),
    })
}

/// The caller as the socket's permissions judge it: its real uid (a
/// forwarder has no other), named from /etc/passwd for the fix.
fn caller() -> Named {
    let uid = getuid();
    Named {
        id: uid.as_raw(),
        name: users::name_of_uid(uid).map(Bytes),
    }
}

/// The socket's owner, group and mode, or else its directory's (which a
/// caller that may not search it cannot look into). Only text, for the
/// line.
fn access() -> Option<Access> {
    let socket = Path::new(SOCKET_PATH);
    let directory = socket.parent().and_then(Path::to_str).unwrap_or("/");
    let (path, is_dir, (uid, gid, mode)) = match sys::owner_and_mode(socket) {
        Some(stat) => (SOCKET_PATH, false, stat),
        None => (directory, true, sys::owner_and_mode(Path::new(directory))?),
    };
    Some(Access {
        path,
        directory: is_dir,
        owner: Named {
            id: uid,
            name: users::name_of_uid(nix::unistd::Uid::from_raw(uid)).map(Bytes),
        },
        group: Named {
            id: gid,
            name: users::group_name(gid).map(Bytes),
        },
        mode: mode & 0o7777,
    })
}
