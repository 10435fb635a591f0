//! The peer of a service connection as the kernel reports it:
//! `SO_PEERCRED`/`SO_PEERGROUPS`, a pidfd for the peer, the peer's process
//! (its `status`, and its user and network namespaces opened as the
//! peer's own user: `as_user`), for a peer below our namespace the first level's
//! `setgroups` probe, and the peer's parent for the audit line. Every
//! `unsafe` block here has a `SAFETY` line; the service
//! (`service::server`) uses these safe functions.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt};

use crate::system::process::{self, Parent};

/// The peer's user namespace, seen from the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNs {
    Same,
    /// Below the service's, `depth` levels down (1: a child of it).
    /// `first_level` is the `setgroups` of the ancestor that is a child of
    /// the service's namespace (the peer's own at depth 1): every
    /// namespace below it has the same value (see the module doc of
    /// [`crate::service`], "User namespaces").
    Below {
        depth: u32,
        first_level: Setgroups,
    },
    /// Not below the service's at all (the service runs in a user
    /// namespace of its own and the peer outside it).
    Outside,
    /// Unknown: the peer's own user may not examine it (the kernel refused
    /// its `/proc/PID/ns/user` to the ids it connected with), so nothing
    /// vouches for its ids.
    Unexaminable,
}

/// A user namespace's `setgroups`, as `/proc/PID/setgroups` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setgroups {
    /// No process in it or below it can ever call setgroups.
    Deny,
    Allow,
    /// Could not be read: the errno of the step that failed.
    Unread(i32),
}

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

/// The peer's `/proc/PID` directory, opened once per connection (its
/// parent's pid and the peer's own facts are read through it: a
/// directory of an exited process reads nothing, whatever took its pid).
/// ENOENT while the peer is alive: a /proc mounted with hidepid= hides
/// it from the service.
pub fn proc_dir(pid: i32) -> Result<fs::File, Errno> {
    fs::File::open(format!("/proc/{pid}")).map_err(io_errno)
}

/// The peer's parent, as a setuid run by the peer would name its own
/// parent in the audit line: its pid (`stat` in the peer's `dir`) and
/// name. Trusted only if, after the reads, the peer (`pidfd`) and the
/// parent (a pidfd opened before its name was read) are both alive and
/// the peer's parent is still that pid: a parent that had exited would
/// have left the peer with another parent before its pid could be
/// reused. So a recycled pid is never named; `None` when that cannot be
/// shown.
pub fn peer_parent(pidfd: BorrowedFd<'_>, dir: &fs::File) -> Option<Parent> {
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
pub fn alive(pidfd: BorrowedFd<'_>) -> bool {
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

/// The peer's user namespace, seen from ours, whether it is in our
/// network namespace, and its `status` text (its own ids now): all from
/// its `/proc/PID` (`dir`), trusted only if the pidfd's process is still alive
/// afterwards (then the pid was never recycled, and they are the
/// peer's). From there the namespace descriptors pin
/// what they name: the walk up to the first level (the ancestor whose
/// parent is ours) and the read of its `setgroups` involve no pid.
///
/// The namespaces are opened as the peer's user, `uid` and `gid` (the ids
/// it connected with), since the kernel lets a process open another's
/// `ns/user` and `ns/net` only if it may ptrace it (PTRACE_MODE_READ_FSCREDS), and the
/// service holds no CAP_SYS_PTRACE (which would let it attach to any
/// process, a fully privileged one included, and so escape its bounding
/// set). A user may examine its own processes, except one that is not
/// dumpable (it changed ids, or runs a setuid, setgid or file-capability
/// program, or asked not to be), holds capabilities, or lives in a user
/// namespace below one the user does not own: such a peer is
/// [`UserNs::Unexaminable`] (and its network namespace is not read).
pub fn peer_process(
    pidfd: BorrowedFd<'_>,
    dir: &fs::File,
    uid: u32,
    gid: u32,
) -> Result<Process, Errno> {
    let ours = fs::metadata("/proc/self/ns/user").map_err(io_errno)?;
    let our_net = fs::metadata("/proc/self/ns/net").map_err(io_errno)?;
    let at = |name: &std::ffi::CStr| {
        crate::system::files::open_at(Some(dir.as_fd()), name, libc::O_RDONLY)
    };
    let status = read_all(at(c"status")?)?;
    let (ns, net) = as_user(uid, gid, || (at(c"ns/user"), at(c"ns/net")))?;
    if !alive(pidfd) {
        return Err(Errno::ESRCH);
    }
    let (userns, own_network) = match ns {
        Ok(ns) => (userns_of(ns, &ours)?, same_file(net?.as_fd(), &our_net)?),
        Err(Errno::EACCES) => (UserNs::Unexaminable, false),
        Err(e) => return Err(e),
    };
    Ok(Process {
        userns,
        own_network,
        status,
    })
}

/// What [`peer_process`] reads of the process that connected.
pub struct Process {
    pub userns: UserNs,
    /// Whether it is in our network namespace: where a setuid run of the
    /// same process would make its tap, and so the only one where the
    /// service may make it (false when the process is unexaminable).
    pub own_network: bool,
    /// `/proc/PID/status`.
    pub status: Vec<u8>,
}

/// Whether `fd` is the file `other` describes (a namespace's inode).
fn same_file(fd: BorrowedFd<'_>, other: &fs::Metadata) -> Result<bool, Errno> {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|st| st.st_dev == other.dev() && st.st_ino == other.ino())
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
    setegid(Gid::from_raw(gid))?;
    // Not dumpable in the window, whatever fs.suid_dumpable says: every
    // change of an effective id sets dumpability to fs.suid_dumpable
    // (commit_creds), so it is cleared after the last one, not before
    // (a clear before would be undone). At 1 this process would be
    // dumpable under the peer's euid, and the peer could read or write
    // its /proc files that check only ownership (red team, round 4).
    let out = seteuid(Uid::from_raw(uid))
        .and_then(|()| nix::sys::prctl::set_dumpable(false))
        .map(|()| f());
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
    let is_ours = |fd: BorrowedFd<'_>| same_file(fd, ours);
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

#[cfg(test)]
mod tests {
    use super::as_user;

    /// In `as_user`'s window the process is not dumpable. The kernel sets
    /// dumpability to fs.suid_dumpable at every change of an effective id,
    /// so only a clear after the last one holds; this fails where
    /// fs.suid_dumpable is 1 if the clear comes first, and cannot tell at
    /// 0 or 2 (the sysctl is global: tests may not change it).
    #[test]
    fn as_user_runs_its_window_not_dumpable() {
        if !nix::unistd::geteuid().is_root() {
            panic!("as_user needs root (CAP_SETUID): run the unit tests as root");
        }
        // A child: seteuid applies to every thread, and the test harness
        // runs others.
        // SAFETY: the child only makes system calls and ends in _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // As the kernel would leave it at fs.suid_dumpable 1.
                let _ = nix::sys::prctl::set_dumpable(true);
                let inside = as_user(65534, 65534, nix::sys::prctl::get_dumpable);
                let code = match inside {
                    Ok(Ok(false)) => 0,
                    Ok(Ok(true)) => 1,
                    _ => 2,
                };
                // SAFETY: ends the child at once, running nothing of the
                // parent's.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "1: dumpable inside as_user's window; 2: as_user failed"
                );
            }
        }
    }
}
