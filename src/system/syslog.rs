//! Sending one datagram to syslog's /dev/log, and who our parent is.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

use crate::report::audit::comm_name;
use crate::system::raw;

const DEV_LOG: &str = "/dev/log";

/// Sends `datagram` to /dev/log without waiting: a missing socket, a
/// full one or a reader that never reads loses the line, never the run.
pub fn send(datagram: &[u8]) {
    let Ok(sock) = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return;
    };
    let Ok(addr) = UnixAddr::new(DEV_LOG) else {
        return;
    };
    let _ = socket::sendto(sock.as_raw_fd(), datagram, &addr, MsgFlags::MSG_DONTWAIT);
}

/// The process that ran us.
pub struct Parent {
    pub pid: i32,
    /// Its name as /proc/PID/comm gives it (the kernel's 15 bytes).
    pub comm: Option<Vec<u8>>,
}

pub fn parent() -> Parent {
    let pid = nix::unistd::getppid().as_raw();
    // comm rather than status: the same name, unescaped (the line escapes
    // it), without the memory and scheduling figures status gathers first
    // (12 µs a run, bench/LEVERS.md). At most 15 bytes and a newline.
    let mut text = [0u8; 64];
    let comm = CString::new(format!("/proc/{pid}/comm"))
        .ok()
        .and_then(|path| raw::open_at(None, &path, libc::O_RDONLY).ok())
        .and_then(|fd| std::fs::File::from(fd).read(&mut text).ok())
        .and_then(|n| comm_name(text.get(..n)?));
    Parent { pid, comm }
}
