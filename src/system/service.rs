//! The service's sockets and processes (see [`crate::service`]): the
//! listening socket (socket-activated or bound), each connection and the
//! process it runs in, the descriptors a run starts with there, and the
//! forwarder's side of a connection. The peer's identity is
//! [`crate::system::peer`]. Every `unsafe` block here has a `SAFETY`
//! line; the rest of the service uses these safe functions.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, UnixAddr,
};
use nix::unistd::Pid;

use crate::report::escape::Escaped;

/// Why the service has no socket to listen on.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_FDS is not 1: give the service exactly one socket")]
    FdCount,
    #[error("fd 3 from systemd: {}", .0.desc())]
    Fd3(Errno),
    #[error("the socket from systemd {0}")]
    Wrong(&'static str),
    #[error("{}", .0.desc())]
    Errno(Errno),
    /// A step of binding the socket at `path`.
    #[error("{doing} {}: {why}", Escaped(path.as_os_str().as_bytes()))]
    Bind {
        doing: &'static str,
        path: PathBuf,
        why: BindCause,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BindCause {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Errno(#[from] Errno),
    #[error("not a socket")]
    NotASocket,
    #[error("it is not a directory of root's that only root may write to (fix: remove it, or chown root and chmod 0755 it)")]
    UnsafeDirectory,
}

/// The listening socket systemd handed over (`LISTEN_PID` is us,
/// `LISTEN_FDS=1`: fd 3), checked to be a listening Unix stream socket.
/// `None` when not socket-activated.
pub fn activated_listener() -> Result<Option<OwnedFd>, ListenError> {
    let for_us = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    if !for_us {
        return Ok(None);
    }
    if std::env::var("LISTEN_FDS").ok().as_deref() != Some("1") {
        return Err(ListenError::FdCount);
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    crate::system::files::inherited_fd(SD_LISTEN_FDS_START).map_err(ListenError::Fd3)?;
    // SAFETY: fd 3 is open (checked above) and was given to this process
    // by systemd; nothing else in it owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    // No run may inherit it.
    nix::fcntl::fcntl(
        sock.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(ListenError::Fd3)?;
    check_listener(sock.as_fd())?;
    Ok(Some(sock))
}

fn check_listener(sock: BorrowedFd<'_>) -> Result<(), ListenError> {
    let bad = |why| Err(ListenError::Wrong(why));
    let local = socket::getsockname::<socket::SockaddrStorage>(sock.as_raw_fd())
        .map_err(ListenError::Errno)?;
    if local.family() != Some(AddressFamily::Unix) {
        return bad("is not a Unix socket (ListenStream= a path)");
    }
    if socket::getsockopt(&sock, sockopt::SockType).map_err(ListenError::Errno)? != SockType::Stream
    {
        return bad("is not a stream socket (ListenStream=)");
    }
    if !socket::getsockopt(&sock, sockopt::AcceptConn).map_err(ListenError::Errno)? {
        return bad("is not listening (Accept=no)");
    }
    Ok(())
}

/// Binds `path` (mode 0666: the ACL is the gate) in a directory made 0755
/// if missing; a stale socket from an earlier service is replaced, any
/// other file is left alone and refused.
pub fn bind_listener(path: &Path) -> Result<OwnedFd, ListenError> {
    let fail = |doing, why: BindCause| ListenError::Bind {
        doing,
        path: path.to_path_buf(),
        why,
    };
    if let Some(dir) = path.parent() {
        socket_directory(dir).map_err(|e| fail("preparing the directory of", e))?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(|e| fail("removing the stale", e.into()))?
        }
        Ok(_) => return Err(fail("refusing to replace", BindCause::NotASocket)),
        Err(_) => {}
    }
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail("socket for", e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| fail("address", e.into()))?;
    socket::bind(sock.as_raw_fd(), &addr).map_err(|e| fail("binding", e.into()))?;
    // bind(2) gives the socket 0777 less the umask; its mode is set before
    // the first connection can be accepted (SocketMode=0666 in the unit).
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .map_err(|e| fail("chmod 0666", e.into()))?;
    socket::listen(&sock, Backlog::new(128).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| fail("listening on", e.into()))?;
    Ok(sock)
}

/// Makes the socket's directory, if missing, 0755 whatever the umask, as
/// the socket unit's DirectoryMode=0755 does: an init system may start
/// the service with root's 077, which would make it 0700 and keep every
/// user from the socket. One that exists is left as it is (as systemd
/// leaves it) if it is a directory of root's that no one else may write
/// to; anything else is refused: only root can have made it in root's
/// /run, so it is a mistake, and users must not be able to swap the
/// socket a VMM connects to.
fn socket_directory(dir: &Path) -> Result<(), BindCause> {
    if let Ok(m) = fs::symlink_metadata(dir) {
        return if m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0 {
            Ok(())
        } else {
            Err(BindCause::UnsafeDirectory)
        };
    }
    // Made 0700 and only then opened to 0755: under a umask of 000 it
    // would otherwise be 0777 for a moment, and a user could plant a
    // `socket` in it (red team, round 4).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The next connection, close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new process for one connection. The service is single-threaded, so
/// the child may do anything after the fork, and runs its request in it
/// (see service::server).
pub fn fork() -> Result<Option<Pid>, Errno> {
    // SAFETY: the service process never starts a thread (see
    // service::server), so no lock can be held by a thread that does not
    // exist in the child.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// The descriptors a run starts with in a session, as a run of the binary
/// the session had started would have them: `/dev/null` on stdin and
/// stdout, a pipe on stderr, `conn` (its `--fd`), and nothing else: not
/// the listening socket, no other connection, nothing the service
/// inherited. Returns the pipe's read end, non-blocking, for the run's
/// line once it has returned ([`read_line`]); the write end is
/// non-blocking too, so a run that printed more than the pipe holds loses
/// the rest instead of waiting for a reader that is itself. The caller
/// must own no other descriptor: every one is closed.
pub fn run_descriptors(conn: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    use nix::fcntl::OFlag;
    let null = crate::system::files::open_at(None, c"/dev/null", libc::O_RDWR)?;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // Numbers 0 to 2 are in use (systemd's stdio): nothing placed there
    // below can be one of these.
    let keep = [conn.as_raw_fd(), read.as_raw_fd()];
    if [null.as_raw_fd(), write.as_raw_fd()]
        .iter()
        .chain(&keep)
        .any(|&fd| fd <= libc::STDERR_FILENO)
    {
        return Err(Errno::EBADF);
    }
    for (from, to) in [(&null, 0), (&null, 1), (&write, 2)] {
        nix::unistd::dup2(from.as_raw_fd(), to)?;
    }
    drop((null, write));
    let mut keep = keep;
    keep.sort_unstable();
    let mut first = libc::STDERR_FILENO + 1;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, RawFd::MAX)?;
    Ok(read)
}

fn close_range(first: RawFd, last: RawFd) -> Result<(), Errno> {
    let (first, last) = (
        libc::c_uint::try_from(first).map_err(|_| Errno::EBADF)?,
        libc::c_uint::try_from(last).map_err(|_| Errno::EBADF)?,
    );
    // SAFETY: close_range takes two numbers and flags; the caller owns no
    // descriptor in the range (see run_descriptors), so nothing is closed
    // under an owner that would close it again.
    match Errno::result(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }) {
        // Before Linux 5.9: one by one, up to the soft RLIMIT_NOFILE (the
        // service never lowers it, so no descriptor of its lies above).
        Err(Errno::ENOSYS) => {
            let most = super::files::nofile_limit()?;
            for fd in first..last.min(libc::c_uint::try_from(most).unwrap_or(libc::c_uint::MAX)) {
                if let Ok(fd) = RawFd::try_from(fd) {
                    let _ = nix::unistd::close(fd);
                }
            }
            Ok(())
        }
        other => other.map(drop),
    }
}

/// What is in `pipe` (non-blocking) now, at most `max` bytes.
pub fn read_line(pipe: BorrowedFd<'_>, max: usize) -> Vec<u8> {
    let mut line = vec![0u8; max];
    let mut got = 0;
    while got < max {
        match nix::unistd::read(pipe.as_raw_fd(), &mut line[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    line.truncate(got);
    line
}

/// A connection to the service at `path`, close-on-exec.
pub fn connect(path: &Path) -> Result<OwnedFd, Errno> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(sock)
}

/// The owner, group and mode of `path` (not followed if a link), for a
/// line only: why a connect was refused.
pub fn owner_and_mode(path: &Path) -> Option<(u32, u32, u32)> {
    let meta = fs::symlink_metadata(path).ok()?;
    Some((meta.uid(), meta.gid(), meta.mode()))
}

/// Ends `conn`'s sending side and waits until `deadline` for the other
/// side to close it: `Ok(true)` when it did (a process read the empty
/// connection and closed it), `Ok(false)` when bytes came instead (an
/// answer: something read it too), `Err(ETIMEDOUT)` when nothing did,
/// `Err(ECONNRESET)` when the listening socket closed unaccepted.
pub fn closed_by_peer(conn: BorrowedFd<'_>, deadline: std::time::Instant) -> Result<bool, Errno> {
    socket::shutdown(conn.as_raw_fd(), socket::Shutdown::Write)?;
    loop {
        wait_readable(conn, deadline)?;
        let mut byte = [0u8; 1];
        match socket::recv(conn.as_raw_fd(), &mut byte, socket::MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n == 0),
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `conn` has something to read, or fails with ETIMEDOUT at
/// `deadline`.
fn wait_readable(conn: BorrowedFd<'_>, deadline: std::time::Instant) -> Result<(), Errno> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Errno::ETIMEDOUT);
        }
        let mut p = [PollFd::new(conn, PollFlags::POLLIN)];
        match poll(
            &mut p,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Sends `request` whole on `conn`, or fails.
pub fn send_request(conn: BorrowedFd<'_>, request: &[u8]) -> Result<(), Errno> {
    let sent = socket::send(conn.as_raw_fd(), request, socket::MsgFlags::MSG_NOSIGNAL)?;
    if sent != request.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// One read from the service by `deadline`: at most `room` bytes (at
/// least one), and every descriptor that came with them. A read that
/// brings descriptors ends with their message (the kernel never joins it
/// to what follows), so the caller sees the tap the moment it arrives
/// (see service::forward). No bytes: the service has closed.
pub fn receive(
    conn: BorrowedFd<'_>,
    room: usize,
    deadline: std::time::Instant,
) -> Result<(Vec<u8>, Vec<OwnedFd>), Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; crate::system::SCM_MAX_FD as usize]);
    loop {
        wait_readable(conn, deadline)?;
        let mut buf = vec![0u8; room.max(1)];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = match socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            // The service closed with bytes of ours unread (it answered
            // before reading the whole request): a close.
            Err(Errno::ECONNRESET) => return Ok((Vec::new(), Vec::new())),
            other => other?,
        };
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: SCM_RIGHTS just installed these descriptors in
                // this process; nothing else owns them.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(Errno::EMSGSIZE);
        }
        buf.truncate(n);
        return Ok((buf, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory the service binds in: made 0755 when missing; kept
    /// when root's and writable by root only; refused otherwise, so no
    /// user can swap the socket VMMs connect to.
    #[test]
    fn the_socket_directory_is_made_or_kept_only_when_safe() {
        let base = std::env::temp_dir().join(format!("bh-sockdir-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let missing = base.join("made");
        socket_directory(&missing).unwrap();
        let mode = fs::metadata(&missing).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let file = base.join("file");
        fs::write(&file, b"").unwrap();
        let root = nix::unistd::geteuid().is_root();
        for (dir, safe) in [(&missing, root), (&open, false), (&file, false)] {
            let got = socket_directory(dir);
            assert_eq!(got.is_ok(), safe, "{}: {got:?}", dir.display());
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
