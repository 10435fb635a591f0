//! `bridge-helper --serve`: the listening loop and the session each
//! connection gets (see [`crate::service`] for the design).
//!
//! The loop is one thread and reads nothing a client sends: it accepts,
//! asks the kernel who connected, counts the connection against the
//! bounds, and forks a session for it. Sessions run in process groups of
//! their own, so that one past its deadline is killed with its run.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{self, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use crate::policy::compiled::SOCKET_PATH;
use crate::report::audit;
use crate::report::error::{Error, ServiceFault};
use crate::service::identity::{self, Peer, Refusal, SubRange};
use crate::service::wire::{self, Answer, Request};
use crate::service::{IDLE_EXIT, MAX_CONNECTIONS, MAX_PER_UID, REQUEST_DEADLINE, SESSION_DEADLINE};
use crate::system::peer::{self, PeerCred};
use crate::system::process::Parent;
use crate::system::service as sys;
use crate::system::{privileges, startup, users};

/// A session the loop is waiting for.
struct Session {
    /// The user it counts against (see `identity::accountable`).
    uid: u32,
    started: Instant,
}

/// How often a user's busy refusals are logged: one line, then a count.
const BUSY_LOG_EVERY: Duration = Duration::from_secs(1);

/// Busy refusals, logged at most once per [`BUSY_LOG_EVERY`] for each
/// user they count against, the next line saying how many went unlogged.
/// A refusal costs the loop no fork, so one user could otherwise log
/// far more lines a second than sessions can, filling the journal (and,
/// where the service runs without its unit's LogRateLimitBurst=, making
/// journald's per-unit rate limit drop every user's lines, grants
/// included).
#[derive(Default)]
struct BusyLog(HashMap<u32, (Instant, u32)>);

impl BusyLog {
    /// Whether to log a refusal of `uid` now: `Some` with the number of
    /// its refusals not logged since its last line, or `None`.
    fn admit(&mut self, uid: u32, now: Instant) -> Option<u32> {
        let fresh = |at: Instant| now.duration_since(at) < BUSY_LOG_EVERY;
        if self.0.len() >= MAX_CONNECTIONS {
            self.0.retain(|_, (at, _)| fresh(*at));
        }
        match self.0.get_mut(&uid) {
            Some((at, unlogged)) if fresh(*at) => {
                *unlogged = unlogged.saturating_add(1);
                None
            }
            entry => {
                let unlogged = entry.map_or(0, |(_, n)| *n);
                self.0.insert(uid, (now, 0));
                Some(unlogged)
            }
        }
    }
}

/// `bridge-helper --serve`, by root: anything else (more arguments, a
/// setuid copy run by a user) is an ordinary run, whose parser refuses it.
pub fn asked_to_serve() -> bool {
    let mut argv = std::env::args_os().skip(1);
    let only_serve = argv.next().is_some_and(|a| a == "--serve") && argv.next().is_none();
    only_serve
        && nix::unistd::getresuid().is_ok_and(|ids| ids.real.is_root() && ids.effective.is_root())
}

/// What a session runs its request with: `main`'s entry point of a
/// request to the service (everything a setuid run for the request does,
/// from the privilege drop to the exit status and the one line on
/// stderr), given the audit record of the peer, the request as read from
/// the wire and the connection's fd for the tap. The run makes the
/// request the parser's typed request after its drop ([`Request::attach`]).
pub type Run = fn(audit::Record, &Request, i32) -> u8;

/// Runs the service until it has been idle for [`IDLE_EXIT`] (when
/// socket-activated: systemd starts it again) or forever (when it bound
/// the socket itself). Each session calls `run`. Root only: `main` calls
/// it only when [`asked_to_serve`] found root asking.
pub fn serve(run: Run) -> Result<(), Error> {
    let listen = |e| Error::Service(ServiceFault::Listen(e));
    let (listener, activated) = match sys::activated_listener().map_err(listen)? {
        Some(sock) => (sock, true),
        None => (
            sys::bind_listener(Path::new(SOCKET_PATH)).map_err(listen)?,
            false,
        ),
    };
    // The unit's capability set and no_new_privs, whoever started us.
    privileges::enter_service()?;
    // The state every session's run starts from (see crate::service, "Why
    // no exec"): set once, the loop changes none of it. The environment
    // is systemd's (or root's shell's); a run reads none of it, and gets
    // none, as when it was executed with an empty one.
    startup::reset_signals();
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    let mut sessions: HashMap<Pid, Session> = HashMap::new();
    let mut busy_log = BusyLog::default();
    let mut idle_since = Instant::now();
    loop {
        reap(&mut sessions);
        let now = Instant::now();
        for (pid, s) in &sessions {
            if now.duration_since(s.started) >= SESSION_DEADLINE {
                // The session and its run: a run past the deadline is
                // stuck, and its tap goes with its descriptors.
                let _ = killpg(*pid, Signal::SIGKILL);
            }
        }
        if !sessions.is_empty() {
            idle_since = now;
        } else if activated && now.duration_since(idle_since) >= IDLE_EXIT {
            return Ok(());
        }
        // Wake for the next deadline or reap; sessions end in milliseconds.
        let wait = if sessions.is_empty() {
            IDLE_EXIT
        } else {
            Duration::from_millis(100)
        };
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(Error::kernel("polling the service socket", e)),
        }
        let Ok(conn) = sys::accept(listener.as_fd()) else {
            continue;
        };
        let Ok(cred) = peer::peer_cred(conn.as_fd()) else {
            continue;
        };
        // A user with a subordinate range has many uids: each of them
        // counts against that user, or one user could fill every slot (a
        // session refuses such a peer, by this same reading, but only once
        // it has read a request).
        let subuids = identity::parse_subids(&std::fs::read("/etc/subuid").unwrap_or_default());
        let charged = identity::accountable(cred.uid, &subuids, |owner| {
            users::uid_of(owner).map(Uid::as_raw)
        });
        let mine = sessions.values().filter(|s| s.uid == charged).count();
        if sessions.len() >= MAX_CONNECTIONS || mine >= MAX_PER_UID {
            let busy = if mine >= MAX_PER_UID {
                ServiceFault::BusyUser {
                    max: MAX_PER_UID,
                    uid: charged,
                }
            } else {
                ServiceFault::Busy {
                    max: MAX_CONNECTIONS,
                }
            };
            let busy = Error::from(busy);
            if let Some(unlogged) = busy_log.admit(charged, now) {
                audit::service_busy(Uid::from_raw(cred.uid), &busy, unlogged);
            }
            answer_error(conn.as_fd(), &busy);
            continue;
        }
        match sys::fork() {
            Ok(Some(pid)) => {
                sessions.insert(
                    pid,
                    Session {
                        uid: charged,
                        started: Instant::now(),
                    },
                );
            }
            Ok(None) => {
                drop(listener);
                let code = session(conn, cred, &subuids, run);
                std::process::exit(code);
            }
            Err(e) => answer_error(
                conn.as_fd(),
                &Error::kernel("starting a session for the request", e),
            ),
        }
    }
}

/// Collects every session that has ended.
fn reap(sessions: &mut HashMap<Pid, Session>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    sessions.remove(&pid);
                }
            }
        }
    }
}

/// One connection, in its own process: returns the process's exit code
/// (for the service's bookkeeping only; the client has its answer). A
/// request refused here is logged here; a run logs its own. `subuids`:
/// `/etc/subuid` as the loop read it for this connection just before the
/// fork (never another connection's reading).
fn session(conn: OwnedFd, cred: PeerCred, subuids: &[SubRange], run: Run) -> i32 {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let pidfd = peer::peer_pidfd(conn.as_fd(), cred.pid);
    let dir = peer::proc_dir(cred.pid);
    // Read as root, before anything else: the peer is there while it
    // asks (a forwarder waits for its answer, and its VMM for it).
    let parent = match (&pidfd, &dir) {
        (Ok(pidfd), Ok(dir)) => peer::peer_parent(pidfd.as_fd(), dir),
        _ => None,
    };
    let request = match read_request(conn.as_fd(), Instant::now() + REQUEST_DEADLINE) {
        Ok(Some(request)) => request,
        // Closed before its first byte (`--check`'s probe, a port scan):
        // nothing was asked, so nothing is refused or logged. Logging it
        // would put a false refusal in the audit trail for every user's
        // check; an unlogged empty connection gains a hostile user
        // nothing, as it counted against the same session bounds.
        Ok(None) => return 0,
        Err(e) => return refused(conn.as_fd(), cred, parent.as_ref(), None, &e),
    };
    let peer = match identify(conn.as_fd(), cred, pidfd, dir) {
        Ok(peer) => peer,
        Err(e) => return refused(conn.as_fd(), cred, parent.as_ref(), Some(&request), &e),
    };
    match run_request(conn.as_fd(), peer, subuids, &request, parent.clone(), run) {
        Ok(()) => 0,
        Err(e) => refused(conn.as_fd(), cred, parent.as_ref(), Some(&request), &e),
    }
}

/// Logs and answers a request refused before any run; the session's
/// exit code.
fn refused(
    conn: BorrowedFd<'_>,
    cred: PeerCred,
    parent: Option<&Parent>,
    request: Option<&Request>,
    e: &Error,
) -> i32 {
    let bridge = request.map(|r| r.bridge.as_slice());
    audit::service_refused(Uid::from_raw(cred.uid), parent, bridge, e);
    answer_error(conn, e);
    1
}

/// Runs `request` in this process as a setuid run by the peer (see
/// [`crate::service`], "Why no exec") and sends its status and line.
fn run_request(
    conn: BorrowedFd<'_>,
    peer: Peer,
    subuids: &[SubRange],
    request: &Request,
    parent: Option<Parent>,
    run: Run,
) -> Result<(), Error> {
    // `/etc/subuid` is not read again: the loop's reading for this very
    // connection, one fork ago, is as fresh as a second one (and is what
    // it was charged by).
    let subgids = identity::parse_subids(&std::fs::read("/etc/subgid").unwrap_or_default());
    if let Some(why) = identity::refusal(&peer, subuids, &subgids) {
        return Err(Error::PeerRefused(why));
    }
    let stderr = sys::run_descriptors(conn)
        .map_err(|e| Error::kernel("preparing the run's descriptors", e))?;
    let groups: Vec<Gid> = peer.groups.iter().copied().map(Gid::from_raw).collect();
    privileges::enter_setuid_run(Uid::from_raw(peer.uid), Gid::from_raw(peer.gid), &groups)?;
    let status = run(audit::Record::for_peer(parent), request, conn.as_raw_fd());
    let line = sys::read_line(stderr.as_fd(), wire::MAX_LINE);
    send_answer(conn, &Answer { status, line });
    Ok(())
}

/// The peer as the kernel sees it, refused if its namespace cannot be read.
/// `dir`: its `/proc/PID`, opened when it connected.
fn identify(
    conn: BorrowedFd<'_>,
    cred: PeerCred,
    pidfd: Result<OwnedFd, Errno>,
    dir: Result<std::fs::File, Errno>,
) -> Result<Peer, Error> {
    let kernel = |what, why| Error::PeerRefused(Refusal::Unreadable { what, why });
    let groups = peer::peer_groups(conn).map_err(|e| kernel("SO_PEERGROUPS", e))?;
    let pidfd = pidfd.map_err(|e| kernel("the peer's pidfd", e))?;
    let unreadable = |e| {
        kernel(
            "the connecting process's namespaces (did it exit before its answer?)",
            e,
        )
    };
    let dir = dir.map_err(|e| {
        // Alive, yet no /proc/PID: a /proc mounted with hidepid= shows
        // the service no process of another user's but its group's. Only
        // the directory itself: a client whose first thread exited (a
        // zombie leader, the rest alive) has /proc/PID without ns/net,
        // and must not pick this line, which names a /proc setting.
        if e == Errno::ENOENT && peer::alive(pidfd.as_fd()) {
            Error::PeerRefused(Refusal::ProcHidden(cred.uid))
        } else {
            unreadable(e)
        }
    })?;
    let process =
        peer::peer_process(pidfd.as_fd(), &dir, cred.uid, cred.gid).map_err(unreadable)?;
    Ok(Peer {
        uid: cred.uid,
        gid: cred.gid,
        groups,
        userns: process.userns,
        own_network: process.own_network,
        process: identity::status_ids(&process.status),
    })
}

/// Reads one request, checking each byte as it arrives, until
/// `deadline`: a silent or trickling client is answered then. `None`: the
/// client closed the connection before its first byte.
fn read_request(conn: BorrowedFd<'_>, deadline: Instant) -> Result<Option<Request>, Error> {
    let mut buf = Vec::with_capacity(wire::MAX_REQUEST);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let secs = REQUEST_DEADLINE.as_secs();
            return Err(ServiceFault::NoRequest { secs }.into());
        }
        let mut fds = [PollFd::new(conn, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(Error::kernel("waiting for the request", e)),
        }
        let mut chunk = [0u8; wire::MAX_REQUEST];
        let room = wire::MAX_REQUEST - buf.len();
        let n = match socket::recv(conn.as_raw_fd(), &mut chunk[..room], MsgFlags::MSG_DONTWAIT) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::BadRequest(wire::WireError::Short)),
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(Error::kernel("reading the request", e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(request) = Request::decode(&buf)? {
            return Ok(Some(request));
        }
    }
}

/// The answer for a request refused before any run: the one line a run
/// would print, with its status.
fn answer_error(conn: BorrowedFd<'_>, e: &Error) {
    send_answer(
        conn,
        &Answer {
            status: e.status(),
            line: format!("bridge-helper: {e}\n").into_bytes(),
        },
    );
}

/// Never blocks and never raises SIGPIPE: a client that does not read
/// loses its answer, and holds nothing.
fn send_answer(conn: BorrowedFd<'_>, answer: &Answer) {
    let frame = answer.encode();
    let _ = socket::sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[],
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_refusals_are_logged_once_a_second_per_user_with_a_count() {
        let mut log = BusyLog::default();
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(log.admit(1000, t0), Some(0));
        assert_eq!(log.admit(1000, later(10)), None);
        assert_eq!(log.admit(1000, later(999)), None);
        // Another user's line is not held back by the first one's flood.
        assert_eq!(log.admit(1001, later(500)), Some(0));
        assert_eq!(log.admit(1000, later(1000)), Some(2));
        assert_eq!(log.admit(1000, later(1500)), None);
        assert_eq!(log.admit(1000, later(2600)), Some(1));
        assert_eq!(log.admit(1000, later(4000)), Some(0));
    }

    #[test]
    fn the_busy_log_forgets_quiet_users_instead_of_growing() {
        let mut log = BusyLog::default();
        let t0 = Instant::now();
        for uid in 0..u32::try_from(MAX_CONNECTIONS).unwrap() {
            log.admit(uid, t0);
        }
        log.admit(u32::MAX, t0 + BUSY_LOG_EVERY);
        assert_eq!(log.0.len(), 1);
    }
}
