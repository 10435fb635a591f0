//! Issue 14: `--check [--br=BRIDGE]` states what a run would decide, line
//! by line, and exits with the status a run would; nothing is created.
mod common;
use common::*;

/// `--check ARGS` as `mode` would run it, with no --fd.
fn check(sb: &Sandbox, ns: &NetNs, mode: Mode, args: &[&str]) -> HelperRun {
    check_in(sb, ns, mode, Jail::for_mode(mode), args)
}

/// [`check`] in a given jail (another tun node, other groups).
fn check_in(sb: &Sandbox, ns: &NetNs, mode: Mode, jail: Jail, args: &[&str]) -> HelperRun {
    let program = sb.install(HELPER, mode);
    let mut all = vec!["--check"];
    all.extend_from_slice(args);
    let before = ns.taps();
    let run = sb.run_program(ns, &program, jail, &all, false);
    assert!(run.fds.is_empty(), "--check sent an fd");
    assert_eq!(ns.taps(), before, "--check changed the taps");
    ends_with_verdict_and_status(&run);
    run
}

/// Every report ends with its verdict and then the exit status, and the
/// two agree with each other and with the process's status.
fn ends_with_verdict_and_status(run: &HelperRun) {
    if run.stdout.is_empty() {
        // Refused before any report: a usage error, on stderr.
        assert_eq!(run.code, Some(2), "no report:\n{}", run.stderr);
        return;
    }
    let last: Vec<&str> = run.stdout.lines().rev().take(2).collect();
    let code = run.code.expect("--check was killed");
    assert_eq!(
        last.first().copied(),
        Some(&*format!("exit status: {code}")),
        "the last line is not the exit status:\n{}",
        run.stdout
    );
    let verdict = last.get(1).copied().unwrap_or_default();
    let stops = verdict.starts_with("verdict: a run would stop: ")
        || verdict.starts_with("verdict: no bridge here");
    let attaches = verdict.starts_with("verdict: a run would attach ")
        || verdict.starts_with("verdict: a run could attach to ");
    assert!(
        (code == 0 && attaches) || (code != 0 && stops),
        "verdict and exit status {code} disagree:\n{}",
        run.stdout
    );
}

/// The report's lines, minus the first (version and uid).
fn lines(run: &HelperRun) -> Vec<&str> {
    run.stdout.lines().skip(1).collect()
}

fn has(run: &HelperRun, line: &str) {
    assert!(
        run.stdout.lines().any(|l| l == line),
        "no line {line:?} in:\n{}",
        run.stdout
    );
}

fn lacks(run: &HelperRun, start: &str) {
    assert!(
        !run.stdout.lines().any(|l| l.starts_with(start)),
        "unexpected {start:?} in:\n{}",
        run.stdout
    );
}

const NOT_CHECKED: &str = "not checked: the --fd socket, whether the kernel creates the tap, whether the bridge takes another port";

#[test]
fn typical_setup_whole_report() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\ndeny br1\nallow virbr0\n");
    let run = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        format!(
            "bridge-helper {} check for uid 65534 (nobody)",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(
        lines(&run),
        [
            "installed: setuid root",
            "CAP_NET_ADMIN: a run gets it",
            "/dev/net/tun: opens the way a run opens it",
            "ACL file: /etc/qemu/bridge.conf",
            "settings file: /etc/qemu/bridge-helper.conf",
            "file /etc/qemu/bridge.conf: trusted, read",
            "file /etc/qemu/bridge-helper.conf: does not exist (optional: compiled-in defaults apply)",
            "max-abandoned-taps: 4",
            "port settings: none",
            "bridge 'br0': allowed by /etc/qemu/bridge.conf:1",
            "bridge 'br1': denied by /etc/qemu/bridge.conf:2",
            "rule /etc/qemu/bridge.conf:3: names bridge 'virbr0', which does not exist here",
            NOT_CHECKED,
            "verdict: a run could attach to 'br0'",
            "exit status: 0",
        ]
    );
    // The typical report in bridge-helper(8) is this one, for uid 1000.
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/bridge-helper.8"))
        .unwrap()
        .replace("\\-", "-");
    let shown: Vec<&str> = page
        .split_once("$ bridge-helper --check\n")
        .expect("bridge-helper(8) shows a check")
        .1
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('$'))
        .collect();
    assert_eq!(
        shown,
        lines(&run),
        "bridge-helper(8)'s example report is stale"
    );
}

#[test]
fn with_br_ends_with_the_verdict_and_its_rule() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\ndeny br1\nallow virbr0\n");
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    assert_eq!(r.code, Some(0));
    has(
        &r,
        "verdict: a run would attach a tap to 'br0' (allowed by /etc/qemu/bridge.conf:1)",
    );
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br1"]);
    assert_eq!(r.code, Some(4));
    assert_eq!(r.stderr, "", "the report says it on stdout");
    // The verdict does not send the user to the command just run.
    has(
        &r,
        "verdict: a run would stop: access to bridge 'br1' denied by /etc/qemu/bridge.conf:2",
    );
    assert!(
        !r.stdout.contains("see bridge-helper --check"),
        "{}",
        r.stdout
    );
    // The run's own message does.
    sb.run_helper(&ns, Mode::Setuid, &["--br=br1"]).expect_refusal(
        4,
        "access to bridge 'br1' denied by /etc/qemu/bridge.conf:2; see bridge-helper --check --br=br1",
    );
    has(&r, "exit status: 4");
    let r = check(&sb, &ns, Mode::Setuid, &["--br=virbr0"]);
    assert_eq!(r.code, Some(7));
    has(&r, "verdict: a run would stop: bridge 'virbr0' does not exist; libvirt creates it when its network starts (virsh net-start default)");
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br9"]);
    assert_eq!(r.code, Some(4));
    has(&r, "verdict: a run would stop: access to bridge 'br9' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it; see bridge.conf(5) and bridge-helper.conf(5)");
}

#[test]
fn acl_missing_untrusted_malformed() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(3));
    has(&r, "file /etc/qemu/bridge.conf: does not exist");
    has(&r, "ACL: /etc/qemu/bridge.conf: does not exist; create it, owned by root, to allow bridges (see bridge.conf(5))");
    has(
        &r,
        "bridge 'br0': no verdict: the configuration stops every run (above)",
    );
    has(&r, "exit status: 3");

    sb.etc_file("bridge.conf", "allow br0\n", 0o666);
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    assert_eq!(r.code, Some(3));
    has(&r, "file /etc/qemu/bridge.conf: not trusted: writable by group or others (mode 0666); fix: chmod go-w /etc/qemu/bridge.conf");
    has(&r, "verdict: a run would stop: /etc/qemu/bridge.conf: writable by group or others (mode 0666); fix: chmod go-w /etc/qemu/bridge.conf");

    sb.acl("allow br0\nallow br0 extra\nallow br0\nfrobnicate\n");
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(3));
    let errors: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("syntax error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{}", r.stdout);
    assert!(errors[0].starts_with("syntax error: /etc/qemu/bridge.conf:2: "));
    assert!(errors[1].starts_with("syntax error: /etc/qemu/bridge.conf:4: "));
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("ACL: /etc/qemu/bridge.conf:2: ")),
        "{}",
        r.stdout
    );

    sb.acl("include /etc/qemu/missing.conf\nallow br0\n");
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(0));
    has(&r, "file /etc/qemu/missing.conf: does not exist");
    has(&r, "bridge 'br0': allowed by /etc/qemu/bridge.conf:2");
}

#[test]
fn each_install_mode() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let r = check(&sb, &ns, Mode::Root, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    has(&r, "installed: run by root");
    let r = check(&sb, &ns, Mode::FileCaps, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    has(&r, "installed: file capability cap_net_admin");
    has(&r, "CAP_NET_ADMIN: a run gets it");
    has(&r, "/dev/net/tun: opens the way a run opens it");
    let r = check(&sb, &ns, Mode::Unprivileged, &["--br=br0"]);
    assert_eq!(r.code, Some(5), "{}", r.stdout);
    has(&r, "installed: neither setuid root nor a file capability");
    let p = sb.install(HELPER, Mode::Unprivileged);
    let p = p.display();
    has(&r, &format!("CAP_NET_ADMIN: a run does not get it: missing CAP_NET_ADMIN: fix: chown root:root {p} && chmod 4755 {p} (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep {p}; from the package: dpkg-reconfigure bridge-helper"));
    has(&r, "exit status: 5");
}

#[test]
fn no_bridge_allowed_statuses() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("deny br0\n");
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(4), "{}", r.stdout);
    has(
        &r,
        "verdict: no bridge here that a run could attach uid 65534 to",
    );
    sb.acl("allow virbr0\n");
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(7), "{}", r.stdout);
    has(&r, "bridge 'br0': denied: no rule allows it");
}

#[test]
fn check_refuses_fd_and_user_for_non_root() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let program = sb.install(HELPER, Mode::Setuid);
    let r = sb.run_program(
        &ns,
        &program,
        Jail::for_mode(Mode::Setuid),
        &["--check"],
        true,
    );
    r.expect_refusal(2, "--fd cannot be used with --check");
    let r = check(&sb, &ns, Mode::Setuid, &["--user=root"]);
    r.expect_refusal(2, "--user='root': only root may use --user");
}

#[test]
fn names_in_the_report_are_escaped() {
    let ns = NetNs::new();
    ns.add_bridge("br\u{1b}x", 1500);
    let sb = Sandbox::with_accounts();
    sb.acl(b"allow all\nallow \xff\n");
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    has(&r, "bridge 'br\\x1bx': a name a run cannot be asked for");
    has(
        &r,
        "rule /etc/qemu/bridge.conf:2: names bridge '\\xff', which does not exist here",
    );
    assert!(!r.stdout.contains('\u{1b}'));
}

/// The check and the real run agree on every outcome decided before a tap
/// is made: same status, for each case and install mode.
#[test]
fn check_and_run_agree() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    ns.add_bridge("lan0", 1500);
    ns.ip(&[
        "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
    ]);
    ns.ip(&[
        "link", "property", "add", "dev", "lan0", "altname", "altlan",
    ]);
    let sb = Sandbox::with_accounts();
    let acls: &[&[u8]] = &[
        b"allow br0\n",
        b"allow all\n",
        b"allow all\ndeny br1\n",
        b"deny all\nallow br0\n",
        b"allow lan0\n",
        b"allow lan0\nallow altlan\n",
        b"allow all\ndeny altlan\n",
        b"allow dummy0\n",
        b"allow br0 junk\n",
        b"include /etc/qemu/nope.conf\nallow br0\n",
        b"# nothing\n",
    ];
    let bridges = ["br0", "br1", "lan0", "altlan", "dummy0", "virbr0", "nope"];
    let mut cases = 0;
    for mode in [Mode::Setuid, Mode::FileCaps, Mode::Unprivileged] {
        for acl in acls {
            sb.acl(acl);
            for br in bridges {
                let arg = format!("--br={br}");
                let real = sb.run_helper(&ns, mode, &[&arg]);
                let real_code = real.code;
                if real_code == Some(0) {
                    drop(real.expect_tap());
                    wait_for_taps(&ns, &[]);
                }
                let checked = check(&sb, &ns, mode, &[&arg]);
                assert_eq!(
                    checked.code,
                    real_code,
                    "{mode:?} {:?} {br}: run said {:?}, check said:\n{}",
                    String::from_utf8_lossy(acl),
                    real_code,
                    checked.stdout
                );
                cases += 1;
            }
        }
        // The ACL untrusted, missing, and in a directory anyone can write.
        for broken in [
            |sb: &Sandbox| {
                sb.etc_file("bridge.conf", "allow br0\n", 0o664);
            },
            |sb: &Sandbox| {
                let _ = std::fs::remove_file(sb.etc_path("bridge.conf"));
            },
            |sb: &Sandbox| {
                sb.etc_file("inc/x.conf", "allow br0\n", 0o644);
                std::fs::set_permissions(
                    sb.etc_path("inc"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                )
                .unwrap();
                sb.acl("include /etc/qemu/inc/x.conf\n");
            },
        ] {
            broken(&sb);
            for br in ["--br=br0", "--br=nope"] {
                let real = sb.run_helper(&ns, mode, &[br]);
                let checked = check(&sb, &ns, mode, &[br]);
                assert_eq!(checked.code, real.code, "{mode:?}:\n{}", checked.stdout);
                let first = if mode == Mode::Unprivileged { 5 } else { 3 };
                assert_eq!(checked.code, Some(first), "{}", checked.stdout);
            }
        }
    }
    // A file-capability install whose tun node only root may open (this
    // machine's own 0600 node): the check stops where the run does.
    sb.acl("allow br0\n");
    let mut jail = Jail::for_mode(Mode::FileCaps);
    jail.tun_0666 = false;
    let program = sb.install(HELPER, Mode::FileCaps);
    let real = sb.run_program(&ns, &program, jail.clone(), &["--br=br0"], true);
    real.expect_refusal(5, "cannot open /dev/net/tun");
    for args in [&["--br=br0"][..], &[]] {
        let checked = check_in(&sb, &ns, Mode::FileCaps, jail.clone(), args);
        assert_eq!(checked.code, Some(5), "{}", checked.stdout);
    }
    assert!(cases >= 200, "{cases}");
}

/// Each fault of the installation or the environment gets a line that
/// names its fix, and the verdict stops there, with the run's status.
#[test]
fn install_faults_name_their_fix_and_the_verdict_follows() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    // Each fix names the copy that ran, by the path the kernel has for it.
    let p = sb.install(HELPER, Mode::FileCaps);
    let p = p.display();
    let tun_fix = &format!("/dev/net/tun: cannot open /dev/net/tun: Permission denied (os error 13); fix: chown root:root {p} && chmod 4755 {p} (setuid root; from the package: dpkg-reconfigure bridge-helper), or make the node mode 0666, as Debian's udev rule does");
    let mut jail = Jail::for_mode(Mode::FileCaps);
    jail.tun_0666 = false;
    let r = check_in(&sb, &ns, Mode::FileCaps, jail, &["--br=br0"]);
    has(&r, tun_fix);
    has(
        &r,
        &format!(
            "verdict: a run would stop: {}",
            &tun_fix["/dev/net/tun: ".len()..]
        ),
    );
    let p = sb.install(HELPER, Mode::Unprivileged);
    let p = p.display();
    let cap_fix = format!("missing CAP_NET_ADMIN: fix: chown root:root {p} && chmod 4755 {p} (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep {p}; from the package: dpkg-reconfigure bridge-helper");
    let r = check(&sb, &ns, Mode::Unprivileged, &["--br=br0"]);
    has(
        &r,
        &format!("CAP_NET_ADMIN: a run does not get it: {cap_fix}"),
    );
    // The run itself asks the service, finds none, and says both fixes.
    has(&r, &format!("verdict: a run would stop: cannot create a tap: this copy has no privilege (neither setuid root nor cap_net_admin) and no bridge-helper service answers at /run/bridge-helper/socket (No such file or directory); start the service ('systemctl enable --now bridge-helper.socket' with its units installed, or 'bridge-helper --serve' as root without systemd: bridge-helper(8) SERVICE), or chown root:root {p} && chmod 4755 {p} (setuid root), or, where /dev/net/tun is 0666, setcap cap_net_admin+ep {p}"));
    sb.etc_file("bridge.conf", "allow br0\n", 0o666);
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    has(&r, "verdict: a run would stop: /etc/qemu/bridge.conf: writable by group or others (mode 0666); fix: chmod go-w /etc/qemu/bridge.conf");
}

/// The install fixes a refused run names are commands that work when
/// pasted: they name the file that ran (the link's target when run through
/// a link, as from README.md's /usr/local/bin link), quoted where a shell
/// needs it, and each, run by root, makes the next run succeed.
#[test]
fn install_fixes_name_the_file_that_ran_and_work_when_pasted() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    // A copy with no privilege, in a directory a shell would split.
    let dir = sb.dir.join("lib exec");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("bridge-helper");
    let copied = std::process::Command::new("cp")
        .arg(HELPER)
        .arg(&file)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = sb.dir.join("bin/bh-link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let run = || {
        sb.run_program(
            &ns,
            &link,
            Jail::for_mode(Mode::Unprivileged),
            &["--br=br0"],
            true,
        )
    };
    let r = run();
    r.expect_refusal(5, "this copy has no privilege");
    let quoted = format!("'{}'", file.display());
    let setuid = format!("chown root:root {quoted} && chmod 4755 {quoted}");
    let setcap = format!("setcap cap_net_admin+ep {quoted}");
    for fix in [&setuid, &setcap] {
        assert!(
            r.stderr.contains(&format!(" {fix}")),
            "no {fix:?} in {}",
            r.stderr
        );
    }
    // The path named is the file that ran: the link's target, which exists.
    assert!(file.is_file() && link.symlink_metadata().unwrap().file_type().is_symlink());
    let paste = |command: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .unwrap();
        assert!(ok.success(), "{command}");
    };
    paste(&setuid);
    assert_eq!(file.metadata().unwrap().mode() & 0o7777, 0o4755);
    drop(run().expect_tap());
    wait_for_taps(&ns, &[]);
    // Back to no privilege, then the file capability (the jail's node is
    // 0666, where that is enough).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    run().expect_refusal(5, "this copy has no privilege");
    paste(&setcap);
    drop(run().expect_tap());
    wait_for_taps(&ns, &[]);
}

/// The install fixes are commands for root, on a path the caller chose (a
/// copy it made, anywhere): pasted into a shell (dash or bash), each must
/// run chown, chmod or setcap on that path and nothing else, whatever
/// shell syntax the path holds (a quote, `;`, `$(...)`).
#[test]
fn install_fixes_on_a_path_the_caller_chose_run_nothing_else_when_pasted() {
    use std::os::unix::fs::PermissionsExt;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let dir = sb.dir.join("x';echo;#$(echo)");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.join("bridge-helper");
    let copied = std::process::Command::new("cp")
        .arg(HELPER)
        .arg(&file)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = sb.run_program(
        &ns,
        &file,
        Jail::for_mode(Mode::Unprivileged),
        &["--br=br0"],
        true,
    );
    r.expect_refusal(5, "this copy has no privilege");
    let line = r.stderr.trim_end();
    let (_, setuid) = line
        .split_once(" or chown ")
        .unwrap_or_else(|| panic!("{line}"));
    let (setuid, rest) = setuid
        .split_once(" (setuid root)")
        .unwrap_or_else(|| panic!("{line}"));
    let (_, setcap) = rest
        .split_once("is 0666, ")
        .unwrap_or_else(|| panic!("{line}"));
    let path = file.as_os_str().as_encoded_bytes().to_vec();
    let word = |s: &str| s.as_bytes().to_vec();
    let shown = |words: &[Vec<u8>]| -> Vec<String> {
        words
            .iter()
            .map(|w| String::from_utf8_lossy(w).into())
            .collect()
    };
    let setuid = format!("chown {setuid}");
    let words = pasted_words(&setuid);
    assert_eq!(
        words,
        [
            word("chown"),
            word("root:root"),
            path.clone(),
            word("chmod"),
            word("4755"),
            path.clone()
        ],
        "{setuid} ran {:?}",
        shown(&words)
    );
    let words = pasted_words(setcap);
    assert_eq!(
        words,
        [word("setcap"), word("cap_net_admin+ep"), path],
        "{setcap} ran {:?}",
        shown(&words)
    );
}

/// Root, as `sudo -l -U`: the files are read with that user's uid and
/// groups, so an include readable by the user's group counts and one only
/// root can read is skipped.
#[test]
fn root_checks_for_another_user() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::with_accounts();
    sb.acl("include /etc/qemu/group.conf\ninclude /etc/qemu/root.conf\n");
    sb.etc_file("group.conf", "allow br1\n", 0o640);
    sb.etc_chown("group.conf", 0, NOBODY);
    sb.etc_file("root.conf", "allow br0\n", 0o600);
    let program = sb.install(HELPER, Mode::Setuid);
    let as_root = |args: &[&str]| {
        let r = sb.run_program(&ns, &program, Jail::root(), args, false);
        assert!(r.fds.is_empty());
        r
    };
    let r = as_root(&["--check", "--user=nobody"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let head: Vec<&str> = r.stdout.lines().take(5).collect();
    assert_eq!(
        head,
        [
            &*format!(
                "bridge-helper {} check for uid 65534 (nobody)",
                env!("CARGO_PKG_VERSION")
            ),
            "groups: 65534 (from /etc/passwd and /etc/group only: a login through PAM or sssd may have others)",
            "installed: setuid root (from this program's file)",
            "CAP_NET_ADMIN: a run gets it",
            "/dev/net/tun: opens the way a run opens it",
        ]
    );
    has(&r, "file /etc/qemu/group.conf: trusted, read");
    has(&r, "file /etc/qemu/root.conf: not readable by this user");
    has(&r, "bridge 'br0': denied: no rule allows it");
    has(&r, "bridge 'br1': allowed by /etc/qemu/group.conf:1");
    has(&r, "helper taps: none in this network namespace");
    // The same user by uid, and asking for br0: what nobody's run gets.
    let r = as_root(&["--check", "--user=65534", "--br=br0"]);
    assert_eq!(r.code, Some(4), "{}", r.stdout);
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(4, "no rule");
    // Root itself reads root.conf.
    let r = as_root(&["--check"]);
    has(&r, "bridge 'br0': allowed by /etc/qemu/root.conf:1");
    let r = as_root(&["--check", "--user=no-such-user"]);
    r.expect_refusal(2, "--user='no-such-user': no such user in /etc/passwd");
    // A uid /etc/passwd does not list (an LDAP or sssd account, issue 23)
    // is checked as that uid, with no group that could read group.conf.
    let r = as_root(&["--check", "--user=4242"]);
    let head: Vec<&str> = r.stdout.lines().take(2).collect();
    assert_eq!(
        head,
        [
            &*format!("bridge-helper {} check for uid 4242", env!("CARGO_PKG_VERSION")),
            "groups: none known (uid 4242 is not in /etc/passwd: checked with gid 4294967294 and no other group; a login through sssd or LDAP has groups this check cannot see)",
        ],
        "{}{}",
        r.stdout,
        r.stderr
    );
    has(&r, "file /etc/qemu/group.conf: not readable by this user");
    has(&r, "bridge 'br1': denied: no rule allows it");
}

/// Root sees every tap the helper made, and removes a user's abandoned ones.
#[test]
fn root_lists_helper_taps_and_removes_a_users_abandoned_ones() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let held = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let gone = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (held_name, _) = tun_get_iff(&held);
    let (gone_name, _) = tun_get_iff(&gone);
    abandon_as(&sb, &ns, gone, NOBODY);
    let program = sb.install(HELPER, Mode::Setuid);
    let r = sb.run_program(&ns, &program, Jail::root(), &["--check"], false);
    has(
        &r,
        &format!("helper tap '{held_name}': uid 65534 (nobody), bridge 'br0', held"),
    );
    has(
        &r,
        &format!("helper tap '{gone_name}': uid 65534 (nobody), bridge 'br0', abandoned (persistent, nothing attached); remove with 'bridge-helper --remove-abandoned --user=65534'"),
    );
    // The user's own check warns about it.
    let mine = check(&sb, &ns, Mode::Setuid, &[]);
    assert!(
        mine.stdout.contains(&format!(
            "warning: tap '{gone_name}' of uid 65534 was made persistent and is abandoned"
        )),
        "{}",
        mine.stdout
    );
    lacks(&mine, "helper tap");
    // Only root may remove.
    let r = sb.run_helper(&ns, Mode::Setuid, &["--remove-abandoned", "--user=nobody"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let r = sb.run_program(
        &ns,
        &program,
        Jail::root(),
        &["--remove-abandoned", "--user=nobody"],
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("removed 1 abandoned tap(s) of uid 65534: '{gone_name}'\n")
    );
    assert_eq!(ns.taps(), [held_name]);
    // By a uid that /etc/passwd does not list (LDAP, sssd): accepted.
    let r = sb.run_program(
        &ns,
        &program,
        Jail::root(),
        &["--remove-abandoned", "--user=4242"],
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "removed 0 abandoned tap(s) of uid 4242\n");
}

#[test]
fn a_bridge_following_its_ports_address_is_warned_about() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "address", "02:00:00:00:00:07"]);
    ns.ip(&["link", "set", "v0", "master", "br0"]);
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    has(&r, "warning: bridge 'br0' has the address of its port 'v0': it probably has no fixed address, and then takes the lowest address among its ports, which a VM can set on its tap; fix: ip link set br0 address 02:00:00:00:00:07");
    assert_eq!(r.code, Some(0));
    ns.ip(&["link", "set", "br0", "address", "02:00:00:00:00:01"]);
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    lacks(&r, "warning: bridge");
}

/// When the port whose address the bridge took is a helper tap, the fix
/// never pins the tap's address: the uplink's if there is one, else an
/// address of the bridge's own.
#[test]
fn the_bridge_address_fix_never_names_a_taps_address() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let fd = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (tap, _) = tun_get_iff(&fd);
    ns.ip(&["link", "set", &tap, "address", "02:00:00:00:00:03"]);
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    has(&r, &format!("warning: bridge 'br0' has the address of its port '{tap}': it probably has no fixed address, and then takes the lowest address among its ports, which a VM can set on its tap; fix: give it an address of its own, not a tap's: ip link set br0 address ADDRESS (a locally administered one, such as 02:00:00:00:00:01)"));
    assert!(
        !r.stdout.contains("address 02:00:00:00:00:03"),
        "{}",
        r.stdout
    );
    // With an uplink, its address.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "address", "02:00:00:00:00:09"]);
    ns.ip(&["link", "set", "v0", "master", "br0"]);
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    has(&r, &format!("warning: bridge 'br0' has the address of its port '{tap}': it probably has no fixed address, and then takes the lowest address among its ports, which a VM can set on its tap; fix: ip link set br0 address 02:00:00:00:00:09"));
    drop(fd);
}

/// Lines bridge.conf and bridge-helper.conf users write by habit: a
/// qualifier on a bridge.conf rule, and comments after a rule or setting.
#[test]
fn misplaced_qualifiers_and_trailing_comments_say_what_to_do() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let cases: [(&str, &str); 3] = [
        ("allow br0 user=vmu\n", "syntax error: /etc/qemu/bridge.conf:1: 'br0 user=vmu' is not a bridge name: bridge.conf takes only a bridge name (or all); user= and group= qualifiers belong in bridge-helper.conf, see bridge-helper.conf(5)"),
        ("deny br0 # old\n", "syntax error: /etc/qemu/bridge.conf:1: 'br0 # old' is not a bridge name: a comment needs a line of its own (starting with #); move it to the line above"),
        ("allow br0\tgroup=kvm\n", "syntax error: /etc/qemu/bridge.conf:1: 'br0\\tgroup=kvm' is not a bridge name: bridge.conf takes only a bridge name (or all); user= and group= qualifiers belong in bridge-helper.conf, see bridge-helper.conf(5)"),
    ];
    for (acl, line) in cases {
        sb.acl(acl);
        let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
        assert_eq!(r.code, Some(3), "{}", r.stdout);
        has(&r, line);
        let message = &line["syntax error: ".len()..];
        sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
            .expect_refusal(3, message);
    }
    sb.acl("allow br0\n").etc_file(
        "bridge-helper.conf",
        "max-abandoned-taps 2 # fewer\n",
        0o644,
    );
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    assert_eq!(r.code, Some(3), "{}", r.stdout);
    has(&r, "verdict: a run would stop: /etc/qemu/bridge-helper.conf:1: a comment needs a line of its own (starting with #); move '# fewer' to the line above");
    sb.etc_file(
        "bridge-helper.conf",
        "port br0 user=nobody isolated  # lab\n",
        0o644,
    );
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    has(&r, "verdict: a run would stop: /etc/qemu/bridge-helper.conf:1: a comment needs a line of its own (starting with #); move '# lab' to the line above");
}

/// A user added to a group after logging in: their own check lists the
/// process's groups, and says what logging in again would allow.
#[test]
fn a_users_check_lists_its_groups_and_what_a_new_login_would_grant() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.accounts("bhvmusers:x:30000:nobody\n");
    sb.acl("# grants are in bridge-helper.conf\n").etc_file(
        "bridge-helper.conf",
        "allow br0 group=bhvmusers\n",
        0o644,
    );
    let nogroup = "nogroup";
    let r = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(r.code, Some(4), "{}", r.stdout);
    has(&r, "bridge 'br0': denied: no rule allows it");
    has(
        &r,
        &format!(
            "groups: 65534 ({nogroup}) (this process's: a run matches group= lines against these)"
        ),
    );
    has(&r, "groups: /etc/group also puts uid 65534 in 30000 (bhvmusers), which this process lacks (added since this login); after logging in again, a run could also attach to 'br0' (allowed by /etc/qemu/bridge-helper.conf:1)");
    // The run's refusal names the grant it is not covered by, and the
    // check (the one it names) says why.
    let grant = ", and /etc/qemu/bridge-helper.conf:1 grants it to group='bhvmusers', a group this run is not in";
    sb.run_helper(&ns, Mode::Setuid, &["--br=br0"])
        .expect_refusal(
            4,
            &format!("allows it{grant}; see bridge.conf(5) and bridge-helper.conf(5); check with: bridge-helper --check --br=br0"),
        );
    let r = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    has(&r, &format!("verdict: a run would stop: access to bridge 'br0' denied: no rule in /etc/qemu/bridge.conf (or a file it includes) allows it{grant}; see bridge.conf(5) and bridge-helper.conf(5)"));
    // Logged in again: the process has the group, and nothing is lacking.
    let mut jail = Jail::for_mode(Mode::Setuid);
    jail.groups = vec![30000];
    let r = check_in(&sb, &ns, Mode::Setuid, jail, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    has(
        &r,
        "bridge 'br0': allowed by /etc/qemu/bridge-helper.conf:1",
    );
    has(
        &r,
        &format!("groups: 30000 (bhvmusers), 65534 ({nogroup}) (this process's: a run matches group= lines against these)"),
    );
    lacks(&r, "groups: /etc/group also");
}

/// Issue 15's lines: the grants and port settings of bridge-helper.conf,
/// which line chose them, and a name that resolves to no one.
#[test]
fn grants_and_port_settings_with_their_lines() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n").etc_file(
        "bridge-helper.conf",
        "allow br1 user=65534\nport br0 user=65534 isolated\nport br1 user=no-such-user isolated\n",
        0o644,
    );
    let run = check(&sb, &ns, Mode::Setuid, &[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    has(&run, "file /etc/qemu/bridge-helper.conf: trusted, read");
    has(
        &run,
        "port settings: 2 port line(s); each bridge below says which applies",
    );
    has(&run, "bridge 'br0': allowed by /etc/qemu/bridge.conf:1");
    has(
        &run,
        "bridge 'br0': port: isolated, chosen by /etc/qemu/bridge-helper.conf:2",
    );
    // A restriction for an account that does not resolve fails closed
    // (issue 23): every run on br1 stops at it, naming the line.
    has(
        &run,
        "bridge 'br1': /etc/qemu/bridge-helper.conf:3: user='no-such-user' does not resolve in /etc/passwd or /etc/group, so this port line could be the caller's; fix the name, use a number, or remove the line",
    );
    lacks(&run, "bridge 'br1': port:");
    has(
        &run,
        "warning: /etc/qemu/bridge-helper.conf:3: user='no-such-user' does not resolve in /etc/passwd or /etc/group; every run on bridge 'br1' stops at this line",
    );
    sb.run_helper(&ns, Mode::Setuid, &["--br=br1"])
        .expect_refusal(
            3,
            "/etc/qemu/bridge-helper.conf:3: user='no-such-user' does not resolve",
        );
    let run = check(&sb, &ns, Mode::Setuid, &["--br=br0"]);
    has(
        &run,
        "verdict: a run would attach a tap to 'br0' (allowed by /etc/qemu/bridge.conf:1), port: isolated, chosen by /etc/qemu/bridge-helper.conf:2",
    );
}
