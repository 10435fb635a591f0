//! Tap names: `tapN` as QEMU's helper gives them, found without the
//! kernel's `tap%d` scan (src/tapname.rs), and never an existing interface.
mod common;
use common::*;

use std::os::fd::OwnedFd;

/// Administrator's taps: persistent, unowned, in no bridge.
fn admin_taps(ns: &NetNs, numbers: impl IntoIterator<Item = u32>) {
    for n in numbers {
        ns.ip(&["tuntap", "add", "dev", &format!("tap{n}"), "mode", "tap"]);
    }
}

fn helper_tap(sb: &Sandbox, ns: &NetNs) -> (String, OwnedFd) {
    let fd = sb
        .run_helper(ns, Mode::Setuid, &["--use-vnet", "--br=br0"])
        .expect_tap();
    (tun_get_iff(&fd).0, fd)
}

#[test]
fn taps_numbered_without_gaps_get_the_lowest_free_number() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let (first, fd0) = helper_tap(&sb, &ns);
    assert_eq!(first, "tap0");
    admin_taps(&ns, 1..40);
    let (next, fd40) = helper_tap(&sb, &ns);
    assert_eq!(next, "tap40");
    assert_eq!(ns.tap_state("tap40").master, "br0");
    drop((fd0, fd40));
    let admins: Vec<String> = (1..40).map(|n| format!("tap{n}")).collect();
    wait_for_taps(&ns, &admins.iter().map(String::as_str).collect::<Vec<_>>());
}

/// With a gap the name is free and follows a taken number, though it may
/// not be the lowest free one (QEMU's helper would give tap5 here).
#[test]
fn with_gaps_the_name_is_free_and_follows_a_taken_one() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    admin_taps(&ns, (0..20).filter(|&n| n != 5));
    let (name, _fd) = helper_tap(&sb, &ns);
    let n: u32 = name.strip_prefix("tap").unwrap().parse().unwrap();
    assert_ne!(n, 0);
    assert!(ns.taps().contains(&format!("tap{}", n - 1)), "{name}");
    assert_eq!(name, "tap20", "galloping 0, 1, 3, 7, 15, 31 then bisecting");
    // The administrator's taps are untouched.
    for n in (0..20).filter(|&n| n != 5) {
        assert_eq!(ns.tap_state(&format!("tap{n}")).master, "", "tap{n}");
    }
}

/// If the chosen name is taken between the lookup and TUNSETIFF, the
/// helper must not attach to that interface (TUNSETIFF without
/// IFF_TUN_EXCL would, with CAP_NET_ADMIN): it falls back to `tap%d`.
#[cfg(feature = "test-hooks")]
#[test]
fn a_name_taken_after_the_lookup_is_not_attached_to() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    admin_taps(&ns, 0..3);
    let helper = sb.install(HELPER, Mode::Setuid);
    let (running, ours) = stopped_at(&sb, &ns, &helper, "--test-pause-create");
    // It chose tap3; the administrator takes it first.
    admin_taps(&ns, [3]);
    let run = resume(running, ours);
    assert!(
        run.stderr.contains("paused before creating"),
        "{}",
        run.stderr
    );
    let fd = run.expect_tap();
    assert_eq!(tun_get_iff(&fd).0, "tap4", "the kernel's tap%d after EBUSY");
    let admins = ns.tap_state("tap3");
    assert_eq!(
        admins.master, "",
        "the administrator's tap3 was put in the bridge"
    );
    assert_eq!(
        admins.flags & 1,
        0,
        "the administrator's tap3 was brought up"
    );
    assert_eq!(admins.owner, -1, "the administrator's tap3 changed owner");
}
