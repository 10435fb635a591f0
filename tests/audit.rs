//! Issue 14: the audit line to syslog, read from a datagram socket bound
//! at /dev/log in the run's own mount namespace (this machine's /dev is
//! never touched), and runs that do not wait for a /dev/log nobody reads.
mod common;
use common::*;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

fn run(sb: &Sandbox, ns: &NetNs, dev: &Dev, args: &[&str]) -> HelperRun {
    let program = sb.install(HELPER, Mode::Setuid);
    let mut cmd = dev.command(sb, ns, &program);
    cmd.args(args);
    let (child, ours) = spawn_with_socket(&mut cmd, true);
    HelperRun::collect(child.wait_with_output().unwrap(), ours)
}

fn our_comm() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let name = status
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Name:\t")
        .unwrap();
    format!("'{name}'")
}

/// The line logged for a grant to nobody (65534) by `rule`, after its
/// `<PRI>bridge-helper[PID]: ` head.
fn granted(tap: &str, rule: &str) -> String {
    format!(
        "uid=65534 user='nobody' ppid={} comm={} bridge='br0' tap='{tap}' granted by {rule}",
        std::process::id(),
        our_comm()
    )
}

/// By bridge.conf, and by a grant by name in bridge-helper.conf: then the
/// run has read /etc/passwd through the walk, and the line names the
/// caller from that reading.
#[test]
fn a_grant_is_logged_with_caller_parent_bridge_tap_and_rule() {
    for (acl, settings, rule) in [
        ("allow br0\n", "", "/etc/qemu/bridge.conf:1"),
        (
            "",
            "allow br0 user=nobody\n",
            "/etc/qemu/bridge-helper.conf:1",
        ),
    ] {
        let ns = NetNs::with_bridge(1500);
        let sb = Sandbox::with_accounts();
        sb.acl(acl);
        sb.etc_file("bridge-helper.conf", settings, 0o644);
        let dev = private_dev(&sb, true);
        let r = run(&sb, &ns, &dev, &["--br=br0"]);
        let fd = r.expect_tap();
        let (tap, _) = tun_get_iff(&fd);
        let lines = dev.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let (head, body) = lines[0].split_once("]: ").unwrap();
        assert!(head.starts_with("<86>bridge-helper["), "{head}");
        assert_eq!(body, granted(&tap, rule));
    }
}

#[test]
fn refusals_are_logged_with_their_status_and_line() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("deny br0\n");
    let dev = private_dev(&sb, true);
    run(&sb, &ns, &dev, &["--br=br0"]).expect_refusal(4, "denied by");
    run(&sb, &ns, &dev, &["--br=nope\u{ff}"]).expect_refusal(4, "no rule");
    run(&sb, &ns, &dev, &["--br=x\u{1b}[2J"]).expect_refusal(2, "not a valid bridge name");
    let lines = dev.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("<85>bridge-helper["), "{}", lines[0]);
    assert!(
        lines[0].ends_with(" bridge='br0' refused (status 4): access to bridge 'br0' denied by /etc/qemu/bridge.conf:1; see bridge-helper --check --br=br0"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" bridge='nope\\xc3\\xbf' refused (status 4): "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]
            .contains(" bridge=? refused (status 2): --br='x\\x1b[2J': not a valid bridge name"),
        "{}",
        lines[2]
    );
    assert!(!lines.iter().any(|l| l.bytes().any(|b| b < 0x20)));
}

#[test]
fn check_help_and_version_log_nothing() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let dev = private_dev(&sb, true);
    let program = sb.install(HELPER, Mode::Setuid);
    for args in [
        &["--check"][..],
        &["--check", "--br=br0"],
        &["--help"],
        &["--version"],
    ] {
        let mut cmd = dev.command(&sb, &ns, &program);
        cmd.args(args);
        let out = output(&mut cmd);
        assert!(out.status.code().is_some(), "{args:?}");
    }
    assert_eq!(dev.lines(), Vec::<String>::new());
}

#[test]
fn a_parent_name_cannot_forge_a_line() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let dev = private_dev(&sb, true);
    let program = sb.install(HELPER, Mode::Setuid);
    let evil = sb.dir.join("q\u{1b}[2J\nuid=0 x");
    symlink("/bin/sh", &evil).unwrap();
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = dev.command(&sb, &ns, &evil);
    cmd.args([
        "-c",
        &format!(
            "{} --br=br0 --fd={}; :",
            program.display(),
            theirs.as_raw_fd()
        ),
    ]);
    let out = output(&mut cmd);
    drop(theirs);
    HelperRun::collect(out, ours).expect_tap();
    let lines = dev.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(" comm='q\\x1b[2J\\nuid=0 x' "),
        "{}",
        lines[0]
    );
    assert!(!lines[0].bytes().any(|b| b < 0x20), "{}", lines[0]);
}

/// Runs complete, with their tap, whether /dev/log is missing or nobody
/// ever reads it (the queue fills after max_dgram_qlen lines).
#[test]
fn a_missing_or_stuck_dev_log_never_holds_a_run() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let missing = private_dev(&sb, false);
    run(&sb, &ns, &missing, &["--br=br0"]).expect_tap();

    let stuck = private_dev(&sb, true);
    let qlen: usize = fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..qlen + 5 {
        let start = Instant::now();
        let r = run(&sb, &ns, &stuck, &["--br=br0"]);
        slowest = slowest.max(start.elapsed());
        drop(r.expect_tap());
    }
    wait_for_taps(&ns, &[]);
    // A blocking send would hang here for ever; the bound is loose for a
    // loaded machine (each run takes a few ms).
    let bound = time::secs(2);
    assert!(slowest < bound, "slowest run {slowest:?} (bound {bound:?})");
    let queued = stuck.lines().len();
    assert!(
        queued <= qlen + 1 && queued >= qlen.min(5),
        "{queued} of {qlen}"
    );
}

/// Every run of the harness has a /dev/log of its sandbox's own (no test
/// writes to the machine's log), even a run that asks for no private /dev.
#[test]
fn runs_log_to_their_sandbox_and_never_to_the_machine() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::with_accounts();
    sb.acl("allow br0\n");
    let fd = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap();
    let (tap, _) = tun_get_iff(&fd);
    let lines = sb.logged();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with(&granted(&tap, "/etc/qemu/bridge.conf:1")),
        "{}",
        lines[0]
    );
}
