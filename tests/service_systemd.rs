//! The service under a real systemd as PID 1: Debian's systemd boots in a
//! throwaway container (tests/support/boot-systemd.sh: its own pid, mount,
//! network, cgroup, uts and ipc namespaces, the machine's / under an
//! overlay) with the package's units from debian/ installed and the socket
//! enabled. A request from an unprivileged user, through the forwarder at
//! QEMU's helper path, makes that systemd start bridge-helper.service with
//! the unit's whole sandbox (PrivateDevices= with the tun bound in, the
//! system call filter, RestrictAddressFamilies=, the capability bounding
//! set, RestrictNamespaces=, /dev/log from journald): the user gets a tap
//! on the bridge, from a Flatpak-shaped bubblewrap sandbox too; the
//! service exits once idle, and the next connection starts it again. And
//! journald's per-unit rate limit, which every user's requests share,
//! drops none of them: one user's flood of refused requests leaves
//! another user's grant in the journal (debian/bridge-helper.service,
//! LogRateLimitBurst=).
//!
//! Nothing here touches the machine's services, sockets or kernel
//! settings; a container that does not boot fails the test with systemd's
//! console and journal. Needs: systemd (Debian's package:
//! /lib/systemd/systemd), util-linux (unshare, nsenter, setpriv), iproute2,
//! bubblewrap, a cgroup v2 hierarchy mounted somewhere (/sys/fs/cgroup or,
//! on a hybrid host, /sys/fs/cgroup/unified).
mod common;

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_helper::service::IDLE_EXIT;
use common::{sys_ok, time, tun_get_iff, HelperRun, HELPER, NOBODY};

const SYSTEMD: &str = "/lib/systemd/systemd";
const BOOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/boot-systemd.sh");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/debian");
/// QEMU's helper path: on a service install, the binary without privilege.
const FORWARDER: &str = "/usr/lib/qemu/qemu-bridge-helper";
const SERVICE: &str = "bridge-helper.service";
/// Capability numbers (linux/capability.h; not in the libc crate).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;

/// The mounted cgroup v2 hierarchy: where the container's cgroup is made.
fn cgroup2_root() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
        })
        .unwrap_or_else(|| {
            panic!("no cgroup v2 hierarchy is mounted: systemd 252 in a container needs one (mount -t cgroup2 none /sys/fs/cgroup/unified)")
        })
}

/// A booted container with systemd as its PID 1. Dropping it kills that
/// PID 1 (the kernel ends everything in its pid namespace) and removes its
/// cgroup and directory; if the test failed, it first prints systemd's
/// console and the container's journal.
struct Container {
    unshare: Child,
    /// PID 1 of the container, as the machine numbers it.
    init: u32,
    /// systemd runs as that PID 1: commands may join its namespaces.
    up: bool,
    console: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    cgroup: PathBuf,
    dir: PathBuf,
}

impl Container {
    fn boot() -> Container {
        common::require_root();
        for tool in [
            SYSTEMD,
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
            "/usr/bin/setpriv",
            "/usr/bin/bwrap",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: apt-get install systemd util-linux bubblewrap (scripts/install-test-deps)"
            );
        }
        // Two tests of this file may boot at once, in one process.
        static BOOTED: AtomicU32 = AtomicU32::new(0);
        let n = BOOTED.fetch_add(1, Ordering::Relaxed);
        let tag = format!("bht-systemd-{}-{n}", std::process::id());
        let cgroup = cgroup2_root().join(&tag);
        fs::create_dir(&cgroup).unwrap_or_else(|e| {
            panic!(
                "cannot make the container's cgroup {}: {e}",
                cgroup.display()
            )
        });
        let dir = std::env::temp_dir().join(&tag);
        fs::create_dir_all(&dir).unwrap();

        // systemd writes its boot messages to /dev/console: a pty whose
        // far end a thread drains, so that a failed boot can be shown.
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors through the pointers; the
        // name, termios and window size are optional (null).
        sys_ok(unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        })
        .expect("openpty");
        // SAFETY: both descriptors were just opened, and nothing else owns them.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // openpty does not set close-on-exec: no command of the test (the
        // forwarder among them) may inherit the console.
        for fd in [&master, &slave] {
            // SAFETY: F_SETFD with an int argument on a descriptor we own.
            sys_ok(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })
                .expect("FD_CLOEXEC");
        }
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--mount",
            "--net",
            "--uts",
            "--ipc",
            "--fork",
            "--kill-child",
            "--",
            "bash",
        ])
        .arg(BOOT)
        .args([&dir, &cgroup])
        .args([HELPER, UNITS])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
        // SAFETY: async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Its own session (the pty becomes the container's console,
                // not our terminal), and gone with the thread that started
                // it: --kill-child then ends PID 1.
                sys_ok(libc::setsid())?;
                sys_ok(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))
            });
        }
        let unshare = common::spawn(&mut cmd);
        drop(cmd);
        let console = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&console);
        let reader = std::thread::spawn(move || {
            let mut master = fs::File::from(master);
            let mut buf = [0u8; 4096];
            // EIO once every end of the pty is closed: the container is gone.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut c = Container {
            unshare,
            init: 0,
            up: false,
            console,
            reader: Some(reader),
            cgroup,
            dir,
        };
        let started = Instant::now();
        let limit = time::secs(10);
        c.init = loop {
            let text = c.console_text();
            if let Some(pid) = text
                .lines()
                .find_map(|l| l.strip_prefix("boot-systemd: pid "))
                .and_then(|p| p.trim().parse().ok())
            {
                break pid;
            }
            if let Ok(Some(status)) = c.unshare.try_wait() {
                panic!("the container's boot script ended ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < limit,
                "the boot script said nothing in {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Not a single command in the container before systemd runs there:
        // until then its mount namespace still shows the machine's /run.
        let private = format!("/proc/{}/root/run/systemd/private", c.init);
        while fs::read_to_string(format!("/proc/{}/comm", c.init))
            .ok()
            .as_deref()
            != Some("systemd\n")
            || !Path::new(&private).exists()
        {
            if let Ok(Some(status)) = c.unshare.try_wait() {
                panic!("the container ended ({status}) before systemd was up");
            }
            assert!(
                started.elapsed() < limit,
                "systemd was not up as PID 1 after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.up = true;
        // The machine's kernel settings are out of reach (no sysctl.d
        // applied to them, no fs.file-max raised by PID 1).
        let out = c.sh("test -w /proc/sys/fs/file-max || test -w /proc/sys/kernel");
        assert!(
            !out.status.success(),
            "/proc/sys is writable in the container"
        );
        // Up when systemd says so: "running", or "degraded" if some unit of
        // the machine's own cannot start in a container (listed below).
        let out = c.sh("timeout 60 systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            state == "running" || state == "degraded",
            "systemd did not finish booting: is-system-running says {state:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if state == "degraded" {
            eprintln!("degraded boot:\n{}", c.ok("systemctl --failed --no-pager"));
        }
        eprintln!(
            "systemd booted as PID 1 of the container in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        c
    }

    fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().unwrap()).replace('\r', "")
    }

    /// A Command for `program` in every namespace of the container, as root.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.init))
            .args([
                "--mount", "--net", "--pid", "--uts", "--ipc", "--cgroup", "--",
            ])
            .arg(program);
        cmd
    }

    fn sh(&self, script: &str) -> Output {
        common::output_within(
            self.command("sh").args(["-c", script]).stdin(Stdio::null()),
            Duration::from_secs(70),
        )
    }

    /// `script`'s stdout; panics unless it succeeds.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container: {script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `systemctl show -P property` of the service.
    fn service(&self, property: &str) -> String {
        self.ok(&format!("systemctl show -P {property} {SERVICE}"))
    }

    /// QEMU's helper path, run by nobody with `args` and a socketpair as
    /// `--fd`: the forwarder, which asks the service.
    fn forward(&self, args: &[&str]) -> HelperRun {
        let mut cmd = self.command("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--", FORWARDER])
            .args(args);
        // The forwarder's and the service's own deadlines bound the wait.
        let (child, ours) = common::spawn_with_socket(&mut cmd, true);
        let out = child.wait_with_output().expect("wait");
        HelperRun::collect(out, ours)
    }

    /// The forwarder as nobody inside a Flatpak-shaped bubblewrap sandbox
    /// (`--unshare-user --dev /dev`: two user namespaces deep, the first
    /// denying setgroups; `/run` empty but for the service's directory):
    /// the service enters that first level to read its setgroups, which
    /// the unit allows (RestrictNamespaces=user) and nothing else. The
    /// container's /proc is bound in: a new one cannot be mounted over a
    /// /proc with read-only parts, as in any container.
    fn forward_from_sandbox(&self, args: &[&str]) -> HelperRun {
        let mut cmd = self.command("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args([
                "--clear-groups",
                "--",
                "bwrap",
                "--unshare-user",
                "--unshare-ipc",
            ])
            .args([
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--bind",
                "/proc",
                "/proc",
            ])
            .args([
                "--tmpfs",
                "/run",
                "--ro-bind",
                "/run/bridge-helper",
                "/run/bridge-helper",
            ])
            .args(["--", FORWARDER])
            .args(args);
        let (child, ours) = common::spawn_with_socket(&mut cmd, true);
        let out = child.wait_with_output().expect("wait");
        HelperRun::collect(out, ours)
    }

    /// Waits for a journal line (SYSLOG_IDENTIFIER=bridge-helper, the
    /// service's audit line) that contains every one of `words`.
    fn wait_audit(&self, words: &[&str]) -> String {
        let limit = time::secs(5);
        let started = Instant::now();
        loop {
            let lines = self.ok("journalctl --no-pager -q -o cat -t bridge-helper");
            if let Some(l) = lines.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return l.to_string();
            }
            assert!(
                started.elapsed() < limit,
                "no audit line with {words:?} in the journal after {limit:?}:\n{lines}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.up {
            let journal = self.sh("journalctl --no-pager -q -o short-monotonic | tail -n 60");
            eprintln!(
                "--- systemd's console:\n{}\n--- the container's journal (end):\n{}{}",
                self.console_text(),
                String::from_utf8_lossy(&journal.stdout),
                String::from_utf8_lossy(&journal.stderr)
            );
        } else if std::thread::panicking() {
            eprintln!("--- the container's console:\n{}", self.console_text());
        }
        if self.init != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        // systemd's cgroups, deepest first, once their processes are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cgroup.exists() && Instant::now() < deadline {
            remove_cgroup_tree(&self.cgroup);
            if self.cgroup.exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The tap's line in the container: up and a port of `bridge`.
fn assert_tap_on_bridge(c: &Container, tap: &str, bridge: &str) {
    let link = c.ok(&format!("ip -o link show dev {tap}"));
    assert!(
        link.contains(&format!(" master {bridge} ")) && link.contains(",UP,"),
        "{tap} is not an up port of {bridge}: {link}"
    );
}

#[test]
fn a_real_systemd_starts_the_service_on_a_request_and_again_after_it_exits_idle() {
    let started = Instant::now();
    let c = Container::boot();
    assert_eq!(c.ok("systemctl is-active bridge-helper.socket"), "active");
    assert_eq!(
        c.service("ActiveState"),
        "inactive",
        "started before any request"
    );
    assert_eq!(
        c.ok("stat -c '%a %U' /run/bridge-helper/socket"),
        "666 root",
        "the socket as bridge-helper.socket makes it"
    );

    // The forwarder cannot make a tap itself: no setuid, no capability.
    assert_eq!(
        c.ok(&format!(
            "stat -L -c '%a %U' {FORWARDER}; getcap {FORWARDER}"
        )),
        "755 root"
    );

    // The first connection starts the service, which hands nobody a tap.
    let run = c.forward(&["--br=br0"]);
    assert_eq!(run.stderr, "", "a granted run prints nothing");
    let first = run.expect_tap();
    let (tap1, _) = tun_get_iff(&first);
    assert_tap_on_bridge(&c, &tap1, "br0");
    let audit = c.wait_audit(&[
        &format!("uid={NOBODY}"),
        &format!("tap='{tap1}'"),
        "granted",
    ]);
    eprintln!("audit line through journald's /dev/log: {audit}");
    let pid1 = c.service("MainPID");
    let invocation1 = c.service("InvocationID");
    assert_ne!(pid1, "0", "the service is not running after a request");
    // It runs in the unit's sandbox, as systemd set it up.
    let status = c.ok(&format!("cat /proc/{pid1}/status"));
    for want in ["NoNewPrivs:\t1", "Seccomp:\t2"] {
        assert!(
            status.lines().any(|l| l == want),
            "no {want:?} in:\n{status}"
        );
    }
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .expect("CapBnd");
    assert!(
        bounding & (1 << CAP_NET_ADMIN) != 0
            && bounding & (1 << CAP_SYS_ADMIN) == 0
            && bounding & (1 << CAP_SYS_PTRACE) == 0,
        "bounding set {bounding:x} is not the unit's"
    );
    let dev = c.ok(&format!("ls /proc/{pid1}/root/dev"));
    assert!(
        !dev.lines().any(|l| l == "console") && dev.lines().any(|l| l == "log"),
        "the service's /dev is not PrivateDevices= with /dev/log:\n{dev}"
    );

    // A peer in a Flatpak-shaped sandbox: the service's probe of its
    // first user namespace works in the unit's sandbox too.
    let sandboxed = c.forward_from_sandbox(&["--br=br0"]);
    assert_eq!(sandboxed.stderr, "", "a granted run prints nothing");
    let third = sandboxed.expect_tap();
    let (tap3, _) = tun_get_iff(&third);
    assert_tap_on_bridge(&c, &tap3, "br0");
    c.wait_audit(&[
        &format!("uid={NOBODY}"),
        &format!("tap='{tap3}'"),
        "granted",
    ]);

    // A refusal goes through the same sandbox: the ACL's line and status.
    c.forward(&["--br=br1"]).expect_refusal(4, "br1");
    c.wait_audit(&["bridge='br1'", "(status 4)"]);

    // Idle: the service exits by itself, cleanly, and the socket stays;
    // the tap stays with whoever holds it.
    let waited = Instant::now();
    let limit = IDLE_EXIT + time::secs(15);
    while c.service("ActiveState") != "inactive" {
        assert!(
            waited.elapsed() < limit,
            "the service still runs after {limit:?} idle"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let idle = waited.elapsed();
    eprintln!(
        "the service exited idle {:.1} s after the last request",
        idle.as_secs_f64()
    );
    // Not after each request: only once nothing came for IDLE_EXIT (less
    // the time the checks above took after the last one).
    assert!(
        idle + Duration::from_secs(5) >= IDLE_EXIT,
        "the service exited {idle:?} after the last request, before {IDLE_EXIT:?} idle"
    );
    assert_eq!(
        (
            c.service("Result").as_str(),
            c.service("ExecMainStatus").as_str()
        ),
        ("success", "0"),
        "the idle exit is not a clean one"
    );
    assert_eq!(c.ok("systemctl is-active bridge-helper.socket"), "active");
    assert_tap_on_bridge(&c, &tap1, "br0");

    // The next connection starts it again.
    let second = c.forward(&["--br=br0"]).expect_tap();
    let (tap2, _) = tun_get_iff(&second);
    assert_ne!(tap2, tap1);
    assert_tap_on_bridge(&c, &tap2, "br0");
    c.wait_audit(&[&format!("tap='{tap2}'"), "granted"]);
    assert_eq!(c.service("ActiveState"), "active");
    assert_ne!(c.service("InvocationID"), invocation1, "not a new start");
    eprintln!(
        "booted, served, exited idle and served again in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A user of the container's own (an entry added to its /etc/passwd,
/// which is the overlay's: the machine's file is untouched).
const FLOODER: u32 = 4343;
/// journald's burst in the container, for every unit without its own.
/// journald multiplies a burst by (log2(available bytes) - 16) / 4
/// (journald.conf(5)), the journal's available bytes being at most its
/// SystemMaxUse=:
/// 3.5 for a journal with 1 GB free, so Debian's default of 10,000 lines
/// in 30 s would take 35,000 lines or more to reach, well over ten seconds
/// of flooding. The container's journal is capped at [`JOURNAL_MAX`], so
/// the multiplier is 2 whatever the machine's disk holds (log2 of under
/// 64 MiB is 25: 1,000 * 9 / 4 = 2,250 lines), and a tenth of the default
/// burst is reached in about a second.
const BURST: u32 = 1000;
/// The container journal's cap (SystemMaxUse=), which fixes journald's
/// multiplier of [`BURST`] at 2.
const JOURNAL_MAX: &str = "64M";
/// The flood's lines that must reach the journal for the test to be one:
/// more than journald lets through in an interval at that multiplier
/// (2,250). Not all of [`FLOOD`] arrive: under load, `/dev/log`'s queue
/// fills and the sessions' datagrams are dropped (MSG_DONTWAIT, as
/// bridge-helper(8) AUDIT LOG says); 5,663 of 8,000 at the least seen.
const FLOODED_AT_LEAST: u32 = 3 * BURST;
/// More than journald would let through in one interval, with room for
/// the lines `/dev/log` drops.
const FLOOD: u32 = 8000;

/// A client that sends `total` malformed requests to the service over
/// `parallel` connections at once, reading each answer to its end, and
/// prints how many were refused in a line of their own (status non-zero,
/// not "busy", which is not logged each time).
const PY_FLOOD: &str = "\
import socket, sys, threading
total, parallel = int(sys.argv[1]), int(sys.argv[2])
lock = threading.Lock()
left, logged, other = [total], [0], []
def work():
    while True:
        with lock:
            if left[0] == 0: return
            left[0] -= 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect('/run/bridge-helper/socket')
        s.sendall(b'XXXX'); s.shutdown(socket.SHUT_WR)
        d = b''
        while True:
            c = s.recv(65536)
            if not c: break
            d += c
        s.close()
        with lock:
            if d[:4] == b'BHAN' and d[5] != 0 and b'busy' not in d: logged[0] += 1
            else: other.append(d)
ts = [threading.Thread(target=work) for _ in range(parallel)]
for t in ts: t.start()
for t in ts: t.join()
print(logged[0])
if other: print('not a logged refusal:', other[0], len(other), file=sys.stderr)
";

#[test]
fn one_users_flood_of_refused_requests_does_not_make_journald_drop_another_users_grant() {
    let started = Instant::now();
    let c = Container::boot();
    c.ok(&format!(
        "echo 'bhtflood:x:{FLOODER}:{FLOODER}::/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
         && mkdir -p /etc/systemd/journald.conf.d \
         && printf '[Journal]\\nRateLimitIntervalSec=30s\\nRateLimitBurst={BURST}\\nSystemMaxUse={JOURNAL_MAX}\\n' \
            >/etc/systemd/journald.conf.d/bht-burst.conf \
         && systemctl restart systemd-journald"
    ));

    // One user floods the service with requests that each reach a session
    // and are refused there, one audit line each.
    let flood_started = Instant::now();
    let out = common::output_within(
        c.command("setpriv")
            .arg(format!("--reuid={FLOODER}"))
            .arg(format!("--regid={FLOODER}"))
            .args(["--clear-groups", "--", "/usr/bin/python3", "-c", PY_FLOOD])
            .args([FLOOD.to_string(), "24".to_string()])
            .stdin(Stdio::null()),
        time::secs(120),
    );
    let flood_time = flood_started.elapsed();
    let logged: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "the flood failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!(
        "{logged} of {FLOOD} malformed requests refused with a line each in {:.1} s{}",
        flood_time.as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logged > FLOOD / 2,
        "the flood did not reach the service's sessions"
    );
    // Still within journald's interval: a window it would drop lines in.
    assert!(
        flood_time < Duration::from_secs(25),
        "the flood took {flood_time:?}, not within one 30 s interval of journald's"
    );

    // Then another user asks, and is granted: that line is in the journal.
    let run = c.forward(&["--br=br0"]);
    assert_eq!(run.stderr, "", "a granted run prints nothing");
    let fd = run.expect_tap();
    let (tap, _) = tun_get_iff(&fd);
    // (Not wait_audit: the journal it would print is the flood.)
    let limit = time::secs(5);
    let asked = Instant::now();
    let grant = format!(
        "journalctl -q -o cat -t bridge-helper | grep -q \"uid={NOBODY} .*tap='{tap}'.*granted\""
    );
    while !c.sh(&grant).status.success() {
        assert!(
            asked.elapsed() < limit,
            "the grant to uid {NOBODY} of {tap} is not in the journal after {limit:?}: journald dropped it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And journald dropped none of the unit's lines: the flood's are
    // there, more than it would have let through in one interval.
    let flooded: u32 = c
        .ok(&format!(
            "journalctl -q -o cat -t bridge-helper | grep -c '^uid={FLOODER} ' || true"
        ))
        .parse()
        .unwrap();
    assert!(
        flooded > FLOODED_AT_LEAST,
        "only {flooded} of the flood's lines reached the journal: not a flood"
    );
    let suppressed = c.ok("journalctl -q -o cat | grep 'Suppressed.*bridge-helper' || true");
    assert_eq!(suppressed, "", "journald rate-limited the service");
    eprintln!(
        "the flooder's lines in the journal: {flooded}; the other user's grant kept; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
