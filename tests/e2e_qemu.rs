//! End to end with the real client: an unprivileged QEMU (uid 65534) boots a
//! tiny Linux guest whose NIC is `-netdev bridge,helper=PATH`, PATH being a
//! setuid-root copy of our helper. The guest pings the bridge's address in
//! a network namespace made for the test.
//!
//! Needs (Debian 12): qemu-system-x86, busybox-static, iproute2, and apt
//! access to download `linux-image-*-amd64` (cached under target/tmp).
//! `BH_E2E_HELPER=qemu` runs the same tests against Debian's
//! /usr/lib/qemu/qemu-bridge-helper instead (to tell harness problems from
//! helper problems).

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{time, Jail, Mode, NetNs, Sandbox, NOBODY};
use guest::{
    helper_under_test, require_qemu, taps_now, KillOnDrop, SeenTap, MARK_HOLDING, MARK_PING_OK,
};

const QEMU: &str = guest::QEMU;
const BRIDGE_MTU: u32 = 1400;
/// Generous for TCG on a busy 2-core machine; a boot normally takes ~7 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// One test's world: a netns with `br0` (MTU 1400, address .1), a sandbox
/// holding a setuid-root helper copy, kernel, initramfs and a directory
/// that uid 65534 may write (serial log).
struct World {
    ns: NetNs,
    sb: Sandbox,
    helper: PathBuf,
    image: guest::GuestImage,
    out: PathBuf,
    subnet: u8,
}

impl World {
    fn new(subnet: u8) -> World {
        common::require_root();
        require_qemu();
        let image = guest::guest_image();
        let ns = NetNs::with_bridge(BRIDGE_MTU);
        ns.ip(&[
            "addr",
            "add",
            &format!("169.254.{subnet}.1/24"),
            "dev",
            "br0",
        ]);
        let sb = Sandbox::new();
        let helper = sb.install(helper_under_test(), Mode::Setuid);
        let image = image.copy_to(&sb.dir);
        let out = sb.dir.join("out");
        fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        sb.acl("allow br0\n");
        World {
            ns,
            sb,
            helper,
            image,
            out,
            subnet,
        }
    }

    fn serial(&self) -> PathBuf {
        self.out.join("serial.log")
    }

    fn icmp_echos(&self) -> (u64, u64) {
        guest::icmp_echos(&self.ns)
    }

    /// Starts QEMU as uid 65534 inside the namespace with `helper_spec` as
    /// the `helper=` value.
    fn start_qemu(&self, helper_spec: &str, hold: bool) -> KillOnDrop {
        let netdev = format!(
            "bridge,id=n0,br=br0,helper={}",
            helper_spec.replace(',', ",,")
        );
        self.launch(
            &netdev,
            "virtio-net-pci,netdev=n0,romfile=",
            1,
            hold,
            |_| {},
        )
    }

    /// Starts QEMU as uid 65534 inside the namespace with NIC `netdev` and
    /// `device`, `smp` vCPUs, after `prepare` (which may pass descriptors).
    fn launch(
        &self,
        netdev: &str,
        device: &str,
        smp: u32,
        hold: bool,
        prepare: impl FnOnce(&mut Command),
    ) -> KillOnDrop {
        let append = guest::cmdline(
            &format!("169.254.{}.2/24", self.subnet),
            &format!("169.254.{}.1", self.subnet),
            hold,
        );
        let mut jail = Jail::user(NOBODY);
        jail.tun_0666 = true; // as on a stock Debian system
        let mut cmd = self.sb.command(&self.ns, QEMU, jail);
        self.image
            .boot_args(&mut cmd, 256, smp, &self.serial(), &append)
            .args(["-netdev", netdev])
            .args(["-device", device])
            .current_dir(&self.out)
            .env("HOME", &self.out)
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.out.join("qemu.stdout")).unwrap())
            .stderr(fs::File::create(self.out.join("qemu.stderr")).unwrap());
        prepare(&mut cmd);
        KillOnDrop::new(common::spawn(&mut cmd), "qemu")
    }

    /// What the failure message needs: serial console, QEMU's output, links.
    fn context(&self) -> String {
        let read = |n: &str| fs::read_to_string(self.out.join(n)).unwrap_or_default();
        format!(
            "\n--- serial ---\n{}\n--- qemu stdout ---\n{}\n--- qemu stderr ---\n{}\n--- links ---\n{}",
            guest::read_serial(&self.serial()),
            read("qemu.stdout"),
            read("qemu.stderr"),
            self.ns.ip(&["-d", "link", "show"])
        )
    }
}

/// Polls the namespace's taps until `until` is true or QEMU exits.
fn watch_taps(
    w: &World,
    qemu: &mut KillOnDrop,
    timeout: Duration,
    mut until: impl FnMut(&[SeenTap]) -> bool,
) -> Vec<SeenTap> {
    let deadline = Instant::now() + time::limit(timeout);
    let mut seen: Vec<SeenTap> = Vec::new();
    while Instant::now() < deadline && qemu.is_running() {
        seen.extend(taps_now(&w.ns).into_iter().filter(|t| t.master == "br0"));
        if until(&seen) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

/// How every booted guest must end: its ping succeeded, QEMU exited 0,
/// the namespace answered its echoes (ICMP counters InEchos and
/// OutEchoReps moved from `before`), the tap was as set up, and no tap is
/// left. Returns the counters now.
fn assert_pinged_and_gone(
    w: &World,
    serial: &str,
    status: Option<std::process::ExitStatus>,
    before: (u64, u64),
    seen: &[SeenTap],
    ctx: &str,
) -> (u64, u64) {
    let after = guest::assert_guest_pinged(&w.ns, serial, status, before, ctx);
    assert_tap_was_right(seen, ctx);
    let left = wait_no_taps(&w.ns, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "taps left after QEMU exited: {left:?}{ctx}"
    );
    after
}

fn assert_tap_was_right(seen: &[SeenTap], ctx: &str) {
    let t = seen
        .last()
        .unwrap_or_else(|| panic!("no tap was ever in br0 while QEMU ran{ctx}"));
    assert!(t.name.starts_with("tap"), "{t:?}");
    assert_eq!(t.mtu, BRIDGE_MTU, "tap MTU is not the bridge's: {t:?}");
    assert!(t.up, "tap not up: {t:?}");
    assert!(
        t.mac.starts_with("fe:"),
        "tap MAC does not start with fe: {t:?}"
    );
    // Our helper labels its taps; QEMU's does not. Proves which one ran.
    if helper_under_test() == Path::new(common::HELPER) {
        assert!(
            t.alias.starts_with(&format!("bridge-helper uid={NOBODY}")),
            "tap not made by our helper (alias {:?}): {t:?}",
            t.alias
        );
    }
}

fn wait_no_taps(ns: &NetNs, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + time::limit(timeout);
    loop {
        let t = ns.taps();
        if t.is_empty() || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Boots, pings, powers off: the whole path with `helper=PATH`.
fn boot_and_ping(w: &World, helper_spec: &str) {
    let started = Instant::now();
    let before = w.icmp_echos();
    let mut qemu = w.start_qemu(helper_spec, false);
    // Watches until QEMU exits (the guest powers off) or the boot timeout.
    let seen = watch_taps(w, &mut qemu, BOOT_TIMEOUT, |_| false);
    let status = qemu.wait_timeout(time::secs(5));
    let ctx = w.context();
    let serial = guest::read_serial(&w.serial());
    assert!(
        status.is_some(),
        "QEMU did not finish within {:?} (killed){ctx}",
        time::limit(BOOT_TIMEOUT)
    );
    let after = assert_pinged_and_gone(w, &serial, status, before, &seen, &ctx);
    eprintln!(
        "{helper_spec}: guest pinged (ICMP {before:?} -> {after:?}), tap {} in br0 mtu {}, gone after exit; {:.1} s",
        seen.last().unwrap().name,
        seen.last().unwrap().mtu,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn guest_pings_across_the_bridge_with_helper_path() {
    let w = World::new(11);
    boot_and_ping(&w, &w.helper.display().to_string());
}

#[test]
fn guest_pings_with_helper_string_run_by_sh_c() {
    let w = World::new(12);
    // A helper= value with a space is run as `sh -c "VALUE --use-vnet
    // --fd=N --br=br0"`, so --use-vnet comes twice.
    assert!(!w.helper.display().to_string().contains(' '));
    boot_and_ping(&w, &format!("{} --use-vnet", w.helper.display()));
}

#[test]
fn tap_disappears_when_qemu_is_killed_9() {
    let w = World::new(13);
    let mut qemu = w.start_qemu(&w.helper.display().to_string(), true);
    let serial = w.serial();
    let seen = watch_taps(&w, &mut qemu, BOOT_TIMEOUT, |seen| {
        !seen.is_empty() && guest::read_serial(&serial).contains(MARK_HOLDING)
    });
    let log = guest::read_serial(&serial);
    if !log.contains(MARK_HOLDING) {
        let ctx = w.context();
        panic!("the guest never reached its holding point{ctx}");
    }
    assert!(
        log.contains(MARK_PING_OK),
        "the guest's ping did not succeed{}",
        w.context()
    );
    assert_tap_was_right(&seen, "");
    let pid = qemu.pid();
    let status = qemu.kill9().expect("QEMU was running");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "QEMU {pid} did not die of SIGKILL: {status:?}"
    );
    let left = wait_no_taps(&w.ns, Duration::from_secs(5));
    assert!(left.is_empty(), "taps left after kill -9 of QEMU: {left:?}");
    eprintln!(
        "kill -9 of QEMU {pid}: tap {} removed by the kernel",
        seen.last().unwrap().name
    );
}

/// Issue 16: a VMM that is not QEMU's `helper=` path. The client library
/// gets a 4-queue tap from a setuid copy of our helper (run as uid 65534
/// with a 0666 /dev/net/tun, as on Debian), and QEMU, as uid 65534,
/// inherits the four fds: `-netdev tap,fds=A:B:C:D`, a multiqueue
/// virtio-net and as many vCPUs as queues (the guest's driver enables one
/// queue pair per vCPU at most). The guest must see four queues each way
/// and ping across the bridge.
#[test]
fn guest_sees_four_queues_from_the_client_and_pings() {
    const QUEUES: u16 = 4;
    let w = World::new(14);
    // Always ours: QEMU's helper has no --queues.
    let helper = w.sb.install(common::HELPER, Mode::Setuid);
    let mut jail = Jail::for_mode(Mode::Setuid);
    jail.tun_0666 = true;
    let asked = Instant::now();
    let tap = bridge_helper_client::Helper::from_command(w.sb.command(&w.ns, &helper, jail))
        .bridge("br0")
        .vnet_hdr(true)
        .queues(QUEUES)
        .run()
        .unwrap_or_else(|e| panic!("the client got no tap: {e}"));
    let got_in = asked.elapsed();
    let name = tap.name().to_string();
    let details = w.ns.ip(&["-d", "link", "show", "dev", &name]);
    assert!(details.contains("numqueues 4 "), "{details}");
    let before = w.icmp_echos();
    let started = Instant::now();
    // The numbers are the same in QEMU: pass_to only makes them inheritable.
    let list: Vec<String> = tap
        .fds()
        .iter()
        .map(|fd| fd.as_raw_fd().to_string())
        .collect();
    let netdev = format!("tap,id=n0,vhost=off,fds={}", list.join(":"));
    let device = format!(
        "virtio-net-pci,netdev=n0,romfile=,mq=on,vectors={}",
        2 * u32::from(QUEUES) + 2
    );
    let mut qemu = w.launch(&netdev, &device, u32::from(QUEUES), false, |cmd| {
        assert_eq!(tap.pass_to(cmd).len(), list.len());
    });
    // QEMU has its own copies now: the tap lives exactly as long as QEMU.
    drop(tap);
    let seen = watch_taps(&w, &mut qemu, BOOT_TIMEOUT, |_| false);
    let status = qemu.wait_timeout(time::secs(5));
    let ctx = w.context();
    let serial = guest::read_serial(&w.serial());
    assert!(
        status.is_some(),
        "QEMU did not finish within {:?}{ctx}",
        time::limit(BOOT_TIMEOUT)
    );
    let queues = serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(guest::MARK_QUEUES))
        .unwrap_or_else(|| panic!("the guest did not list its queues{ctx}"))
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let want: Vec<String> = (0..QUEUES)
        .map(|q| format!("rx-{q}"))
        .chain((0..QUEUES).map(|q| format!("tx-{q}")))
        .collect();
    assert_eq!(queues, want, "the guest's NIC queues{ctx}");
    let after = assert_pinged_and_gone(&w, &serial, status, before, &seen, &ctx);
    eprintln!(
        "client: {name} with {QUEUES} queues in {:.1} ms; guest saw {queues:?}, pinged (ICMP {before:?} -> {after:?}); {:.1} s",
        got_in.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64()
    );
}
