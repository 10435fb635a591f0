//! What this machine's kernel cannot do, in a kernel that can: this
//! kernel is built without modules, so it has no bridge VLAN filtering
//! (issue 15) and no autofs (the trust walk's automount refusal). The
//! test boots Debian's kernel under TCG with the bridge, 8021q, tun, veth,
//! llc, stp and autofs4 modules, and runs the static (musl) helper and
//! this very test binary inside it, once for all the tests below (one boot
//! keeps CI time flat).
//!
//! In the guest, this binary plays one role per test (`BH_GUEST_ROLE`) and
//! prints one line per check on the serial console:
//! - `vlan`: makes a VLAN-filtering bridge, has the setuid helper attach
//!   taps for several users whose bridge-helper.conf port lines put them
//!   in VLANs, writes frames into the tap fds and reads them from others;
//! - `autofs`: is the automount daemon for an include that lies behind an
//!   automount, and checks that the helper triggers the mount and obeys
//!   what it finds there, and refuses (status 3, naming the automount)
//!   when the mount fails, direct or indirect, instead of skipping the
//!   include.
//!
//! On the host, it behaves as a libtest binary would: `--list`, name
//! filters, `--exact`, `--skip` (the guest boots only when a test is
//! selected, and runs only the selected roles), one `test NAME ... ok`
//! line per test and a `test result:` line; exit status 101 on failure.
//!
//! `harness = false` (Cargo.toml): one binary is both sides, and the
//! guest side must never run as a host test. Needs what e2e_qemu needs.

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::time;

const ROLE: &str = "BH_GUEST_ROLE";
const CHECK_OK: &str = "BH-CHECK-OK";
const CHECK_FAIL: &str = "BH-CHECK-FAIL";
/// `BH-ROLE-EXIT ROLE STATUS`, printed by the guest's init after each role.
const ROLE_EXIT: &str = "BH-ROLE-EXIT";
/// For the whole boot of the selected roles, on an idle machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// One test of this binary: run in the guest by `role`, passing when the
/// role reported every one of `checks` OK and exited 0.
struct GuestTest {
    name: &'static str,
    role: &'static str,
    checks: &'static [&'static str],
}

const TESTS: &[GuestTest] = &[
    GuestTest {
        name: "an_include_behind_an_unmounted_automount_is_not_skipped",
        role: "autofs",
        checks: AUTOFS_CHECKS,
    },
    GuestTest {
        name: "vlans_in_a_debian_guest",
        role: "vlan",
        checks: VLAN_CHECKS,
    },
];

/// What the vlan role checks, by name: the host insists on every one.
const VLAN_CHECKS: &[&str] = &[
    "bridge-filters-vlans",
    "helper-attached-all",
    "vlan10-reaches-vlan10",
    "vlan10-not-vlan20",
    "vlan10-not-plain-vlan1",
    "vlan20-reaches-vlan20",
    "vlan20-not-vlan10",
    "plain-vlan1-reaches-plain-vlan1",
    "plain-vlan1-not-vlan10",
    "plain-vlan1-not-vlan20",
    "vlan10-port-sends-in-order",
    "vlan1-removed-from-vlan10-port",
    "vlan10-port-cannot-send-into-vlan20",
    "tagged30-reaches-vlan30-port",
    "tagged30-not-vlan10",
    "untagged-from-trunk-goes-to-its-pvid",
    "trunk-gets-vlan30-tagged",
    "fd-holder-cannot-change-vlans",
    "vlans-unchanged-after-fd-holder-tried",
    "no-vlan-filtering-is-refused-status-7",
    "plain-bridge-plain-port-still-works",
];

/// What the autofs role checks, in order.
const AUTOFS_CHECKS: &[&str] = &[
    "autofs-baseline-granted",
    "autofs-direct-mount-made",
    "helper-triggers-the-direct-automount",
    "deny-behind-a-mounted-automount-applies-status-4",
    "autofs-indirect-mount-made",
    "helper-triggers-the-indirect-automount",
    "failed-automount-is-refused-status-3",
    "autofs-failing-direct-mount-made",
    "helper-triggers-the-failing-direct-automount",
    "failed-direct-automount-is-refused-status-3",
];

const BRIDGE_CONF: &str = "allow br0\nallow br1\n";
const HELPER_CONF: &str = "\
port br0 user=1010 vlan=10
port br0 user=1011 vlan=10
port br0 user=1020 vlan=20
port br0 user=1030 vlan=10 tagged=30
port br0 user=1031 vlan=30
port br1 user=1010 vlan=10
port br0 user=1021 vlan=20
";

/// The guest's /init after the prelude: each selected role in turn.
fn init_script(roles: &[&str]) -> String {
    let mut s = String::from("echo 1 > /proc/sys/fs/protected_hardlinks\nip link set lo up\n");
    for role in roles {
        s.push_str(&format!(
            "{ROLE}={role} /bin/guest-probe 2>&1\necho \"{ROLE_EXIT} {role} $?\"\n"
        ));
    }
    s.push_str("poweroff -f\n");
    s
}

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("vlan") => return vlan_role(),
        Ok("fd-holder") => return fd_holder(),
        Ok("autofs") => return autofs_role(),
        Ok(other) => {
            eprintln!("{ROLE}={other}: no such role");
            return ExitCode::FAILURE;
        }
        Err(_) => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sel = Selection::parse(&args);
    let chosen: Vec<&GuestTest> = TESTS.iter().filter(|t| sel.wants(t.name)).collect();
    if sel.list {
        for t in &chosen {
            println!("{}: test", t.name);
        }
        if !sel.terse {
            println!("\n{} tests, 0 benchmarks", chosen.len());
        }
        return ExitCode::SUCCESS;
    }
    let filtered_out = TESTS.len() - chosen.len();
    println!(
        "\nrunning {} test{}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    let started = Instant::now();
    let results = if chosen.is_empty() {
        Vec::new()
    } else {
        host(&chosen)
    };
    let mut failures = Vec::new();
    for (t, r) in chosen.iter().zip(&results) {
        match r {
            Ok(()) => println!("test {} ... ok", t.name),
            Err(why) => {
                println!("test {} ... FAILED", t.name);
                failures.push((t.name, why));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} stdout ----\n{why}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        results.len() - failures.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

/// Which tests the command line selects, as libtest reads it: names
/// without a dash are filters (a test runs if any matches; none means
/// all), `--skip NAME` drops matching tests, `--exact` makes both compare
/// whole names, `--ignored` selects only ignored tests (none here). Other
/// flags (`--nocapture`, `--test-threads N`, ...) change nothing.
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    ignored_only: bool,
    list: bool,
    terse: bool,
}

impl Selection {
    fn parse(args: &[String]) -> Selection {
        const TAKES_VALUE: &[&str] = &[
            "--test-threads",
            "--color",
            "--format",
            "--logfile",
            "--shuffle-seed",
            "--report-time",
            "-Z",
        ];
        let mut sel = Selection {
            filters: Vec::new(),
            skips: Vec::new(),
            exact: false,
            ignored_only: false,
            list: false,
            terse: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--skip" => sel.skips.extend(it.next().cloned()),
                "--exact" => sel.exact = true,
                "--ignored" => sel.ignored_only = true,
                "--list" => sel.list = true,
                "--format=terse" => sel.terse = true,
                "--format" => sel.terse = it.next().is_some_and(|f| f == "terse"),
                a if a.starts_with("--skip=") => sel.skips.push(a["--skip=".len()..].to_owned()),
                a if TAKES_VALUE.contains(&a) => {
                    it.next();
                }
                a if a.starts_with('-') => {}
                a => sel.filters.push(a.to_owned()),
            }
        }
        sel
    }

    fn matches(&self, pattern: &str, name: &str) -> bool {
        if self.exact {
            pattern == name
        } else {
            name.contains(pattern)
        }
    }

    fn wants(&self, name: &str) -> bool {
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(f, name)))
            && !self.skips.iter().any(|s| self.matches(s, name))
    }
}

// ---------------------------------------------------------------- host

/// Boots the guest once with the roles of `tests`; each test's verdict.
fn host(tests: &[&GuestTest]) -> Vec<Result<(), String>> {
    common::require_root();
    guest::require_qemu();
    let sb = common::Sandbox::new();
    let me = std::env::current_exe().expect("current_exe");
    let probe = fs::read(&me).expect("read this test binary");
    let helper = fs::read(common::HELPER).expect("read the helper");
    for (what, data) in [("this test binary", &probe), ("the helper", &helper)] {
        assert!(
            guest::elf_is_static(data),
            "{what} is not static: build for musl (.cargo/config.toml)"
        );
    }
    let roles: Vec<&str> = tests.iter().map(|t| t.role).collect();
    let image = guest::bridge_guest(
        &format!("{}{}", guest::INIT_PRELUDE, init_script(&roles)),
        &[
            ("bin/guest-probe", 0o755, probe),
            ("bin/bridge-helper", 0o4755, helper),
            ("etc/qemu/bridge.conf", 0o644, BRIDGE_CONF.into()),
            ("etc/qemu/bridge-helper.conf", 0o644, HELPER_CONF.into()),
        ],
        &sb.dir.join("initrd.cpio"),
    );
    let serial = sb.dir.join("serial.log");
    let mut cmd = Command::new(guest::QEMU);
    // Unknown `NAME=value` words on the kernel command line become the
    // environment of /init, and so of the roles.
    let append = format!(
        "console=ttyS0 panic=-1 quiet loglevel=3 {}={}",
        time::VAR,
        time::scale()
    );
    image
        .boot_args(&mut cmd, 512, 1, &serial, &append)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(sb.dir.join("qemu.stderr")).unwrap());
    let mut qemu = guest::KillOnDrop::new(common::spawn(&mut cmd), "qemu");
    let started = Instant::now();
    let limit = time::limit(BOOT_TIMEOUT);
    let status = qemu.wait_timeout(limit);
    let log = guest::read_serial(&serial);
    let ctx = format!(
        "\n--- serial console ({}) ---\n{log}\n--- qemu stderr ---\n{}",
        image.kernel_package,
        fs::read_to_string(sb.dir.join("qemu.stderr")).unwrap_or_default()
    );
    // The guest's own report, in the test's output for CI logs.
    for line in log.lines().filter(|l| l.starts_with("BH-")) {
        eprintln!("guest: {line}");
    }
    eprintln!(
        "vlan_guest: guest ran {roles:?} in {:.0?} ({})",
        started.elapsed(),
        image.kernel_package
    );
    let boot_failed = if status.is_none() {
        Some(format!(
            "the guest did not finish within {limit:?} ({}={}){ctx}",
            time::VAR,
            time::scale()
        ))
    } else {
        log.lines()
            .find(|l| l.starts_with("BH-INSMOD-FAILED"))
            .map(|l| format!("a module did not load: {l}{ctx}"))
    };
    tests
        .iter()
        .map(|t| match &boot_failed {
            Some(why) => Err(why.clone()),
            None => verdict(t, &log).map_err(|why| format!("{why}{ctx}")),
        })
        .collect()
}

/// Whether the serial log shows every check of `t` OK and its role's
/// clean exit.
fn verdict(t: &GuestTest, log: &str) -> Result<(), String> {
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.strip_prefix(CHECK_FAIL)
                .and_then(|rest| rest.trim_start().split(':').next())
                .is_some_and(|check| t.checks.contains(&check))
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("checks failed in the guest: {failed:#?}"));
    }
    for check in t.checks {
        let ok = format!("{CHECK_OK} {check}");
        if !log.lines().any(|l| l.trim_end() == ok) {
            return Err(format!("the guest never reported {check} OK"));
        }
    }
    let exit = format!("{ROLE_EXIT} {} ", t.role);
    match log.lines().find_map(|l| l.strip_prefix(&exit)) {
        Some("0") => Ok(()),
        Some(status) => Err(format!("role {} exited with status {status}", t.role)),
        None => Err(format!("role {} never finished", t.role)),
    }
}

// ---------------------------------------------------------------- guest

struct Probe {
    checks: &'static [&'static str],
    failures: usize,
}

impl Probe {
    fn new(checks: &'static [&'static str]) -> Probe {
        Probe {
            checks,
            failures: 0,
        }
    }

    fn check(&mut self, name: &str, ok: bool, why: impl std::fmt::Display) {
        assert!(self.checks.contains(&name), "unlisted check {name}");
        if ok {
            println!("{CHECK_OK} {name}");
        } else {
            println!("{CHECK_FAIL} {name}: {why}");
            self.failures += 1;
        }
    }

    fn exit(&self) -> ExitCode {
        if self.failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Runs a shell script in the guest; its output on failure.
fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("/bin/sh").args(["-c", script]).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{script}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("{script}: {e}")),
    }
}

fn vlan_role() -> ExitCode {
    let mut p = Probe::new(VLAN_CHECKS);
    let setup = sh("ip link add br0 type bridge \
         && echo 1 > /sys/class/net/br0/bridge/vlan_filtering \
         && ip link set br0 up \
         && ip link add br1 type bridge && ip link set br1 up");
    let filtering =
        fs::read_to_string("/sys/class/net/br0/bridge/vlan_filtering").unwrap_or_default();
    p.check(
        "bridge-filters-vlans",
        setup.is_ok() && filtering.trim() == "1",
        format!("{setup:?} vlan_filtering={filtering:?}"),
    );

    // d20 and plain2 are witnesses: a "not received" below counts only
    // after the same frame (a flood reaches every port of a VLAN in one
    // pass) or a later one from the same tap has arrived somewhere.
    let users = [1010, 1011, 1020, 1040, 1030, 1031, 1021, 1042];
    let taps: Vec<Result<OwnedFd, String>> = users.iter().map(|&u| attach(u, "br0")).collect();
    let errors: Vec<&String> = taps.iter().filter_map(|t| t.as_ref().err()).collect();
    p.check(
        "helper-attached-all",
        errors.is_empty(),
        format!("{errors:?}"),
    );
    let [Ok(a10), Ok(b10), Ok(c20), Ok(plain), Ok(trunk), Ok(v30), Ok(d20), Ok(plain2)] = &taps[..]
    else {
        return ExitCode::FAILURE;
    };

    send(a10, 1, None, "a10-untagged");
    p.check(
        "vlan10-reaches-vlan10",
        receives(b10, "a10-untagged") == Some(false),
        "b10 did not get it untagged",
    );
    p.check(
        "vlan10-not-vlan20",
        receives(c20, "a10-untagged").is_none(),
        "c20 got it",
    );
    p.check(
        "vlan10-not-plain-vlan1",
        receives(plain, "a10-untagged").is_none(),
        "the plain port got it",
    );

    send(c20, 2, None, "c20-untagged");
    p.check(
        "vlan20-reaches-vlan20",
        receives(d20, "c20-untagged") == Some(false),
        "d20 did not get it untagged",
    );
    p.check(
        "vlan20-not-vlan10",
        receives(a10, "c20-untagged").is_none() && receives(b10, "c20-untagged").is_none(),
        "a VLAN 10 port got it",
    );

    send(plain, 3, None, "plain-untagged");
    p.check(
        "plain-vlan1-reaches-plain-vlan1",
        receives(plain2, "plain-untagged") == Some(false),
        "plain2 did not get it",
    );
    p.check(
        "plain-vlan1-not-vlan10",
        receives(a10, "plain-untagged").is_none(),
        "a10 got it",
    );
    p.check(
        "plain-vlan1-not-vlan20",
        receives(c20, "plain-untagged").is_none(),
        "c20 got it",
    );

    // Were VLAN 1 still on a10's port (tagged), this would reach the plain
    // port, whose PVID is 1. a10's next frame reaching b10 shows the
    // bridge has dealt with both tagged ones (a tap's frames go in order).
    send(a10, 1, Some(1), "a10-tagged-1");
    send(a10, 1, Some(20), "a10-tagged-20");
    send(a10, 1, None, "a10-after-tagged");
    p.check(
        "vlan10-port-sends-in-order",
        receives(b10, "a10-after-tagged") == Some(false),
        "b10 did not get a10's next frame",
    );
    p.check(
        "vlan1-removed-from-vlan10-port",
        receives(plain, "a10-tagged-1").is_none(),
        "the plain port got VLAN 1 from a10",
    );
    p.check(
        "vlan10-port-cannot-send-into-vlan20",
        receives(c20, "a10-tagged-20").is_none(),
        "c20 got a10's VLAN 20 frame",
    );

    send(trunk, 5, Some(30), "trunk-tagged-30");
    p.check(
        "tagged30-reaches-vlan30-port",
        receives(v30, "trunk-tagged-30") == Some(false),
        "v30 did not get it untagged",
    );
    p.check(
        "tagged30-not-vlan10",
        receives(a10, "trunk-tagged-30").is_none(),
        "a10 got it",
    );
    send(trunk, 5, None, "trunk-untagged");
    p.check(
        "untagged-from-trunk-goes-to-its-pvid",
        receives(b10, "trunk-untagged") == Some(false) && receives(v30, "trunk-untagged").is_none(),
        "not VLAN 10 only",
    );
    send(v30, 6, None, "v30-untagged");
    p.check(
        "trunk-gets-vlan30-tagged",
        receives(trunk, "v30-untagged") == Some(true),
        "the trunk did not get it tagged 30",
    );

    // The fd holder (uid 1010, holding its tap fd) tries to leave its VLAN.
    let index = tap_index(a10);
    common::clear_cloexec(a10.as_raw_fd());
    let tried = Command::new("/bin/guest-probe")
        .env(ROLE, "fd-holder")
        .env("BH_TAP_INDEX", index.to_string())
        .env("BH_TAP_FD", a10.as_raw_fd().to_string())
        .uid(1010)
        .gid(1010)
        .output();
    let said = tried
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    p.check(
        "fd-holder-cannot-change-vlans",
        tried.as_ref().is_ok_and(|o| o.status.success()),
        format!("{tried:?}"),
    );
    print!("{said}");
    send(a10, 1, None, "a10-after");
    p.check(
        "vlans-unchanged-after-fd-holder-tried",
        receives(b10, "a10-after") == Some(false) && receives(c20, "a10-after").is_none(),
        "a10's VLANs changed",
    );

    let refused = attach(1010, "br1");
    p.check(
        "no-vlan-filtering-is-refused-status-7",
        matches!(&refused, Err(e) if e.starts_with("status 7:") && e.contains("bridge-helper.conf:6")),
        format!("{refused:?}"),
    );
    let x = attach(1040, "br1");
    let y = attach(1041, "br1");
    let plain_ok = match (&x, &y) {
        (Ok(x), Ok(y)) => {
            send(x, 7, None, "br1-plain");
            receives(y, "br1-plain") == Some(false)
        }
        _ => false,
    };
    p.check(
        "plain-bridge-plain-port-still-works",
        plain_ok,
        format!("{x:?} {y:?}"),
    );

    p.exit()
}

/// The tap's interface index, from its name (TUNGETIFF) and sysfs.
fn tap_index(fd: &OwnedFd) -> u32 {
    let (name, _) = common::sys::tun_iff(fd.as_raw_fd()).unwrap_or_default();
    fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// In the guest, as the tap's user with its fd: every change to the port's
/// VLANs or options must fail with EPERM.
fn fd_holder() -> ExitCode {
    use bridge_helper::system::netlink::{IfIndex, PortSetup, PortVlan, Rtnetlink};
    let index = IfIndex(
        std::env::var("BH_TAP_INDEX")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let holds_fd = std::env::var("BH_TAP_FD")
        .ok()
        .is_some_and(|fd| fs::metadata(format!("/proc/self/fd/{fd}")).is_ok());
    let Ok(mut route) = Rtnetlink::open() else {
        println!("fd-holder: no netlink socket");
        return ExitCode::FAILURE;
    };
    let into20 = PortVlan {
        vid: 20,
        pvid: true,
        untagged: true,
    };
    let attempts = [
        (
            "add VLAN 20",
            route.set_port(index, &PortSetup::default(), &[into20]),
        ),
        ("remove VLAN 10", route.remove_vlans(index, &[10])),
        (
            "clear isolation/learning",
            route.set_port(
                index,
                &PortSetup {
                    isolated: Some(false),
                    learning: Some(true),
                },
                &[],
            ),
        ),
    ];
    let mut ok = holds_fd && index.0 != 0;
    for (what, r) in &attempts {
        let eperm = matches!(r, Err(e) if e.errno == nix::errno::Errno::EPERM);
        println!("fd-holder: {what}: {r:?}");
        ok &= eperm;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the setuid helper as `uid` for `bridge`, in a process group of its
/// own as a shell would start it (the autofs role's own group is the
/// automount daemon's, whose lookups never trigger a mount); the tap fd,
/// or `status N: stderr`. A run still going after its limit is killed.
fn attach(uid: u32, bridge: &str) -> Result<OwnedFd, String> {
    let (ours, theirs) = common::sys::socketpair().map_err(|e| e.to_string())?;
    common::clear_cloexec(theirs.as_raw_fd());
    let mut child = Command::new("/bin/bridge-helper")
        .arg(format!("--br={bridge}"))
        .arg(format!("--fd={}", theirs.as_raw_fd()))
        .uid(uid)
        .gid(uid)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    drop(theirs);
    let limit = time::secs(30);
    let deadline = Instant::now() + limit;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung: still running after {limit:?}, killed"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "status {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut buf = [0u8; 16];
    let mut got =
        common::sys::recv_with_fds(ours.as_raw_fd(), &mut buf, true).map_err(|e| e.to_string())?;
    got.fds.pop().ok_or_else(|| "no fd".to_string())
}

/// A broadcast from a locally administered MAC ending in `n`, tagged with
/// `vlan` if given, ethertype 0x88b5, carrying `mark`.
fn send(fd: &OwnedFd, n: u8, vlan: Option<u16>, mark: &str) {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, n]);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(mark.as_bytes());
    f.resize(64, 0);
    let _ = nix::unistd::write(fd, &f);
}

/// Whether a frame carrying `mark` arrives within the time: `None` if
/// not, else whether it came tagged.
fn receives(fd: &OwnedFd, mark: &str) -> Option<bool> {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_GETFL).ok()?;
    let nonblock = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_SETFL(nonblock)).ok()?;
    // TCG is slow: a frame that is coming comes well within this.
    let deadline = Instant::now() + time::millis(1500);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(n) if buf[..n].windows(mark.len()).any(|w| w == mark.as_bytes()) => {
                return Some(buf[12..14] == [0x81, 0x00]);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

// ---------------------------------------------------------- guest: autofs

/// Where the autofs role mounts its automounters, and for whom.
const DIRECT: &str = "/etc/qemu/net";
const INDIRECT: &str = "/etc/qemu/maps";
const AUTOFS_BRIDGE: &str = "br2";
const AUTOFS_USER: u32 = 1050;

/// `AUTOFS_IOC_READY` and `AUTOFS_IOC_FAIL` (linux/auto_fs.h), the daemon's
/// answers to a mount request: `_IO(0x93, 0x60)` and `_IO(0x93, 0x61)`,
/// with the request's token as the argument. Not in libc.
const AUTOFS_IOC_READY: libc::Ioctl = nix::request_code_none!(0x93, 0x60) as libc::Ioctl;
const AUTOFS_IOC_FAIL: libc::Ioctl = nix::request_code_none!(0x93, 0x61) as libc::Ioctl;

/// What the daemon does when asked to mount.
#[derive(Clone, Copy)]
enum Answer {
    /// Mounts a tmpfs holding `deny.conf` ("deny br2") on the direct
    /// mount point, then says it is ready.
    MountDeny,
    /// Says the mount failed (a server that is down, a map without the key).
    Fail,
}

/// An include that lies behind an automount, as on a site whose /etc/qemu
/// comes partly from an automounted share. The helper's walk looks each
/// directory up with O_PATH: without more, that shows an automount point
/// as its empty directory, so a missing-file skip would drop the deny in
/// it (finding 3 of tests/redteam_trust.rs). This role is the automount
/// daemon (its process group is the mount's `pgrp=`, whose lookups never
/// trigger mounts); the helper runs as user 1050 in a group of its own.
fn autofs_role() -> ExitCode {
    let mut p = Probe::new(AUTOFS_CHECKS);
    let setup = sh("ip link add br2 type bridge && ip link set br2 up");
    set_acl("allow br2\n");
    let base = attach(AUTOFS_USER, AUTOFS_BRIDGE);
    p.check(
        "autofs-baseline-granted",
        setup.is_ok() && base.is_ok(),
        format!("{setup:?} {base:?}"),
    );
    drop(base);
    // SAFETY: setpgid on this process; no memory is involved.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        println!("autofs: setpgid: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }

    // A direct automount on /etc/qemu/net (expired, as automounts do when
    // idle): the helper must trigger it and obey the deny it then finds.
    automount_case(
        &mut p,
        DIRECT,
        "direct",
        Answer::MountDeny,
        [
            "autofs-direct-mount-made",
            "helper-triggers-the-direct-automount",
            "deny-behind-a-mounted-automount-applies-status-4",
        ],
        4,
        &format!("{DIRECT}/deny.conf"),
    );
    // An indirect automount on /etc/qemu/maps whose mount of `deny.conf`
    // fails: the file is missing from the automount point, which is not
    // the administrator's choice: refused, never skipped.
    automount_case(
        &mut p,
        INDIRECT,
        "indirect",
        Answer::Fail,
        [
            "autofs-indirect-mount-made",
            "helper-triggers-the-indirect-automount",
            "failed-automount-is-refused-status-3",
        ],
        3,
        &format!(
            "{INDIRECT}/deny.conf is missing from {INDIRECT}, an automount point that is not mounted"
        ),
    );
    // The direct automount again, its mount failing this time: the lookup
    // of /etc/qemu/net itself says ENOENT, in /etc/qemu, which is not
    // autofs. Not the administrator's choice either: refused, never skipped.
    automount_case(
        &mut p,
        DIRECT,
        "direct",
        Answer::Fail,
        [
            "autofs-failing-direct-mount-made",
            "helper-triggers-the-failing-direct-automount",
            "failed-direct-automount-is-refused-status-3",
        ],
        3,
        &format!("{DIRECT} is an automount point that is not mounted"),
    );
    set_acl(BRIDGE_CONF);
    p.exit()
}

/// One automount case: a `kind` automount on `dir` whose daemon gives
/// `answer`, and an ACL that allows br2 and includes `dir`/deny.conf.
/// `checks` name, in order: the mount was made; the helper's run asked the
/// daemon for a mount (an indirect one for `deny.conf`, its key; a direct
/// one names no key); the run failed with `status` and said `reason`.
fn automount_case(
    p: &mut Probe,
    dir: &'static str,
    kind: &str,
    answer: Answer,
    checks: [&str; 3],
    status: i32,
    reason: &str,
) {
    let [made, triggered, refused] = checks;
    let am = match Automount::new(dir, kind) {
        Ok(am) => am,
        Err(e) => return p.check(made, false, e),
    };
    p.check(made, true, "");
    set_acl(&format!("allow br2\ninclude {dir}/deny.conf\n"));
    let (run, asked) = am.serve(answer, || attach(AUTOFS_USER, AUTOFS_BRIDGE));
    let asked_for_it = match kind {
        "indirect" => asked.iter().any(|k| k == "deny.conf"),
        _ => !asked.is_empty(),
    };
    p.check(triggered, asked_for_it, format!("requests: {asked:?}"));
    p.check(
        refused,
        matches!(&run, Err(e) if e.starts_with(&format!("status {status}:")) && e.contains(reason)),
        format!("{run:?}, wanted status {status} and {reason:?} (requests: {asked:?})"),
    );
}

/// Replaces the guest's /etc/qemu/bridge.conf (root's, 0644).
fn set_acl(text: &str) {
    fs::write("/etc/qemu/bridge.conf", text).expect("write /etc/qemu/bridge.conf");
}

/// An autofs mount served by this process: the kernel's requests arrive
/// on `requests`, answers go to `root` (the autofs root, opened as the
/// daemon, which triggers nothing). Unmounted on drop.
struct Automount {
    dir: &'static str,
    requests: OwnedFd,
    root: OwnedFd,
}

impl Automount {
    fn new(dir: &'static str, kind: &str) -> Result<Automount, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let (requests, kernel_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let opts = format!(
            "fd={},pgrp={},minproto=5,maxproto=5,{kind}",
            kernel_end.as_raw_fd(),
            nix::unistd::getpgrp()
        );
        mount("autofs", dir, "autofs", &opts)?;
        // The mount holds its own reference to the pipe's write end.
        drop(kernel_end);
        let root = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {dir} as the daemon: {e}"))?;
        Ok(Automount {
            dir,
            requests,
            // SAFETY: open just returned this descriptor; nothing else owns it.
            root: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(root) },
        })
    }

    /// Runs `run` while answering every mount request with `answer`; what
    /// `run` returned and the names the kernel asked to mount.
    fn serve<T>(&self, answer: Answer, run: impl FnOnce() -> T) -> (T, Vec<String>) {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let daemon = s.spawn(|| {
                let mut asked = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let mut fds = [nix::poll::PollFd::new(
                        self.requests.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0)
                        == 0
                    {
                        continue;
                    }
                    match self.answer(answer) {
                        Ok(name) => asked.push(name),
                        Err(e) => asked.push(format!("(daemon error: {e})")),
                    }
                }
                asked
            });
            let result = run();
            done.store(true, Ordering::Relaxed);
            (result, daemon.join().expect("daemon thread"))
        })
    }

    /// Reads one request (struct autofs_v5_packet: its token at byte 8,
    /// the name's length at 40, the name from 44) and answers it.
    fn answer(&self, answer: Answer) -> Result<String, String> {
        let mut buf = [0u8; 512];
        let n =
            nix::unistd::read(self.requests.as_raw_fd(), &mut buf).map_err(|e| e.to_string())?;
        if n < 44 {
            return Err(format!("short request ({n} bytes)"));
        }
        let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        let token = word(8);
        let len = (word(40) as usize).min(n - 44);
        let name = String::from_utf8_lossy(&buf[44..44 + len]).into_owned();
        let request = match answer {
            Answer::MountDeny => {
                mount("tmpfs", self.dir, "tmpfs", "mode=0755")?;
                let file = format!("{}/deny.conf", self.dir);
                fs::write(&file, "deny br2\n").map_err(|e| format!("{file}: {e}"))?;
                AUTOFS_IOC_READY
            }
            Answer::Fail => AUTOFS_IOC_FAIL,
        };
        // SAFETY: an autofs ioctl with an integer argument on our own
        // descriptor; no memory is involved.
        let r = unsafe { libc::ioctl(self.root.as_raw_fd(), request, libc::c_ulong::from(token)) };
        if r != 0 {
            return Err(format!("ioctl: {}", std::io::Error::last_os_error()));
        }
        Ok(name)
    }
}

impl Drop for Automount {
    fn drop(&mut self) {
        // Whatever the daemon mounted on top first, then the automounter.
        let dir = CString::new(self.dir).unwrap();
        // SAFETY: umount2 of a path we own; no memory is kept.
        while unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) } == 0 {}
    }
}

/// mount(2) with a data string.
fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    let c = |s: &str| CString::new(s).unwrap();
    let (source, target_c, fstype_c, data_c) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            data_c.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(format!(
            "mount -t {fstype} {target} ({data}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
