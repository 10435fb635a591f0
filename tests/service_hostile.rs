//! Issue 26, point 5: the service holds against hostile local clients.
//! Many requests of every kind (granted, refused, malformed, abandoned
//! mid-request, 64 of one user at once) leave the service's descriptors,
//! sessions and memory where they started and no tap behind; a silent or
//! trickling client holds nothing past its deadline and delays nobody.
//! `BH_SERVICE_REQUESTS=N` sets the number of requests (default 10000).
mod common;
#[path = "support/service.rs"]
mod service;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use service::{request, Service};

fn requests() -> usize {
    std::env::var("BH_SERVICE_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn many_requests_of_every_kind_leave_the_service_as_it_started() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ndeny br1\n");
    let svc = Service::start(&sb, &ns);
    // Warm up (the first requests map what the loop keeps), then measure.
    for _ in 0..20 {
        assert_eq!(svc.ask_as_nobody(&request(b"br0")).status, 0);
    }
    svc.wait_idle(Duration::from_secs(5));
    let (fds, rss) = (svc.open_fds(), svc.rss_kb());
    let n = requests();
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let svc = &svc;
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    match i % 4 {
                        0 => {
                            let r = svc.ask_as_nobody(&request(b"br0"));
                            assert_eq!((r.status, r.tap, r.fds.len()), (0, true, 1), "{}", r.line);
                        }
                        1 => {
                            let r = svc.ask_as_nobody(&request(b"br1"));
                            assert_eq!((r.status, r.fds.len()), (4, 0), "{}", r.line);
                            assert!(
                                r.line.contains("denied by /etc/qemu/bridge.conf:2"),
                                "{}",
                                r.line
                            );
                        }
                        2 => {
                            let r = svc.ask(b"BHRQ\x01\x09");
                            assert_eq!((r.status, r.fds.len()), (2, 0), "{}", r.line);
                        }
                        3 if i % 64 == 3 => {
                            // Killed mid-request: half a request, then gone.
                            let mut c = svc.connect();
                            let _ = c.write_all(&request(b"br0")[..7]);
                        }
                        _ => {
                            // Half a request, then the sending side closed
                            // (as by a client killed mid-write), waiting for
                            // the session's end: abandoned sessions of one
                            // uid beyond 64 at once would be refused as busy,
                            // by design.
                            let mut c = svc.connect();
                            c.write_all(&request(b"br0")[..7]).unwrap();
                            c.shutdown(std::net::Shutdown::Write).unwrap();
                            let r = service::read_reply(&c);
                            assert_eq!((r.status, r.fds.len()), (2, 0), "{}", r.line);
                        }
                    }
                }
            });
        }
    });
    svc.wait_idle(Duration::from_secs(15));
    assert_eq!(svc.open_fds(), fds, "the service's descriptors");
    // Sessions are forks that run code: safe only with no other thread.
    assert_eq!(svc.threads(), 1, "the service's threads");
    assert!(svc.children().is_empty());
    // The loop keeps nothing per request; a little slack for the heap.
    let grown = svc.rss_kb().saturating_sub(rss);
    assert!(
        grown < 1024,
        "the service grew by {grown} kB over {n} requests"
    );
    assert_no_taps(&ns);
}

#[test]
fn sixty_four_vms_of_one_user_started_at_once_all_get_their_taps() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    // Installed once before the threads (the copy is made on first use).
    sb.install(HELPER, Mode::Unprivileged);
    let taps: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..64)
            .map(|_| s.spawn(|| svc.forward(&sb, Jail::user(NOBODY), &["--br=br0"])))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().expect_tap())
            .collect()
    });
    assert_eq!(taps.len(), 64);
    assert_eq!(ns.taps().len(), 64);
    drop(taps);
    svc.wait_idle(Duration::from_secs(10));
    assert_no_taps(&ns);
}

#[test]
fn silent_and_trickling_clients_hold_nothing_past_the_deadline_and_delay_nobody() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let fds = svc.open_fds();
    let start = Instant::now();
    // Silent clients, and one that sends a byte every 300 ms.
    let silent: Vec<_> = (0..32).map(|_| svc.connect()).collect();
    let trickler = std::thread::spawn({
        let mut c = svc.connect();
        move || {
            for b in request(b"br0") {
                if c.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            service::read_reply(&c)
        }
    });
    // Meanwhile another request is answered at once.
    let asked = Instant::now();
    let r = svc.ask_as_nobody(&request(b"br0"));
    assert_eq!((r.status, r.fds.len()), (0, 1), "{}", r.line);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "delayed {:?}",
        asked.elapsed()
    );
    // Each stalled client gets its answer at the deadline, and is closed.
    for c in &silent {
        let r = service::read_reply(c);
        assert_eq!(r.status, 5, "{}", r.line);
        assert!(
            r.line.contains("no complete request within 2 s"),
            "{}",
            r.line
        );
    }
    let r = trickler.join().unwrap();
    assert!(
        r.line.contains("no complete request within 2 s"),
        "{}",
        r.line
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    drop(silent);
    svc.wait_idle(Duration::from_secs(5));
    assert_eq!(svc.open_fds(), fds);
}

#[test]
fn a_client_that_never_reads_holds_nothing() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let fds = svc.open_fds();
    let mut deaf = Vec::new();
    for _ in 0..16 {
        let mut c = svc.connect();
        c.write_all(&request(b"br0")).unwrap();
        deaf.push(c);
    }
    // Their sessions end though nobody reads: the answers are sent
    // without waiting. The connections were made in the listener's
    // backlog, before the loop accepted any: no session running yet is not
    // the end. The end is the service's side of every connection closed
    // (each client sees its hang-up, still reading nothing), then every
    // session reaped.
    for c in &deaf {
        wait_hangup(c, Duration::from_secs(5));
    }
    svc.wait_idle(Duration::from_secs(5));
    assert_eq!(svc.open_fds(), fds);
    drop(deaf);
    assert_no_taps(&ns);
}

/// Waits until the service (its loop and the session) has closed its side
/// of `conn`: POLLHUP, seen without reading anything of what was sent.
fn wait_hangup(conn: &std::os::unix::net::UnixStream, limit: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let n = poll(&mut fds, timeout);
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLHUP) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the service still holds a connection after {limit:?} ({n:?}, {revents:?})"
        );
    }
}

/// A session's descriptors, as `N -> target`, read as root.
fn fds_of(pid: u32) -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the session's fds")
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.display().to_string(),
            )
        })
        .collect();
    fds.sort();
    fds
}

/// strace attached to the service and every session it forks, holding
/// the first matching call of each as `inject` says (a 3 s delay), so a
/// test can look at a session mid-request.
struct Held(std::process::Child);

impl Held {
    /// Attached once the service shows a tracer; `inject` is strace's
    /// `-e inject=…` (its call is the one traced).
    fn attach(svc: &Service, inject: &str) -> Held {
        let call = inject
            .strip_prefix("inject=")
            .and_then(|i| i.split(':').next())
            .expect("inject=CALL:…");
        let strace = std::process::Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                &format!("trace={call}"),
            ])
            .args(["-e", inject, "-p"])
            .arg(svc.pid().to_string())
            .spawn()
            .expect("strace (scripts/install-test-deps)");
        let traced = || {
            std::fs::read_to_string(format!("/proc/{}/status", svc.pid()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .is_some_and(|t| t.trim() != "0")
        };
        let start = Instant::now();
        while !traced() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "strace never attached"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Held(strace)
    }

    /// SIGINT: strace detaches and lets the held sessions go on.
    fn release(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap()),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.0.wait();
    }
}

/// A request for br0, sent by python3 as nobody in a thread; its raw
/// answer, read to the close.
fn ask_for_br0_as_nobody(svc: &Service) -> std::thread::JoinHandle<std::process::Output> {
    let mut cmd = svc.command(service::PYTHON, Jail::user(NOBODY));
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect('{}')\ns.sendall(bytes.fromhex('{}'))\nd=b''\nwhile True:\n  c=s.recv(4096)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n",
        service::SOCKET,
        request(b"br0").iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    cmd.args(["-c", &script]);
    std::thread::spawn(move || output(&mut cmd))
}

/// A held session's request, once released: the peer got its tap (the
/// tap's message, then status 0), and the session left no tap behind.
fn granted_and_left_nothing(answer: &std::process::Output, svc: &Service, ns: &NetNs) {
    assert!(
        answer.stdout.starts_with(b"\0BHAN\x01\x00"),
        "{:?} {}",
        answer.stdout,
        String::from_utf8_lossy(&answer.stderr)
    );
    svc.wait_idle(Duration::from_secs(5));
    assert_no_taps(ns);
}

/// The pid of the service's session for which `is_it(status, syscall)`
/// (its /proc `status` and `syscall`) holds, waited for up to 10 s.
fn held_session(svc: &Service, what: &str, is_it: impl Fn(&str, &str) -> bool) -> u32 {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no session of uid {NOBODY} {what}"
        );
        let held = svc.children().into_iter().find(|pid| {
            let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}"));
            matches!((read("status"), read("syscall")), (Ok(st), Ok(sc)) if is_it(&st, &sc))
        });
        if let Some(pid) = held {
            return pid.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The inodes of the Unix sockets in the network namespace of `pid`.
fn unix_sockets(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(|i| format!("socket:[{i}]")))
        .collect()
}

/// What the session's run starts from in place of an exec (see
/// service::server, "Why no exec"): seen mid-run, held by strace at its
/// first sendmsg (its netlink request), the session holds /dev/null,
/// its own stderr pipe, /dev/net/tun, the peer's connection and its own
/// netlink socket, and nothing of the loop's: not the listening socket,
/// not another client's connection, no pidfd. The peer, who may signal
/// its session from the moment it takes the peer's real uid, can read
/// neither its descriptors nor its memory or environment.
#[test]
fn a_sessions_run_holds_nothing_of_the_service_and_its_peer_cannot_look_inside() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let listener = std::fs::read_link(format!("/proc/{}/fd/3", svc.pid()))
        .unwrap()
        .display()
        .to_string();
    assert!(listener.starts_with("socket:"), "{listener}");
    // Another client's connection, open while the peer's session runs.
    let other = svc.connect();
    let strace = Held::attach(&svc, "inject=sendmsg:delay_enter=3000000:when=1");
    let asking = ask_for_br0_as_nobody(&svc);
    // The peer's session, stopped by strace at the entry of sendmsg (46).
    let uid = format!("Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}");
    let session = held_session(&svc, "reached sendmsg", |status, syscall| {
        status.contains(&uid) && syscall.starts_with("46 ")
    });
    let fds = fds_of(session);
    let unix = unix_sockets(session);
    // The peer's view, at the same moment.
    let peek = output(svc.command("/bin/sh", Jail::user(NOBODY)).args([
        "-c",
        &format!(
            "for f in fd environ mem; do \
             if (exec 3</proc/{session}/$f) 2>/dev/null; then echo \"opened $f\"; fi; done"
        ),
    ]));
    strace.release();
    let answer = asking.join().unwrap();
    drop(other);
    let described = format!("{fds:#?}");
    let target = |n: &str| fds.iter().find(|(fd, _)| fd == n).map(|(_, t)| t.as_str());
    assert_eq!(target("0"), Some("/dev/null"), "{described}");
    assert_eq!(target("1"), Some("/dev/null"), "{described}");
    let pipe = target("2").unwrap_or_default();
    assert!(pipe.starts_with("pipe:"), "{described}");
    for (fd, t) in &fds {
        assert_ne!(
            t, &listener,
            "fd {fd} is the service's listening socket: {described}"
        );
        assert!(!t.contains("pidfd"), "fd {fd} is a pidfd: {described}");
        let known =
            [pipe, "/dev/null", "/dev/net/tun"].contains(&t.as_str()) || t.starts_with("socket:");
        assert!(known, "fd {fd} -> {t} is not the run's own: {described}");
    }
    // Two sockets: one Unix socket, the peer's connection (the run's
    // --fd), and one of another kind, the run's netlink socket (not yet
    // bound, so not in /proc/net/netlink).
    let sockets = fds.iter().filter(|(_, t)| t.starts_with("socket:"));
    let unix_count = sockets.clone().filter(|(_, t)| unix.contains(t)).count();
    assert_eq!((sockets.count(), unix_count), (2, 1), "{described}");
    assert_eq!(fds.len(), 7, "{described}");
    assert_eq!(
        String::from_utf8_lossy(&peek.stdout),
        "",
        "the peer read its session's /proc files"
    );
    granted_and_left_nothing(&answer, &svc, &ns);
}

/// The session examines its peer's `/proc/PID/ns/user` with the peer's
/// uid as its effective uid (real and saved uid 0; see
/// system::peer::as_user). Held there by strace at the exit of its
/// first setresuid (the seteuid to the peer), the session is open to
/// nothing of the peer's: the peer may not signal it, stop it, or open
/// its descriptors, environment or memory, and its /proc files stay
/// root's (it is not dumpable, whatever its effective uid; /proc/PID
/// itself shows the euid, by the kernel's rule, and grants nothing).
/// SIGCONT is left out: the kernel allows it within a login session,
/// which a test shares with its service and a systemd service with no
/// user. Then the request is answered as usual.
#[test]
fn a_peer_can_neither_signal_nor_look_inside_its_session_while_it_is_examined_as_the_peer() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let strace = Held::attach(&svc, "inject=setresuid:delay_exit=3000000:when=1");
    let asking = ask_for_br0_as_nobody(&svc);
    // The session in the window: its effective uid is the peer's.
    let examining = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some(NOBODY.to_string().as_str())
    };
    let session = held_session(&svc, "examined as that uid", |status, _| examining(status));
    // The peer's attempts, at that moment, each printed if it worked.
    let peek = output(svc.command(service::PYTHON, Jail::user(NOBODY)).args([
        "-c",
        &format!(
            r#"
import os, signal
pid = {session}
for sig in (0, signal.SIGSTOP):
    try:
        os.kill(pid, sig); print("signalled", int(sig))
    except PermissionError:
        pass
for f in ("fd", "environ", "mem", "ns/user", "cwd/."):
    try:
        os.close(os.open("/proc/%d/%s" % (pid, f), os.O_RDONLY)); print("opened", f)
    except OSError:
        pass
for f in ("fd", "status"):
    st = os.stat("/proc/%d/%s" % (pid, f))
    if st.st_uid != 0:
        print(f, "owned by", st.st_uid)
"#
        ),
    ]));
    let still = std::fs::read_to_string(format!("/proc/{session}/status")).unwrap_or_default();
    strace.release();
    let answer = asking.join().unwrap();
    assert!(
        peek.status.success(),
        "{}",
        String::from_utf8_lossy(&peek.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&peek.stdout),
        "",
        "the peer reached its session while the session had the peer's euid"
    );
    // Real, effective, saved and fs uid, all along.
    let window = format!("Uid:\t0\t{NOBODY}\t0\t{NOBODY}\n");
    assert!(
        still.contains(&window),
        "the session left the window before the peer was done: {still}"
    );
    granted_and_left_nothing(&answer, &svc, &ns);
}
