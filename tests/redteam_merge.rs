//! Red-team reproductions against the merged features (grants and port
//! settings, --check, the audit line, multiqueue) on main 58209f9.
//!
//! Each test is a finding: it asserts what README/SECURITY promise, and
//! FAILS on 58209f9. Runs happen in the test's own network namespace and
//! a private mount namespace with the sandbox's /etc overlay (common.rs).
mod common;
use common::*;

/// `--check --user=USER` is root's way to see what USER's run decides.
/// For USER = root (by name or uid 0) become_user() calls setresuid(0),
/// which keeps CAP_SETUID/CAP_SETGID (only leaving uid 0 clears them),
/// then insists on an empty capability set: the check dies with status 5
/// and a "capabilities are ..." line instead of reporting.
#[test]
fn check_user_root_reports_instead_of_failing() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, Mode::Setuid);
    for spec in ["--user=root", "--user=0"] {
        let r = sb.run_program(
            &ns,
            &program,
            Jail::root(),
            &["--check", spec, "--br=br0"],
            false,
        );
        assert!(r.fds.is_empty());
        assert_eq!(
            r.code,
            Some(0),
            "--check {spec} as root:\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stdout.starts_with(&format!(
                "bridge-helper {} check for uid 0",
                env!("CARGO_PKG_VERSION")
            )),
            "{}",
            r.stdout
        );
    }
}

// ---------------------------------------------------------------------------
// The audit line, read from a datagram socket bound at /dev/log in the
// run's own mount namespace (as tests/audit.rs does).
// ---------------------------------------------------------------------------

use std::os::fd::AsRawFd;

/// SECURITY.md: "A grant is logged before the fd is sent". A caller that
/// fills its own end of the --fd socket beforehand makes the send fail
/// (status 6, no tap anywhere) after a line saying the tap was granted,
/// and no refusal is logged: the audit trail records a grant that never
/// happened and not the refusal that did.
#[test]
fn a_failed_send_is_not_logged_as_a_grant() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let dev = private_dev(&sb, true);
    let program = sb.install(HELPER, Mode::Setuid);
    let (ours, theirs) = socketpair();
    // Fill theirs -> ours until the kernel says it is full.
    let chunk = [0u8; 4096];
    loop {
        // SAFETY: plain send on an fd we own, with a valid buffer.
        let n = unsafe {
            libc::send(
                theirs.as_raw_fd(),
                chunk.as_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
    }
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = dev.command(&sb, &ns, &program);
    cmd.args(["--br=br0", &format!("--fd={}", theirs.as_raw_fd())]);
    let out = output(&mut cmd);
    drop(theirs);
    let run = HelperRun::collect(out, ours);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert_no_taps(&ns);
    let lines = dev.lines();
    // The grant is logged before the fd leaves (after that the caller may
    // kill the run), so a failed send is a second line that corrects it.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains(" granted by "), "{lines:?}");
    assert!(
        lines[1].contains("tap='tap0' not delivered (status 6): --fd="),
        "the log does not say the granted tap never reached the caller: {lines:?}"
    );
}

/// Every request for a tap is logged (SECURITY.md: lost only when
/// /dev/log is missing, full or never read). A caller's own argument,
/// escaped at up to 4 bytes a byte, can make the refusal line larger than
/// any datagram the socket takes (EMSGSIZE): the run is refused, and the
/// line is silently not sent, with /dev/log present, empty and read.
#[test]
fn a_long_argument_does_not_suppress_the_refusal_line() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let dev = private_dev(&sb, true);
    let program = sb.install(HELPER, Mode::Setuid);
    let long = format!("--fd=\u{1}{}", "\u{1}".repeat(120_000));
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = dev.command(&sb, &ns, &program);
    cmd.args(["--br=br0", &long]);
    let out = output(&mut cmd);
    drop(theirs);
    let run = HelperRun::collect(out, ours);
    assert_eq!(
        run.code,
        Some(2),
        "{}",
        &run.stderr[..200.min(run.stderr.len())]
    );
    let lines = dev.lines();
    assert_eq!(
        lines.len(),
        1,
        "no audit line for a refused request (status 2) whose argument is long"
    );
}

// ---------------------------------------------------------------------------
// Multiqueue: what another local user can do in the window before the
// tap has an owner (any user who can open /dev/net/tun: 0666 on Debian).
// ---------------------------------------------------------------------------

#[cfg(feature = "test-hooks")]
mod multiqueue {
    use super::*;

    use std::os::fd::OwnedFd;
    use std::time::Duration;

    /// _IOW('T', 203, int)
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

    /// Attaches a queue to `tap` by name as uid 65534 (from a thread in `ns`),
    /// sets IFF_PERSIST through it, and closes it again.
    fn attach_persist_and_leave(ns: &NetNs, tap: &str) -> std::io::Result<()> {
        foreign_queue(ns, tap, |q| {
            // SAFETY: TUNSETPERSIST takes an integer argument.
            sys_ok(unsafe { libc::ioctl(q.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) })
        })
        .map(drop)
    }

    /// "No tap left behind" (brief, SECURITY.md). Another user attaches a
    /// queue to the new multiqueue tap before it has an owner, makes the tap
    /// persistent through that queue (no capability needed) and closes the
    /// queue again: the queue counts come out right, the run goes on, puts
    /// the tap in the bridge and up, and only the final read-back sees
    /// IFF_PERSIST. The run fails, but nothing deletes the tap (add_queues
    /// deletes on its own failures only): a persistent tap stays in the
    /// bridge, marked as the victim's, left for the victim's quota.
    #[test]
    #[cfg(feature = "test-hooks")]
    fn a_tap_made_persistent_by_someone_else_is_not_left_behind() {
        let ns = NetNs::with_bridge(1400);
        let sb = Sandbox::with_accounts();
        sb.acl("allow br0\n");
        let (running, ours) = paused_before_queues(&sb, &ns, 2);
        let taps = ns.taps();
        assert_eq!(taps.len(), 1, "{taps:?}");
        attach_persist_and_leave(&ns, &taps[0])
            .expect("an ownerless multiqueue tap takes anyone's queue");
        let run = resume(running, ours);
        // Whatever the verdict, the tap must go once the caller closes what
        // it got (the fix resets persistence once the queues are ours, and
        // deletes the tap on a failure after that).
        let (code, stderr) = (run.code, run.stderr.clone());
        drop(run);
        let deadline = std::time::Instant::now() + time::secs(2);
        while std::time::Instant::now() < deadline {
            if ns.taps().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let run = (code, stderr);
        let left = ns.taps();
        let detail = ns.ip(&["-d", "link", "show"]);
        // Clean up what the run left, whatever the verdict.
        for t in &left {
            let _ = ns.ip(&["link", "delete", t]);
        }
        assert!(
            left.is_empty(),
            "run status {:?} ({}) left {left:?}:\n{detail}",
            run.0,
            run.1.trim()
        );
    }

    /// _IOW('T', 209, unsigned int)
    const TUNSETTXFILTER: libc::c_ulong = 0x4004_54d1;

    /// Attaches a queue to `tap` by name as uid 65534, installs a TX filter
    /// (the tap passes only frames for 02:00:00:00:00:99 to its reader), and
    /// closes the queue again.
    fn attach_filter_and_leave(ns: &NetNs, tap: &str) -> std::io::Result<()> {
        foreign_queue(ns, tap, |q| {
            // struct tun_filter { u16 flags; u16 count; u8 addr[count][6]; }
            let mut filter = [0u8; 10];
            filter[2..4].copy_from_slice(&1u16.to_ne_bytes());
            filter[4..].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
            // SAFETY: TUNSETTXFILTER reads a tun_filter of the size it
            // states; it returns how many addresses it matches exactly.
            let r = unsafe { libc::ioctl(q.as_raw_fd(), TUNSETTXFILTER as _, filter.as_ptr()) };
            sys_ok(r.min(0))
        })
        .map(drop)
    }

    /// A broadcast frame of an experimental EtherType.
    fn broadcast(k: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0x51, k]);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(b"redteam");
        f.resize(60, k);
        f
    }

    /// Whether the frame marked `k` reaches any of `queues` within 3 s
    /// (times BH_TEST_TIME_SCALE).
    fn arrives(queues: &[OwnedFd], k: u8) -> bool {
        let deadline = std::time::Instant::now() + time::secs(3);
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            let mut pfds: Vec<libc::pollfd> = queues
                .iter()
                .map(|q| libc::pollfd {
                    fd: q.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: a live array of pollfds of the stated length.
            if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) } <= 0 {
                continue;
            }
            for (p, q) in pfds.iter().zip(queues) {
                if p.revents & libc::POLLIN == 0 {
                    continue;
                }
                // SAFETY: read into a live buffer of its stated length.
                let n = unsafe { libc::read(q.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                let Ok(n) = usize::try_from(n) else { continue };
                if n >= 14 && buf[12..14] == [0x88, 0xb5] && buf[11] == k {
                    return true;
                }
            }
        }
        false
    }

    /// The tap handed over must be exactly as the helper made it ("the fd is
    /// only handed over if the tap is exactly as intended"). Another user
    /// who attaches a queue in the ownerless window can set tun-wide state
    /// through it (here a TX filter; TUNSETFILTEREBPF, TUNSETSTEERINGEBPF,
    /// TUNSETVNETHDRSZ/LE/BE, TUNSETOFFLOAD, TUNSETGROUP, TUNSETLINK work the
    /// same way), close the queue before the count, and the run succeeds:
    /// the victim's VM gets a tap that drops what the intruder chose (here
    /// every broadcast, so ARP and DHCP) for as long as it runs.
    #[test]
    #[cfg(feature = "test-hooks")]
    fn an_intruders_tx_filter_does_not_survive_into_the_handed_over_tap() {
        let ns = NetNs::with_bridge(1400);
        let sb = Sandbox::with_accounts();
        sb.acl("allow br0\n");
        let peer = sb.run_helper(&ns, Mode::Root, &["--br=br0"]).expect_tap();
        let send = |k: u8| {
            let f = broadcast(k);
            // SAFETY: write from a live buffer of its stated length.
            let n = unsafe { libc::write(peer.as_raw_fd(), f.as_ptr().cast(), f.len()) };
            assert_eq!(usize::try_from(n).ok(), Some(f.len()));
        };
        // Control: an undisturbed run's queues receive the peer's broadcast.
        let (running, ours) = paused_before_queues(&sb, &ns, 2);
        let clean = resume(running, ours);
        assert_eq!(
            (clean.code, clean.fds.len()),
            (Some(0), 2),
            "{}",
            clean.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
        send(1);
        assert!(
            arrives(&clean.fds, 1),
            "control: the broadcast never arrived"
        );
        drop(clean);

        let (running, ours) = paused_before_queues(&sb, &ns, 2);
        let taps: Vec<String> = ns
            .taps()
            .into_iter()
            .filter(|t| ns.tap_state(t).owner == -1)
            .collect();
        assert_eq!(taps.len(), 1, "{taps:?}");
        attach_filter_and_leave(&ns, &taps[0])
            .expect("an ownerless multiqueue tap takes anyone's queue");
        let run = resume(running, ours);
        assert_eq!((run.code, run.fds.len()), (Some(0), 2), "{}", run.stderr);
        std::thread::sleep(Duration::from_millis(200));
        send(2);
        assert!(
            arrives(&run.fds, 2),
            "the tap handed over carries another user's TX filter: the peer's broadcast never reached the VM"
        );
    }
}

// ---------------------------------------------------------------------------
// Group port lines as restrictions.
// ---------------------------------------------------------------------------

/// Finding (documented, not changed): bridge.conf lets everyone use br0;
/// bridge-helper.conf isolates the students. Root's `--check --user=nobody`
/// takes nobody's groups from /etc/group; nobody's run takes them from the
/// kernel, and a process started without the group (a login from before
/// the user joined it) gets a plain port. The issue defines group= by the
/// process's groups; --check now says so on every group= port line, and
/// bridge-helper.conf(5) tells administrators to grant such a bridge by
/// the same group so that no one without it can use it at all.
#[test]
fn a_group_port_restriction_holds_as_check_reports_it() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    sb.etc_file(
        "bridge-helper.conf",
        "port br0 group=students isolated\n",
        0o644,
    );
    sb.accounts("students:x:4242:nobody\n");
    let program = sb.install(HELPER, Mode::Setuid);
    let check = sb.run_program(
        &ns,
        &program,
        Jail::root(),
        &["--check", "--user=nobody", "--br=br0"],
        false,
    );
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains("port: isolated, chosen by /etc/qemu/bridge-helper.conf:1 (group='students': only while the caller's process has that group)"),
        "{}",
        check.stdout
    );
    // Control: a run with the group in its process is isolated.
    let member = Jail {
        groups: vec![4242],
        ..Jail::user(NOBODY)
    };
    let fd = sb
        .run_program(&ns, &program, member, &["--br=br0"], true)
        .expect_tap();
    let (tap, _) = tun_get_iff(&fd);
    assert!(ns.ip(&["-d", "link", "show", &tap]).contains("isolated on"));
    drop(fd);
    wait_for_taps(&ns, &[]);
    // nobody's run, started without the students group.
    let run = sb.run_program(&ns, &program, Jail::user(NOBODY), &["--br=br0"], true);
    let fd = run.expect_tap();
    let (tap, _) = tun_get_iff(&fd);
    let detail = ns.ip(&["-d", "link", "show", &tap]);
    drop(fd);
    // As documented (bridge-helper.conf(5), and --check's caveat above):
    // a group= line applies to the groups of the caller's process.
    assert!(
        detail.contains("isolated off"),
        "the run without the group:\n{detail}"
    );
}
