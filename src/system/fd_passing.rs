//! The caller's end of the hand-over: check `--fd`, then send one fd on it.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockType, SockaddrLike, SockaddrStorage,
};
use nix::sys::stat::{fstat, SFlag};

use crate::report::error::Error;
use crate::system::files;

/// Proves that `--fd` is an open, connected Unix socket with a live peer,
/// before anything is created; nothing is ever written to anything else.
pub fn verify(fd: i32, own: &[RawFd]) -> Result<BorrowedFd<'static>, Error> {
    let bad = |why| Error::BadFd { fd, why };
    // A setuid run opens /dev/net/tun before it reads its arguments, at the
    // lowest free number: that descriptor was not inherited.
    if own.contains(&fd) {
        return Err(bad("not an open file descriptor"));
    }
    let sock = files::inherited_fd(fd).map_err(|_| bad("not an open file descriptor"))?;
    let st = fstat(sock.as_raw_fd()).map_err(|e| bad(e.desc()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFSOCK {
        return Err(bad(match kind {
            SFlag::S_IFIFO => "is a pipe, not a Unix socket",
            SFlag::S_IFREG => "is a regular file, not a Unix socket",
            SFlag::S_IFCHR => "is a character device (a terminal or /dev/null?), not a Unix socket",
            SFlag::S_IFDIR => "is a directory, not a Unix socket",
            _ => "is not a socket",
        }));
    }
    let local =
        socket::getsockname::<SockaddrStorage>(sock.as_raw_fd()).map_err(|e| bad(e.desc()))?;
    if local.family() != Some(AddressFamily::Unix) {
        return Err(bad("is a socket, but not a Unix socket"));
    }
    // A datagram socket's holder can connect() it elsewhere after this
    // check; a stream or seqpacket socket's peer is fixed once connected.
    // QEMU and libvirt both pass a stream socketpair.
    match socket::getsockopt(&sock, sockopt::SockType).map_err(|e| bad(e.desc()))? {
        SockType::Stream | SockType::SeqPacket => {}
        _ => return Err(bad("is a datagram socket; a stream socket is needed")),
    }
    if socket::getsockopt(&sock, sockopt::AcceptConn).map_err(|e| bad(e.desc()))? {
        return Err(bad("is a listening socket, not a connected one"));
    }
    match socket::getpeername::<SockaddrStorage>(sock.as_raw_fd()) {
        Ok(_) => {}
        Err(Errno::ENOTCONN) => return Err(bad("is a Unix socket that is not connected")),
        Err(e) => return Err(bad(e.desc())),
    }
    let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).map_err(|e| bad(e.desc()))?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
        return Err(bad("the other end of the socket is already closed"));
    }
    Ok(sock)
}

/// Sends the tap's queues with one zero byte: all of them in one
/// SCM_RIGHTS message, so that the caller gets the whole tap or nothing.
/// With one queue, exactly one fd: the format QEMU and libvirt both
/// expect. Never blocks (a caller's socket is fresh and empty; a full one
/// is an error, not a hang) and never raises SIGPIPE.
pub fn send(sock: BorrowedFd<'_>, fd: i32, queues: &[BorrowedFd<'_>]) -> Result<(), Error> {
    let fds: Vec<RawFd> = queues.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&[0])], &cmsg, flags, None) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let why = "the socket's buffer is full (is anyone reading it?)".into();
                return Err(Error::Send { fd, why });
            }
            Err(e) => return Err(Error::Send { fd, why: e.into() }),
            Ok(1) => return Ok(()),
            // One byte was offered: anything else sent is none.
            Ok(_) => {
                let why = "sent 0 bytes instead of 1".into();
                return Err(Error::Send { fd, why });
            }
        }
    }
}
