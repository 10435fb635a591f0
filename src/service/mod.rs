//! The service: the same binary, run as root by systemd (or by hand) with
//! `--serve`, hands out taps to unprivileged callers over a Unix socket,
//! so that no file on the host needs the setuid bit or a file capability,
//! and a sandboxed VMM that is given the socket can use it.
//!
//! # The pieces
//! - [`wire`]: the request and answer, versioned, bounded, pure code.
//! - [`identity`]: which peers the service answers for, pure code.
//! - [`server`]: the listening loop and one process per connection.
//! - [`forward`]: the forwarder, what an unprivileged copy of the binary
//!   does instead of failing: it asks the service and relays the answer.
//!
//! # The socket
//! [`SOCKET_PATH`](crate::policy::compiled::SOCKET_PATH), fixed at build time: one path to document and to grant
//! in AppArmor and sandboxes. systemd hands it over (`LISTEN_FDS`, socket
//! activation, [`crate::system::service`]); without systemd the service
//! binds it itself. Its mode is the gate of who may ask at all (0666 by
//! default: the ACL decides); everything after that is the ACL's.
//!
//! # One request
//! The service accepts, reads the peer's identity from the kernel
//! (`SO_PEERCRED`: uid, gid, pid; `SO_PEERGROUPS`; `SO_PEERPIDFD` where the
//! kernel has it), counts the connection against the bounds (in total and
//! per uid) and forks a session for it, a process of its own (the service
//! loop itself reads nothing a client sends). The session reads the
//! request under a deadline, decides whether it answers for this peer at
//! all ([`identity`]) and then runs the request as a setuid run by that
//! user with those groups, in itself: it takes the real uid and gid and
//! the supplementary groups of the peer and keeps an effective uid of 0
//! (`system::privileges::enter_setuid_run`), exactly the state the kernel
//! leaves a setuid-root program in, with `/dev/null` on stdin and stdout,
//! a pipe on stderr and the connection as `--fd`. It hands `main` the
//! request as read from the wire. The run drops privileges as a setuid
//! run does (`system::privileges`), then makes the request the typed
//! value a setuid run's parser makes of the same command line, through
//! the parser's own checks ([`wire::Request::attach`]: no second parse,
//! and no second implementation of a check; a name the parser refuses is
//! refused with the parser's line). From there the run is a setuid run
//! after its parse: the same files and include scoping read as the
//! caller, the same decision code (`steps`), the same tap code, and the
//! tap is sent on the connection as on any `--fd`. The session then
//! sends the run's exit status and stderr ([`wire::Answer`]) and exits.
//!
//! Why no exec: the session is a fork of this same binary, which has run
//! only its own code since it started as root (systemd's or root's
//! choice, never a user's: a user reaches it only through the bytes of a
//! request, read and checked before anything else), so there is no
//! untrusted image or start-up state an exec would wash off. What an exec
//! did reset is reset without it: every descriptor but the connection and
//! the run's stdio is closed (the listening socket and every other
//! connection included: `system::service::run_descriptors`), the ids are
//! set by the code of `system::privileges` and the process made
//! non-dumpable as a setuid exec makes it, and the signal dispositions
//! (all default but the four this binary's own start-up ignores), the
//! signal mask (empty) and the environment (empty) are set once when the
//! service starts, and the loop changes none of them. Rlimits, umask,
//! working directory, namespaces and the capability bounding set are the
//! service's, as they were for an executed run. The loop never starts a
//! thread, so the fork leaves no lock held. The exec cost a fresh image
//! per request (forwarder and service took about 1.7 times a setuid run;
//! without the exec about 1.4 times, see the bench). What the exec gave
//! and a fork does not: a fresh address layout and stack canary per
//! request. Every session shares the service's, so a memory bug in the
//! `unsafe` code, were one ever found, could be retried against the same
//! layout; that is the price taken for the speed, in code that keeps all
//! of its `unsafe` in `system/`, each block with its argument.
//!
//! # The audit line
//! A run logs its parent. A session's run logs what a setuid run by the
//! peer would: the parent of the process that connected (for the
//! forwarder, the VMM that ran it; for a VMM that connects itself, its
//! own parent), read as root from `/proc` through pidfds and trusted only
//! if the peer and that parent are both still alive after the reads, so a
//! recycled pid is never logged (`ppid=?` then). It reaches the run as a
//! typed value in the audit record, never as an argument or variable a
//! setuid caller could set. A connection turned away as busy is logged
//! by the loop with the peer's uid (and `ppid=?`: the loop reads nothing
//! more about a peer it does not serve).
//!
//! # Decisions where the issue is silent
//! - **Real against effective ids.** `SO_PEERCRED` gives the effective
//!   ids at `connect()`; a setuid run decides by the real ones. The
//!   service answers only a peer its own user may examine (below, "How
//!   it is read"). In the service's own user namespace the kernel lets a
//!   user examine a process only if its real, effective and saved ids are
//!   all that user's and it is dumpable, which a process started with them
//!   apart is not (unless it asks to be again). So the service decides by
//!   the ids the peer connected with, and there they are its real ones as
//!   well, as for a setuid run. (Below a user namespace the user owns, a
//!   peer may hold ids apart, but only ids that user controls there, and
//!   the first level's `setgroups` still decides.) A caller whose ids are
//!   apart (run from a setuid or setgid program) gets a tap from a setuid
//!   run and a refusal, saying so, from the service, through the
//!   forwarder as well (which drops to its real ids, but only after it
//!   started with them apart).
//! - **User namespaces.** A peer in the service's user namespace is
//!   answered. A peer below it, at any depth, is answered exactly when
//!   the *first level* (its ancestor whose parent is the service's
//!   namespace) has `setgroups` "deny"; otherwise it is refused with a
//!   line saying so, as it could have shed a supplementary group that a
//!   `deny` line names. Why the first level decides, from the kernel
//!   (kernel/user_namespace.c): a new namespace copies its parent's
//!   `setgroups` flag, and can only be created by a process whose ids
//!   are mapped in the parent, that is once the parent's gid_map is
//!   written; from then on the parent's flag can no longer change ("deny"
//!   must be written before the gid_map, and "deny" never turns back into
//!   "allow"). So every namespace below a "deny" first level is "deny",
//!   and no process in any of them, nor in the first level before its
//!   gid_map existed, could ever call setgroups: `SO_PEERGROUPS` is the
//!   list the host gave. A process can only move to a namespace below its
//!   own (setns needs CAP_SYS_ADMIN over the target), so a peer that was
//!   at or below a first level at `connect()` is still at or below it when
//!   the service looks (and one that was in the service's namespace had
//!   the host's groups). The peer's own flag proves nothing: a process in
//!   an "allow" first level can drop a group, then create a "deny"
//!   namespace below. And the namespace vouches for the process's own
//!   ids only, while `connect()` may run with another's (an io_uring
//!   personality carries the credentials of the process that registered
//!   it, made in any namespace): a peer is answered only if its effective
//!   uid and gid and its groups, in `/proc/PID/status`, are the ones it
//!   connected with.
//!   How it is read ([`crate::system::peer`]): the peer's namespace is
//!   opened through a pidfd (`SO_PEERPIDFD`; `pidfd_open` on kernels
//!   before 6.5) and only trusted if the peer is still alive after the
//!   open (and the read of its `status`), so a recycled pid is never
//!   inspected in its place. The
//!   kernel opens another process's `ns/user` only to one that may ptrace
//!   it, and the service holds no CAP_SYS_PTRACE (with it, a compromised
//!   service could attach to any process, init included, and so leave its
//!   capability bounding set behind): the session opens it with the
//!   peer's ids as its effective ids, as the peer's user examining its own
//!   process. That works for an ordinary process of the user, in a
//!   sandbox the user made too (the owner of a user namespace may examine
//!   what runs in it); a peer that is not dumpable, holds capabilities
//!   (root: any the service lacks), or runs in a user namespace another
//!   user made is refused, with a line that says so (root needs no
//!   service);
//!   `NS_GET_PARENT` walks up to the first level;
//!   a child of the session joins that namespace (setns, with the euid of
//!   its owner, who holds every capability in it) and reads
//!   `/proc/self/setgroups`. Joining is needed because the first level
//!   may hold no process: bubblewrap's `--dev` (Flatpak) maps the user to
//!   0 there to mount devpts, then its pid 1 moves into a second
//!   namespace mapped back, leaving the first one empty.
//! - **Network namespaces.** The tap is made in the service's network
//!   namespace, where a setuid run makes it in its caller's. A peer whose
//!   process is in another one (read as its `ns/user` is, below) is
//!   refused: confined there by root (systemd's `PrivateNetwork=`), it
//!   would otherwise get a tap on the host's bridges, whose network it
//!   was cut off from. No process can move into the host's network
//!   namespace without CAP_SYS_ADMIN over it, so one found there could
//!   reach the host's network by itself.
//! - **Subordinate ids.** A peer whose uid (or gid) lies in a range of
//!   `/etc/subuid` (`/etc/subgid`) is a container user acting for the
//!   range's owner, and skips the includes only the owner can read: it is
//!   refused, naming the owner.
//! - **Hostile clients.** [`MAX_CONNECTIONS`] sessions at once and
//!   [`MAX_PER_UID`] of one uid (64 VMs of one user started at once all
//!   succeed); over either the connection gets its answer at once and is
//!   closed. A request must arrive within [`REQUEST_DEADLINE`]; a session
//!   still alive at [`SESSION_DEADLINE`] is killed with its run (its
//!   process group). Answers are sent without blocking: a client that
//!   never reads holds nothing. A request is at most [`wire::MAX_REQUEST`]
//!   bytes.

pub mod forward;
pub mod identity;
pub mod server;
pub mod wire;

use std::time::Duration;

/// Sessions at once, in total.
pub const MAX_CONNECTIONS: usize = 512;
/// Sessions of one uid at once: at least 64, so that 64 VMs of one user
/// started together all get their taps.
pub const MAX_PER_UID: usize = 64;
/// From accept to the last byte of the request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// From accept to the answer; a run takes milliseconds.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(10);
/// A socket-activated service exits after this long with nothing to do;
/// systemd starts it again on the next connection.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
