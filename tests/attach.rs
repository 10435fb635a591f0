//! Issue 2: the helper does its job for each install mode and each caller.
mod common;
use common::*;

fn check_attached(ns: &NetNs, fd: &std::os::fd::OwnedFd, mtu: u32, owner: i64) {
    let (name, flags) = tun_get_iff(fd);
    assert_eq!(
        flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST),
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    );
    let st = ns.tap_state(&name);
    assert_eq!(st.master, "br0");
    assert_eq!(st.mtu, mtu);
    assert_eq!(st.flags & 1, 1, "not up");
    assert!(st.address.starts_with("fe:"), "{}", st.address);
    assert_eq!(st.owner, owner);
    assert_eq!(ns.taps(), vec![name]);
}

fn attach_in_mode(mode: Mode, mtu: u32) {
    let ns = NetNs::with_bridge(mtu);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let fd = sb
        .run_helper(&ns, mode, &["--use-vnet", "--br=br0"])
        .expect_tap();
    check_attached(&ns, &fd, mtu, i64::from(mode.uid().unwrap_or(0)));
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn root_attaches_a_tap_mtu_1400() {
    attach_in_mode(Mode::Root, 1400);
}

#[test]
fn setuid_attaches_a_tap_mtu_9000() {
    attach_in_mode(Mode::Setuid, 9000);
}

#[test]
fn setuid_attaches_a_tap_mtu_1400() {
    attach_in_mode(Mode::Setuid, 1400);
}

#[test]
fn file_caps_attach_a_tap_mtu_9000() {
    attach_in_mode(Mode::FileCaps, 9000);
}

#[test]
fn libvirt_order_and_qemu_sh_c_form() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let helper = sb.install(HELPER, Mode::Setuid);
    // libvirt: --use-vnet --br=BR --fd=N (run_program appends --fd last).
    let jail = Jail::for_mode(Mode::Setuid);
    let fd = sb
        .run_program(&ns, &helper, jail, &["--use-vnet", "--br=br0"], true)
        .expect_tap();
    check_attached(&ns, &fd, 1500, i64::from(NOBODY));
    drop(fd);
    // QEMU with a helper= string that has spaces: sh -c "STRING --use-vnet --fd=N --br=BR".
    let (ours, theirs) = socketpair();
    clear_cloexec(std::os::fd::AsRawFd::as_raw_fd(&theirs));
    let script = format!(
        "{} --use-vnet --use-vnet --fd={} --br=br0",
        helper.display(),
        std::os::fd::AsRawFd::as_raw_fd(&theirs)
    );
    let out = output(
        sb.command(&ns, "/bin/sh", Jail::for_mode(Mode::Setuid))
            .args(["-c", &script]),
    );
    drop(theirs);
    let fd = HelperRun::collect(out, ours).expect_tap();
    check_attached(&ns, &fd, 1500, i64::from(NOBODY));
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn without_use_vnet_there_is_no_vnet_header() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    let fd = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (_, flags) = tun_get_iff(&fd);
    assert_eq!(
        flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_PERSIST),
        IFF_TAP | IFF_NO_PI
    );
}

#[test]
fn acl_denials_have_status_4_and_leave_nothing() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow all\ndeny br1\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=br1"])
        .expect_refusal(
            4,
            "access to bridge 'br1' denied by /etc/qemu/bridge.conf:2",
        );
    sb.acl("allow br1\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(4, "no rule in /etc/qemu/bridge.conf");
    assert_no_taps(&ns);
}

#[test]
fn acl_errors_name_file_and_line_with_status_3() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ninclude inc.conf\n");
    sb.etc_file("inc.conf", "# fine\nallow\tbr0 \n", 0o644);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(3, "/etc/qemu/inc.conf:2: unknown command 'allow\\tbr0'");
    sb.etc_file("inc.conf", "allow br0\n", 0o664);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(3, "writable by group or others");
    sb.etc_file("inc.conf", "allow br0\n", 0o644)
        .etc_chown("inc.conf", NOBODY, 0);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(3, "not root");
    assert_no_taps(&ns);
}

#[test]
fn group_readable_includes_apply_to_members_only() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("include /etc/qemu/kvm.conf\n");
    sb.etc_file("kvm.conf", "allow br0\n", 0o640)
        .etc_chown("kvm.conf", 0, 4242);
    let helper = sb.install(HELPER, Mode::Setuid);
    let member = Jail {
        uid: Some(NOBODY),
        groups: vec![4242],
        ..Jail::default()
    };
    sb.run_program(&ns, &helper, member, &["--br=br0"], true)
        .expect_tap();
    sb.run_program(&ns, &helper, Jail::user(NOBODY), &["--br=br0"], true)
        .expect_refusal(4, "no rule in /etc/qemu/bridge.conf");
    assert_no_taps(&ns);
}

#[test]
fn bridge_problems_have_status_7() {
    let ns = NetNs::with_bridge(1500);
    ns.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=nope"])
        .expect_refusal(7, "bridge 'nope' does not exist; fix: name a bridge that exists (bridge-helper --check lists them), or create it first");
    sb.run_helper(&ns, Mode::Setuid, &["--br=veth0"])
        .expect_refusal(7, "'veth0' is not a bridge (its kind is 'veth')");
    sb.run_helper(&ns, Mode::Setuid, &["--br=lo"])
        .expect_refusal(7, "'lo' is not a bridge");
    assert_no_taps(&ns);
}

#[test]
fn long_names_are_refused_before_the_acl_cve_2019_13164() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br0123456789abc", 1500);
    let sb = Sandbox::new();
    sb.acl("allow all\ndeny br0123456789abc\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0123456789abcd"])
        .expect_refusal(2, "16 bytes long, the limit is 15");
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0123456789abc"])
        .expect_refusal(4, "denied by /etc/qemu/bridge.conf:2");
    assert_no_taps(&ns);
}

#[test]
fn no_capability_says_how_to_install() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    sb.run_helper(&ns, Mode::Unprivileged, &["--br=br0"])
        .expect_refusal(5, "setcap cap_net_admin+ep");
    assert_no_taps(&ns);
}

#[test]
fn file_caps_with_a_0600_tun_device_explain_it() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    let helper = sb.install(HELPER, Mode::FileCaps);
    // The run's /dev/net/tun is 0600 (the harness binds it, whatever the
    // machine's mode): the helper must say so...
    let run = sb.run_program(&ns, &helper, Jail::user(NOBODY), &["--br=br0"], true);
    run.expect_refusal(5, "cannot open /dev/net/tun: Permission denied");
    assert_no_taps(&ns);
    // ...and with Debian's 0666 node, the same copy works.
    let jail = Jail {
        tun_0666: true,
        ..Jail::user(NOBODY)
    };
    attached_to(
        &ns,
        sb.run_program(&ns, &helper, jail, &["--br=br0"], true),
        "br0",
    );
}

#[test]
fn help_and_version_need_no_privilege() {
    // As nobody, and in a sandbox: a refused run logs, and its line must
    // reach the sandbox's /dev/log, not the machine's.
    let ns = NetNs::new();
    let sb = Sandbox::new();
    let run = |args: &[&str]| output(sb.command(&ns, HELPER, Jail::user(NOBODY)).args(args));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("usage: bridge-helper [--use-vnet] [--queues=N] --br=BRIDGE --fd=FD"));
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "bridge-helper {}\nACL file: /etc/qemu/bridge.conf\nsettings file: /etc/qemu/bridge-helper.conf\nservice socket: /run/bridge-helper/socket\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(
        sb.logged(),
        Vec::<String>::new(),
        "--help and --version log nothing"
    );
    let out = run(&["--help", "--fd=3"]);
    assert_eq!(out.status.code(), Some(2));
    let logged = sb.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("refused (status 2)"), "{logged:?}");
}

#[test]
fn an_altname_cannot_get_past_a_deny_of_the_real_name() {
    let ns = NetNs::with_bridge(1500);
    ns.ip(&["link", "property", "add", "dev", "br0", "altname", "lan0"]);
    let sb = Sandbox::new();
    sb.acl("allow all\ndeny br0\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=lan0"])
        .expect_refusal(
            4,
            "access to bridge 'br0' denied by /etc/qemu/bridge.conf:2",
        );
    // Allowed under both names, the altname works like the name.
    sb.acl("allow br0\nallow lan0\n");
    let fd = sb
        .run_helper(&ns, Mode::Setuid, &["--br=lan0"])
        .expect_tap();
    assert_eq!(ns.tap_state(&tun_get_iff(&fd).0).master, "br0");
    drop(fd);
    // A deny written against an altname holds for the real name too.
    sb.acl("allow all\ndeny lan0\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(
            4,
            "access to bridge 'lan0' denied by /etc/qemu/bridge.conf:2",
        );
    // Allowed only under the altname is not enough.
    sb.acl("allow lan0\n");
    sb.run_helper(&ns, Mode::Setuid, &["--br=lan0"])
        .expect_refusal(4, "access to bridge 'br0' denied: no rule");
    assert_no_taps(&ns);
}
