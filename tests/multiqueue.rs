//! Issue 16: `--queues=N` hands over N fds of one multiqueue tap, in one
//! message, each a working queue; every hostile value is refused whole.
mod common;
use common::*;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::Instant;

/// Asserts a multiqueue success: status 0, `n` fds in exactly one control
/// message with one data byte, all queues of one tap in the bridge.
fn expect_queues(run: HelperRun, ns: &NetNs, n: usize, vnet: bool, owner: i64) -> Vec<OwnedFd> {
    assert_eq!(run.code, Some(0), "helper failed: {}", run.stderr);
    assert_eq!(
        (run.fds.len(), run.cmsgs),
        (n, 1),
        "want {n} fds in one message"
    );
    assert_eq!(run.data, [0], "one data byte");
    let (name, _) = tun_get_iff(&run.fds[0]);
    let mut want = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
    if vnet {
        want |= IFF_VNET_HDR;
    }
    for fd in &run.fds {
        let (each, flags) = tun_get_iff(fd);
        assert_eq!(each, name, "every fd is a queue of the one tap");
        let mask = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST | IFF_MULTI_QUEUE;
        assert_eq!(flags & mask, want, "flags of {each}");
    }
    // Created under its birth name (issue 23), handed over as a tapN
    // that its slot's altname lists for its owner.
    assert!(name.starts_with("tap"), "{name}");
    let slot = slot_name(u32::try_from(owner).unwrap(), 0);
    assert_eq!(ns.altnames(&name), [slot]);
    let st = ns.tap_state(&name);
    assert_eq!(st.master, "br0");
    assert_eq!(st.mtu, 1400);
    assert_eq!(st.flags & 1, 1, "not up");
    assert!(st.address.starts_with("fe:"), "{}", st.address);
    assert_eq!(st.owner, owner);
    assert_eq!(ns.taps(), vec![name.clone()]);
    // The kernel's own count: N queues attached, none detached.
    let details = ns.ip(&["-d", "link", "show", "dev", &name]);
    assert!(details.contains("multi_queue"), "{details}");
    assert!(details.contains(&format!("numqueues {n} ")), "{details}");
    assert!(details.contains("numdisabled 0"), "{details}");
    run.fds
}

fn mq_run(mode: Mode, jail_0666: bool, args: &[&str]) -> (NetNs, Sandbox, HelperRun) {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, mode);
    let mut jail = Jail::for_mode(mode);
    jail.tun_0666 |= jail_0666;
    let run = sb.run_program(&ns, &program, jail, args, true);
    (ns, sb, run)
}

#[test]
fn root_gets_four_queues_of_one_tap() {
    let (ns, _sb, run) = mq_run(Mode::Root, false, &["--use-vnet", "--queues=4", "--br=br0"]);
    let fds = expect_queues(run, &ns, 4, true, 0);
    drop(fds);
    assert_no_taps(&ns);
}

#[test]
fn file_caps_get_queues() {
    let (ns, _sb, run) = mq_run(Mode::FileCaps, false, &["--queues=3", "--br=br0"]);
    drop(expect_queues(run, &ns, 3, false, i64::from(NOBODY)));
    assert_no_taps(&ns);
}

#[test]
fn setuid_with_a_usable_tun_gets_queues() {
    let (ns, _sb, run) = mq_run(
        Mode::Setuid,
        true,
        &["--use-vnet", "--queues=2", "--br=br0"],
    );
    drop(expect_queues(run, &ns, 2, true, i64::from(NOBODY)));
    assert_no_taps(&ns);
}

#[test]
fn setuid_with_a_0600_tun_refuses_more_than_one_queue() {
    let (ns, _sb, run) = mq_run(Mode::Setuid, false, &["--queues=2", "--br=br0"]);
    run.expect_refusal(5, "multiqueue needs /dev/net/tun usable by the caller");
    assert_no_taps(&ns);
    // One queue is today's run, which a 0600 device allows.
    let (ns, _sb, run) = mq_run(Mode::Setuid, false, &["--queues=1", "--br=br0"]);
    let fd = run.expect_tap();
    assert_eq!(tun_get_iff(&fd).1 & IFF_MULTI_QUEUE, 0);
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn one_queue_is_todays_run() {
    let (ns, _sb, run) = mq_run(Mode::Root, false, &["--use-vnet", "--queues=1", "--br=br0"]);
    let fd = run.expect_tap();
    let (_, flags) = tun_get_iff(&fd);
    assert_eq!(
        flags & IFF_MULTI_QUEUE,
        0,
        "one queue is not a multiqueue tap"
    );
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn the_bound_is_one_message() {
    let (ns, _sb, run) = mq_run(Mode::Root, false, &["--queues=253", "--br=br0"]);
    drop(expect_queues(run, &ns, 253, false, 0));
    assert_no_taps(&ns);
}

#[test]
fn hostile_values_are_refused_whole() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for (args, text) in [
        (
            &["--queues=0", "--br=br0"][..],
            "--queues='0': out of range",
        ),
        (
            &["--queues=254", "--br=br0"],
            "--queues='254': out of range",
        ),
        (&["--queues=256", "--br=br0"], "out of range"),
        (
            &["--queues=99999999999999999999", "--br=br0"],
            "out of range",
        ),
        (&["--queues=-1", "--br=br0"], "not a number of queues"),
        (&["--queues=0x4", "--br=br0"], "not a number of queues"),
        (&["--queues=", "--br=br0"], "not a number of queues"),
        (
            &["--queues=4", "--queues=4", "--br=br0"],
            "--queues given more than once",
        ),
        (&["--queues", "4", "--br=br0"], "unknown argument"),
    ] {
        for mode in [Mode::Root, Mode::Setuid, Mode::FileCaps] {
            let run = sb.run_helper(&ns, mode, args);
            run.expect_refusal(2, text);
        }
    }
    assert_no_taps(&ns);
}

#[test]
fn a_small_rlimit_nofile_is_refused_before_any_tap() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Root, Mode::FileCaps] {
        let program = sb.install(HELPER, mode);
        let mut cmd = sb.command(&ns, &program, Jail::for_mode(mode));
        cmd.args(["--queues=64", "--br=br0"]);
        // SAFETY: setrlimit only, between fork and exec, on a struct
        // prepared in the closure (no allocation).
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 32,
                    rlim_max: 32,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (child, ours) = spawn_with_socket(&mut cmd, true);
        let run = HelperRun::collect(child.wait_with_output().unwrap(), ours);
        run.expect_refusal(5, "--queues=64: RLIMIT_NOFILE (32) leaves no room");
        assert_no_taps(&ns);
    }
}

/// A broadcast frame of an experimental EtherType, marked with `k`.
fn frame(k: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x51, k]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"bridge-helper queue ");
    f.push(k);
    f.resize(60, 0);
    f
}

/// Reads frames from `peer` until every marker in `want` was seen.
fn read_markers(peer: &OwnedFd, mut want: Vec<u8>) {
    let deadline = Instant::now() + time::secs(10);
    let mut buf = [0u8; 2048];
    while !want.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "frames from queues {want:?} never reached the peer"
        );
        let mut pfd = libc::pollfd {
            fd: peer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(10_000);
        // SAFETY: one pollfd, live for the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: read into a live buffer of its stated length.
        let n = unsafe { libc::read(peer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { continue };
        let f = &buf[..n];
        if n >= 15 && f[12..14] == [0x88, 0xb5] && f[6..11] == [0x02, 0, 0, 0, 0x51] {
            want.retain(|&k| k != f[11]);
        }
    }
}

#[test]
fn every_queue_passes_traffic_to_a_peer_in_the_bridge() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let peer = sb.run_helper(&ns, Mode::Root, &["--br=br0"]).expect_tap();
    for mode in [Mode::Root, Mode::Setuid, Mode::FileCaps] {
        let program = sb.install(HELPER, mode);
        let mut jail = Jail::for_mode(mode);
        jail.tun_0666 = true; // a setuid run needs it for more than one queue
        let run = sb.run_program(&ns, &program, jail, &["--queues=4", "--br=br0"], true);
        assert_eq!((run.code, run.fds.len()), (Some(0), 4), "{}", run.stderr);
        for (k, q) in (1u8..).zip(&run.fds) {
            let f = frame(k);
            // SAFETY: write from a live buffer of its stated length.
            let n = unsafe { libc::write(q.as_raw_fd(), f.as_ptr().cast(), f.len()) };
            assert_eq!(usize::try_from(n).ok(), Some(f.len()), "write on queue {k}");
        }
        read_markers(&peer, vec![1, 2, 3, 4]);
    }
}

#[test]
#[cfg(feature = "test-hooks")]
fn a_queue_attached_by_someone_else_stops_the_run() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let (running, ours) = paused_before_queues(&sb, &ns, 4);
    let taps = ns.taps();
    assert_eq!(taps.len(), 1, "{taps:?}");
    let intruder = foreign_queue(&ns, &taps[0], |_| Ok(()))
        .expect("an ownerless multiqueue tap takes anyone's queue");
    let run = resume(running, ours);
    // The pause's own line first, then the refusal.
    assert_eq!((run.code, run.fds.len()), (Some(8), 0), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    assert!(
        run.stderr
            .ends_with("the kernel counts other queues than ours\n"),
        "{}",
        run.stderr
    );
    // Deleted, not left to the intruder's queue.
    assert_no_taps(&ns);
    assert!(common::sys::tun_iff(intruder.as_raw_fd()).is_err());
}

#[test]
fn no_one_else_can_attach_once_the_tap_is_handed_over() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let run = sb.run_helper(&ns, Mode::Root, &["--queues=2", "--br=br0"]);
    let fds = expect_queues(run, &ns, 2, false, 0);
    let (name, _) = tun_get_iff(&fds[0]);
    let e = foreign_queue(&ns, &name, |_| Ok(())).expect_err("owned by root");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

/// A run that ends without choosing to (out of memory, a panic) inside
/// `Tap::add_queues` skips the tap's own cleanup, and a multiqueue tap made
/// persistent through a queue attached while it had no owner would stay.
/// Such an end deletes the tap by index with raw system calls only
/// (`taps::unfinished::remove`, called from the out-of-memory exit and on
/// every failed outcome). This drives that deletion against the kernel: a
/// persistent tap, marked, is gone after it, and a second call is a no-op.
#[test]
fn an_abnormal_end_deletes_the_unfinished_tap() {
    use bridge_helper::system::netlink::IfIndex;
    use bridge_helper::taps::unfinished;
    let ns = NetNs::with_bridge(1500);
    ns.ip(&[
        "tuntap",
        "add",
        "dev",
        "tapgone",
        "mode",
        "tap",
        "multi_queue",
    ]);
    ns.ip(&["tuntap", "add", "dev", "tapkept", "mode", "tap"]);
    let index: u32 = ns
        .exec("cat /sys/class/net/tapgone/ifindex")
        .trim()
        .parse()
        .unwrap();
    let netns = std::fs::File::open(ns.netns_path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on a live fd; per-thread, and this thread ends here.
        sys_ok(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }).unwrap();
        unfinished::mark(IfIndex(index));
        unfinished::remove();
        unfinished::remove();
        // Handed over: nothing to remove.
        unfinished::mark(IfIndex(index + 1));
        unfinished::handed_over();
        unfinished::remove();
    })
    .join()
    .unwrap();
    assert_eq!(ns.taps(), ["tapkept"]);
    ns.ip(&["link", "delete", "tapkept"]);
}

/// Issue 23, finding 1, as the attack did it: another user loops
/// TUNSETIFF on the names the victim's new multiqueue tap may have; when
/// one lands before the owner is set, it turns the tap's carrier off
/// (TUNSETCARRIER 0) and closes its queue. A run that still succeeds must
/// hand over a tap with carrier, its port forwarding in the bridge (it
/// was handed over NO-CARRIER, the port disabled); a run that saw the
/// queue refuses and leaves nothing.
#[test]
fn another_user_cannot_switch_off_the_carrier_of_a_new_tap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const OTHER_USER: u32 = 65533;
    const ROUNDS: usize = 40;
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, Mode::FileCaps);
    let mut landed = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = attach_in_a_loop(
            &ns,
            sb.tun_node(),
            OTHER_USER,
            window_names(NOBODY),
            stop.clone(),
            |queue| {
                let off: libc::c_int = 0;
                // SAFETY: TUNSETCARRIER reads one int through the pointer.
                unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETCARRIER, &off) }
            },
        );
        let run = sb.run_program(
            &ns,
            &program,
            Jail::for_mode(Mode::FileCaps),
            &["--queues=2", "--br=br0"],
            true,
        );
        stop.store(true, Ordering::SeqCst);
        let hit = attacker.join().unwrap().expect("the attacker's set-up");
        if run.code == Some(0) {
            let (name, _) = tun_get_iff(&run.fds[0]);
            let details = ns.ip(&["-d", "link", "show", "dev", &name]);
            assert!(
                details.contains("LOWER_UP") && details.contains("state forwarding"),
                "round {round}: handed over without carrier: {details}"
            );
            if hit == Some(0) {
                landed += 1;
            }
        } else {
            run.expect_refusal(8, "the kernel counts other queues than ours");
            assert!(hit.is_some(), "round {round}: refused without an attack");
        }
        drop(run);
        assert_no_taps(&ns);
        if landed >= 3 {
            return;
        }
    }
    panic!("the attack landed {landed} times in {ROUNDS} rounds: it must land 3 times to count");
}

/// Red-team finding on the multiqueue count: another user attaches a queue
/// to the victim's new tap by its name while the tap has no owner, waits
/// for the run to set the owner, then sets itself as the owner through that
/// queue (TUNSETOWNER asks an attached queue for no privilege) and closes
/// it, before the run counts its queues. The count then shows the run's
/// queues alone, and the tap stays the attacker's until the run sets the
/// owner again as it joins the bridge: time to attach again after the
/// run's reset of the shared settings and install a filter that leaves the
/// tap deaf, while the run exits 0. The count's read must also show the
/// caller as owner: the run refuses, one line, and deletes the tap.
///
/// Deterministic up to one race: the attacker's queue is attached while
/// the run is stopped before its queues (the ownerless moment), and its
/// TUNSETOWNER must land after the run's own and before the count, a
/// window as long as attaching 252 more queues. A round where it came late
/// (its queue still attached at the count, so the run refuses for the
/// queue itself) does not count; the attack must land in one of a bounded
/// number of rounds.
#[test]
#[cfg(feature = "test-hooks")]
fn another_user_cannot_make_itself_the_owner_of_a_new_tap() {
    const OTHER_USER: u32 = 65533;
    const ROUNDS: usize = 20;
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    // The victim: uid 65534 with a cap_net_admin copy and a 0666 tun node
    // (Debian's), which the attacker opens as well.
    let helper = sb.install(HELPER, Mode::FileCaps);
    let args = ["--test-pause-queues", "--queues=253", "--br=br0"];
    let mut late = Vec::new();
    for round in 0..ROUNDS {
        let (running, ours) = stopped_as(&sb, &ns, &helper, Jail::for_mode(Mode::FileCaps), &args);
        let birth = birth_name(NOBODY, 0);
        assert_eq!(ns.taps(), [birth.as_str()], "round {round}");
        let (attached, thief) = take_ownership(&ns, sb.tun_node(), OTHER_USER, &birth, NOBODY);
        attached
            .recv_timeout(time::secs(10))
            .expect("the attacker's thread never reported its queue")
            .expect("an ownerless multiqueue tap takes another user's queue");
        let run = resume(running, ours);
        let stolen = thief.join().expect("the attacker's thread");
        if run.code == Some(0) {
            let (name, _) = tun_get_iff(&run.fds[0]);
            panic!(
                "round {round}: the run handed over {name} (status 0) although uid \
                 {OTHER_USER} had attached a queue before it had an owner and, after the \
                 run set it, set itself as owner through it ({stolen:?}): {}",
                run.stderr
            );
        }
        assert_eq!((run.code, run.fds.len()), (Some(8), 0), "{}", run.stderr);
        // The pause's own line first, then the refusal.
        assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
        drop(run.fds);
        assert_no_taps(&ns);
        let owner_changed = "its owner was changed by a queue attached before it had one\n";
        if run.stderr.ends_with(owner_changed) {
            assert_eq!(
                stolen,
                Ok(()),
                "round {round}: refused for the owner, yet no TUNSETOWNER of uid {OTHER_USER} took"
            );
            return;
        }
        // Too late: its queue was still attached when the run counted.
        assert!(
            run.stderr
                .ends_with("the kernel counts other queues than ours\n"),
            "round {round}: {}",
            run.stderr
        );
        late.push(stolen);
    }
    panic!(
        "in {ROUNDS} rounds uid {OTHER_USER}'s TUNSETOWNER never came between the run's own \
         and its count (what the attacker did each round: {late:?}); BH_TEST_TIME_SCALE does \
         not widen that window"
    );
}

/// The attacker of the test above, as a thread that enters `ns` and a
/// mount namespace of its own with that namespace's sysfs, then becomes
/// `uid` alone (raw setresuid is per thread), opens the 0666 tun node `tun`
/// and attaches a queue to `tap` by its name, sending whether that worked.
/// It then polls the tap's owner until it reads `victim`, sets
/// itself as the owner through its queue, closes it and returns `Ok`; or
/// `Err` with what happened instead (the tap gone, the owner never set, a
/// TUNSETOWNER refused). Its setup's failures panic.
#[cfg(feature = "test-hooks")]
fn take_ownership(
    ns: &NetNs,
    tun: std::path::PathBuf,
    uid: u32,
    tap: &str,
    victim: u32,
) -> (
    std::sync::mpsc::Receiver<std::io::Result<()>>,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let netns = std::fs::File::open(ns.netns_path()).expect("open netns");
    let (attached_tx, attached) = std::sync::mpsc::channel();
    let name = tap.to_string();
    let thief = std::thread::spawn(move || {
        // SAFETY: setns on a live fd, unshare, and mounts of NUL-terminated
        // paths (null where the kernel ignores the argument): all for this
        // thread alone (unsharing the mount namespace unshares its fs
        // struct), which ends here.
        unsafe {
            sys_ok(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET)).expect("setns");
            sys_ok(libc::unshare(libc::CLONE_NEWNS)).expect("unshare(CLONE_NEWNS)");
            sys_ok(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))
            .expect("make / rprivate");
            sys_ok(libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                std::ptr::null(),
            ))
            .expect("mount the namespace's sysfs");
        }
        let id = libc::c_long::from(uid);
        // SAFETY: the raw system call changes this thread's ids only.
        if unsafe { libc::syscall(libc::SYS_setresuid, id, id, id) } != 0 {
            panic!("setresuid: {}", std::io::Error::last_os_error());
        }
        let queue: OwnedFd = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&tun)
            .expect("open the 0666 tun node")
            .into();
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        let flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq.
        let r =
            sys_ok(unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) });
        let failed = r.is_err();
        attached_tx.send(r).expect("the test waits for the queue");
        if failed {
            return Err("no queue attached".to_string());
        }
        // Busy: the window is a few milliseconds.
        let owner = format!("/sys/class/net/{name}/owner");
        let deadline = Instant::now() + time::secs(10);
        loop {
            match std::fs::read_to_string(&owner) {
                Ok(v) if v.trim() == victim.to_string() => break,
                Ok(_) if Instant::now() > deadline => {
                    return Err("the run never set the owner".to_string())
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the tap was gone before its owner was read: {e}")),
            }
        }
        // SAFETY: TUNSETOWNER takes the uid by value, not a pointer.
        let set = unsafe {
            libc::ioctl(
                queue.as_raw_fd(),
                libc::TUNSETOWNER,
                libc::c_ulong::from(uid),
            )
        };
        sys_ok(set).map_err(|e| format!("TUNSETOWNER({uid}): {e}"))?;
        drop(queue);
        Ok(())
    });
    (attached, thief)
}
