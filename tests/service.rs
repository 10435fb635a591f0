//! Issue 26: the service (`bridge-helper --serve`, socket-activated by
//! systemd's own tool) and the forwarder (the binary installed without
//! privilege): an unprivileged caller gets the same tap, line and status
//! as from a setuid run. Every service here runs in the test's own mount
//! and network namespaces (tests/support/service.rs).
mod common;
#[path = "support/service.rs"]
mod service;

use common::*;
use service::{answer, Service, PYTHON, SOCKET};

/// The group an include is readable by, in the group-scoped cases.
const ACL_GROUP: u32 = 4242;

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
        run.stderr
            .contains("'bridge-helper --serve' as root without systemd"),
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

/// A bridge name the wire carries (1 to 15 bytes, no NUL) but the command
/// line refuses, sent by a client that connects itself (the forwarder's
/// own parser would refuse it first): refused by the run, after its
/// privilege drop, with the line, status and audit line of a setuid run
/// given `--br=NAME`.
#[test]
fn a_bridge_name_the_command_line_refuses_is_refused_as_a_setuid_run_refuses_it() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    let svc = Service::start(&sb, &ns);
    // The audit line but for who logged it and its parent, which differ
    // (a run of this test, a session for python3's connection).
    let logged = |sb: &Sandbox| -> Vec<String> {
        sb.logged()
            .iter()
            .map(|l| {
                l.split(' ')
                    .skip(1)
                    .filter(|w| !w.starts_with("ppid=") && !w.starts_with("comm="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    logged(&sb);
    for name in ["..", "br0/x", "br:0", "br\u{1}0"] {
        let setuid = sb.run_helper(&ns, Mode::Setuid, &[&format!("--br={name}")]);
        let setuid_log = logged(&sb);
        let (tap, status, line) =
            answer(&svc.raw_exchange(nobody(), &service::request(name.as_bytes())));
        svc.wait_idle(std::time::Duration::from_secs(5));
        let served_log = logged(&sb);
        assert!(
            setuid.stderr.contains("not a valid bridge name"),
            "{name:?}: {}",
            setuid.stderr
        );
        assert!(!tap, "{name:?}");
        assert_eq!(
            (Some(i32::from(status)), &line),
            (setuid.code, &setuid.stderr),
            "{name:?}"
        );
        assert_eq!(setuid_log.len(), 1, "{setuid_log:#?}");
        assert!(
            setuid_log[0].starts_with("uid=65534 user='nobody' bridge=? refused (status 2): --br="),
            "{setuid_log:#?}"
        );
        assert_eq!(served_log, setuid_log, "{name:?}");
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
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("bridge-helper: --serve: only root may run the service ("),
            "{mode:?}: {stderr}"
        );
    }
}

/// Without systemd, `--serve` binds the socket itself. Its directory and
/// socket get the modes the units give them (DirectoryMode=0755,
/// SocketMode=0666) whatever root's umask: under 077 they would be 0700
/// and 0600, and no user could reach the service.
#[test]
fn a_service_binding_its_own_socket_sets_its_modes_whatever_the_umask() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::binding_itself(&sb, &ns, 0o077);
    let mode = |path: &str| {
        let meta = std::fs::symlink_metadata(svc.path(path)).expect(path);
        (meta.permissions().mode() & 0o7777, meta.file_type())
    };
    let (dir, kind) = mode("/run/bridge-helper");
    assert!(kind.is_dir());
    assert_eq!(dir, 0o755, "/run/bridge-helper is {dir:o}");
    let (socket, kind) = mode(service::SOCKET);
    assert!(kind.is_socket());
    assert_eq!(socket, 0o666, "the socket is {socket:o}");
    // Started by root with every capability, it holds only the unit's
    // (CapabilityBoundingSet=: DAC_OVERRIDE, KILL, SETGID, SETUID,
    // SETPCAP, NET_ADMIN) and no_new_privs, as under systemd: not
    // CAP_SYS_PTRACE, which would let it attach to any process.
    let status = std::fs::read_to_string(format!("/proc/{}/status", svc.pid())).unwrap();
    for key in [
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
    ] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{key} in {status}"));
        let want = match key {
            "CapInh:" | "CapAmb:" => "0000000000000000",
            "NoNewPrivs:" => "1",
            _ => "00000000000011e2",
        };
        assert_eq!(value, want, "{key} of a --serve started by root");
    }
    let fd = svc.forward(&sb, nobody(), &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY));
}

/// A request for br0 sent by python3 as uid 65534 with supplementary
/// group `ACL_GROUP`, from a user namespace it creates and the test
/// (root, outside) maps to 65534 with `setgroups` as given (root needs no
/// "deny" to write a gid_map). Inside, where `setgroups` allows it, the
/// process drops its supplementary group; with `nested` it then creates a
/// second user namespace, which the test sets to "deny" and maps, so that
/// the peer's own `/proc/PID/setgroups` says "deny" whatever the first
/// level's does. Returns the raw answer.
fn ask_from_userns(svc: &Service, setgroups: &str, nested: bool) -> Vec<u8> {
    let script = format!(
        r#"
import ctypes, os, socket, sys
{exchange}
libc = ctypes.CDLL(None, use_errno=True)
NEWUSER = 0x10000000
r, w = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    os.setgroups([{group}]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
    if libc.unshare(NEWUSER) != 0: os._exit(10)
    os.write(w, b'x'); os.read(r2, 1)
    os.setresgid(0, 0, 0)
    if '{setgroups}' == 'allow': os.setgroups([])
    os.setresuid(0, 0, 0)
    if {nested}:
        if libc.unshare(NEWUSER) != 0: os._exit(11)
        os.write(w, b'x'); os.read(r2, 1)
    # PR_SET_DUMPABLE, which the id changes above cleared: examinable by
    # its own user, as a process the user started is.
    libc.prctl(4, 1)
    s = socket.socket(socket.AF_UNIX); s.connect('{sock}')
    exchange(s); os._exit(0)
def setup(setgroups, outside):
    os.read(r, 1)
    open('/proc/%d/uid_map' % pid, 'w').write('0 %d 1' % outside)
    open('/proc/%d/setgroups' % pid, 'w').write(setgroups)
    open('/proc/%d/gid_map' % pid, 'w').write('0 %d 1' % outside)
    os.write(w2, b'x')
setup('{setgroups}', 65534)
if {nested}:
    setup('deny', 0)
    assert open('/proc/%d/setgroups' % pid).read() == 'deny\n'
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#,
        nested = if nested { "True" } else { "False" },
        group = ACL_GROUP,
        sock = service::SOCKET,
        exchange = service::PY_EXCHANGE,
    );
    svc.python(Jail::root(), &script)
}

#[test]
fn a_peer_whose_user_namespace_allows_setgroups_is_refused() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let (tap, status, line) = answer(&ask_from_userns(&svc, "allow", false));
    assert_eq!((tap, status), (false, 4), "{line}");
    assert!(
        line.contains("a user namespace that allows setgroups (made with"),
        "{line}"
    );
    // Nested below a first level that allows it: the peer's own
    // namespace says "deny", but its group was dropped above it.
    let (tap, status, line) = answer(&ask_from_userns(&svc, "allow", true));
    assert_eq!((tap, status), (false, 4), "{line}");
    assert!(
        line.contains("a user namespace nested 2 deep whose first level allows setgroups"),
        "{line}"
    );
    assert_no_taps(&ns);
}

#[test]
fn a_sandbox_peer_whose_setgroups_is_deny_is_answered() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let (tap, status, line) = answer(&ask_from_userns(&svc, "deny", false));
    assert_eq!((tap, status, line.as_str()), (true, 0, ""));
    // Nested below a first level that denies it: answered too.
    let (tap, status, line) = answer(&ask_from_userns(&svc, "deny", true));
    assert_eq!((tap, status, line.as_str()), (true, 0, ""));
    // The unprivileged user makes the namespace itself (setgroups deny,
    // its own ids mapped) and runs the forwarder in it.
    let program = sb.install(HELPER, Mode::Unprivileged);
    let mut cmd = svc.command("unshare", nobody());
    cmd.args(["--user", "--map-current-user", "--"])
        .arg(&program)
        .arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let fd = HelperRun::collect(child.wait_with_output().unwrap(), ours).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY));
}

/// A peer of nobody's in a user namespace another user (uid 65533) made
/// and root mapped nobody into (setgroups deny, as an administrator's
/// newuidmap range might): nobody may not examine its own process there
/// (only the first level's owner may), so the service refuses it, where
/// with CAP_SYS_PTRACE it had answered it as nobody on the word of a
/// namespace nobody does not own.
#[test]
fn a_peer_in_a_user_namespace_another_user_made_is_refused() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let script = format!(
        r#"
import ctypes, os, socket, sys
{exchange}
libc = ctypes.CDLL(None, use_errno=True)
r, w = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setresgid(65533, 65533, 65533); os.setresuid(65533, 65533, 65533)
    if libc.unshare(0x10000000) != 0: os._exit(10)
    os.write(w, b'x'); os.read(r2, 1)
    os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
    libc.prctl(4, 1)
    s = socket.socket(socket.AF_UNIX); s.connect('{sock}')
    exchange(s); os._exit(0)
os.read(r, 1)
open('/proc/%d/uid_map' % pid, 'w').write('0 {nobody} 1')
open('/proc/%d/setgroups' % pid, 'w').write('deny')
open('/proc/%d/gid_map' % pid, 'w').write('0 {nobody} 1')
os.write(w2, b'x')
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#,
        sock = service::SOCKET,
        nobody = NOBODY,
        exchange = service::PY_EXCHANGE,
    );
    let (tap, status, line) = answer(&svc.python(Jail::root(), &script));
    assert_eq!((tap, status), (false, 4), "{line}");
    assert!(line.contains(UNEXAMINABLE), "{line}");
    assert!(
        line.contains("a user namespace another user made"),
        "{line}"
    );
    assert_no_taps(&ns);
}

/// A VMM that root confined to a network namespace of its own (as
/// systemd's PrivateNetwork=yes does for a service's user), with the
/// service's socket in its file system: a setuid run there makes its tap
/// in that namespace, which has no br0, so the service must not make it
/// on the bridge of its own namespace (the host's) either. Before the
/// fix the forwarder there got a tap on the service's br0: a way out of
/// the network isolation onto the host's LAN (red team, round 6).
#[test]
fn a_peer_confined_to_another_network_namespace_gets_no_tap_on_the_services_bridges() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let program = sb.install(HELPER, Mode::Unprivileged);
    // Root makes the network namespace and leaves it to nobody, who runs
    // the forwarder as QEMU would.
    let confined = |args: &[&str]| {
        let mut cmd = svc.command("unshare", Jail::root());
        cmd.args(["--net", "--", "setpriv", "--reuid=65534", "--regid=65534"])
            .args(["--clear-groups", "--"])
            .arg(&program)
            .args(args);
        let (child, ours) = spawn_with_socket(&mut cmd, true);
        HelperRun::collect(child.wait_with_output().unwrap(), ours)
    };
    let refusal = "uid 65534 connected from a network namespace other than the service's";
    confined(&["--br=br0"]).expect_refusal(4, refusal);
    // One the user made itself is refused alike: a confined process can
    // make one too, so who made it proves nothing (SECURITY.md).
    let mut cmd = svc.command("unshare", nobody());
    cmd.args(["--user", "--map-current-user", "--net", "--"])
        .arg(&program)
        .arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    HelperRun::collect(child.wait_with_output().unwrap(), ours).expect_refusal(4, refusal);
    assert_no_taps(&ns);
    // From the service's own network namespace, the same user is answered.
    let fd = svc.forward(&sb, nobody(), &["--br=br0"]).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY));
}

/// Flatpak's sandbox: bubblewrap run by the user with new user, pid and
/// ipc namespaces and `--dev /dev`, which nests a second user namespace
/// (the first, where it mounts devpts as uid 0, keeps no process). The
/// forwarder in it gets the decision a setuid run by the same user with
/// the same groups gets: with the group an include is readable by, the
/// tap; without it, the same refusal.
#[test]
fn a_flatpak_shaped_peer_nested_by_bubblewrap_gets_the_decision_of_a_setuid_run() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("include /etc/qemu/group.conf\n");
    sb.etc_file("group.conf", "allow br0\n", 0o640);
    sb.etc_chown("group.conf", 0, ACL_GROUP);
    let svc = Service::start(&sb, &ns);
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let setuid = sb.install(HELPER, Mode::Setuid);
    let user = |groups: Vec<u32>| Jail { groups, ..nobody() };
    for groups in [vec![ACL_GROUP], vec![]] {
        let mut cmd = sb.command(&ns, &setuid, user(groups.clone()));
        cmd.arg("--br=br0");
        let (child, ours) = spawn_with_socket(&mut cmd, true);
        let by_setuid = HelperRun::collect(child.wait_with_output().unwrap(), ours);
        let granted = !groups.is_empty();
        assert_eq!(
            by_setuid.code,
            Some(if granted { 0 } else { 4 }),
            "{}",
            by_setuid.stderr
        );
        let mut cmd = svc.command("/usr/bin/bwrap", user(groups.clone()));
        cmd.args(["--unshare-user", "--unshare-pid", "--unshare-ipc"])
            .args(["--die-with-parent", "--new-session"])
            .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
            .args(["--tmpfs", "/run"])
            .args(["--ro-bind", "/run/bridge-helper", "/run/bridge-helper"])
            .args(["--", "sh", "-c"])
            // Two levels down: the parent of this namespace maps 65534 to 0.
            .arg("awk '$1 == 65534 && $2 == 0 { f = 1 } END { exit !f }' /proc/self/uid_map || exit 99; exec \"$0\" \"$@\"")
            .arg(&forwarder)
            .arg("--br=br0");
        let (child, ours) = spawn_with_socket(&mut cmd, true);
        let forwarded = HelperRun::collect(child.wait_with_output().unwrap(), ours);
        assert_eq!(
            (forwarded.code, &forwarded.stderr, forwarded.fds.len()),
            (by_setuid.code, &by_setuid.stderr, by_setuid.fds.len()),
            "groups {groups:?}"
        );
    }
}

#[test]
fn a_subordinate_uid_is_refused_naming_its_owner() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    std::fs::write(sb.dir.join("layer/subuid"), "alice:65000:1000\n").unwrap();
    let svc = Service::start(&sb, &ns);
    let run = svc.forward(&sb, nobody(), &["--br=br0"]);
    run.expect_refusal(4, "uid 65534 is a subordinate uid of 'alice' (/etc/subuid)");
    assert_no_taps(&ns);
}

/// `setpriv` arguments: real uid and gid 65534, effective gid `ACL_GROUP`
/// (the one group the include is readable by), no supplementary groups.
const SPLIT_GIDS: &[&str] = &[
    "--rgid=65534",
    "--egid=4242",
    "--clear-groups",
    "--reuid=65534",
    "--",
];

/// The refusal of a peer its own user may not examine.
const UNEXAMINABLE: &str = "connected from a process that uid 65534 may not examine itself";

/// A client that connects itself: python3 sends a request for br0 and
/// prints the answer, after `before` (python code).
fn direct_client(before: &str) -> String {
    format!(
        "import ctypes,socket,sys\n{}libc=ctypes.CDLL(None)\n{before}\ns=socket.socket(socket.AF_UNIX)\ns.connect('{}')\nexchange(s)\n",
        service::PY_EXCHANGE,
        service::SOCKET
    )
}

/// Real against effective ids (issue 26, point 2). A setuid run decides
/// by the real ids. The service answers only a peer its own user may
/// examine, which the kernel allows only for a process whose real,
/// effective and saved ids are one and that did not start with them apart
/// (it is not dumpable then): so the service never answers a peer whose
/// ids are apart, and whatever it answers, real and effective ids agree.
/// Such a caller gets the refusal that says so, through the forwarder
/// (which starts with them apart, and drops to its real ids too late to
/// be examinable) and directly.
#[test]
fn a_caller_whose_real_and_effective_ids_differ_is_decided_by_real_ids_by_a_setuid_run_and_refused_by_the_service(
) {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("include /etc/qemu/group.conf\n");
    sb.etc_file("group.conf", "allow br0\n", 0o640);
    sb.etc_chown("group.conf", 0, 4242);
    let svc = Service::start(&sb, &ns);
    // A setuid run decides by the real gid: the include is skipped.
    let setuid = sb.install(HELPER, Mode::Setuid);
    let mut cmd = sb.command(&ns, "setpriv", Jail::root());
    cmd.args(SPLIT_GIDS).arg(&setuid).arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let by_setuid = HelperRun::collect(child.wait_with_output().unwrap(), ours);
    by_setuid.expect_refusal(4, "no rule in /etc/qemu/bridge.conf");
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let mut cmd = svc.command("setpriv", Jail::root());
    cmd.args(SPLIT_GIDS).arg(&forwarder).arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let forwarded = HelperRun::collect(child.wait_with_output().unwrap(), ours);
    forwarded.expect_refusal(4, UNEXAMINABLE);
    let out = output(svc.command("setpriv", Jail::root()).args(SPLIT_GIDS).args([
        PYTHON,
        "-c",
        &direct_client(""),
    ]));
    let (tap, status, line) = answer(&out.stdout);
    assert_eq!((tap, status), (false, 4), "{line}");
    assert!(line.contains(UNEXAMINABLE), "{line}");
    assert_no_taps(&ns);
}

/// `setpriv` arguments: real uid 65534, effective uid 1, gids 65534, no
/// supplementary groups (a caller run from a setuid program, say).
const SPLIT_UIDS: &[&str] = &[
    "--ruid=65534",
    "--euid=1",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// `--check` on a copy that asks the service, by a caller whose real and
/// effective ids differ: the service will refuse its run (the forwarder,
/// started with them apart, is not dumpable after its drop), and the check,
/// not dumpable after the same drop, says so with the run's own line and
/// status, not "a run would attach".
#[test]
fn check_of_a_caller_whose_ids_differ_gives_the_services_refusal_and_status() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let out = output(
        svc.command("setpriv", Jail::root())
            .args(SPLIT_UIDS)
            .arg(&forwarder)
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{report}");
    // Next to the service's line, naming its fix.
    let refusal = report
        .lines()
        .skip_while(|l| !l.starts_with("service: "))
        .nth(1)
        .unwrap_or_default();
    assert!(
        refusal.starts_with("service: refuses this process: it is not dumpable")
            && refusal.contains("; fix: run from an ordinary process of this user"),
        "{report}"
    );
    let mut cmd = svc.command("setpriv", Jail::root());
    cmd.args(SPLIT_UIDS).arg(&forwarder).arg("--br=br0");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let run = HelperRun::collect(child.wait_with_output().unwrap(), ours);
    run.expect_refusal(4, UNEXAMINABLE);
    let line = run.stderr.trim_end().trim_start_matches("bridge-helper: ");
    assert!(
        report.ends_with(&format!(
            "verdict: a run would stop: {line}\nexit status: 4\n"
        )),
        "{report}{line}"
    );
    // With its ids one, the same user's check and run both say yes.
    let out = output(
        svc.command(&forwarder, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(!report.contains("refuses this process"), "{report}");
    svc.forward(&sb, nobody(), &["--br=br0"]).expect_tap();
    assert_no_taps(&ns);
}

/// The same caller where no service answers: a run stops for want of the
/// service (status 5, the verdict), and the check says that the service,
/// once started, would refuse this process too, so that starting it is
/// not the whole fix.
#[test]
fn check_of_a_caller_whose_ids_differ_with_no_service_says_it_would_be_refused() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    // The sandbox's own mount namespace: no service socket there.
    let out = output(
        sb.command(&ns, "setpriv", Jail::root())
            .args(SPLIT_UIDS)
            .arg(&forwarder)
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    let mut service = report.lines().filter(|l| l.starts_with("service: "));
    assert!(
        service
            .next()
            .is_some_and(|l| l.starts_with("service: no service answers at ")
                && l.contains("; fix: start the service (")),
        "{report}"
    );
    assert!(
        service.next().is_some_and(|l| l
            .starts_with("service: would refuse this process once started: it is not dumpable")
            && l.contains("; fix: ")),
        "{report}"
    );
    assert!(
        report.contains(
            "\nverdict: a run would stop: cannot create a tap: this copy has no privilege"
        ),
        "{report}"
    );
    // With its ids one, no such line.
    let out = output(
        sb.command(&ns, &forwarder, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    assert!(!report.contains("refuse this process"), "{report}");
}

/// The service reads a peer's `/proc/PID/ns/user` as the peer's own user
/// (it holds no CAP_SYS_PTRACE, see debian/bridge-helper.service): a peer
/// that user may not examine, here one that made itself not dumpable, is
/// refused with a line that says why and what to do. The same client,
/// dumpable (as any process its user starts), gets its tap.
#[test]
fn a_peer_its_own_user_may_not_examine_is_refused_saying_why() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let (tap, status, line) = answer(&svc.python(nobody(), &direct_client("")));
    assert_eq!((tap, status, line.as_str()), (true, 0, ""));
    // PR_SET_DUMPABLE 0.
    let hidden = svc.python(nobody(), &direct_client("libc.prctl(4, 0)"));
    let (tap, status, line) = answer(&hidden);
    assert_eq!((tap, status), (false, 4), "{line}");
    for part in [
        UNEXAMINABLE,
        "it is not dumpable",
        "connect from an ordinary process of that user",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert_no_taps(&ns);
}

/// `request`, made through the client library by a forked copy of this
/// test that has become nobody in the service's mount and network
/// namespaces, as a VMM of that user on the host makes it (this test process, root with every capability,
/// is a peer the service refuses: it may not examine it). The tap's
/// descriptors come back on a socket pair, a failure as its `Debug` text.
fn request_as_nobody(
    svc: &Service,
    request: bridge_helper_client::Service,
) -> Result<Vec<std::os::fd::OwnedFd>, String> {
    use std::os::fd::AsRawFd;
    let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", svc.pid())).unwrap();
    let net = std::fs::File::open(&svc.netns).unwrap();
    let (ours, theirs) = socketpair();
    // SAFETY: the child only changes its namespace and ids, makes the
    // request, sends what came of it and ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(ours);
        // SAFETY: system calls on a descriptor and values of this process;
        // PR_SET_DUMPABLE back to 1, as for a process the user started.
        let became = unsafe {
            libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) == 0
                && libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) == 0
                && libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
                && libc::prctl(libc::PR_SET_DUMPABLE, 1) == 0
        };
        let (text, fds) = match became.then(|| request.request()) {
            None => ("could not become nobody".to_string(), vec![]),
            Some(Ok(tap)) => (String::new(), tap.into_fds()),
            Some(Err(e)) => (format!("{e:?}"), vec![]),
        };
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        let sent = nix::sys::socket::sendmsg::<()>(
            theirs.as_raw_fd(),
            &[std::io::IoSlice::new(format!("{text}.").as_bytes())],
            if raw.is_empty() { &[] } else { &cmsg },
            nix::sys::socket::MsgFlags::empty(),
            None,
        );
        // SAFETY: ends the forked child without running this test's code.
        unsafe { libc::_exit(i32::from(sent.is_err())) }
    }
    drop(theirs);
    let mut buf = [0u8; 8192];
    let got = common::sys::recv_with_fds(ours.as_raw_fd(), &mut buf, false).expect("recvmsg");
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(status, 0, "the child could not send its result");
    let text = String::from_utf8_lossy(&buf[..got.bytes]);
    match text.strip_suffix('.').unwrap_or(&text) {
        "" => Ok(got.fds),
        failure => Err(failure.to_string()),
    }
}

#[test]
fn the_client_library_asks_the_service_directly() {
    use bridge_helper_client::{Error, Failure, Service as Client};
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ndeny br1\n");
    let svc = Service::start(&sb, &ns);
    let client = || Client::at(service::SOCKET);
    let fds = request_as_nobody(&svc, client().bridge("br0").vnet_hdr(true))
        .expect("a tap from the service");
    assert_eq!(fds.len(), 1);
    let (name, flags) = tun_get_iff(&fds[0]);
    assert_eq!(flags & IFF_VNET_HDR, IFF_VNET_HDR);
    assert_eq!(ns.tap_state(&name).master, "br0");
    drop(fds);
    let refused = request_as_nobody(&svc, client().bridge("br1")).unwrap_err();
    assert!(
        refused.starts_with(
            "Refused { class: Denied, status: 4, message: \"access to bridge 'br1' denied by"
        ),
        "{refused}"
    );
    let bad = request_as_nobody(&svc, client().bridge("br-sixteen-12345")).unwrap_err();
    assert!(bad.starts_with("Request("), "{bad}");
    // Root with every capability (this process): the service may not
    // examine it, and says so; root needs no service.
    let socket = format!("/proc/{}/root{}", svc.pid(), service::SOCKET);
    match Client::at(&socket).bridge("br0").request() {
        Err(Error::Refused {
            class: Failure::Denied,
            status: 4,
            message,
        }) => assert!(
            message.contains("uid 0 connected from a process that uid 0 may not examine itself"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_no_taps(&ns);
}

/// A stand-in for the service, in a mount namespace of its own: it sends a tap's message (a /dev/null fd), holds
/// its answer until the forwarder's caller has the fd or 5 s have passed,
/// then answers and keeps the connection open until the forwarder exits.
const RELAY_BEFORE_ANSWER: &str = r#"
import array, os, socket, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
os.mkdir("/run/bridge-helper")
srv = socket.socket(socket.AF_UNIX)
srv.bind("/run/bridge-helper/socket")
os.chmod("/run/bridge-helper/socket", 0o666)
srv.listen()
ours, theirs = socket.socketpair()
fwd = subprocess.Popen([sys.argv[1], "--br=br0", "--fd=%d" % theirs.fileno()],
    pass_fds=[theirs.fileno()], user=65534, group=65534, extra_groups=[],
    stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
theirs.close()
srv.settimeout(5)
conn, _ = srv.accept()
conn.recv(64)
null = os.open("/dev/null", os.O_RDONLY)
conn.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null]))])
ours.settimeout(5)
try:
    msg, anc, _, _ = ours.recvmsg(1, socket.CMSG_SPACE(4))
    print("fd before the answer:", msg == b"\0" and len(anc) == 1)
except socket.timeout:
    print("fd before the answer: False")
conn.sendall(b"BHAN\x01\x00\x00\x00")
try:
    status = fwd.wait(5)
except subprocess.TimeoutExpired:
    fwd.kill()
    status = "waited for the close"
print("status:", status, fwd.stderr.read())
"#;

#[test]
fn the_forwarder_relays_the_tap_before_the_services_answer() {
    // A run sends its tap as its last act, once it has succeeded: the
    // forwarder passes it on at once, not after the session's answer and
    // exit, and stops at the answer's end rather than at the close.
    let sb = Sandbox::new();
    let program = sb.install(HELPER, Mode::Unprivileged);
    let out = common::output(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", PYTHON, "-c"])
            .arg(RELAY_BEFORE_ANSWER)
            .arg(&program),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fd before the answer: True\nstatus: 0 b''\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_client_library_returns_the_tap_without_waiting_for_the_answer() {
    use bridge_helper_client::Service as Client;
    use std::io::{IoSlice, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let tap = sb
        .run_helper(&ns, Mode::Setuid, &["--use-vnet", "--br=br0"])
        .expect_tap();
    let (name, _) = tun_get_iff(&tap);
    // A stand-in for the service: the tap's message, then no answer until
    // the client has returned (or 10 s have passed).
    let path = sb.dir.join("stand-in.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let (returned, wait) = std::sync::mpsc::channel::<()>();
    let stand_in = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.read_exact(&mut [0u8; 13]).expect("the request");
        let fds = [tap.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            conn.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .expect("send the tap");
        let answered_late = wait
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err();
        std::io::Write::write_all(&mut conn, b"BHAN\x01\x00\x00\x00").ok();
        answered_late
    });
    let got = Client::at(&path).bridge("br0").vnet_hdr(true).request();
    returned.send(()).ok();
    let answered_late = stand_in.join().expect("stand-in");
    let got = got.expect("the tap, before any answer");
    assert_eq!(got.name(), name);
    assert!(!answered_late, "the client waited for the answer");
}

/// The differential test of issue 26, point 3, on what decides: the same
/// user with and without the group that may read an include, includes
/// that allow and deny, a missing one, names the ACL refuses. Each case
/// runs as a setuid run and through the service, and the two must agree
/// on status, line and whether a tap came. Expected differences, not
/// compared: rlimits, inherited fds, signals, LSM domain and namespaces
/// (a run in the service has the service's), and a caller its own user
/// may not examine (not dumpable, ids apart: the service refuses it, see
/// `a_peer_its_own_user_may_not_examine_is_refused_saying_why`), and
/// nothing else.
#[test]
fn the_service_decides_as_a_setuid_run_of_the_same_user_and_groups() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    ns.add_bridge("br2", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ninclude /etc/qemu/staff.conf\ninclude /etc/qemu/missing.conf\n");
    // Readable by group 4242 only: it allows br1 and denies br0.
    sb.etc_file("staff.conf", "allow br1\ndeny br0\n", 0o640);
    sb.etc_chown("staff.conf", 0, 4242);
    let svc = Service::start(&sb, &ns);
    let staff = Jail {
        groups: vec![4242],
        ..Jail::user(NOBODY)
    };
    for jail in [nobody(), staff] {
        for bridge in ["br0", "br1", "br2", "nosuch", "br0\u{1b}"] {
            let args = ["--use-vnet".to_string(), format!("--br={bridge}")];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let program = sb.install(HELPER, Mode::Setuid);
            let mut cmd = sb.command(&ns, &program, jail.clone());
            cmd.args(&args);
            let (child, ours) = spawn_with_socket(&mut cmd, true);
            let setuid = HelperRun::collect(child.wait_with_output().unwrap(), ours);
            let forwarded = svc.forward(&sb, jail.clone(), &args);
            let what = format!("groups {:?}, {bridge:?}", jail.groups);
            // The include decides: br0 only without the group, br1 only with it.
            match bridge {
                "br0" => assert_eq!(setuid.code == Some(0), jail.groups.is_empty(), "{what}"),
                "br1" => assert_eq!(setuid.code == Some(0), !jail.groups.is_empty(), "{what}"),
                _ => assert_ne!(setuid.code, Some(0), "{what}"),
            }
            assert_eq!(
                (forwarded.code, &forwarded.stderr, forwarded.fds.len()),
                (setuid.code, &setuid.stderr, setuid.fds.len()),
                "{what}"
            );
        }
    }
    assert_no_taps(&ns);
}

#[test]
fn check_on_a_service_install_says_a_run_asks_the_service() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let program = sb.install(HELPER, Mode::Unprivileged);
    sb.logged();
    let out = output(
        svc.command(&program, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    // The service read the probe's empty connection and closed it.
    assert!(
        report.contains(
            "service: answers at /run/bridge-helper/socket (it read and closed this check's empty connection, which it does not log); a run asks the service there"
        ),
        "{report}"
    );
    assert!(
        report.contains("CAP_NET_ADMIN: through the service"),
        "{report}"
    );
    assert!(
        report.contains("/dev/net/tun: through the service"),
        "{report}"
    );
    // The probe is not a request: the audit trail has no refusal of it.
    svc.wait_idle(std::time::Duration::from_secs(5));
    let logged = sb.logged();
    assert!(logged.is_empty(), "{logged:#?}");
    // And where no service answers, the check says that too, and its
    // verdict is the run's own line, which names both fixes.
    let out = output(
        sb.command(&ns, &program, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    assert!(
        report.contains(
            "service: no service answers at /run/bridge-helper/socket (No such file or directory); fix: start the service ('systemctl enable --now bridge-helper.socket'"
        ),
        "{report}"
    );
    let run = sb.run_helper(&ns, Mode::Unprivileged, &["--br=br0"]);
    let line = run.stderr.trim_end().trim_start_matches("bridge-helper: ");
    assert!(
        report.contains(&format!("verdict: a run would stop: {line}\n")),
        "{report}{line}"
    );
}

/// Root checking for a user on a host whose binary has no privilege: the
/// user's runs go through the service, and the check says so, as the
/// user's own check does, with the verdict of the user's real run.
#[test]
fn roots_check_for_a_user_on_a_service_install_follows_the_service() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let program = sb.install(HELPER, Mode::Unprivileged);
    let out =
        output(
            svc.command(&program, Jail::root())
                .args(["--check", "--user=nobody", "--br=br0"]),
        );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("service: answers at /run/bridge-helper/socket"),
        "{report}"
    );
    assert!(
        report.contains("CAP_NET_ADMIN: through the service"),
        "{report}"
    );
    assert!(!report.contains("dpkg-reconfigure"), "{report}");
    assert!(
        report.contains("verdict: a run would attach a tap to 'br0'"),
        "{report}"
    );
    svc.forward(&sb, nobody(), &["--br=br0"]).expect_tap();
}

/// In a sandbox's user namespace root's files show as the overflow uid's:
/// the check must not judge them there (nor advise chown), as the service
/// decides from the host's view, and the run through it succeeds.
#[test]
fn check_in_a_sandboxs_user_namespace_leaves_the_files_to_the_service() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let bwrap = |args: &[&str]| {
        let mut cmd = svc.command("/usr/bin/bwrap", nobody());
        cmd.args(["--unshare-user", "--unshare-pid", "--die-with-parent"])
            .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
            .args(["--tmpfs", "/run"])
            .args(["--ro-bind", "/run/bridge-helper", "/run/bridge-helper"])
            .arg("--")
            .arg(&forwarder)
            .args(args);
        cmd
    };
    let out = output(&mut bwrap(&["--check", "--br=br0"]));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!report.contains("chown"), "{report}");
    assert!(
        report.contains("ACL: not judged here: this process is in a user namespace of its own"),
        "{report}"
    );
    assert!(
        report.contains("verdict: a run asks the service, which decides from the host's view"),
        "{report}"
    );
    let (child, ours) = spawn_with_socket(&mut bwrap(&["--br=br0"]), true);
    HelperRun::collect(child.wait_with_output().unwrap(), ours).expect_tap();
}

#[test]
fn every_request_is_logged_once() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    // Drains what the service's start logged.
    sb.logged();
    let fd = svc.forward(&sb, nobody(), &["--br=br0"]).expect_tap();
    let refused = svc.forward(&sb, nobody(), &["--br=br1"]);
    assert_eq!(refused.code, Some(4));
    svc.raw_exchange(nobody(), b"BHRQ\x01\x01\x00\x00\x01\x03br9junk");
    let (_, status, _) = answer(&ask_from_userns(&svc, "allow", false));
    assert_eq!(status, 4);
    svc.wait_idle(std::time::Duration::from_secs(5));
    let lines = sb.logged();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[0].contains("uid=65534")
            && lines[0].contains("bridge='br0'")
            && lines[0].contains("granted"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("bridge='br1' refused (status 4)"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("refused by the service (status 2): bad request"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("bridge='br0' refused by the service (status 4)"),
        "{}",
        lines[3]
    );
    drop(fd);
}

#[test]
fn a_forwarded_request_is_logged_with_the_vmm_as_parent_as_a_setuid_run_logs_it() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    sb.logged();
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    // The VMM: a python3 process that runs the forwarder with its socket
    // and waits for it, as QEMU runs its helper.
    let vmm = "import subprocess,sys\nfd=int(sys.argv[2].split('=')[1])\nsys.exit(subprocess.run([sys.argv[1],'--br=br0',sys.argv[2]],pass_fds=(fd,)).returncode)\n";
    let mut cmd = svc.command(PYTHON, nobody());
    cmd.args(["-c", vmm]).arg(&forwarder);
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let vmm_pid = child.id();
    let fd = HelperRun::collect(child.wait_with_output().unwrap(), ours).expect_tap();
    // A client that connects itself: its own parent (this test) is named.
    let (_, status, _) = answer(&svc.raw_exchange(nobody(), &service::request(b"br0")));
    assert_eq!(status, 0);
    svc.wait_idle(std::time::Duration::from_secs(5));
    let lines = sb.logged();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("ppid={vmm_pid} comm='python3' bridge='br0' tap="))
            && lines[0].contains("granted"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&format!("ppid={} comm=", std::process::id()))
            && lines[1].contains("granted"),
        "{}",
        lines[1]
    );
    drop(fd);
}

#[test]
fn a_connection_turned_away_as_busy_is_logged_with_its_uid() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    sb.logged();
    // 64 silent connections of this process (uid 0) hold 64 sessions.
    let held: Vec<_> = (0..64).map(|_| svc.connect()).collect();
    let busy = svc.ask(&service::request(b"br0"));
    assert_eq!(busy.status, 5, "{}", busy.line);
    assert!(
        busy.line
            .contains("busy: 64 requests of uid 0 already running"),
        "{}",
        busy.line
    );
    // Logged before the answer was sent.
    let lines = sb.logged();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].ends_with(
            "uid=0 user='root' ppid=? comm=? bridge=? refused by the service (status 5): \
             service: busy: 64 requests of uid 0 already running; try again"
        ),
        "{}",
        lines[0]
    );
    // Another at once is answered but not logged; one a second later is
    // logged with the count of those in between.
    assert_eq!(svc.ask(&service::request(b"br0")).status, 5);
    assert_eq!(sb.logged(), Vec::<String>::new());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(svc.ask(&service::request(b"br0")).status, 5);
    let lines = sb.logged();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].ends_with("try again (1 more of this user's since the last such line)"),
        "{}",
        lines[0]
    );
    drop(held);
    svc.wait_idle(std::time::Duration::from_secs(5));
}

/// A /proc mounted with hidepid= (here `invisible`, with gid= naming a
/// group the service is not in) shows the service no process of another
/// user: the request is refused with a line that says so and names the
/// fix, not "did it exit before its answer?". (Given that group, the
/// service answers: checked by hand with `setpriv --groups=`, as
/// SupplementaryGroups= would; bridge-helper(8), SERVICE.)
#[test]
fn behind_a_proc_with_hidepid_the_refusal_names_the_group_the_service_needs() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let mut mount = svc.command("mount", Jail::root());
    mount.args([
        "-t",
        "proc",
        "-o",
        "hidepid=invisible,gid=4242",
        "proc",
        "/proc",
    ]);
    let out = mount.output().expect("mount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    svc.forward(&sb, nobody(), &["--br=br0"]).expect_refusal(
        4,
        "uid 65534 connected, but /proc hides its process from the service (/proc is mounted with hidepid=)",
    );
    assert_no_taps(&ns);
}

/// A client whose first thread has exited while another connects (the
/// process lives on; its leader is a zombie, whose /proc/PID/ns/net is
/// gone, ENOENT) is not "hidden by hidepid=": /proc shows it. A client
/// must not be able to choose that refusal, whose line tells the
/// administrator to give the service /proc's group or remount /proc
/// without hidepid= on a host where nothing hides anything.
#[test]
fn a_client_whose_leader_thread_exited_does_not_get_the_hidepid_refusal() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let client = format!(
        "import ctypes,os,socket,sys,threading,time\n{}\n\
def t():\n    time.sleep(0.3)\n    s=socket.socket(socket.AF_UNIX)\n    s.connect('{}')\n    exchange(s)\n    os._exit(0)\n\
threading.Thread(target=t).start()\n\
ctypes.CDLL(None).syscall({{'x86_64': 60, 'aarch64': 93}}[os.uname().machine], 0)\n",
        service::PY_EXCHANGE,
        service::SOCKET
    );
    let out = output(svc.command(PYTHON, nobody()).args(["-c", &client]));
    let (tap, _, line) = answer(&out.stdout);
    assert!(!tap, "{line}");
    assert!(!line.contains("/proc hides its process"), "{line}");
    assert_no_taps(&ns);
}

/// A socket whose group and mode leave the user out (the package carries
/// a restriction of QEMU's helper, 4750 root:kvm, onto it): a run and the
/// check say so and name the group as the fix, never a setuid install of
/// the copy, which would undo the administrator's restriction.
#[test]
fn a_socket_closed_to_the_user_names_its_group_not_a_setuid_install() {
    use std::os::unix::fs::PermissionsExt;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let socket = svc.path(SOCKET);
    std::os::unix::fs::chown(&socket, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    let closed = "cannot create a tap: the bridge-helper service's socket /run/bridge-helper/socket does not admit ";
    // Group root is root's own: no usermod into it, which would grant
    // far more than the service.
    let admits = "(Permission denied); the socket /run/bridge-helper/socket is owner 'root' (0), group 'root' (0), mode 0660: it admits its owner and the members of group 'root' (0) only; who may use the service is the administrator's choice, set in bridge-helper.socket (SocketGroup=, SocketMode=; bridge-helper(8) SERVICE)";
    let run = svc.forward(&sb, nobody(), &["--br=br0"]);
    run.expect_refusal(5, closed);
    assert!(run.stderr.contains(admits), "{}", run.stderr);
    assert!(!run.stderr.contains("usermod"), "{}", run.stderr);
    assert!(!run.stderr.contains("chmod 4755"), "{}", run.stderr);
    assert!(!run.stderr.contains("setcap"), "{}", run.stderr);
    // The check says the same, as its service line and as its verdict.
    let program = sb.install(HELPER, Mode::Unprivileged);
    let out = output(
        svc.command(&program, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    let line = run.stderr.trim_end().trim_start_matches("bridge-helper: ");
    assert!(
        report.contains(&format!("service: {line}\n")),
        "{report}{line}"
    );
    assert!(
        report.contains(&format!("verdict: a run would stop: {line}\n")),
        "{report}{line}"
    );
    assert!(!report.contains("chmod 4755"), "{report}");
    // Root's check for the user probes as the user.
    let out =
        output(
            svc.command(&program, Jail::root())
                .args(["--check", "--user=nobody", "--br=br0"]),
        );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    assert!(
        report.contains(&format!("verdict: a run would stop: {closed}")),
        "{report}"
    );
}

/// A listener in place of the service's, killed when dropped (a failed
/// assertion included).
struct Impostor(std::process::Child);

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Binds a python3 listener at the socket's path in the service's mount
/// namespace, in place of the service's: `script` runs with the bound,
/// listening socket `l`. Returns once the path is there.
fn impostor(svc: &Service, script: &str) -> Impostor {
    let socket = svc.path(SOCKET);
    std::fs::remove_file(&socket).unwrap();
    let code = format!(
        "import socket,os,time\nl=socket.socket(socket.AF_UNIX)\nl.bind('{SOCKET}')\nos.chmod('{SOCKET}',0o666)\nl.listen(8)\n{script}"
    );
    let child = svc
        .command(PYTHON, Jail::root())
        .args(["-c", &code])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Impostor(child);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "no listener"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    child
}

/// A socket that accepts but no service that answers (systemd's socket
/// for a service whose start fails: 203/EXEC, start-limit-hit): the run
/// says the service closed without answering and where its log is, not
/// that the request was incomplete.
#[test]
fn a_service_that_closes_without_answering_points_at_its_log() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let _listener = impostor(
        &svc,
        "while True:\n  c,_=l.accept()\n  c.recv(64)\n  c.close()\n",
    );
    let run = svc.forward(&sb, nobody(), &["--br=br0"]);
    run.expect_refusal(
        5,
        "service: the service at /run/bridge-helper/socket closed the connection without answering: it failed, or could not start; its log says why: journalctl -u bridge-helper.service, systemctl status bridge-helper.service",
    );
    assert!(!run.stderr.contains("request"), "{}", run.stderr);
}

/// The check's probe on a socket nothing reads (systemd holding it for a
/// service that does not start) says so and where the log is, with the
/// status a run would have, rather than that the service answers.
#[test]
fn check_on_a_socket_no_service_reads_says_so_and_points_at_the_log() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let _listener = impostor(&svc, "time.sleep(60)\n");
    let program = sb.install(HELPER, Mode::Unprivileged);
    let out = output(
        svc.command(&program, nobody())
            .args(["--check", "--br=br0"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{report}");
    let line = "the socket at /run/bridge-helper/socket accepts connections, but no service read this check's connection within 3 s: the service did not start, or is stuck; its log says why: journalctl -u bridge-helper.service";
    assert!(report.contains(&format!("service: {line}")), "{report}");
    assert!(
        report.contains(&format!("verdict: a run would stop: service: {line}")),
        "{report}"
    );
    assert!(!report.contains("chmod 4755"), "{report}");
}
