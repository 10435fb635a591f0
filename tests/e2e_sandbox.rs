//! Issue 26, item 8: a VMM in a Flatpak-shaped sandbox gets its tap from
//! the service, with no setuid file and no file capability anywhere.
//!
//! The sandbox is bubblewrap's, shaped as Flatpak's: new user, pid and
//! ipc namespaces, the root read-only, a /proc of its own, and /run empty
//! except the service's socket directory; it runs as uid 65534, which
//! maps to itself inside. Two layouts: the host's QEMU with the root's
//! read-only /dev (whose /dev/net/tun is 0600: the sandbox cannot make a
//! tap itself), one user namespace deep; and Flatpak's, an app tree with
//! bubblewrap's `--dev /dev` (no tun at all), where to mount devpts an
//! unprivileged bubblewrap maps its user to 0 in one user namespace and
//! back in a second one inside it, so the peer is two deep and the
//! service reads the first one's setgroups (src/service/mod.rs, "User
//! namespaces"). QEMU runs in it with
//! `-netdev bridge,br=br0` and no `helper=`, so it runs its compiled-in
//! helper, /usr/lib/qemu/qemu-bridge-helper (QEMU 7.2 relocates that path
//! from its own directory: a QEMU in /usr/bin looks there, a Flatpak's in
//! /app/bin under /app/lib/qemu). The forwarder (a copy of our binary
//! without privilege, which asks the service) is at that path either way
//! a sandbox can put it there: bound over QEMU's own path in the sandbox,
//! or shipped in the app's tree next to the app's own QEMU (as a Flatpak
//! app ships it under /app). The guest pings the bridge's address.
//!
//! The service runs in the test's network namespace and in a mount
//! namespace of its own with an empty /run (tests/support/service.rs);
//! bubblewrap starts in those namespaces, so the bridge, the socket and
//! every packet stay in namespaces the test made.
//!
//! Needs what tests/e2e_qemu.rs needs, plus bubblewrap and systemd's
//! `systemd-socket-activate` (scripts/install-test-deps).

mod common;
#[path = "support/guest.rs"]
mod guest;
#[path = "support/service.rs"]
mod service;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{time, Jail, Mode, NetNs, Sandbox, HELPER, NOBODY};
use guest::{require_qemu, taps_now, KillOnDrop, SeenTap};
use service::{assert_no_privilege, Service};

const BWRAP: &str = "/usr/bin/bwrap";
/// Where QEMU 7.2 in /usr/bin looks for its helper without `helper=`.
const QEMU_DEFAULT_HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";
const BRIDGE_MTU: u32 = 1400;
/// A boot takes 20-40 s under TCG on a busy 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

fn require_bwrap() {
    let ok = Command::new(BWRAP)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{BWRAP} is missing: install the Debian package bubblewrap (scripts/install-test-deps)"
    );
}

/// Where the sandboxed QEMU is, and so where it finds its helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The host's QEMU (/usr/bin), the forwarder bound over its helper
    /// path inside the sandbox.
    HostQemu,
    /// The app's own tree, as a Flatpak's /app: a QEMU in `APP/bin`,
    /// which looks for `APP/lib/qemu/qemu-bridge-helper`, where the app
    /// ships the forwarder; nothing is bound over the host's files. With
    /// Flatpak's `--dev /dev`: two user namespaces deep.
    AppTree,
}

/// One sandboxed VMM's world: `br0` (MTU 1400, 169.254.21.1/24) in a
/// network namespace of the test's, the service in it, the forwarder (a
/// plain copy of our binary), the guest's kernel and initramfs, and an
/// output directory uid 65534 may write (the serial log), which the
/// sandbox gets read-write as a Flatpak app gets its data directory.
struct World {
    ns: NetNs,
    sb: Sandbox,
    svc: Service,
    layout: Layout,
    /// The forwarder, outside the sandbox.
    forwarder: PathBuf,
    /// Where QEMU looks for its helper, inside the sandbox.
    helper_inside: PathBuf,
    qemu: PathBuf,
    image: guest::GuestImage,
    out: PathBuf,
}

impl World {
    fn new(layout: Layout, subnet: u8) -> World {
        common::require_root();
        require_qemu();
        require_bwrap();
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
        sb.acl("allow br0\n");
        let (forwarder, helper_inside, qemu) = match layout {
            Layout::HostQemu => (
                sb.install(HELPER, Mode::Unprivileged),
                PathBuf::from(QEMU_DEFAULT_HELPER),
                PathBuf::from("/usr/bin").join(guest::QEMU),
            ),
            Layout::AppTree => {
                let app = app_tree(&sb);
                let helper = app.join("lib/qemu/qemu-bridge-helper");
                (helper.clone(), helper, app.join("bin").join(guest::QEMU))
            }
        };
        let image = image.copy_to(&sb.dir);
        let out = sb.dir.join("out");
        fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        let svc = Service::start(&sb, &ns);
        World {
            ns,
            sb,
            svc,
            layout,
            forwarder,
            helper_inside,
            qemu,
            image,
            out,
        }
    }

    fn serial(&self) -> PathBuf {
        self.out.join("serial.log")
    }

    /// `program` with `args` inside the sandbox: bubblewrap started as
    /// uid 65534 in the service's network and mount namespaces.
    fn sandboxed(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = self.svc.command(BWRAP, Jail::user(NOBODY));
        let out = self.out.display().to_string();
        cmd.args(["--unshare-user", "--unshare-pid", "--unshare-ipc"])
            .args(["--die-with-parent", "--new-session"])
            .args(["--ro-bind", "/", "/"])
            .args(["--proc", "/proc"])
            .args(["--tmpfs", "/run"])
            .args(["--ro-bind", "/run/bridge-helper", "/run/bridge-helper"]);
        if self.layout == Layout::AppTree {
            cmd.args(["--dev", "/dev"]);
        }
        if self.layout == Layout::HostQemu {
            cmd.arg("--ro-bind")
                .arg(&self.forwarder)
                .arg(QEMU_DEFAULT_HELPER);
        }
        cmd.args(["--bind", &out, &out, "--chdir", &out])
            .args(["--setenv", "HOME", &out])
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn context(&self) -> String {
        let read = |n: &str| fs::read_to_string(self.out.join(n)).unwrap_or_default();
        format!(
            "\n--- serial ---\n{}\n--- qemu stdout ---\n{}\n--- qemu stderr ---\n{}\n--- links ---\n{}\n--- service's log ---\n{}",
            guest::read_serial(&self.serial()),
            read("qemu.stdout"),
            read("qemu.stderr"),
            self.ns.ip(&["-d", "link", "show"]),
            self.sb.logged().join("\n")
        )
    }
}

/// What the sandbox looks like from inside: its namespaces are not the
/// test's, it has no capability, /run holds only the socket, and the file
/// at QEMU's helper path is our binary, without setuid or capability.
fn check_the_sandbox(w: &World) {
    let helper = w.helper_inside.display();
    // A directory anyone may write, outside the sandbox: only the
    // read-only root keeps the sandbox from writing in it.
    let open = w.sb.dir.join("world-writable");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let probe = open.join("probe");
    let probe_text = probe.display();
    let script = format!(
        "set -e
id -u
grep -E '^(CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status
for n in user pid ipc net; do echo \"$n $(readlink /proc/self/ns/$n)\"; done
echo \"uid_map: $(tr -s ' ' < /proc/self/uid_map)\"
echo \"tun: $(if [ -e /dev/net/tun ]; then stat -c '%a' /dev/net/tun; else echo none; fi)\"
echo \"run: $(ls -A /run | tr '\\n' ' ')\"
echo \"socketdir: $(ls -A /run/bridge-helper | tr '\\n' ' ')\"
echo \"helper: $(stat -Lc '%a %u' {helper})\"
echo \"getcap: $(/usr/sbin/getcap {helper})\"
cmp {helper} {HELPER} && echo same-binary
touch {probe_text} 2>&1 | grep -q 'Read-only file system' && echo root-read-only
"
    );
    let out = common::output(&mut w.sandboxed("/bin/sh", &["-c", &script]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the probe in the sandbox: {ctx}");
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key:?} in: {ctx}"))
            .to_string()
    };
    assert_eq!(text.lines().next(), Some("65534"), "uid inside: {ctx}");
    for cap in ["CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(
            value(cap),
            "0000000000000000",
            "{cap} in the sandbox: {ctx}"
        );
    }
    for n in ["user", "pid", "ipc"] {
        let ours = fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert_ne!(
            value(&format!("{n} ")),
            ours.display().to_string(),
            "the sandbox shares the test's {n} namespace: {ctx}"
        );
    }
    // Inside, 65534 maps to the parent namespace's 65534 (one deep, made
    // from the test's) or to its 0 (two deep, behind bubblewrap's --dev).
    let (parent_id, tun) = match w.layout {
        Layout::HostQemu => ("65534", "600"),
        Layout::AppTree => ("0", "none"),
    };
    assert_eq!(
        value("uid_map:"),
        format!("65534 {parent_id} 1"),
        "user namespaces of the {:?} sandbox: {ctx}",
        w.layout
    );
    assert_eq!(value("tun:"), tun, "/dev/net/tun in the sandbox: {ctx}");
    let test_net = fs::read_link(format!("/proc/{}/ns/net", w.svc.pid())).unwrap();
    assert_eq!(
        value("net "),
        test_net.display().to_string(),
        "the sandbox is not in the test's network namespace: {ctx}"
    );
    assert_eq!(value("run:"), "bridge-helper", "/run in the sandbox: {ctx}");
    assert_eq!(value("socketdir:"), "socket", "{ctx}");
    let helper = value("helper:");
    let mode = u32::from_str_radix(helper.split(' ').next().unwrap(), 8).unwrap();
    assert_eq!(mode & 0o6000, 0, "{helper} inside: {ctx}");
    assert_eq!(value("getcap:"), "", "{helper} inside: {ctx}");
    assert!(text.contains("same-binary"), "{ctx}");
    assert!(
        text.contains("root-read-only") && !probe.exists(),
        "the sandbox could write outside its own directory: {ctx}"
    );
}

/// Taps of `br0` seen until QEMU exits or the limit.
fn watch_taps(w: &World, qemu: &mut KillOnDrop) -> Vec<SeenTap> {
    let deadline = Instant::now() + time::limit(BOOT_TIMEOUT);
    let mut seen = Vec::new();
    while Instant::now() < deadline && qemu.is_running() {
        seen.extend(taps_now(&w.ns).into_iter().filter(|t| t.master == "br0"));
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

/// The app's tree in the sandbox directory: a copy of the host's QEMU in
/// `bin/`, its data, firmware and module directories (which QEMU also
/// finds relative to itself) as links to the host's, and a copy of our binary,
/// without privilege, at `lib/qemu/qemu-bridge-helper`.
fn app_tree(sb: &Sandbox) -> PathBuf {
    let app = sb.dir.join("app");
    for d in [
        "bin",
        "lib/qemu",
        "lib/ipxe",
        "lib/x86_64-linux-gnu",
        "share",
    ] {
        fs::create_dir_all(app.join(d)).unwrap();
    }
    let host_qemu = PathBuf::from("/usr/bin").join(guest::QEMU);
    for (from, to) in [
        (host_qemu.as_path(), app.join("bin").join(guest::QEMU)),
        (Path::new(HELPER), app.join("lib/qemu/qemu-bridge-helper")),
    ] {
        // By a `cp` process, as Sandbox::install copies (ETXTBSY).
        common::sh(
            "cp",
            &[&from.display().to_string(), &to.display().to_string()],
        );
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Debian's QEMU loads its accelerator from a module directory.
    for dir in [
        "share/qemu",
        "share/seabios",
        "lib/ipxe/qemu",
        "lib/x86_64-linux-gnu/qemu",
    ] {
        std::os::unix::fs::symlink(Path::new("/usr").join(dir), app.join(dir)).unwrap();
    }
    for d in [
        "",
        "bin",
        "lib",
        "lib/qemu",
        "lib/ipxe",
        "lib/x86_64-linux-gnu",
        "share",
    ] {
        fs::set_permissions(app.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    app
}

#[test]
fn a_sandboxed_qemu_without_helper_gets_its_tap_from_the_service_and_pings() {
    boot_in_sandbox(Layout::HostQemu, 21);
}

#[test]
fn a_qemu_in_the_apps_tree_runs_the_forwarder_the_app_ships() {
    boot_in_sandbox(Layout::AppTree, 22);
}

fn boot_in_sandbox(layout: Layout, subnet: u8) {
    let started = Instant::now();
    let w = World::new(layout, subnet);
    // Outside: the forwarder and the binary the service runs.
    for file in [w.forwarder.as_path(), Path::new(HELPER)] {
        assert_no_privilege(file);
    }
    check_the_sandbox(&w);

    let append = guest::cmdline(
        &format!("169.254.{subnet}.2/24"),
        &format!("169.254.{subnet}.1"),
        false,
    );
    let mut qemu = w.sandboxed(&w.qemu, &[]);
    w.image
        .boot_args(&mut qemu, 256, 1, &w.serial(), &append)
        .args(["-netdev", "bridge,id=n0,br=br0"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdout(fs::File::create(w.out.join("qemu.stdout")).unwrap())
        .stderr(fs::File::create(w.out.join("qemu.stderr")).unwrap());
    let before = guest::icmp_echos(&w.ns);
    let booted = Instant::now();
    let mut qemu = KillOnDrop::new(common::spawn(&mut qemu), "bwrap qemu");
    let seen = watch_taps(&w, &mut qemu);
    let status = qemu.wait_timeout(time::secs(5));
    let ctx = w.context();
    assert!(
        status.is_some(),
        "QEMU did not finish within {:?} (killed){ctx}",
        time::limit(BOOT_TIMEOUT)
    );
    let serial = guest::read_serial(&w.serial());
    let after = guest::assert_guest_pinged(&w.ns, &serial, status, before, &ctx);
    let tap = seen
        .last()
        .unwrap_or_else(|| panic!("no tap was ever in br0 while QEMU ran{ctx}"));
    assert_eq!(tap.mtu, BRIDGE_MTU, "{tap:?}");
    assert!(tap.up && tap.mac.starts_with("fe:"), "{tap:?}");
    // Our binary labels its taps: the service made this one, for 65534.
    assert!(
        tap.alias
            .starts_with(&format!("bridge-helper uid={NOBODY}")),
        "tap not made by bridge-helper for uid {NOBODY}: {tap:?}{ctx}"
    );
    // The service's run logged the request once, as a setuid run would.
    let logged = ctx
        .split("--- service's log ---")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let wanted = [
        format!("uid={NOBODY} "),
        "bridge='br0'".to_string(),
        format!("tap='{}'", tap.name),
        "granted".to_string(),
    ];
    assert_eq!(
        logged
            .lines()
            .filter(|l| wanted.iter().all(|w| l.contains(w.as_str())))
            .count(),
        1,
        "not one audit line with {wanted:?}:{logged}"
    );
    let deadline = Instant::now() + time::secs(5);
    while !w.ns.taps().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.ns.taps(), Vec::<String>::new(), "taps left after QEMU");
    eprintln!(
        "sandboxed QEMU ({layout:?}, no helper=): tap {} in br0 mtu {} from the service, guest pinged (ICMP {before:?} -> {after:?}); boot {:.1} s, test {:.1} s",
        tap.name,
        tap.mtu,
        booted.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
