//! Red-team reproducers. Each test asserts what SECURITY.md or the README
//! promises, and each failed on the commit it was written against; they
//! stay as regression tests for the fixes.
mod common;
use common::*;

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::os::unix::process::CommandExt;

/// A directory in the sandbox that the (unprivileged) caller owns.
fn user_dir(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let dir = sb.dir.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    dir
}

/// Finding (fixed): /proc/PID/* of the non-dumpable helper is root-owned, and
/// /proc/self/comm (mode 0644, a regular file) holds the basename the
/// caller exec'd the helper under. Wherever an include path passes through
/// something the caller controls, "owned by root, not writable by others"
/// therefore admits a file whose text the caller chose: "allow all".
#[test]
fn proc_self_comm_is_not_a_trusted_acl_file() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    let home = user_dir(&sb, "home");
    // The administrator keeps the user's rules in a root-owned file in a
    // directory that the user owns (a user-owned file would be refused).
    let conf = home.join("bridge.conf");
    fs::write(&conf, "allow br0\n").unwrap();
    sb.acl(format!("include {}\n", conf.display()));

    // What the user does, as themselves: swap the file for a symlink to
    // /proc/self/comm and run the helper through a symlink named "allow all".
    fs::remove_file(&conf).unwrap();
    symlink("/proc/self/comm", &conf).unwrap();
    let helper = sb.install(HELPER, Mode::Setuid);
    let bin = user_dir(&sb, "ubin");
    let named = bin.join("allow all");
    symlink(&helper, &named).unwrap();
    chown_symlink(&conf);
    chown_symlink(&named);

    let mut jail = Jail::for_mode(Mode::Setuid);
    jail.uid = Some(NOBODY);
    let run = sb.run_program(&ns, &named, jail, &["--br=br1"], true);
    assert!(
        run.fds.is_empty() && run.code == Some(3),
        "br1 is in no rule, yet the helper attached a tap to it (status {:?}, stderr {:?})",
        run.code,
        run.stderr
    );
    // Since the walk of the path as written (issue 11), the user's own
    // directory is refused before the symlink is looked at; a symlink to
    // /proc in a root-owned directory is refused for its file system
    // (tests/trust.rs).
    assert!(
        run.stderr
            .contains("which someone other than root can change (owner uid 65534"),
        "{}",
        run.stderr
    );

    // Even a real root-owned file is refused behind a directory the user
    // owns: the user could swap it for another root-owned file at will.
    fs::remove_file(&conf).unwrap();
    fs::write(&conf, "allow br0\n").unwrap();
    let run = sb.run_program(&ns, &helper, Jail::user(NOBODY), &["--br=br0"], true);
    run.expect_refusal(
        3,
        "which someone other than root can change (owner uid 65534",
    );
    assert_no_taps(&ns);
}

fn chown_symlink(path: &std::path::Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Finding (fixed): a connected SOCK_DGRAM socket passed `--fd`
/// verification, and whoever holds it may connect() it elsewhere after the
/// check, so the tap could go to a socket that was never verified. Only
/// stream and seqpacket sockets, whose peer is fixed, are accepted now.
#[test]
fn a_datagram_fd_is_refused_before_it_can_be_repointed() {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let dgram = || {
        socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap()
    };
    let mine = dgram();
    let mine_addr = UnixAddr::new(&sb.dir.join("mine.sock")).unwrap();
    bind(mine.as_raw_fd(), &mine_addr).unwrap();
    let sender = dgram();
    connect(sender.as_raw_fd(), &mine_addr).unwrap();
    clear_cloexec(sender.as_raw_fd());
    let helper = sb.install(HELPER, Mode::Setuid);
    let fd_arg = format!("--fd={}", sender.as_raw_fd());
    let run = sb.run_program(
        &ns,
        &helper,
        Jail::user(NOBODY),
        &["--br=br0", &fd_arg],
        false,
    );
    run.expect_refusal(6, "is a datagram socket; a stream socket is needed");
    assert_eq!(pending_fds(&mine), 0);
    assert_no_taps(&ns);
}

/// How many fds are queued on a datagram socket (non-blocking).
fn pending_fds(sock: &OwnedFd) -> usize {
    let mut n = 0;
    loop {
        let mut buf = [0u8; 16];
        let Ok(msg) = sys::recv_with_fds(sock.as_raw_fd(), &mut buf, true) else {
            return n;
        };
        n += msg.fds.len(); // and closes them
    }
}

/// As NOBODY, the unprivileged holder: TUNSETPERSIST 1, and TUNSETCARRIER 0
/// if `carrier_off` (neither ioctl needs a capability).
fn persist_as_holder(sb: &Sandbox, ns: &NetNs, fd: &OwnedFd, carrier_off: bool) {
    let raw = fd.as_raw_fd();
    let mut cmd = sb.command(ns, "/bin/true", Jail::user(NOBODY));
    // SAFETY: two ioctls with integer/int-pointer arguments between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let off: libc::c_int = 0;
            if libc::ioctl(raw, libc::TUNSETPERSIST, 1 as libc::c_ulong) != 0
                || (carrier_off && libc::ioctl(raw, libc::TUNSETCARRIER, &off) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    assert!(cmd.status().expect("ioctls as the holder").success());
}

fn still_attached(fd: &OwnedFd) -> bool {
    sys::tun_iff(fd.as_raw_fd()).is_ok()
}

/// Finding: "carrier off" is not "nothing attached": a holder can turn its
/// tap's carrier off (TUNSETCARRIER) while attached. The first fix proved
/// detachment by attaching to the tap by name; a second review showed that
/// a name can change hands between the listing and that attach, which then
/// touched another user's tap. Removal is by index again, and the rule is:
/// taps in use are never reaped; a holder that turns carrier off on its own
/// tap declares it abandoned, and only the caller's own taps are reaped.
#[test]
fn a_tap_in_use_is_never_reaped() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let mut held = Vec::new();
    for _ in 0..5 {
        let fd = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
        persist_as_holder(&sb, &ns, &fd, false);
        held.push(fd);
    }
    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    let stderr = run.stderr.clone();
    let _new = run.expect_tap();
    assert!(
        held.iter().all(still_attached),
        "a held tap was deleted: {stderr:?}"
    );
    assert!(
        stderr.is_empty(),
        "nothing was removed, so nothing is said: {stderr:?}"
    );

    // The holder's own declaration: carrier off on four held, persistent taps.
    for fd in &held[..4] {
        persist_as_holder(&sb, &ns, fd, true);
    }
    // The kernel applies a carrier change to the link's running state (what
    // the scan reads first) up to a second later.
    let names: Vec<String> = held[..4].iter().map(|fd| tun_get_iff(fd).0).collect();
    wait_detached(&ns, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert!(run.stderr.contains("removed 'tap0'"), "{:?}", run.stderr);
    let _newer = run.expect_tap();
    assert!(
        !still_attached(&held[0]),
        "the oldest declared-abandoned tap goes"
    );
    assert!(held[1..].iter().all(still_attached), "only the excess goes");
}

/// Finding (fixed): a small RLIMIT_STACK made the refusal path die of SIGSEGV
/// (the success path needs less stack), instead of exiting with status 4
/// and one line.
#[test]
fn a_small_stack_limit_gives_a_documented_status() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ndeny br1\n");
    let helper = sb.install(HELPER, Mode::Setuid);
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut jail = Jail::for_mode(Mode::Setuid);
    jail.uid = Some(NOBODY);
    let mut cmd = sb.command(&ns, &helper, jail);
    cmd.args(["--br=br1", &format!("--fd={}", theirs.as_raw_fd())]);
    // SAFETY: one setrlimit on a stack struct between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                // Below a few KiB (8 for the musl build, 12-16 for a glibc
                // one, shifted by where ASLR puts the stack top) the C
                // library's start-up faults before any of the helper's code
                // runs: 32 KiB keeps clear of that band and is still far
                // below what the helper needs.
                rlim_cur: 32 * 1024,
                rlim_max: 32 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output_within(&mut cmd, HANG_LIMIT);
    drop(theirs);
    let run = HelperRun::collect(out, ours);
    assert_eq!(
        (run.signal, run.code.is_some()),
        (None, true),
        "killed by signal {:?} instead of a documented status",
        run.signal
    );
    run.expect_refusal(5, "RLIMIT_STACK is too small");
}

/// Starts the setuid helper with `--test-pause-claim`, returns it stopped
/// after its scan and its tap, before it claims a slot.
#[cfg(feature = "test-hooks")]
fn stopped_before_claim(sb: &Sandbox, ns: &NetNs, helper: &std::path::Path) -> (Running, OwnedFd) {
    stopped_at(sb, ns, helper, "--test-pause-claim")
}

#[cfg(feature = "test-hooks")]
fn slot_of(ns: &NetNs, fd: &OwnedFd) -> String {
    let (name, _) = tun_get_iff(fd);
    ns.altnames(&name)
        .iter()
        .find_map(|a| a.strip_prefix("bh0000fffe."))
        .and_then(|slot| u16::from_str_radix(slot, 16).ok())
        .map(|slot| slot.to_string())
        .unwrap_or_else(|| panic!("{name} has no slot"))
}

/// Finding (fixed): a run that claimed slots past the end of its own scan
/// could be made to climb over hidden abandoned taps. Abandoned taps sit
/// above four empty slots; five runs are stopped after their scans (which
/// stop at that gap); four are let go and fill the gap; the fifth then got
/// EEXIST on every slot up to the hidden taps and claimed the first one
/// above them, so the user could pile up abandoned taps without limit
/// while holding five at a time. Now a run only takes slots its scan saw
/// free, and scans (and reaps) again when those are gone.
#[cfg(feature = "test-hooks")]
#[test]
fn a_stalled_run_cannot_climb_over_hidden_taps() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 1\n", 0o644);
    let helper = sb.install(HELPER, Mode::Setuid);
    // Slots 0-3 held, then closed; slots 4 and 5 made persistent: hidden.
    let held: Vec<OwnedFd> = (0..6)
        .map(|_| sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap())
        .collect();
    let hidden: Vec<String> = held[4..].iter().map(|fd| tun_get_iff(fd).0).collect();
    for fd in &held[4..] {
        persist_as_holder(&sb, &ns, fd, false);
    }
    drop(held);
    wait_for_taps(&ns, &[&hidden[0], &hidden[1]]);
    wait_detached(&ns, &[&hidden[0], &hidden[1]]);

    let stalled: Vec<(Running, OwnedFd)> = (0..5)
        .map(|_| stopped_before_claim(&sb, &ns, &helper))
        .collect();
    let mut stalled = stalled.into_iter();
    let (last, last_sock) = stalled.next().unwrap();
    let fillers: Vec<OwnedFd> = stalled
        .map(|(running, ours)| resume(running, ours).expect_tap())
        .collect();
    let mut filled: Vec<String> = fillers.iter().map(|fd| slot_of(&ns, fd)).collect();
    filled.sort();
    assert_eq!(filled, ["0", "1", "2", "3"]);

    let run = resume(last, last_sock);
    for tap in &hidden {
        assert!(
            run.stderr.contains(&format!("removed '{tap}'")),
            "{tap}: {}",
            run.stderr
        );
    }
    let fd = run.expect_tap();
    assert_eq!(
        slot_of(&ns, &fd),
        "4",
        "the stalled run landed above the hidden taps"
    );
}

/// Finding (fixed, issue 11): the tap was configured, given its slot
/// altname and read back by name, so a rename between TUNSETIFF and those
/// requests (a udev rule, an administrator) sent the bridge, MTU, alias
/// and slot to whatever held the name by then. Now every request names
/// the index the run chose for its tap before it existed.
#[cfg(feature = "test-hooks")]
#[test]
fn a_rename_during_the_run_cannot_redirect_the_configuration() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let helper = sb.install(HELPER, Mode::Setuid);
    let (running, ours) = stopped_at(&sb, &ns, &helper, "--test-pause-claim");
    let taps = ns.taps();
    assert_eq!(taps.len(), 1, "{taps:?}");
    let name = taps[0].clone();
    ns.ip(&["link", "set", &name, "name", "renamed0"]);
    ns.ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
    let run = resume(running, ours);
    assert!(run.fds.is_empty(), "a renamed tap was handed out");
    assert_eq!(run.code, Some(8), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("read back after setup: the tap was renamed"),
        "{}",
        run.stderr
    );
    let impostor = ns.ip(&["-d", "link", "show", "dev", &name]);
    assert!(
        !impostor.contains("master") && impostor.contains("mtu 1500"),
        "the impostor was configured: {impostor}"
    );
    assert!(
        !impostor.contains("bridge-helper"),
        "the impostor got the marker or a slot: {impostor}"
    );
    ns.ip(&["link", "del", &name]);
    wait_for_taps(&ns, &[]);
}
