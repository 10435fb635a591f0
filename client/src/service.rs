//! A direct request to the bridge-helper service (`bridge-helper --serve`,
//! see the helper's README, "No setuid: the service"), for a VMM that
//! would rather not run a program: the same tap, checked the same way, and
//! the same errors as [`crate::Helper::run`].

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Failure, Protocol};
use crate::{one_line, sys, verify, Tap, MAX_QUEUES};

/// Where the service listens unless told otherwise.
pub const SOCKET: &str = "/run/bridge-helper/socket";

/// The service answers within 10 s or closes (its deadline); a little
/// more for the answer to travel.
const ANSWER_WITHIN: Duration = Duration::from_secs(12);

/// A request to the service, built like a [`crate::Helper`].
#[derive(Debug, Clone)]
pub struct Service {
    socket: PathBuf,
    bridge: Option<Vec<u8>>,
    vnet_hdr: bool,
    queues: u16,
}

impl Default for Service {
    fn default() -> Self {
        Service::at(SOCKET)
    }
}

impl Service {
    /// The service at its usual path, [`SOCKET`].
    pub fn new() -> Service {
        Service::default()
    }

    /// The service at `socket` (a sandbox may mount it elsewhere).
    pub fn at(socket: impl AsRef<Path>) -> Service {
        Service {
            socket: socket.as_ref().to_path_buf(),
            bridge: None,
            vnet_hdr: false,
            queues: 1,
        }
    }

    /// The bridge to join (1 to 15 bytes).
    pub fn bridge(mut self, bridge: impl AsRef<[u8]>) -> Service {
        self.bridge = Some(bridge.as_ref().to_vec());
        self
    }

    /// Virtio-net headers on the tap (`--use-vnet`).
    pub fn vnet_hdr(mut self, on: bool) -> Service {
        self.vnet_hdr = on;
        self
    }

    /// A multiqueue tap with `n` queues (1 to 253).
    pub fn queues(mut self, n: u16) -> Service {
        self.queues = n;
        self
    }

    /// Sends the request, receives and verifies the tap. Blocks until the
    /// service answers (at most its deadline). Returns as soon as the tap
    /// has arrived and is verified: the service sends one only for a
    /// request that succeeded, as its last act.
    pub fn request(self) -> Result<Tap, Error> {
        let bridge = self
            .bridge
            .ok_or_else(|| Error::Request("no bridge given".into()))?;
        let len = u8::try_from(bridge.len())
            .ok()
            .filter(|l| (1..=15).contains(l));
        let Some(len) = len.filter(|_| !bridge.contains(&0)) else {
            return Err(Error::Request(format!(
                "bridge name {:?}: 1 to 15 bytes, no NUL",
                String::from_utf8_lossy(&bridge)
            )));
        };
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(Error::Request(format!(
                "{} queues: from 1 to {MAX_QUEUES}",
                self.queues
            )));
        }
        let io = |doing: &'static str| move |source| Error::Io { doing, source };
        // Wire format version 1, attach (the helper's src/service/wire.rs).
        let mut frame = b"BHRQ\x01\x01".to_vec();
        frame.push(u8::from(self.vnet_hdr));
        frame.extend_from_slice(&self.queues.to_be_bytes());
        frame.push(len);
        frame.extend_from_slice(&bridge);
        let mut conn =
            UnixStream::connect(&self.socket).map_err(io("connecting to the service"))?;
        conn.set_read_timeout(Some(ANSWER_WITHIN))
            .map_err(io("SO_RCVTIMEO"))?;
        conn.write_all(&frame).map_err(io("sending the request"))?;
        conn.shutdown(std::net::Shutdown::Write)
            .map_err(io("sending the request"))?;
        // Wait for the first byte without taking it: a tap's message (one
        // zero byte with the fds) or the answer's first byte.
        let mut first = [0u8; 1];
        let peeked = loop {
            match nix::sys::socket::recv(
                conn.as_raw_fd(),
                &mut first,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(|e| io("waiting for the service")(e.into()))?,
            }
        };
        if peeked == 0 {
            return Err(Protocol::NothingSent.into());
        }
        if first[0] == 0 {
            // The service sends a tap only from a run that succeeded, as
            // that run's last act, so it is the outcome: the answer after
            // it (status 0, the run's line) is not waited for.
            let fds = receive_tap(&conn, self.queues)?;
            let name = verify(&fds, self.vnet_hdr, self.queues)?;
            return Ok(Tap {
                name,
                fds,
                vnet_hdr: self.vnet_hdr,
            });
        }
        let mut answer = Vec::new();
        conn.take(8 + 4096)
            .read_to_end(&mut answer)
            .map_err(io("receiving the answer"))?;
        let (status, line) = decode(&answer)?;
        if status != 0 {
            return Err(Error::Refused {
                class: Failure::from_status(i32::from(status)),
                status: i32::from(status),
                message: one_line(line),
            });
        }
        // Status 0 with no tap before it.
        Err(Protocol::NoDescriptors.into())
    }
}

/// The tap's message: one byte, exactly `queues` fds in one message.
fn receive_tap(conn: &UnixStream, queues: u16) -> Result<Vec<OwnedFd>, Error> {
    let expected = usize::from(queues);
    let got = sys::receive(conn.as_fd(), expected + 1, 1).map_err(|source| Error::Io {
        doing: "receiving the tap",
        source,
    })?;
    if got.truncated {
        return Err(Protocol::Truncated.into());
    }
    if got.rights_messages + got.other_messages != 1 {
        return Err(Protocol::Messages(got.rights_messages + got.other_messages).into());
    }
    if got.fds.len() != expected {
        return Err(Protocol::WrongCount {
            expected,
            got: got.fds.len(),
        }
        .into());
    }
    Ok(got.fds)
}

/// The answer frame: `BHAN`, version 1, status, length, the line.
fn decode(frame: &[u8]) -> Result<(u8, &[u8]), Error> {
    match frame {
        [b'B', b'H', b'A', b'N', 1, status, hi, lo, line @ ..]
            if line.len() == usize::from(u16::from_be_bytes([*hi, *lo])) =>
        {
            Ok((*status, line))
        }
        _ => Err(Protocol::Answer.into()),
    }
}
