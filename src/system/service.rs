//! The service's boundary with the kernel (see [`crate::service`]): the
//! listening socket, the peer's identity as the kernel reports it, and the
//! processes a request runs in. Every `unsafe` block here has a `SAFETY`
//! line; the rest of the service uses these safe functions.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, UnixAddr,
};
use nix::unistd::Pid;

use crate::report::escape::Escaped;
use crate::service::identity::{Setgroups, UserNs};
use crate::system::process::{self, Parent};

/// `SO_PEERCRED`: the peer's pid, and its effective uid and gid at
/// `connect()`, in this process's namespaces.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(sock: BorrowedFd<'_>) -> Result<PeerCred, Errno> {
    let c = socket::getsockopt(&sock, sockopt::PeerCredentials)?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// `SO_PEERGROUPS`: the peer's supplementary groups at `connect()`.
pub fn peer_groups(sock: BorrowedFd<'_>) -> Result<Vec<u32>, Errno> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| Errno::E2BIG)?;
        // SAFETY: the buffer is `len` bytes of writable gid_t; the kernel
        // writes at most `len` bytes and sets `len` to what it wrote (or,
        // with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = usize::try_from(len).map_err(|_| Errno::EINVAL)? / size_of::<libc::gid_t>();
        match Errno::result(rc) {
            Ok(_) => {
                groups.truncate(count);
                return Ok(groups);
            }
            // NGROUPS_MAX is 65536: bounded growth.
            Err(Errno::ERANGE) if count > groups.len() && count <= 65536 => {
                groups.resize(count, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A pidfd for the process that connected: `SO_PEERPIDFD` (Linux 6.5+),
/// which cannot name a recycled pid; `pidfd_open` of the pid before it,
/// which can if the peer has exited between its `connect()` and now.
pub fn peer_pidfd(sock: BorrowedFd<'_>, pid: i32) -> Result<OwnedFd, Errno> {
    let mut fd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: an int-sized out buffer and its length.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    match Errno::result(rc) {
        // SAFETY: the kernel just gave us this new descriptor.
        Ok(_) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::ENOPROTOOPT) => pidfd_open(pid),
        Err(e) => Err(e),
    }
}

/// A pidfd for `pid` (Linux 5.3+): readable once the process has exited.
fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(Errno::result(rc)?).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just gave us this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The peer's parent, as a setuid run by the peer would name its own
/// parent in the audit line: its pid (`/proc/PID/stat`) and name. Trusted
/// only if, after the reads, the peer (`pidfd`) and the parent (a pidfd
/// opened before its name was read) are both alive and the peer's parent
/// is still that pid: a parent that had exited would have left the peer
/// with another parent before its pid could be reused. So a recycled pid
/// is never named; `None` when that cannot be shown.
pub fn peer_parent(pidfd: BorrowedFd<'_>, pid: i32) -> Option<Parent> {
    let dir = fs::File::open(format!("/proc/{pid}")).ok()?;
    let ppid = || {
        let stat = crate::system::files::open_at(Some(dir.as_fd()), c"stat", libc::O_RDONLY);
        let mut text = [0u8; 512];
        let n = io::Read::read(&mut fs::File::from(stat.ok()?), &mut text).ok()?;
        process::ppid_in_stat(text.get(..n)?)
    };
    let first = ppid()?;
    let parent = pidfd_open(first).ok()?;
    let comm = process::comm_of(first);
    let trusted = ppid()? == first && alive(pidfd) && alive(parent.as_fd());
    trusted.then_some(Parent { pid: first, comm })
}

/// Whether the process behind `pidfd` is still running (signal 0): ESRCH
/// once it has exited; EPERM (no CAP_KILL for another user's process)
/// still means it is there.
fn alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || Errno::last() == Errno::EPERM
}

/// The peer's user namespace, seen from ours, and its `status` text (its
/// own ids now): both from `/proc/PID`, trusted only if the pidfd's
/// process is still alive afterwards (then the pid was never recycled,
/// and they are the peer's). From there the namespace descriptors pin
/// what they name: the walk up to the first level (the ancestor whose
/// parent is ours) and the read of its `setgroups` involve no pid.
///
/// The namespace is opened as the peer's user, `uid` and `gid` (the ids
/// it connected with), since the kernel lets a process open another's
/// `ns/user` only if it may ptrace it (PTRACE_MODE_READ_FSCREDS) and the
/// service holds no CAP_SYS_PTRACE (which would let it attach to any
/// process, a fully privileged one included, and so escape its bounding
/// set). A user may examine its own processes, except one that is not
/// dumpable (it changed ids, or runs a setuid, setgid or file-capability
/// program, or asked not to be), holds capabilities, or lives in a user
/// namespace below one the user does not own: such a peer is
/// [`UserNs::Unexaminable`].
pub fn peer_process(
    pidfd: BorrowedFd<'_>,
    pid: i32,
    uid: u32,
    gid: u32,
) -> Result<(UserNs, Vec<u8>), Errno> {
    let ours = fs::metadata("/proc/self/ns/user").map_err(io_errno)?;
    let dir = fs::File::open(format!("/proc/{pid}")).map_err(io_errno)?;
    let at = |name: &std::ffi::CStr| {
        crate::system::files::open_at(Some(dir.as_fd()), name, libc::O_RDONLY)
    };
    let status = read_all(at(c"status")?)?;
    let ns = as_user(uid, gid, || at(c"ns/user"))?;
    if !alive(pidfd) {
        return Err(Errno::ESRCH);
    }
    match ns {
        Ok(ns) => Ok((userns_of(ns, &ours)?, status)),
        Err(Errno::EACCES) => Ok((UserNs::Unexaminable, status)),
        Err(e) => Err(e),
    }
}

/// Runs `f` with `uid` and `gid` as the effective (and so file-system)
/// ids, then takes the effective ids back. The effective ones, not only
/// the file-system ones: the kernel finds the owner of a user namespace
/// by the euid. Leaving euid 0 clears the effective capabilities, so `f`
/// acts with none; taking it back makes the permitted ones effective
/// again, as they were. The real and saved ids stay root's throughout,
/// so the user can neither signal nor trace this process meanwhile.
/// `Err` if the ids could not be changed or taken back; then the session
/// must run nothing.
fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> Result<T, Errno> {
    use nix::unistd::{getegid, geteuid, setegid, seteuid, Gid, Uid};
    let (euid, egid) = (geteuid(), getegid());
    // Not dumpable before the window opens, whatever fs.suid_dumpable
    // says: at 1 the kernel would leave this process dumpable under the
    // peer's euid, and the peer could read or write its /proc files
    // that check only ownership (red team, round 4).
    nix::sys::prctl::set_dumpable(false)?;
    setegid(Gid::from_raw(gid))?;
    let out = seteuid(Uid::from_raw(uid)).map(|()| f());
    seteuid(euid)?;
    setegid(egid)?;
    out
}

/// All of a `/proc` file, a page at a time: `status` (~1.5 KiB) in one
/// read and the read that says it ended. Not `read_to_end` into an empty
/// Vec: its 32-byte first read and doubling took ten system calls and
/// ~50 µs of each request (bench/LEVERS.md).
fn read_all(file: OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut file = fs::File::from(file);
    let mut all = Vec::new();
    let mut page = [0u8; 4096];
    loop {
        match io::Read::read(&mut file, &mut page) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&page[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_errno(e)),
        }
    }
}

/// Where `ns` is, seen from ours (`ours`: its metadata).
fn userns_of(ns: OwnedFd, ours: &fs::Metadata) -> Result<UserNs, Errno> {
    let is_ours = |fd: BorrowedFd<'_>| {
        nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|st| st.st_dev == ours.dev() && st.st_ino == ours.ino())
    };
    if is_ours(ns.as_fd())? {
        return Ok(UserNs::Same);
    }
    // The kernel nests user namespaces at most 32 deep: the walk ends.
    let mut first = ns;
    let mut depth = 1;
    loop {
        let parent = match parent_userns(first.as_fd()) {
            Ok(parent) => parent,
            // The parent is not visible from ours: not below it at all.
            Err(Errno::EPERM) => return Ok(UserNs::Outside),
            Err(e) => return Err(e),
        };
        if is_ours(parent.as_fd())? {
            break;
        }
        first = parent;
        depth += 1;
    }
    Ok(UserNs::Below {
        depth,
        first_level: setgroups_of_child(first.as_fd()),
    })
}

/// `NS_GET_PARENT`: the user namespace `ns` was created in.
fn parent_userns(ns: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new
    // descriptor or -1.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_PARENT) };
    // SAFETY: the kernel just gave us this new descriptor.
    Errno::result(rc).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How long the service waits for the setgroups probe: it does three
/// system calls, so only a child stopped by the namespace's owner takes
/// longer.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The `setgroups` of `ns`, a child of our user namespace, which may hold
/// no process at all (bubblewrap's first level once its pid 1 has moved
/// into the second): a child process joins `ns` and reads
/// `/proc/self/setgroups` there. To join it, the child takes the euid of
/// `ns`'s owner, who has every capability in a child namespace it owns,
/// so the service needs no CAP_SYS_ADMIN, only to be allowed `setns` to a
/// user namespace (RestrictNamespaces=user). The child does nothing else
/// and tells the answer by its exit status. The owner can kill or stop it
/// once it has joined (the owner holds CAP_KILL there): the peer is then
/// refused, and a child that has not answered within [`PROBE_DEADLINE`]
/// is killed and the peer refused, so a stopped child holds the request
/// for at most that long, not until the session's deadline.
fn setgroups_of_child(ns: BorrowedFd<'_>) -> Setgroups {
    // Exit codes no errno and no ordinary exit (0) can be mistaken for.
    const DENY: i32 = 201;
    const ALLOW: i32 = 200;
    let mut owner: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer given.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_OWNER_UID, &raw mut owner) };
    if let Err(e) = Errno::result(rc) {
        return Setgroups::Unread(e as i32);
    }
    let owner = nix::unistd::Uid::from_raw(owner);
    // Only async-signal-safe calls on what exists before the fork, no
    // allocation: sound whatever threads the caller has.
    let join_and_read = || -> Result<i32, Errno> {
        // Only the euid: with real and saved uid 0 the owner can neither
        // signal nor trace the child yet. Not dumpable before joining: in
        // `ns`, where the owner holds every capability, only that keeps
        // it from being traced (whatever fs.suid_dumpable says).
        nix::unistd::seteuid(owner)?;
        nix::sys::prctl::set_dumpable(false)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)?;
        let fd = nix::fcntl::open(
            c"/proc/self/setgroups",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let mut text = [0u8; 8];
        let n = nix::unistd::read(fd, &mut text)?;
        match &text[..n] {
            b"deny\n" => Ok(DENY),
            b"allow\n" => Ok(ALLOW),
            _ => Err(Errno::EIO),
        }
    };
    // SAFETY: the child runs only `join_and_read` (system calls, no
    // allocation, no lock) and ends in _exit.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = join_and_read().unwrap_or_else(|e| e as i32);
            // SAFETY: _exit ends this process at once, running nothing of
            // the parent's (no atexit handler, no buffer flush).
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Setgroups::Unread(e as i32),
    };
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::{waitpid, WaitStatus};
    let answered = pidfd_open(child.as_raw()).and_then(|pidfd| {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(PROBE_DEADLINE.as_millis()).unwrap_or(u16::MAX);
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Err(Errno::EINTR) => {}
                Ok(0) => break Err(Errno::ETIMEDOUT),
                other => break other.map(drop),
            }
        }
    });
    if let Err(e) = answered {
        // Stopped by the owner, or no pidfd: no answer waited for longer.
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Setgroups::Unread(e as i32);
    }
    let status = loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => {}
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, DENY)) => Setgroups::Deny,
        Ok(WaitStatus::Exited(_, ALLOW)) => Setgroups::Allow,
        Ok(WaitStatus::Exited(_, errno)) => Setgroups::Unread(errno),
        // Killed (by the owner, whose euid it had): no answer.
        Ok(_) => Setgroups::Unread(libc::EINTR),
        Err(e) => Setgroups::Unread(e as i32),
    }
}

fn io_errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

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
    fs::create_dir_all(dir)?;
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
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; crate::cli::MAX_QUEUES as usize]);
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
            Ok(_) => {}
            Err(e) => return Err(e),
        }
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
