//! Issue 15's VLANs, where a kernel has them: this machine's kernel has no
//! bridge VLAN filtering, so the test boots Debian's kernel under TCG with
//! the bridge, 8021q, tun, veth, llc and stp modules, and runs the static
//! (musl) helper and this very test binary inside it. In the guest, this
//! binary (BH_GUEST_ROLE=vlan) makes a VLAN-filtering bridge, has the
//! setuid helper attach taps for several users whose bridge-helper.conf
//! port lines put them in VLANs, writes frames into the tap fds and reads
//! them from the others, and prints one line per check on the serial
//! console. On the host, it builds the guest, boots it, and fails unless
//! every check reported OK.
//!
//! `harness = false` (Cargo.toml): one binary is both sides, and the
//! guest side must never run as a host test. Needs what e2e_qemu needs.

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "BH_GUEST_ROLE";
const CHECK_OK: &str = "BH-CHECK-OK";
const CHECK_FAIL: &str = "BH-CHECK-FAIL";
const ALL_DONE: &str = "BH-VLAN-DONE";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// What the guest checks, by name: the host insists on every one.
const CHECKS: &[&str] = &[
    "bridge-filters-vlans",
    "helper-attached-all",
    "vlan10-reaches-vlan10",
    "vlan10-not-vlan20",
    "vlan10-not-plain-vlan1",
    "vlan20-not-vlan10",
    "plain-vlan1-not-vlan10",
    "plain-vlan1-not-vlan20",
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

const BRIDGE_CONF: &str = "allow br0\nallow br1\n";
const HELPER_CONF: &str = "\
port br0 user=1010 vlan=10
port br0 user=1011 vlan=10
port br0 user=1020 vlan=20
port br0 user=1030 vlan=10 tagged=30
port br0 user=1031 vlan=30
port br1 user=1010 vlan=10
";

const INIT_PROBE: &str = r#"echo 1 > /proc/sys/fs/protected_hardlinks
ip link set lo up
BH_GUEST_ROLE=vlan /bin/vlan-probe 2>&1
echo "BH-PROBE-EXIT $?"
poweroff -f
"#;

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("vlan") => return in_guest(),
        Ok("fd-holder") => return fd_holder(),
        _ => {}
    }
    // As libtest would: `--list` lists, a name filter that does not match
    // runs nothing (the caller asked for other tests), `--exact` compares
    // whole names; other flags (--test-threads, --nocapture) change nothing.
    const NAME: &str = "vlans_in_a_debian_guest";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let takes_value = [
        "--test-threads",
        "--skip",
        "--color",
        "--format",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];
    let mut filters: Vec<&String> = Vec::new();
    let mut skip_next = false;
    for a in &args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if takes_value.contains(&a.as_str()) {
            skip_next = true;
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    let wanted = filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                *f == NAME
            } else {
                NAME.contains(f.as_str())
            }
        });
    if !wanted {
        println!("running 0 tests (filtered out: {NAME})");
        return ExitCode::SUCCESS;
    }
    println!("running 1 test");
    host();
    println!("test vlans_in_a_debian_guest ... ok");
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------- host

fn host() {
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
    let image = guest::bridge_guest(
        &format!("{}{INIT_PROBE}", guest::INIT_PRELUDE),
        &[
            ("bin/vlan-probe", 0o755, probe),
            ("bin/bridge-helper", 0o4755, helper),
            ("etc/qemu/bridge.conf", 0o644, BRIDGE_CONF.into()),
            ("etc/qemu/bridge-helper.conf", 0o644, HELPER_CONF.into()),
        ],
        &sb.dir.join("initrd.cpio"),
    );
    let serial = sb.dir.join("serial.log");
    let mut cmd = Command::new(guest::QEMU);
    image
        .boot_args(
            &mut cmd,
            512,
            1,
            &serial,
            "console=ttyS0 panic=-1 quiet loglevel=3",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(sb.dir.join("qemu.stderr")).unwrap());
    let mut qemu = guest::KillOnDrop::new(common::spawn(&mut cmd), "qemu");
    let started = Instant::now();
    let status = qemu.wait_timeout(BOOT_TIMEOUT);
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
    assert!(
        status.is_some(),
        "the guest did not finish within {BOOT_TIMEOUT:?}{ctx}"
    );
    assert!(
        !log.contains("BH-INSMOD-FAILED"),
        "a module did not load{ctx}"
    );
    let failed: Vec<&str> = log.lines().filter(|l| l.contains(CHECK_FAIL)).collect();
    assert!(
        failed.is_empty(),
        "checks failed in the guest: {failed:#?}{ctx}"
    );
    for check in CHECKS {
        let ok = format!("{CHECK_OK} {check}");
        assert!(
            log.lines().any(|l| l.trim_end() == ok),
            "the guest never reported {check} OK{ctx}"
        );
    }
    assert!(log.contains(ALL_DONE), "no {ALL_DONE}{ctx}");
    eprintln!(
        "vlan_guest: {} checks OK in {:.0?} ({})",
        CHECKS.len(),
        started.elapsed(),
        image.kernel_package
    );
}

// ---------------------------------------------------------------- guest

struct Probe {
    failures: usize,
}

impl Probe {
    fn check(&mut self, name: &str, ok: bool, why: impl std::fmt::Display) {
        assert!(CHECKS.contains(&name), "unlisted check {name}");
        if ok {
            println!("{CHECK_OK} {name}");
        } else {
            println!("{CHECK_FAIL} {name}: {why}");
            self.failures += 1;
        }
    }
}

fn in_guest() -> ExitCode {
    let mut p = Probe { failures: 0 };
    let sh = |script: &str| {
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
    };
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

    let users = [1010, 1011, 1020, 1040, 1030, 1031];
    let taps: Vec<Result<OwnedFd, String>> = users.iter().map(|&u| attach(u, "br0")).collect();
    let errors: Vec<&String> = taps.iter().filter_map(|t| t.as_ref().err()).collect();
    p.check(
        "helper-attached-all",
        errors.is_empty(),
        format!("{errors:?}"),
    );
    let [Ok(a10), Ok(b10), Ok(c20), Ok(plain), Ok(trunk), Ok(v30)] = &taps[..] else {
        println!("{ALL_DONE} failures={}", p.failures + 1);
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
        "vlan20-not-vlan10",
        receives(a10, "c20-untagged").is_none() && receives(b10, "c20-untagged").is_none(),
        "a VLAN 10 port got it",
    );

    send(plain, 3, None, "plain-untagged");
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
    // port, whose PVID is 1.
    send(a10, 1, Some(1), "a10-tagged-1");
    p.check(
        "vlan1-removed-from-vlan10-port",
        receives(plain, "a10-tagged-1").is_none(),
        "the plain port got VLAN 1 from a10",
    );
    send(a10, 1, Some(20), "a10-tagged-20");
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
    let tried = Command::new("/bin/vlan-probe")
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

    println!("{ALL_DONE} failures={}", p.failures);
    if p.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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

/// Runs the setuid helper as `uid` for `bridge`; the tap fd, or
/// `status N: stderr`.
fn attach(uid: u32, bridge: &str) -> Result<OwnedFd, String> {
    let (ours, theirs) = common::sys::socketpair().map_err(|e| e.to_string())?;
    common::clear_cloexec(theirs.as_raw_fd());
    let out = Command::new("/bin/bridge-helper")
        .arg(format!("--br={bridge}"))
        .arg(format!("--fd={}", theirs.as_raw_fd()))
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    drop(theirs);
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
    let deadline = Instant::now() + Duration::from_millis(1500);
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
