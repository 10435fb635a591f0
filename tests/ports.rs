//! Issue 15 on the host: grants for users and groups from
//! bridge-helper.conf, and the port settings this kernel can show
//! (isolation, learning; VLAN requests refused on a bridge without VLAN
//! filtering), down to frames written into the tap fds.
mod common;
use common::*;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

const STUDENTS: u32 = 4500;
const TUTORS: u32 = 4600;

/// A sandbox with bridge.conf `acl`, bridge-helper.conf `conf`, and
/// passwd/group files that name nobody and two groups.
fn sandbox(acl: &str, conf: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.acl(acl);
    sb.etc_file("bridge-helper.conf", conf, 0o644);
    sb.accounts(&format!("students:x:{STUDENTS}:\ntutors:x:{TUTORS}:\n"));
    sb
}

/// Runs the setuid helper as nobody with `groups` as supplementary groups.
fn run_as_nobody(sb: &Sandbox, ns: &NetNs, groups: &[u32], args: &[&str]) -> HelperRun {
    let helper = sb.install(HELPER, Mode::Setuid);
    let jail = Jail {
        uid: Some(NOBODY),
        gid: Some(NOBODY),
        groups: groups.to_vec(),
        tun_0666: false,
    };
    sb.run_program(ns, &helper, jail, args, true)
}

/// `ip -d link show` words after `key` for `dev`, e.g. "on" for isolated.
fn port_option(ns: &NetNs, dev: &str, key: &str) -> String {
    let out = ns.ip(&["-d", "-o", "link", "show", "dev", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .map(|w| w[1].to_string())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn a_group_grant_admits_only_members_and_a_deny_still_wins() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br-secret", 1500);
    let sb = sandbox(
        "deny br-secret\n",
        "allow all group=students\nallow br0 group=ghosts\n",
    );
    let fd = run_as_nobody(&sb, &ns, &[STUDENTS], &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).master, "br0");
    drop(fd);
    // Not a member (and the unresolvable group matches no one).
    run_as_nobody(&sb, &ns, &[TUTORS], &["--br=br0"])
        .expect_refusal(4, "access to bridge 'br0' denied: no rule");
    // bridge.conf's deny wins over the grant.
    run_as_nobody(&sb, &ns, &[STUDENTS], &["--br=br-secret"]).expect_refusal(
        4,
        "access to bridge 'br-secret' denied by /etc/qemu/bridge.conf:1",
    );
    assert_no_taps(&ns);
}

#[test]
fn a_user_grant_by_name_and_by_number() {
    let ns = NetNs::with_bridge(1500);
    for conf in [
        "allow br0 user=nobody\n",
        &format!("allow br0 user={NOBODY}\n"),
    ] {
        let sb = sandbox("", conf);
        drop(run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap());
        let sb = sandbox("", "allow br0 user=root\n");
        run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_refusal(4, "denied");
    }
    assert_no_taps(&ns);
}

#[test]
fn isolation_is_set_read_back_and_out_of_the_fd_holders_reach() {
    let ns = NetNs::with_bridge(1500);
    let sb = sandbox("allow br0\n", "port br0 isolated learning=off\n");
    let fd = run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(port_option(&ns, &name, "isolated"), "on");
    assert_eq!(port_option(&ns, &name, "learning"), "off");
    assert_eq!(ns.tap_state(&name).flags & 1, 1, "not up");

    // The fd holder (uid 65534, with the tap fd open) cannot undo it.
    let raw = fd.as_raw_fd();
    clear_cloexec(raw);
    let script = format!(
        "ls -l /proc/self/fd/{raw} >/dev/null && ip link set dev {name} type bridge_slave isolated off learning on"
    );
    let out = output(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .args(["sh", "-c", &script]),
    );
    assert!(
        !out.status.success(),
        "nobody changed the port: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(port_option(&ns, &name, "isolated"), "on");
    assert_eq!(port_option(&ns, &name, "learning"), "off");
    drop(fd);
    assert_no_taps(&ns);
}

#[test]
fn vlans_on_a_bridge_without_vlan_filtering_are_refused_naming_the_rule() {
    let ns = NetNs::with_bridge(1500);
    for (conf, line) in [
        ("port br0 vlan=20\n", 1),
        ("# lab\nport br0 group=students isolated tagged=30-31\n", 2),
    ] {
        let sb = sandbox("allow br0\n", conf);
        let run = run_as_nobody(&sb, &ns, &[STUDENTS], &["--br=br0"]);
        run.expect_refusal(7, &format!("/etc/qemu/bridge-helper.conf:{line}: "));
        assert!(run.stderr.contains("VLAN filtering"), "{}", run.stderr);
        assert_no_taps(&ns);
    }
}

#[test]
fn bad_lines_and_ambiguity_are_status_3_with_file_and_line() {
    let ns = NetNs::with_bridge(1500);
    for (conf, text) in [
        (
            "port br0 vlan=4095\n",
            "/etc/qemu/bridge-helper.conf:1: '4095' is not a VLAN id",
        ),
        ("port br0 vlan=0\n", "/etc/qemu/bridge-helper.conf:1: "),
        (
            "allow br0 user=bob\nallow br0\n",
            "/etc/qemu/bridge-helper.conf:2: ",
        ),
        (
            "deny br0\n",
            "/etc/qemu/bridge-helper.conf:1: deny belongs in bridge.conf",
        ),
        (
            "port br0 user=nobody isolated\nport br0 user=nobody isolated\n",
            "/etc/qemu/bridge-helper.conf:2: a second port line",
        ),
        (
            "port br0 user=nobody isolated\nport br0 user=65534\n",
            "/etc/qemu/bridge-helper.conf:2: a second port line for this user",
        ),
        (
            "port br0 group=students isolated\nport br0 group=tutors\n",
            "/etc/qemu/bridge-helper.conf:1 and /etc/qemu/bridge-helper.conf:2: port lines",
        ),
    ] {
        let sb = sandbox("allow br0\n", conf);
        run_as_nobody(&sb, &ns, &[STUDENTS, TUTORS], &["--br=br0"]).expect_refusal(3, text);
    }
    // bridge.conf keeps QEMU's language: a qualifier there is an error.
    let sb = sandbox("allow br0 user=nobody\n", "");
    run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_refusal(3, "/etc/qemu/bridge.conf:1: ");
    assert_no_taps(&ns);
}

#[test]
fn a_port_line_follows_the_bridge_by_its_altname_and_the_caller_by_group() {
    let ns = NetNs::with_bridge(1500);
    ns.ip(&["link", "property", "add", "dev", "br0", "altname", "lab0"]);
    let sb = sandbox(
        "allow br0\nallow lab0\n",
        "port lab0 group=students isolated\nport br0 group=tutors learning=off\n",
    );
    // Asked by its real name, the altname's line still applies.
    let fd = run_as_nobody(&sb, &ns, &[STUDENTS], &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(port_option(&ns, &name, "isolated"), "on");
    assert_eq!(port_option(&ns, &name, "learning"), "on");
    drop(fd);
    // A group that changes between runs changes what applies.
    let fd = run_as_nobody(&sb, &ns, &[TUTORS], &["--br=lab0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(port_option(&ns, &name, "isolated"), "off");
    assert_eq!(port_option(&ns, &name, "learning"), "off");
    drop(fd);
    assert_no_taps(&ns);
}

// ----- frames -----

/// A raw packet socket on `dev` inside `ns`, made by a thread that enters
/// the namespace (a socket stays in the namespace it was made in).
fn packet_socket(ns: &NetNs, dev: &str) -> OwnedFd {
    let path = ns.netns_path();
    let dev = std::ffi::CString::new(dev).unwrap();
    std::thread::spawn(move || {
        let netns = fs::File::open(path).unwrap();
        // SAFETY: setns on an open namespace fd affects this thread only;
        // socket/bind get valid, correctly sized arguments; the returned
        // fd is owned once checked.
        unsafe {
            assert_eq!(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let index = libc::if_nametoindex(dev.as_ptr());
            assert_ne!(index, 0, "no such device");
            let proto = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(proto),
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            addr.sll_protocol = proto;
            addr.sll_ifindex = i32::try_from(index).unwrap();
            let r = libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        }
    })
    .join()
    .unwrap()
}

/// A broadcast frame from `src` (a locally administered MAC ending in
/// `n`) carrying `mark`, ethertype 0x88b5 (for local experiments).
fn frame(n: u8, mark: &str) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, n]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(mark.as_bytes());
    f.resize(64, 0);
    f
}

fn send(fd: &OwnedFd, n: u8, mark: &str) {
    let f = frame(n, mark);
    let wrote = nix::unistd::write(fd, &f).expect("write a frame into the tap");
    assert_eq!(wrote, f.len());
}

/// Whether a frame carrying `mark` arrives on `fd` within the time. A
/// `false` proves nothing alone (delivery may be slow): check it only
/// after the same frame has reached another port of the bridge.
fn receives(fd: &OwnedFd, mark: &str) -> bool {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_GETFL).unwrap();
    let nonblock = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_SETFL(nonblock)).unwrap();
    let deadline = Instant::now() + time::millis(700);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(n) if buf[..n].windows(mark.len()).any(|w| w == mark.as_bytes()) => return true,
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("read: {e}"),
        }
    }
    false
}

#[test]
fn isolated_taps_reach_the_uplink_but_not_each_other() {
    let ns = NetNs::with_bridge(1500);
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["link", "set", "up0", "master", "br0", "up"]);
    ns.ip(&["link", "set", "up1", "up"]);
    // Isolated for nobody; root's own line sets nothing: a plain port.
    let sb = sandbox("allow br0\n", "port br0 isolated\nport br0 user=root\n");
    let a = run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap();
    let b = run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap();
    let plain = sb.run_helper(&ns, Mode::Root, &["--br=br0"]).expect_tap();
    let (plain_name, _) = tun_get_iff(&plain);
    assert_eq!(port_option(&ns, &plain_name, "isolated"), "off");
    let uplink = packet_socket(&ns, "up1");

    // Controls first: the plain port reaches everyone, as every port did
    // before, so each tap's receive path works.
    send(&plain, 3, "from-plain-3");
    assert!(receives(&a, "from-plain-3"));
    assert!(receives(&b, "from-plain-3"));
    assert!(receives(&uplink, "from-plain-3"));

    // The bridge floods a broadcast to all its ports in one pass: once the
    // uplink and the plain tap have a's, b would have it too if it were
    // to get it at all, so its absence is not mere slowness.
    send(&a, 1, "from-a-1");
    assert!(
        receives(&uplink, "from-a-1"),
        "the uplink did not get a's broadcast"
    );
    assert!(
        receives(&plain, "from-a-1"),
        "the plain tap did not get a's broadcast"
    );
    assert!(!receives(&b, "from-a-1"), "isolated b got a's broadcast");

    send(&b, 2, "from-b-2");
    assert!(receives(&uplink, "from-b-2"));
    assert!(receives(&plain, "from-b-2"));
    assert!(!receives(&a, "from-b-2"), "isolated a got b's broadcast");
    drop((a, b, plain));
    assert_no_taps(&ns);
}

#[test]
fn without_port_settings_taps_reach_each_other_as_before() {
    let ns = NetNs::with_bridge(1500);
    let sb = sandbox("allow br0\n", "port br1 isolated\n");
    let a = run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap();
    let b = run_as_nobody(&sb, &ns, &[], &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&a);
    assert_eq!(port_option(&ns, &name, "isolated"), "off");
    send(&a, 1, "plain-a");
    assert!(receives(&b, "plain-a"));
    drop((a, b));
    assert_no_taps(&ns);
}
