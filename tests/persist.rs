//! Issue 6: a tap the helper hands out must never become a door for other
//! users, and abandoned persistent taps are bounded per user.
mod common;
use common::*;

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;

const OTHER_USER: u32 = 65533;

/// As `uid`, opens /dev/net/tun (a 0666 node, as on most distributions)
/// and attaches to the existing tap `name`: the hijack.
fn attach_by_name_as(sb: &Sandbox, ns: &NetNs, name: &str, uid: u32) -> io::Result<()> {
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    let jail = Jail {
        uid: Some(uid),
        tun_0666: true,
        ..Jail::default()
    };
    let mut cmd = sb.command(ns, "/bin/true", jail);
    // SAFETY: open and one ioctl on a stack buffer copied into the child,
    // between fork and exec; the error is handed back through spawn().
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TUNSETIFF, ifr.as_mut_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().map(|s| assert!(s.success()))
}

#[test]
fn another_user_cannot_attach_to_an_abandoned_tap() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let fd = sb
        .run_helper(&ns, Mode::Setuid, &["--use-vnet", "--br=br0"])
        .expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(
        ns.tap_state(&name).owner,
        i64::from(NOBODY),
        "sysfs shows the caller as owner"
    );
    abandon_as(&sb, &ns, fd, NOBODY);
    assert_eq!(
        ns.persistent_taps(),
        vec![name.clone()],
        "the holder's TUNSETPERSIST kept it"
    );

    let err = attach_by_name_as(&sb, &ns, &name, OTHER_USER).expect_err("another uid attached");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    attach_by_name_as(&sb, &ns, &name, NOBODY).expect("the owner may re-attach");
}

#[test]
fn qemus_own_helper_has_the_hole() {
    // The reason for all of this: QEMU's helper leaves the tap unowned.
    let reference = qemu_reference_helper();
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let helper = sb.install(reference, Mode::Setuid);
    // It drops privileges before opening /dev/net/tun, so needs a 0666 node.
    let jail = Jail::for_mode(Mode::FileCaps);
    let fd = sb
        .run_program(&ns, &helper, jail, &["--use-vnet", "--br=br0"], true)
        .expect_tap();
    let (name, _) = tun_get_iff(&fd);
    abandon_as(&sb, &ns, fd, NOBODY);
    attach_by_name_as(&sb, &ns, &name, OTHER_USER).expect("QEMU's helper lets anyone attach");
}

#[test]
fn the_marker_cannot_be_forged_or_removed_by_a_user() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let fd = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert!(ns
        .ip(&["-d", "link", "show", &name])
        .contains("alias bridge-helper uid=65534"));
    for args in [
        vec!["link", "set", name.as_str(), "alias", "x"],
        vec!["link", "set", "br0", "alias", "bridge-helper uid=65534"],
    ] {
        let out = output(
            sb.command(&ns, "/usr/sbin/ip", Jail::user(NOBODY))
                .args(&args),
        );
        assert!(
            !out.status.success(),
            "a user changed an alias with {args:?}"
        );
    }
}

#[test]
fn abandoned_taps_are_bounded_per_user_and_others_are_never_touched() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    // The administrator's own persistent tap, even one owned by the user.
    ns.ip(&[
        "tuntap",
        "add",
        "dev",
        "admintap",
        "mode",
        "tap",
        "user",
        &NOBODY.to_string(),
    ]);
    ns.ip(&["link", "set", "admintap", "master", "br0", "up"]);
    // Another user's abandoned helper tap.
    let other = sb.install(HELPER, Mode::Setuid);
    let fd = sb
        .run_program(&ns, &other, Jail::user(OTHER_USER), &["--br=br0"], true)
        .expect_tap();
    let (other_tap, _) = tun_get_iff(&fd);
    abandon_as(&sb, &ns, fd, OTHER_USER);
    // One of the user's taps that is persistent but still in use by a VM.
    let held = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (held_tap, _) = tun_get_iff(&held);
    make_persistent_as(&sb, &ns, &held, NOBODY);

    let mut made = Vec::new();
    for round in 1..=7 {
        let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
        let stderr = run.stderr.clone();
        let fd = run.expect_tap();
        let (name, _) = tun_get_iff(&fd);
        abandon_as(&sb, &ns, fd, NOBODY);
        if round > 4 {
            let oldest = made.remove(0);
            assert!(
                stderr.contains(&format!("removed '{oldest}'")),
                "round {round}: {stderr}"
            );
        } else {
            assert!(stderr.is_empty(), "round {round}: {stderr}");
        }
        made.push(name);
        let persistent = ns.persistent_taps();
        for tap in &made {
            assert!(
                persistent.contains(tap),
                "round {round}: {tap} missing from {persistent:?}"
            );
        }
        assert_eq!(made.len(), round.min(4));
        for keep in ["admintap", other_tap.as_str(), held_tap.as_str()] {
            assert!(
                persistent.iter().any(|p| p == keep),
                "round {round}: {keep} was touched"
            );
        }
        assert_eq!(
            persistent.len(),
            made.len() + 3,
            "round {round}: {persistent:?}"
        );
    }
}

#[test]
fn root_sets_the_limit_in_a_file_qemus_helper_never_reads() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file(
        "bridge-helper.conf",
        "# fewer\nmax-abandoned-taps 1\n",
        0o644,
    );
    for round in 1..=3 {
        let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
        let reaped = run.stderr.contains("(at most 1 are kept)");
        let fd = run.expect_tap();
        abandon_as(&sb, &ns, fd, NOBODY);
        assert_eq!(reaped, round > 1, "round {round}");
        assert_eq!(ns.persistent_taps().len(), 1, "round {round}");
    }
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps lots\n", 0o644);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(
            3,
            "/etc/qemu/bridge-helper.conf:1: 'lots' is not a number from 0 to 1024",
        );
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 2\n", 0o666);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(
            3,
            "/etc/qemu/bridge-helper.conf: writable by group or others",
        );
}

/// SECURITY.md guarantee 7: each tap is listed in its owner's lowest free
/// slot, and a device the helper did not make for the caller is never
/// taken for one of the caller's taps, even in the caller's slot and
/// owned by the caller (only CAP_NET_ADMIN can put an altname there:
/// here an administrator's persistent tap, abandoned too).
#[test]
fn each_tap_is_listed_for_its_owner_in_its_own_slot_and_nothing_else_counts() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 1\n", 0o644);
    let first = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let second = sb
        .run_helper(&ns, Mode::FileCaps, &["--br=br0"])
        .expect_tap();
    let (a, _) = tun_get_iff(&first);
    let (b, _) = tun_get_iff(&second);
    assert_eq!(ns.altnames(&a), [slot_name(NOBODY, 0)]);
    assert_eq!(ns.altnames(&b), [slot_name(NOBODY, 1)]);
    let marker = "alias bridge-helper uid=65534";
    assert!(ns.ip(&["-d", "link", "show", &a]).contains(marker));
    let uid = NOBODY.to_string();
    ns.ip(&[
        "tuntap", "add", "dev", "admintap", "mode", "tap", "user", &uid,
    ]);
    ns.ip(&[
        "link",
        "property",
        "add",
        "dev",
        "admintap",
        "altname",
        &slot_name(NOBODY, 2),
    ]);
    // The next tap goes past the slot admintap holds, which stays as it was.
    let third = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (c, _) = tun_get_iff(&third);
    assert_eq!(ns.altnames(&c), [slot_name(NOBODY, 3)]);
    assert_eq!(ns.altnames("admintap"), [slot_name(NOBODY, 2)]);
    // With the caller's own taps abandoned beyond the limit, the run
    // removes only those (by index), never the one without the marker.
    abandon_as(&sb, &ns, first, NOBODY);
    abandon_as(&sb, &ns, second, NOBODY);
    let fourth = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert!(
        fourth.stderr.contains("(at most 1 are kept)"),
        "{}",
        fourth.stderr
    );
    let fourth = fourth.expect_tap();
    let (d, _) = tun_get_iff(&fourth);
    wait_for_taps(&ns, &[&c, &d]);
    assert_eq!(ns.altnames("admintap"), [slot_name(NOBODY, 2)]);
    assert!(!ns.ip(&["-d", "link", "show", "admintap"]).contains(marker));
    // Freed slots are taken again, lowest first.
    assert_eq!(ns.altnames(&d), [slot_name(NOBODY, 0)]);
}

#[test]
fn the_scan_looks_past_short_gaps_and_never_trusts_a_slot_alone() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 1\n", 0o644);
    // The administrator's persistent tap, owned by the user and put in the
    // user's slot 0 by hand, but without the marker: never removed.
    let uid = NOBODY.to_string();
    ns.ip(&[
        "tuntap", "add", "dev", "admintap", "mode", "tap", "user", &uid,
    ]);
    ns.ip(&[
        "link",
        "property",
        "add",
        "dev",
        "admintap",
        "altname",
        &slot_name(NOBODY, 0),
    ]);
    let held: Vec<OwnedFd> = (0..4)
        .map(|_| sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap())
        .collect();
    let names: Vec<String> = held.iter().map(|fd| tun_get_iff(fd).0).collect();
    for (slot, name) in (1..).zip(&names) {
        assert_eq!(ns.altnames(name), [slot_name(NOBODY, slot)]);
    }
    // Slots 1 and 2 empty when their VMs end; 3 and 4 are abandoned.
    make_persistent_as(&sb, &ns, &held[2], NOBODY);
    make_persistent_as(&sb, &ns, &held[3], NOBODY);
    drop(held);
    wait_for_taps(&ns, &[&names[2], &names[3]]);
    wait_detached(&ns, &[&names[2], &names[3]]);

    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    for gone in &names[2..] {
        assert!(
            run.stderr.contains(&format!("removed '{gone}'")),
            "{gone}: {}",
            run.stderr
        );
    }
    let fd = run.expect_tap();
    let (new, _) = tun_get_iff(&fd);
    assert_eq!(ns.altnames(&new), [slot_name(NOBODY, 1)]);
    assert_eq!(ns.persistent_taps(), ["admintap"]);
}

#[test]
fn a_tap_hidden_behind_a_gap_is_found_once_the_gap_starts_to_fill() {
    // The scan stops after four empty slots in a row. To hide a tap that
    // way, the user must first have held the four below it at once.
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 1\n", 0o644);
    let held: Vec<OwnedFd> = (0..5)
        .map(|_| sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap())
        .collect();
    let hidden = tun_get_iff(&held[4]).0;
    make_persistent_as(&sb, &ns, &held[4], NOBODY);
    drop(held);
    wait_for_taps(&ns, &[&hidden]);
    wait_detached(&ns, &[&hidden]);

    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let kept = run.expect_tap();
    assert_eq!(ns.altnames(&tun_get_iff(&kept).0), [slot_name(NOBODY, 0)]);
    assert_eq!(ns.persistent_taps(), std::slice::from_ref(&hidden));

    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert!(
        run.stderr.contains(&format!("removed '{hidden}'")),
        "{}",
        run.stderr
    );
    drop(run.expect_tap());
    assert!(ns.persistent_taps().is_empty());
}

/// Issue 23, finding 2, as the attack did it, by the caller itself: its
/// run makes a 253-queue tap (adding the queues makes the window long)
/// while it loops TUNSETIFF on the names the new tap may have; on a hit
/// it SIGKILLs its own run (which runs as the caller after the drop), sets
/// TUNSETPERSIST through its queue and closes it. Whether the run left a
/// persistent tap.
fn leave_a_tap_from_the_window(sb: &Sandbox, ns: &NetNs, program: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::sync::Arc;
    let pid = Arc::new(AtomicI32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let target = pid.clone();
    // A new tap's names only: the attacker could attach to its earlier
    // leftovers too, which would prove nothing.
    let existing = ns.taps();
    let names = window_names(NOBODY)
        .into_iter()
        .filter(|n| !existing.contains(n))
        .collect();
    let attacker = attach_in_a_loop(
        ns,
        sb.tun_node(),
        NOBODY,
        names,
        stop.clone(),
        move |queue| {
            let run = loop {
                match target.load(Ordering::SeqCst) {
                    0 => std::hint::spin_loop(),
                    pid => break pid,
                }
            };
            // SAFETY: kill and an ioctl with an integer argument.
            unsafe {
                libc::kill(run, libc::SIGKILL);
                libc::ioctl(queue.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) == 0
            }
        },
    );
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = sb.command(ns, program, Jail::for_mode(Mode::FileCaps));
    cmd.args(["--queues=253", "--br=br0"])
        .arg(format!("--fd={}", theirs.as_raw_fd()))
        .stdin(std::process::Stdio::null());
    let running = start(&mut cmd);
    pid.store(running.pid(), Ordering::SeqCst);
    drop(theirs);
    let out = running.wait_within(HANG_LIMIT);
    stop.store(true, Ordering::SeqCst);
    let persisted = attacker.join().unwrap().expect("the attacker's set-up");
    // Whatever the run sent dies with our end.
    drop(HelperRun::collect(out, ours));
    persisted == Some(true)
}

/// The taps of `ns` that are persistent and that nothing holds.
fn abandoned(ns: &NetNs) -> Vec<String> {
    let taps = ns.persistent_taps();
    let names: Vec<&str> = taps.iter().map(String::as_str).collect();
    wait_detached(ns, &names);
    taps
}

#[test]
fn taps_left_before_their_owner_was_set_are_still_bounded() {
    const ROUNDS: usize = 60;
    const WINS: usize = 3;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 1\n", 0o644);
    let program = sb.install(HELPER, Mode::FileCaps);
    let mut wins = 0;
    for round in 0..ROUNDS {
        if leave_a_tap_from_the_window(&sb, &ns, &program) {
            wins += 1;
        }
        // Each run removes the abandoned ones beyond the limit before it
        // makes its own tap: at most one is ever left.
        let left = abandoned(&ns);
        assert!(
            left.len() <= 1,
            "round {round}, {wins} wins: {left:?} persist with max-abandoned-taps 1"
        );
        if wins == WINS {
            break;
        }
    }
    assert_eq!(
        wins, WINS,
        "the attack left a tap in {wins} of {ROUNDS} rounds"
    );
    // The caller's next ordinary run removes the last one.
    let left = abandoned(&ns);
    let run = sb.run_helper(&ns, Mode::FileCaps, &["--br=br0"]);
    for tap in &left {
        assert!(
            run.stderr.contains(&format!("removed '{tap}'")),
            "{}",
            run.stderr
        );
    }
    drop(run.expect_tap());
    assert_no_taps(&ns);
}

/// A tap such a run leaves is counted even with a high limit: one that
/// never got its `tapN` is removed by the caller's next run (no run
/// handed it over, so no VM can be waiting for it); until then, and for
/// the ones that did, root's --check lists them and --remove-abandoned
/// removes them.
#[test]
fn taps_left_before_their_owner_was_set_are_seen_and_removed_by_root() {
    const ROUNDS: usize = 60;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file("bridge-helper.conf", "max-abandoned-taps 8\n", 0o644);
    let program = sb.install(HELPER, Mode::FileCaps);
    let mut wins = 0;
    for round in 0..ROUNDS {
        if leave_a_tap_from_the_window(&sb, &ns, &program) {
            wins += 1;
        }
        let left = abandoned(&ns);
        let unfinished = left.iter().filter(|t| is_birth_name(t)).count();
        assert!(unfinished <= 1, "round {round}: {left:?}");
        if wins == 3 {
            break;
        }
    }
    assert_eq!(
        wins, 3,
        "the attack left a tap in {wins} of {ROUNDS} rounds"
    );
    let left = abandoned(&ns);
    assert!(!left.is_empty());
    let root = sb.install(HELPER, Mode::Root);
    let check = sb.run_program(&ns, &root, Jail::root(), &["--check"], false);
    for tap in &left {
        let line = format!("helper tap '{tap}': uid 65534 (nobody), ");
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l.starts_with(&line)
                    && l.contains("abandoned (persistent, nothing attached)")),
            "{tap} missing from root's --check:\n{}",
            check.stdout
        );
    }
    let removed = sb.run_program(
        &ns,
        &root,
        Jail::root(),
        &["--remove-abandoned", "--user=65534"],
        false,
    );
    assert_eq!(removed.code, Some(0), "{}", removed.stderr);
    assert!(
        removed.stdout.starts_with(&format!(
            "removed {} abandoned tap(s) of uid 65534: ",
            left.len()
        )),
        "{}",
        removed.stdout
    );
    assert_no_taps(&ns);
}
