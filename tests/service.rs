//! Issue 26: the service (`bridge-helper --serve`, socket-activated by
//! systemd's own tool) and the forwarder (the binary installed without
//! privilege): an unprivileged caller gets the same tap, line and status
//! as from a setuid run. Every service here runs in the test's own mount
//! and network namespaces (tests/support/service.rs).
mod common;
#[path = "support/service.rs"]
mod service;

use common::*;
use service::Service;

fn nobody() -> Jail {
    Jail::user(NOBODY)
}

#[test]
fn an_unprivileged_caller_gets_a_tap_attached_through_the_service() {
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let run = svc.forward(&sb, nobody(), &["--use-vnet", "--br=br0"]);
    assert_eq!(run.stderr, "", "a granted run prints nothing");
    let fd = run.expect_tap();
    let (name, flags) = tun_get_iff(&fd);
    assert_eq!(
        flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST),
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    );
    let st = ns.tap_state(&name);
    assert_eq!((st.master.as_str(), st.mtu, st.flags & 1), ("br0", 1400, 1));
    assert!(st.address.starts_with("fe:"), "{}", st.address);
    assert_eq!(st.owner, i64::from(NOBODY), "the tap is the caller's");
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn multiqueue_through_the_service_hands_over_every_queue_in_one_message() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    // This machine's /dev/net/tun is 0600: a setuid run refuses more than
    // one queue (it opens only the first as root), and so does the service.
    let setuid = sb.run_helper(&ns, Mode::Setuid, &["--queues=2", "--br=br0"]);
    let forwarded = svc.forward(&sb, nobody(), &["--queues=2", "--br=br0"]);
    assert_eq!(
        (forwarded.code, &forwarded.stderr),
        (setuid.code, &setuid.stderr)
    );
    assert_no_taps(&ns);
}

#[test]
fn refusals_have_the_setuid_runs_line_and_status() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow all\ndeny br1\n");
    sb.etc_file("bad.conf", "allow br0 extra\n", 0o644);
    let svc = Service::start(&sb, &ns);
    let cases: &[&[&str]] = &[
        &["--br=br1"],
        &["--br=nosuch"],
        &["--br=lo"],
        &["--br=br-sixteen-12345"],
        &["--br=br0", "--queues=0"],
        &["--br=br0", "--bogus"],
        &["--br=br0", "--fd=99"],
    ];
    for args in cases {
        let setuid = sb.run_helper(&ns, Mode::Setuid, args);
        let forwarded = svc.forward(&sb, nobody(), args);
        assert_ne!(setuid.code, Some(0), "{args:?}");
        assert_eq!(
            (forwarded.code, &forwarded.stderr, forwarded.fds.len()),
            (setuid.code, &setuid.stderr, 0),
            "{args:?}"
        );
    }
    drop(svc);
    // Files are set before a service starts: its overlay of /etc (the
    // test's, not the service's doing) does not see later changes.
    sb.acl("include /etc/qemu/bad.conf\n");
    let svc = Service::start(&sb, &ns);
    let setuid = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    let forwarded = svc.forward(&sb, nobody(), &["--br=br0"]);
    assert_eq!(setuid.code, Some(3), "{}", setuid.stderr);
    assert_eq!(
        (forwarded.code, &forwarded.stderr),
        (setuid.code, &setuid.stderr)
    );
    assert_no_taps(&ns);
}

#[test]
fn with_no_privilege_and_no_service_one_line_names_both_fixes() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    // The sandbox's own mount namespace: no service socket there.
    let run = sb.run_helper(&ns, Mode::Unprivileged, &["--br=br0"]);
    run.expect_refusal(
        5,
        "no bridge-helper service answers at /run/bridge-helper/socket",
    );
    assert!(
        run.stderr
            .contains("systemctl enable --now bridge-helper.socket"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("setcap cap_net_admin+ep"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_privileged_copy_runs_as_today_and_never_forwards() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    // In the service's namespaces, a setuid copy: the service never sees it.
    let before = svc.children();
    let program = sb.install(HELPER, Mode::Setuid);
    let mut cmd = svc.command(&program, nobody());
    cmd.arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let out = child.wait_with_output().unwrap();
    let fd = HelperRun::collect(out, ours).expect_tap();
    assert_eq!(svc.children(), before);
    drop(fd);
}

#[test]
fn malformed_requests_are_answered_with_a_usage_status() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    for (bytes, text) in [
        (
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            "not a bridge-helper request",
        ),
        (&b"BHRQ\x02"[..], "protocol version 2"),
        (
            &b"BHRQ\x01\x01\x00\x00\x01\x03br0trailing"[..],
            "bytes after the request",
        ),
        (&b"BHRQ\x01\x01\x00"[..], "the request is incomplete"),
    ] {
        let answer = svc.raw_exchange(nobody(), bytes);
        assert_eq!(&answer[..6], b"BHAN\x01\x02", "{text}: {answer:?}");
        let line = String::from_utf8_lossy(&answer[8..]).into_owned();
        assert!(
            line.starts_with("bridge-helper: bad request to the bridge-helper service: "),
            "{line}"
        );
        assert!(line.contains(text), "{line}");
    }
    assert_no_taps(&ns);
}

#[test]
fn serve_is_for_root_only() {
    let sb = Sandbox::new();
    let ns = NetNs::new();
    for mode in [Mode::Setuid, Mode::Unprivileged] {
        let program = sb.install(HELPER, mode);
        let out = output(sb.command(&ns, &program, nobody()).arg("--serve"));
        assert_eq!(out.status.code(), Some(2), "{mode:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--serve"));
    }
}
