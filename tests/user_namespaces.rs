//! Runs from user namespaces the caller made itself (`unshare --user`):
//! with no map for its ids, a run and a check stop at the drop with a line
//! that names the missing map and its fix; as root of a user namespace on
//! the host's network (`--map-root-user`), where its capabilities reach
//! no link, a run asks the service and a check says so; as root of one
//! that owns its network namespace, a run makes the tap itself. Behind
//! bubblewrap's `--dev` (two user namespaces), a check names no uid the
//! service does not decide by.
mod common;
#[path = "support/service.rs"]
mod service;

use common::*;
use service::Service;

fn nobody() -> Jail {
    Jail::user(NOBODY)
}

/// `unshare` with `flags`, then `program` with `args`, as `jail`'s user in
/// the service's namespaces, with a socketpair as `--fd` unless it checks.
fn in_userns(svc: &Service, jail: Jail, flags: &[&str], program: &str, args: &[&str]) -> HelperRun {
    let mut cmd = svc.command("unshare", jail);
    cmd.args(flags).arg("--").arg(program).args(args);
    let (child, ours) = spawn_with_socket(&mut cmd, args.first() != Some(&"--check"));
    HelperRun::collect(child.wait_with_output().expect("wait"), ours)
}

#[test]
fn an_unmapped_user_namespace_is_named_with_its_fix_by_run_and_check() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let text = "the caller's gid has no mapping in its user namespace (setresgid: Invalid argument), as in one made by 'unshare --user' without a map; fix: map it ('unshare --user --map-current-user'";
    for mode in [Mode::Setuid, Mode::Unprivileged] {
        let program = sb.install(HELPER, mode);
        let program = program.to_str().unwrap();
        let run = in_userns(&svc, nobody(), &["--user"], program, &["--br=br0"]);
        run.expect_refusal(5, text);
        assert!(
            run.stderr
                .starts_with("bridge-helper: cannot drop privileges: "),
            "{mode:?}: {}",
            run.stderr
        );
        let check = in_userns(&svc, nobody(), &["--user"], program, &["--check"]);
        assert_eq!(
            (check.code, &check.stderr),
            (run.code, &run.stderr),
            "{mode:?}: the check stops where the run does"
        );
        // The fix named works: mapped, the forwarder's request is answered.
        let mapped = ["--user", "--map-current-user"];
        let fd = in_userns(&svc, nobody(), &mapped, program, &["--br=br0"]).expect_tap();
        let (name, _) = tun_get_iff(&fd);
        assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY), "{mode:?}");
    }
    assert_no_taps(&ns);
}

#[test]
fn root_of_a_user_namespace_on_the_hosts_network_asks_the_service() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let root = ["--user", "--map-root-user"];
    // A setuid copy is no different there: the kernel ignores the bit of
    // a file whose owner the namespace does not map.
    for mode in [Mode::Unprivileged, Mode::Setuid] {
        let program = sb.install(HELPER, mode);
        let program = program.to_str().unwrap();
        let run = in_userns(&svc, nobody(), &root, program, &["--br=br0"]);
        assert_eq!(run.stderr, "", "{mode:?}: a granted run prints nothing");
        let fd = run.expect_tap();
        let (name, _) = tun_get_iff(&fd);
        let st = ns.tap_state(&name);
        assert_eq!(
            (st.master.as_str(), st.owner),
            ("br0", i64::from(NOBODY)),
            "{mode:?}: judged and made as the host's uid"
        );
        drop(fd);
        // Refused as a setuid run by that uid on the host is.
        let setuid = sb.run_helper(&ns, Mode::Setuid, &["--br=br1"]);
        let refused = in_userns(&svc, nobody(), &root, program, &["--br=br1"]);
        assert_eq!(setuid.code, Some(4), "{}", setuid.stderr);
        assert_eq!(
            (refused.code, &refused.stderr, refused.fds.len()),
            (setuid.code, &setuid.stderr, 0),
            "{mode:?}"
        );
        // The check says what the run does, and no fix for the host's files.
        let check = in_userns(&svc, nobody(), &root, program, &["--check", "--br=br0"]);
        let report = &check.stdout;
        assert_eq!(check.code, Some(0), "{mode:?}: {report}{}", check.stderr);
        assert!(
            report.contains("\ninstalled: privileged only in a user namespace that does not own this network namespace")
                && report.contains("\nverdict: a run asks the service")
                && !report.contains("chown"),
            "{mode:?}: {report}"
        );
        // And by whose uid the service decides: the host's, not root's.
        assert!(
            report.contains(" check for uid 0 (root) in a user namespace: the service decides by its uid on the host, 65534 if this namespace was made there\n")
                && report.contains("whether uid 65534 (its uid on the host if this namespace was made there) may attach to 'br0'\n")
                && !report.contains("whether uid 0 "),
            "{mode:?}: {report}"
        );
    }
    assert_no_taps(&ns);
}

/// With no service to ask, its run and check name the fixes that apply
/// inside a user namespace: no install of the binary would help.
#[test]
fn root_of_a_user_namespace_with_no_service_is_told_to_start_one_or_leave() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, Mode::Setuid);
    // The sandbox's own mount namespace: no service socket there.
    let unshare = |args: &[&str]| {
        let mut cmd = sb.command(&ns, "unshare", nobody());
        cmd.args(["--user", "--map-root-user", "--"])
            .arg(&program)
            .args(args);
        let (child, ours) = spawn_with_socket(&mut cmd, args[0] != "--check");
        HelperRun::collect(child.wait_with_output().expect("wait"), ours)
    };
    let text = "cannot create a tap: this process is privileged only in a user namespace that does not own its network namespace (unshare --user on the host's network), and no bridge-helper service answers at /run/bridge-helper/socket (No such file or directory); start the service on the host ('systemctl enable --now bridge-helper.socket' with its units installed, or 'bridge-helper --serve' as root without systemd: bridge-helper(8) SERVICE), or run outside that user namespace";
    let run = unshare(&["--br=br0"]);
    run.expect_refusal(5, text);
    let check = unshare(&["--check", "--br=br0"]);
    assert_eq!(check.code, Some(5), "{}", check.stdout);
    assert!(
        check.stdout.ends_with(&format!(
            "verdict: a run would stop: {text}\nexit status: 5\n"
        )),
        "{}",
        check.stdout
    );
    assert_no_taps(&ns);
}

/// The rule is the kernel's: capabilities count in a network namespace
/// that their user namespace owns. Root of a user namespace that maps
/// root and owns a network namespace (an unprivileged container's shape)
/// makes the tap itself, with no service anywhere to ask.
#[test]
fn root_of_a_user_namespace_that_owns_its_network_makes_the_tap_itself() {
    let ns = NetNs::new();
    let sb = Sandbox::new();
    sb.acl("allow br9\n");
    let program = sb.install(HELPER, Mode::Root);
    let mut cmd = sb.command(&ns, "unshare", Jail::root());
    cmd.args(["--user", "--map-user=0", "--map-group=0", "--net", "--"])
        .args(["sh", "-c"])
        .arg("ip link add br9 type bridge && ip link set br9 up && exec \"$0\" \"$@\"")
        .arg(&program)
        .arg("--br=br9");
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    let run = HelperRun::collect(child.wait_with_output().expect("wait"), ours);
    assert_eq!(run.stderr, "", "a granted run prints nothing");
    let fd = run.expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert!(
        ns.taps().is_empty(),
        "{name} is in the caller's own network"
    );
}

/// A setuid run on the host cannot be talked into the user-namespace
/// path (dropping CAP_NET_ADMIN and forwarding, as if its capabilities
/// did not reach this network): only the kernel's EPERM for
/// NS_GET_USERNS says they do not, and a probe that fails otherwise
/// (here: no descriptor left for /proc/self/ns/net or for the owner the
/// ioctl returns) leaves the run as it was. At every limit its check
/// reports a setuid install, never the user-namespace one.
#[test]
fn a_setuid_run_out_of_descriptors_stays_a_setuid_run() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, Mode::Setuid);
    for limit in 3..=8 {
        let mut cmd = sb.command(&ns, "prlimit", nobody());
        cmd.arg(format!("--nofile={limit}"))
            .arg("--")
            .arg(&program)
            .args(["--check", "--br=br0"]);
        let out = output(&mut cmd);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("\ninstalled: setuid root\n")
                && !report.contains("user namespace that does not own"),
            "RLIMIT_NOFILE {limit}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_no_taps(&ns);
}

/// bubblewrap with `--dev /dev` (as every Flatpak runs) nests two user
/// namespaces, and the one above the VMM maps its user to 0: the check
/// there must not name uid 0 as the one the service decides by (an
/// administrator reads it as "the service takes my sandbox for root"). It
/// says the namespace is nested or root's, that the host's uid cannot be
/// seen from inside, and how to see the verdict from outside; the run
/// through the service is decided, and its tap owned, by the host's uid.
/// One level deep (no `--dev`), the uid one level up is still named.
#[test]
fn a_check_behind_bubblewraps_dev_names_no_uid_0_and_says_how_to_check_outside() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let bwrap = |dev: bool, program: &std::path::Path, args: &[&str]| {
        let mut cmd = svc.command("/usr/bin/bwrap", nobody());
        cmd.args(["--unshare-user", "--unshare-pid", "--die-with-parent"])
            .args(["--ro-bind", "/", "/", "--proc", "/proc"]);
        if dev {
            cmd.args(["--dev", "/dev"]);
        }
        cmd.args(["--tmpfs", "/run"])
            .args(["--ro-bind", "/run/bridge-helper", "/run/bridge-helper"])
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // The layout this test is about: 65534 is 0 one level up.
    let cat = std::path::Path::new("/bin/cat");
    let map = output(&mut bwrap(true, cat, &["/proc/self/uid_map"]));
    let words: Vec<String> = text(&map).split_whitespace().map(String::from).collect();
    assert_eq!(words, ["65534", "0", "1"], "bwrap --dev's uid_map");

    let out = output(&mut bwrap(true, &forwarder, &["--check", "--br=br0"]));
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        !report.contains(", 0 if this namespace") && !report.contains("whether uid 0 "),
        "uid 0 named as the one the service decides by: {report}"
    );
    let first = report.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(" check for uid 65534 (nobody) in a user namespace nested in another one (as bubblewrap's --dev and every Flatpak make it) or made by root: one level up it is uid 0, which only root can map from the host; the service decides by this user's uid on the host, which cannot be seen from here"),
        "{report}"
    );
    assert!(
        report.contains("\nverdict: a run asks the service, which decides from the host's view whether this user's uid on the host (which cannot be seen from here) may attach to 'br0'\n"),
        "{report}"
    );
    assert!(
        report.contains("; to see its verdict, run 'bridge-helper --check --br=br0' as this user outside this user namespace, or 'bridge-helper --check --user=USER --br=br0' as root\n"),
        "{report}"
    );
    // The service decides by the host's uid: the tap is nobody's.
    let (child, ours) = spawn_with_socket(&mut bwrap(true, &forwarder, &["--br=br0"]), true);
    let fd = HelperRun::collect(child.wait_with_output().expect("wait"), ours).expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY));
    drop(fd);

    // One level deep, the uid one level up is the host's.
    let out = output(&mut bwrap(false, &forwarder, &["--check", "--br=br0"]));
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains(" check for uid 65534 (nobody) in a user namespace: the service decides by its uid on the host, 65534 if this namespace was made there\n")
            && report.contains("whether uid 65534 (its uid on the host if this namespace was made there) may attach to 'br0'\n"),
        "{report}"
    );
    assert_no_taps(&ns);
}

/// The check from a user namespace tells its user which command to run
/// outside it, and root which one to run, with the bridge name as asked.
/// Pasted into a shell (dash or bash), each must run bridge-helper with
/// that name and do nothing else: a name is the caller's, and may hold a
/// shell's `$(...)`, `;` or quotes (the kernel takes them all), and root
/// is the one told to run the second. Bytes that are not printable ASCII
/// stay escaped, for the terminal: the shell gets the escape as text.
#[test]
fn a_check_in_a_user_namespace_suggests_commands_a_shell_runs_with_the_name_as_asked() {
    use std::os::unix::ffi::OsStrExt;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let forwarder = sb.install(HELPER, Mode::Unprivileged);
    let root = ["--user", "--map-root-user"];
    let names: [(&[u8], &[u8]); 6] = [
        (b"br0", b"br0"),
        (b"$(echo;echo)", b"$(echo;echo)"),
        (b"`echo`", b"`echo`"),
        (b"';echo;#", b"';echo;#"),
        (b"a\"b\\c*", b"a\"b\\c*"),
        (b"br\xc3\xa9\xff", b"br\\xc3\\xa9\\xff"),
    ];
    for (name, passed) in names {
        let br = [b"--br=".as_slice(), name].concat();
        let mut cmd = svc.command("unshare", nobody());
        cmd.args(root)
            .arg("--")
            .arg(&forwarder)
            .arg("--check")
            .arg(std::ffi::OsStr::from_bytes(&br));
        let out = output(&mut cmd);
        let report = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{report}");
        let line = report
            .lines()
            .find(|l| l.starts_with("ACL: not judged here: "))
            .unwrap_or_else(|| panic!("no ACL line: {report}"));
        let (_, rest) = line
            .split_once("; to see its verdict, run '")
            .unwrap_or_else(|| panic!("{line}"));
        let (as_user, rest) = rest
            .split_once("' as this user outside this user namespace, or '")
            .unwrap_or_else(|| panic!("{line}"));
        let as_root = rest
            .strip_suffix("' as root")
            .unwrap_or_else(|| panic!("{line}"));
        let word = |s: &str| s.as_bytes().to_vec();
        let passed = [b"--br=".as_slice(), passed].concat();
        let shown = |words: &[Vec<u8>]| -> Vec<String> {
            words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into())
                .collect()
        };
        let words = pasted_words(as_user);
        assert_eq!(
            words,
            [word("bridge-helper"), word("--check"), passed.clone()],
            "{as_user} ran {:?}",
            shown(&words)
        );
        let words = pasted_words(as_root);
        assert_eq!(
            words,
            [
                word("bridge-helper"),
                word("--check"),
                word("--user=USER"),
                passed
            ],
            "{as_root} ran {:?}",
            shown(&words)
        );
    }
    assert_no_taps(&ns);
}
