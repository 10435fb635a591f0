//! Get a tap on a host bridge from `bridge-helper`, for a VMM written in
//! Rust, without root and without an async runtime.
//!
//! The helper is a setuid-root (or `cap_net_admin+ep`) program that
//! creates a tap for the calling user, puts it on a bridge that
//! `/etc/qemu/bridge.conf` allows that user, and sends its descriptor back
//! over a Unix socket. This crate runs it and receives strictly: exactly
//! one control message with exactly the descriptors asked for, received
//! close-on-exec, truncation detected, everything else closed; the
//! helper's exit status and its one line become an [`Error`]; and every
//! descriptor is checked to be a queue of the one tap, with the flags
//! asked for, before it is returned (QEMU learned to do this the hard
//! way: an unchecked descriptor number once became a backend that passed
//! no traffic and closed someone else's file on shutdown).
//!
//! ```no_run
//! use bridge_helper_client::Helper;
//!
//! let tap = Helper::new("/usr/libexec/bridge-helper/bridge-helper")
//!     .bridge("br0")
//!     .vnet_hdr(true)
//!     .queues(4)
//!     .run()?;
//! println!("{} with {} queues", tap.name(), tap.fds().len());
//! # Ok::<(), bridge_helper_client::Error>(())
//! ```
//!
//! Where a host runs the bridge-helper service (no setuid helper at all),
//! [`Service`] asks it directly, with no program run:
//!
//! ```no_run
//! let tap = bridge_helper_client::Service::new().bridge("br0").vnet_hdr(true).request()?;
//! # Ok::<(), bridge_helper_client::Error>(())
//! ```
//!
//! With one queue (the default) and no `--queues` argument, the command
//! line is QEMU's, so QEMU's own `qemu-bridge-helper` works too.
//!
//! Errors are typed by what the caller can do about them:
//!
//! ```no_run
//! use bridge_helper_client::{Error, Failure, Helper};
//!
//! match Helper::new("/usr/lib/qemu/qemu-bridge-helper").bridge("br0").run() {
//!     Ok(tap) => drop(tap),
//!     Err(Error::Refused { class: Failure::Denied, message, .. }) => {
//!         eprintln!("ask your administrator to allow br0: {message}")
//!     }
//!     Err(e) => eprintln!("no network: {e}"),
//! }
//! ```
#![deny(unsafe_code)]
// A cast that can truncate, wrap or lose a sign is a bug waiting for an
// input, as in the helper: use try_from.
#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod error;
mod service;
#[allow(unsafe_code)]
mod sys;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

pub use error::{Error, Failure, Mismatch, Protocol};
pub use service::{Service, SOCKET};

/// The most queues one run can hand over: one SCM_RIGHTS message carries
/// at most 253 descriptors (the kernel's SCM_MAX_FD).
pub const MAX_QUEUES: u16 = 253;

const IFF_TUN: i16 = 0x0001;
const IFF_TAP: i16 = 0x0002;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_PERSIST: i16 = 0x0800;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// How much of the helper's stderr is kept for the error: its one line.
const STDERR_KEPT: usize = 4096;

/// One run of the helper, configured by its builder methods and started
/// by [`Helper::run`].
#[derive(Debug)]
pub struct Helper {
    cmd: Command,
    program: String,
    bridge: Option<OsString>,
    vnet_hdr: bool,
    queues: u16,
    child_fd: Option<RawFd>,
}

impl Helper {
    /// Runs `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> Helper {
        Helper::from_command(Command::new(program))
    }

    /// Runs a command prepared by the caller (a wrapper, an environment,
    /// a working directory). The helper's arguments are appended to it;
    /// its stdin and stdout are set to null and its stderr is read.
    pub fn from_command(cmd: Command) -> Helper {
        let program = cmd.get_program().to_string_lossy().into_owned();
        Helper {
            cmd,
            program,
            bridge: None,
            vnet_hdr: false,
            queues: 1,
            child_fd: None,
        }
    }

    /// The bridge to join (`--br=`). Required.
    pub fn bridge(mut self, bridge: impl AsRef<OsStr>) -> Helper {
        self.bridge = Some(bridge.as_ref().to_owned());
        self
    }

    /// Asks for virtio-net headers (`--use-vnet`, IFF_VNET_HDR), as a
    /// virtio-net device with vhost or offloads wants. The returned fds are
    /// checked to have them (the helper sets them when the kernel can,
    /// which every kernel since 2.6.27 can).
    pub fn vnet_hdr(mut self, on: bool) -> Helper {
        self.vnet_hdr = on;
        self
    }

    /// Asks for a multiqueue tap with `n` queues (`--queues=N`, 1 to
    /// [`MAX_QUEUES`]): `n` descriptors of one tap, one per queue. A guest
    /// uses one queue pair per vCPU at most. With 1 (the default) no
    /// `--queues` is passed at all.
    pub fn queues(mut self, n: u16) -> Helper {
        self.queues = n;
        self
    }

    /// The descriptor number at which the helper gets its socket (`--fd=`),
    /// 3 or above. By default it is the number the socket has in this
    /// process, which no other descriptor can be during the spawn.
    pub fn child_fd(mut self, fd: RawFd) -> Helper {
        self.child_fd = Some(fd);
        self
    }

    /// Runs the helper, waits for it, receives and verifies the tap.
    /// Blocks until the helper exits.
    pub fn run(mut self) -> Result<Tap, Error> {
        let bridge = self
            .bridge
            .take()
            .ok_or_else(|| Error::Request("no bridge given".into()))?;
        if bridge.is_empty() || bridge.as_bytes().starts_with(b"-") {
            return Err(Error::Request(format!("bridge name {bridge:?}")));
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(Error::Request(format!(
                "{} queues: from 1 to {MAX_QUEUES}",
                self.queues
            )));
        }
        if self.child_fd.is_some_and(|fd| fd < 3) {
            return Err(Error::Request(
                "the child's socket must be 3 or above (0, 1 and 2 are its stdio)".into(),
            ));
        }
        let io = |doing: &'static str| move |source| Error::Io { doing, source };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| io("socketpair")(e.into()))?;
        let at = self.child_fd.unwrap_or(theirs.as_raw_fd());
        // Keeps `at` from being one of the spawn's own descriptors.
        let held = if at == theirs.as_raw_fd() {
            None
        } else {
            Some(sys::hold_number(theirs.as_fd(), at).map_err(io("F_DUPFD_CLOEXEC"))?)
        };
        sys::place_in_child(&mut self.cmd, theirs.as_raw_fd(), at);
        if self.vnet_hdr {
            self.cmd.arg("--use-vnet");
        }
        if self.queues > 1 {
            self.cmd.arg(format!("--queues={}", self.queues));
        }
        let mut br = OsString::from("--br=");
        br.push(&bridge);
        self.cmd.arg(format!("--fd={at}")).arg(br);
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = self.cmd.spawn();
        drop(held);
        drop(theirs);
        let mut child = spawned.map_err(|source| Error::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let mut stderr = Vec::new();
        if let Some(pipe) = child.stderr.take() {
            // Its one line; anything beyond is read and dropped, so that
            // a chatty helper cannot block on a full pipe.
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = STDERR_KEPT.saturating_sub(stderr.len());
                        stderr.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let status = child.wait().map_err(io("waiting for the helper"))?;
        // Everything on the socket is received (and so closed if refused)
        // whatever the status.
        let received = receive_all(&ours, self.queues);
        let message = one_line(&stderr);
        if let Some(signal) = status.signal() {
            return Err(Error::Killed { signal, message });
        }
        match status.code() {
            Some(0) => {}
            Some(code) => {
                return Err(Error::Refused {
                    class: Failure::from_status(code),
                    status: code,
                    message,
                })
            }
            None => return Err(Error::Killed { signal: 0, message }),
        }
        let fds = received?;
        let name = verify(&fds, self.vnet_hdr, self.queues)?;
        Ok(Tap {
            name,
            fds,
            vnet_hdr: self.vnet_hdr,
        })
    }
}

/// The helper's stderr as one line, without its program prefix.
fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end();
    text.strip_prefix("bridge-helper: ")
        .unwrap_or(text)
        .replace('\n', " / ")
}

/// Receives the whole message and makes sure nothing follows it. Every
/// descriptor that arrived is owned, so returning drops (closes) any that
/// are not handed out.
fn receive_all(sock: &OwnedFd, queues: u16) -> Result<Vec<OwnedFd>, Error> {
    let expected = usize::from(queues);
    let io = |source| Error::Io {
        doing: "receiving the tap",
        source,
    };
    // One more slot than asked for, so that one too many shows as a count.
    let first = match sys::receive(sock.as_fd(), expected + 1, 2) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(Protocol::NothingSent.into())
        }
        Err(e) => return Err(io(e)),
    };
    // Whatever follows must be nothing: the helper has exited and we hold
    // the only other end, so this is end-of-file or a protocol error.
    let rest = sys::receive(sock.as_fd(), MAX_QUEUES.into(), 64);
    let trailing = match &rest {
        Ok(r) => r.bytes != 0 || !r.fds.is_empty(),
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    drop(rest);
    if first.bytes == 0 && first.fds.is_empty() {
        return Err(Protocol::NothingSent.into());
    }
    if first.truncated {
        return Err(Protocol::Truncated.into());
    }
    if first.fds.is_empty() {
        return Err(Protocol::NoDescriptors.into());
    }
    if first.rights_messages + first.other_messages != 1 {
        return Err(Protocol::Messages(first.rights_messages + first.other_messages).into());
    }
    if first.fds.len() != expected {
        return Err(Protocol::WrongCount {
            expected,
            got: first.fds.len(),
        }
        .into());
    }
    if first.bytes != 1 {
        return Err(Protocol::DataBytes(first.bytes).into());
    }
    if trailing {
        return Err(Protocol::Trailing.into());
    }
    Ok(first.fds)
}

/// Every descriptor holds the same tap, with the flags asked for.
fn verify(fds: &[OwnedFd], vnet_hdr: bool, queues: u16) -> Result<String, Error> {
    let mask = IFF_TUN | IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE | IFF_PERSIST;
    let mut expected = IFF_TAP | IFF_NO_PI;
    if vnet_hdr {
        expected |= IFF_VNET_HDR;
    }
    if queues > 1 {
        expected |= IFF_MULTI_QUEUE;
    }
    let count = fds.len();
    let mut first: Option<Vec<u8>> = None;
    for (i, fd) in fds.iter().enumerate() {
        let wrong = |why| Error::NotTheTap {
            queue: i + 1,
            count,
            why,
        };
        let (name, flags) = sys::tun_get_iff(fd.as_fd()).map_err(|e| wrong(Mismatch::NotTun(e)))?;
        if flags & mask != expected {
            return Err(wrong(Mismatch::Flags {
                expected,
                got: flags & mask,
            }));
        }
        match &first {
            None => first = Some(name),
            Some(f) if *f == name => {}
            Some(f) => {
                return Err(wrong(Mismatch::OtherInterface {
                    first: String::from_utf8_lossy(f).into_owned(),
                    got: String::from_utf8_lossy(&name).into_owned(),
                }))
            }
        }
    }
    let name = first.unwrap_or_default();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// A tap on the bridge: its name and one descriptor per queue, each
/// close-on-exec. The tap exists as long as any of them is open.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fds: Vec<OwnedFd>,
    vnet_hdr: bool,
}

impl Tap {
    /// The interface's name, as TUNGETIFF reported it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One descriptor per queue, queue 1 first.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Whether the descriptors carry virtio-net headers.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The descriptors, to keep or hand on.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// Lets the program `cmd` will run inherit every queue's descriptor
    /// (and no other of this process's close-on-exec descriptors), and
    /// returns their numbers, which are the same in the child: for QEMU,
    /// `-netdev tap,fds=A:B:C:D`. Keep the `Tap` alive until the spawn.
    ///
    /// ```no_run
    /// # let tap = bridge_helper_client::Helper::new("bridge-helper").bridge("br0").queues(2).run()?;
    /// let mut qemu = std::process::Command::new("qemu-system-x86_64");
    /// let fds = tap.pass_to(&mut qemu);
    /// let list: Vec<String> = fds.iter().map(|fd| fd.to_string()).collect();
    /// qemu.arg("-netdev").arg(format!("tap,id=n0,vhost=off,fds={}", list.join(":")));
    /// # Ok::<(), bridge_helper_client::Error>(())
    /// ```
    pub fn pass_to(&self, cmd: &mut Command) -> Vec<RawFd> {
        let fds: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        sys::inherit_in_child(cmd, fds.clone());
        fds
    }
}
