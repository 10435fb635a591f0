//! End to end with libvirt in session mode: uid 65534 runs its own session
//! daemon (started here, inside the test's network and mount namespaces,
//! stopped here by its pid) whose qemu.conf names a setuid-root copy of our
//! helper as `bridge_helper`. `virsh create` starts a guest with
//! `<interface type='bridge'>`; libvirt runs the helper itself
//! (`--use-vnet --br=BR --fd=N`) and hands the tap to QEMU as
//! `-netdev tap,fd=N`. The guest pings the bridge and powers off.
//!
//! The same on a service install (issue 26): `bridge_helper` names a copy
//! without setuid or capability, which forwards to the service
//! (`bridge-helper --serve`, socket-activated in the test's network
//! namespace and in a mount namespace of its own, whose /run holds only
//! its socket: tests/support/service.rs); libvirtd and virsh run in those
//! namespaces, so the copy finds the socket at its compiled-in path.
//!
//! Needs (Debian 12): libvirt-daemon, libvirt-daemon-driver-qemu,
//! libvirt-clients, qemu-system-x86, busybox-static, and apt access for the
//! guest kernel (see tests/support/guest.rs). `BH_E2E_HELPER=qemu` runs it
//! against Debian's /usr/lib/qemu/qemu-bridge-helper instead.

mod common;
#[path = "support/guest.rs"]
mod guest;
#[path = "support/service.rs"]
mod service;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{time, Jail, Mode, NetNs, Sandbox, HELPER, NOBODY};
use guest::{helper_under_test, KillOnDrop, MARK_PING_OK};

const LIBVIRTD: &str = "/usr/sbin/libvirtd";
const VIRSH: &str = "virsh";
const URI: &str = "qemu:///session";
const BRIDGE_MTU: u32 = 1400;
const DOMAIN_TIMEOUT: Duration = Duration::from_secs(150);

fn require_libvirt() {
    assert!(
        Path::new(LIBVIRTD).exists(),
        "{LIBVIRTD} is missing: install the Debian packages libvirt-daemon and libvirt-daemon-driver-qemu"
    );
    let so =
        Path::new("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so");
    assert!(
        so.exists(),
        "{} is missing: install libvirt-daemon-driver-qemu",
        so.display()
    );
    let ok = Command::new(VIRSH)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "virsh is missing: install the Debian package libvirt-clients"
    );
    guest::require_qemu();
}

/// uid 65534's private session: HOME and XDG directories in the sandbox.
struct Session {
    root: PathBuf,
}

impl Session {
    fn new(sb: &Sandbox) -> Session {
        let root = sb.dir.join("session");
        for d in [
            "",
            "home",
            "config/libvirt",
            "runtime",
            "cache",
            "data",
            "out",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).unwrap();
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
            let mode = if d == "runtime" { 0o700 } else { 0o755 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        Session { root }
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_RUNTIME_DIR", self.root.join("runtime"))
            .env("XDG_CACHE_HOME", self.root.join("cache"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            // virsh must talk to our daemon, never start one of its own.
            .env("LIBVIRT_AUTOSTART", "0")
            .current_dir(self.root.join("home"));
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        p
    }

    fn socket(&self) -> PathBuf {
        self.root.join("runtime/libvirt/libvirt-sock")
    }

    fn serial(&self) -> PathBuf {
        self.root.join("out/serial.log")
    }

    /// QEMU's pid file, written by libvirt for a running domain.
    fn qemu_pidfile(&self, domain: &str) -> PathBuf {
        self.root
            .join(format!("runtime/libvirt/qemu/run/{domain}.pid"))
    }

    fn qemu_log(&self, domain: &str) -> String {
        fs::read_to_string(
            self.root
                .join(format!("cache/libvirt/qemu/log/{domain}.log")),
        )
        .unwrap_or_default()
    }
}

/// The session daemon we started. Dropping it stops it by its pid (SIGTERM,
/// then SIGKILL), after killing the domain's QEMU by the pid libvirt wrote
/// for it, should a failed test have left one running.
struct Daemon {
    proc: KillOnDrop,
    qemu_pidfile: PathBuf,
    virtlogd_pidfile: PathBuf,
    domain: String,
}

impl Daemon {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.proc.pid();
        if pid == 0 {
            return None;
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not
        // reaped yet (so the pid cannot have been reused).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        self.proc.wait_timeout(time::secs(15))
    }

    /// A virtlogd autostarted for this session (none is expected with
    /// stdio_handler = "file"), found by its pid file and command line.
    fn kill_virtlogd(&self) {
        let Ok(text) = fs::read_to_string(&self.virtlogd_pidfile) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
            return;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("virtlogd") {
            // SAFETY: kill(2) on the virtlogd of this test's private session.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }

    fn kill_leftover_qemu(&self) {
        let Ok(text) = fs::read_to_string(&self.qemu_pidfile) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
            return;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("qemu-system") && cmdline.contains(&self.domain) {
            // SAFETY: kill(2) on the QEMU this test's daemon started (checked
            // by its command line just above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_leftover_qemu();
        self.stop();
        self.kill_virtlogd();
    }
}

fn output_of(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = KillOnDrop::new(common::spawn(&mut cmd), "virsh");
    // Drain pipes in threads so a chatty command cannot block.
    let child = p.child.as_mut().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let status = p
        .wait_timeout(time::limit(timeout))
        .unwrap_or_else(|| panic!("command timed out after {:?}", time::limit(timeout)));
    Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

/// How the helper libvirt runs is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Install {
    /// A setuid-root copy (or QEMU's, with `BH_E2E_HELPER=qemu`).
    Setuid,
    /// A copy with no privilege, forwarding to the service.
    Service,
}

#[test]
fn libvirt_session_guest_pings_across_the_bridge() {
    session_guest_pings(Install::Setuid);
}

#[test]
fn libvirt_session_guest_pings_through_the_service() {
    session_guest_pings(Install::Service);
}

fn session_guest_pings(install: Install) {
    common::require_root();
    require_libvirt();
    let started = Instant::now();
    let image = guest::guest_image();
    let ns = NetNs::with_bridge(BRIDGE_MTU);
    ns.ip(&["addr", "add", "169.254.21.1/24", "dev", "br0"]);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let (helper, svc) = match install {
        Install::Setuid => (sb.install(helper_under_test(), Mode::Setuid), None),
        Install::Service => {
            let helper = sb.install(HELPER, Mode::Unprivileged);
            for file in [helper.as_path(), Path::new(HELPER)] {
                service::assert_no_privilege(file);
            }
            (helper, Some(service::Service::start(&sb, &ns)))
        }
    };
    // Drains what the service's start logged.
    sb.logged();
    let ours = install == Install::Service || helper_under_test() == Path::new(HELPER);
    let image = image.copy_to(&sb.dir);
    let s = Session::new(&sb);
    // stdio_handler = "file": QEMU's log is written by libvirtd itself, so
    // no virtlogd is autostarted to outlive the test.
    s.write(
        "config/libvirt/qemu.conf",
        &format!(
            "bridge_helper = \"{}\"\nstdio_handler = \"file\"\n",
            helper.display()
        ),
    );
    let domain = format!("bh3-{install:?}-{}", std::process::id()).to_lowercase();
    let xml = format!(
        r#"<domain type='qemu'>
  <name>{domain}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <source bridge='br0'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='{serial}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"#,
        kernel = image.kernel.display(),
        initrd = image.initrd.display(),
        cmdline = guest::cmdline("169.254.21.2/24", "169.254.21.1", false),
        serial = s.serial().display(),
    );
    let dom_xml = s.write("out/domain.xml", &xml);

    let mut jail = Jail::user(NOBODY);
    jail.tun_0666 = true; // as on a stock Debian system
                          // In the service's namespaces when there is one.
    let command = |program: &str| match &svc {
        None => sb.command(&ns, program, jail.clone()),
        Some(svc) => svc.command(program, jail.clone()),
    };
    let mut cmd = command(LIBVIRTD);
    s.env(&mut cmd);
    cmd.arg("--timeout=300")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(s.root.join("out/libvirtd.log")).unwrap());
    let mut daemon = Daemon {
        proc: KillOnDrop::new(common::spawn(&mut cmd), "libvirtd"),
        qemu_pidfile: s.qemu_pidfile(&domain),
        virtlogd_pidfile: s.root.join("runtime/libvirt/virtlogd.pid"),
        domain: domain.clone(),
    };
    let daemon_log = || fs::read_to_string(s.root.join("out/libvirtd.log")).unwrap_or_default();
    let deadline = Instant::now() + time::secs(30);
    while !s.socket().exists() {
        assert!(
            daemon.proc.is_running(),
            "libvirtd exited early:\n{}",
            daemon_log()
        );
        assert!(
            Instant::now() < deadline,
            "libvirtd made no socket in 30 s:\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The socket must be our daemon's, not one autostarted by something else.
    let pidfile = s.root.join("runtime/libvirt/libvirtd.pid");
    let deadline = Instant::now() + time::secs(10);
    let mut owner = String::new();
    while Instant::now() < deadline {
        owner = fs::read_to_string(&pidfile).unwrap_or_default();
        if !owner.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        owner.trim(),
        daemon.proc.pid().to_string(),
        "libvirtd.pid is not our daemon's"
    );

    let virsh = |args: &[&str]| -> Output {
        let mut c = command(VIRSH);
        s.env(&mut c);
        c.args(["-q", "-c", URI]).args(args);
        output_of(c, Duration::from_secs(60))
    };
    let ctx = |extra: &str| {
        format!(
            "{extra}\n--- serial ---\n{}\n--- qemu log ---\n{}\n--- libvirtd ---\n{}",
            guest::read_serial(&s.serial()),
            s.qemu_log(&domain),
            daemon_log()
        )
    };

    let icmp = || guest::icmp_echos(&ns);
    let before = icmp();
    let out = virsh(&["create", &dom_xml.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        ctx(&format!(
            "virsh create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    );

    // While it runs: domiflist names the tap, and the tap is in br0 with
    // the bridge's MTU.
    let out = virsh(&["domiflist", &domain]);
    let iflist = String::from_utf8_lossy(&out.stdout).into_owned();
    let tap = iflist
        .lines()
        .map(str::split_whitespace)
        .filter_map(|mut f| {
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .find(|(_, kind, source)| kind == "bridge" && source == "br0")
        .map(|(name, _, _)| name)
        .unwrap_or_else(|| {
            panic!(
                "{}",
                ctx(&format!(
                    "virsh domiflist named no bridge interface:\n{iflist}"
                ))
            )
        });
    assert!(tap.starts_with("tap"), "domiflist: {iflist}");
    let link = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "dev", &tap])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    // The guest needs seconds to boot under TCG, so its tap is still here.
    assert!(
        !link.is_empty(),
        "{}",
        ctx(&format!(
            "{tap} is not in the namespace while the domain runs"
        ))
    );
    {
        assert!(link.contains(" master br0 "), "{link}");
        assert!(link.contains(&format!(" mtu {BRIDGE_MTU} ")), "{link}");
        assert!(link.contains("link/ether fe:"), "{link}");
        if ours {
            assert!(
                link.contains(&format!("alias bridge-helper uid={NOBODY}")),
                "tap not made by our helper: {link}"
            );
        }
    }

    // The guest powers off; the transient domain then disappears.
    let deadline = Instant::now() + time::limit(DOMAIN_TIMEOUT);
    loop {
        let out = virsh(&["list", "--name"]);
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !names.lines().any(|l| l.trim() == domain) {
            break;
        }
        if Instant::now() > deadline {
            let _ = virsh(&["destroy", &domain]);
            panic!(
                "{}",
                ctx(&format!(
                    "domain still running after {:?}; destroyed",
                    time::limit(DOMAIN_TIMEOUT)
                ))
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // libvirt ran the helper and passed the fd it got to QEMU.
    let qlog = s.qemu_log(&domain);
    assert!(
        qlog.contains(r#""type":"tap","fd":"#) || qlog.contains("tap,fd="),
        "{}",
        ctx("QEMU was not given a tap fd by libvirt")
    );
    let serial = guest::read_serial(&s.serial());
    assert!(
        serial.contains(MARK_PING_OK),
        "{}",
        ctx("the guest's ping did not succeed")
    );
    let after = icmp();
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{}",
        ctx(&format!("ICMP counters {before:?} -> {after:?}"))
    );
    let deadline = Instant::now() + time::secs(10);
    while !ns.taps().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ns.taps().is_empty(),
        "taps left after the domain ended: {:?}",
        ns.taps()
    );

    if install == Install::Service {
        // The service's run made it, and logged it once.
        let lines = sb.logged();
        let granted = lines
            .iter()
            .filter(|l| {
                l.contains(&format!("uid={NOBODY} "))
                    && l.contains(&format!("tap='{tap}'"))
                    && l.contains("granted")
            })
            .count();
        assert_eq!(granted, 1, "the service's log: {lines:#?}");
    }

    let pid = daemon.proc.pid();
    let status = daemon.stop();
    assert!(
        status.is_some(),
        "libvirtd {pid} did not stop on SIGTERM within 15 s (killed)"
    );
    // Nothing of this session may outlive it (libvirtd, virtlogd, QEMU).
    let left = session_processes(&s.root);
    assert!(
        left.is_empty(),
        "processes of the session left running: {left:?}"
    );
    eprintln!(
        "libvirt session ({install:?}): {} attached by {}, guest pinged (ICMP {before:?} -> {after:?}), no tap left, daemon {pid} stopped; {:.1} s",
        tap,
        helper.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Processes whose environment points into the session directory.
fn session_processes(root: &Path) -> Vec<(u32, String)> {
    let needle = root.join("runtime");
    let needle = needle.to_string_lossy();
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = fs::read(e.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&env).contains(needle.as_ref()) {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}
