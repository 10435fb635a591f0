//! Sending one datagram to syslog's /dev/log.

use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

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
