//! The Debian package as an administrator meets it: built with
//! `scripts/build-deb` (cargo-deb, then lintian, which must report no
//! error), installed with `dpkg -i`, used by QEMU through its own helper
//! path (the diversion), removed with `dpkg -r` and purged with `dpkg -P`.
//!
//! dpkg never runs on the machine itself: each test makes a private mount
//! namespace whose /usr, /etc and /var are overlays with a throwaway upper
//! directory, and runs dpkg and everything else there. Whatever the
//! package does is gone with the namespace, even when a test fails, and
//! the other suites, which use /usr/lib/qemu/qemu-bridge-helper as their
//! reference, never see it. They may run at the same time.
//!
//! Needs: cargo-deb (`scripts/build-deb --install-tools`), lintian, mandoc,
//! groff, apparmor (for apparmor_parser), qemu-system-x86, and what the
//! end-to-end guest needs (tests/support/guest.rs); scripts/install-test-deps
//! installs them all. A missing one fails the test with its name.

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{clear_cloexec, socketpair, time, tun_get_iff, HelperRun, NetNs, NOBODY};

const QEMU_PATH: &str = "/usr/lib/qemu/qemu-bridge-helper";
const OURS: &str = "/usr/libexec/bridge-helper/bridge-helper";
const DIVERTED: &str = "/usr/lib/qemu/qemu-bridge-helper.distrib";
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
const SOCKET_UNIT: &str = "/lib/systemd/system/bridge-helper.socket";
const SERVICE_UNIT: &str = "/lib/systemd/system/bridge-helper.service";
const SOCKET_WANTS: &str = "/etc/systemd/system/sockets.target.wants/bridge-helper.socket";
const DROPIN: &str = "/etc/systemd/system/bridge-helper.socket.d/50-statoverride.conf";
/// `systemd-analyze security --offline=yes` of the installed service must
/// rate it this or better (systemd 252; a bare unit rates 9.6). Not the
/// issue's 2.0: with root, the host's network and no option that changes
/// what a run sees (PrivateTmp, ProtectHome=yes, ProtectProc, ProcSubset),
/// 2.2 is the floor even with the fewest capabilities; the service also
/// keeps CAP_KILL for its sessions and may enter a user namespace (a
/// Flatpak peer's first level; see the unit's comments).
const SECURITY_CEILING: f64 = 2.7;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: install the Debian package {package} (scripts/install-test-deps)"
    );
}

/// Builds and lints the package once per test binary: `scripts/build-deb`.
fn deb() -> PathBuf {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = DEB.get_or_init(|| {
        common::require_root();
        let started = Instant::now();
        let out = Command::new(manifest_dir().join("scripts/build-deb"))
            .current_dir(manifest_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/build-deb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/build-deb failed (it needs cargo-deb: `scripts/build-deb --install-tools`, and lintian: `scripts/install-test-deps`):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = manifest_dir().join(String::from_utf8_lossy(&out.stdout).trim());
        eprintln!(
            "built and linted {} ({} bytes) in {:.1} s",
            path.display(),
            fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            started.elapsed().as_secs_f64()
        );
        Ok(path)
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// sha256, mode, owner, group and file capability of a path, as `sh` in
/// some mount namespace sees it.
fn identity_script(path: &str) -> String {
    format!(
        "sha256sum {path} | cut -d' ' -f1; stat -c '%f %U %G' {path}; getcap {path} | sed 's/^[^ ]* //'"
    )
}

/// QEMU's helper as the machine has it, outside any test namespace.
fn original_qemu_helper() -> String {
    require("sha256sum", "coreutils");
    require("getcap", "libcap2-bin");
    assert!(
        Path::new(QEMU_PATH).exists(),
        "{QEMU_PATH} is missing: install the Debian package qemu-system-common"
    );
    let out = common::sh("sh", &["-c", &identity_script(QEMU_PATH)]);
    assert!(
        !fs::symlink_metadata(QEMU_PATH).unwrap().is_symlink(),
        "{QEMU_PATH} on the machine is a symlink: is bridge-helper installed on the machine itself?"
    );
    out
}

/// A private mount namespace with overlays on /usr, /etc and /var and a
/// /dev of its own (the machine's nodes and mounts, with the test's
/// /dev/net/tun and a /dev/log that only the test holds: what the helper
/// and the maintainer scripts log never reaches the machine's log), held
/// by a sleeping process; removed with it. The machine's systemd, if it
/// runs one, is hidden (an empty /run/systemd): a host without systemd
/// unless the test fakes one ([`Root::fake_systemd_host`]).
struct Root {
    dir: PathBuf,
    holder: Child,
    _syslog: std::os::unix::net::UnixDatagram,
}

/// The systemd a faked systemd host has ([`Root::fake_systemd_host`]).
#[derive(Clone, Copy)]
enum Systemd {
    /// Installed but not running: systemctl finds no manager to talk to,
    /// and its calls fail.
    NotRunning,
    /// A manager that starts and stops what it is asked to
    /// ([`FAKE_SYSTEMCTL`]), and no policy-rc.d.
    Running,
    /// The same manager, and a /usr/sbin/policy-rc.d that forbids every
    /// start and stop (exit 101), as Docker-built images and chroots have:
    /// deb-systemd-invoke then starts nothing and exits 0.
    PolicyRefuses,
}

/// systemctl on a faked host that runs systemd: start, stop, restart and
/// is-active keep a unit's state in /run/bht-systemd (nothing listens), as
/// a manager would; is-enabled, enable and disable act on the unit files
/// (`--root=/`, as without a manager), and `--now` starts or stops too;
/// daemon-reload does nothing; anything else goes to the real systemctl.
/// Each call is logged to /run/bht-systemd/calls.
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
state=/run/bht-systemd
mkdir -p "$state"
echo "$*" >> "$state/calls"
verb= units= now= quiet=
for a in "$@"; do
    case "$a" in
        --now) now=1 ;;
        --quiet|-q) quiet=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$a; else units="$units $a"; fi ;;
    esac
done
case "$verb" in
    daemon-reload) exit 0 ;;
    start|restart) for u in $units; do touch "$state/$u"; done; exit 0 ;;
    stop) for u in $units; do rm -f "$state/$u"; done; exit 0 ;;
    is-active)
        rc=3
        for u in $units; do
            if [ -e "$state/$u" ]; then rc=0; s=active; else s=inactive; fi
            [ -n "$quiet" ] || echo "$s"
        done
        exit $rc ;;
    is-enabled)
        for u in $units; do
            if ls /etc/systemd/system/*.wants/"$u" >/dev/null 2>&1; then echo enabled; else echo disabled; exit 1; fi
        done
        exit 0 ;;
    enable|disable)
        /usr/bin/systemctl.real --root=/ --quiet "$verb" $units || exit
        [ -z "$now" ] && exit 0
        [ "$verb" = enable ] && exec "$0" start $units
        exec "$0" stop $units ;;
    *) exec /usr/bin/systemctl.real "$@" ;;
esac
"#;

/// What /dev/net/tun looks like inside the namespace.
#[derive(Clone, Copy)]
enum Tun {
    /// A node of this mode bound over /dev/net/tun.
    Mode(u32),
}

impl Root {
    fn new(tun: Tun) -> Root {
        common::require_root();
        require("unshare", "util-linux");
        require("nsenter", "util-linux");
        require("dpkg", "dpkg");
        let dir = std::env::temp_dir().join(format!(
            "bht-pkg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        for d in ["usr", "etc", "var"] {
            fs::create_dir_all(dir.join(d).join("upper")).unwrap();
            fs::create_dir_all(dir.join(d).join("work")).unwrap();
        }
        let Tun::Mode(mode) = tun;
        let node = dir.join("tun");
        common::sh(
            "sh",
            &[
                "-c",
                &format!(
                    "mknod {} c 10 200 && chmod {mode:o} {}",
                    node.display(),
                    node.display()
                ),
            ],
        );
        let syslog = std::os::unix::net::UnixDatagram::bind(dir.join("log")).unwrap();
        syslog.set_nonblocking(true).unwrap();
        let d = dir.display();
        let script = format!(
            "set -e
             for d in usr etc var; do
               mount -t overlay overlay -o lowerdir=/$d,upperdir={d}/$d/upper,workdir={d}/$d/work /$d
             done
             mkdir {d}/dev
             mount -t tmpfs -o mode=755 tmpfs {d}/dev
             cp -a /dev/. {d}/dev/
             for m in pts shm mqueue hugepages; do
               if mountpoint -q /dev/$m; then mount --rbind /dev/$m {d}/dev/$m; fi
             done
             rm -f {d}/dev/log && touch {d}/dev/log && mount --bind {d}/log {d}/dev/log
             mount --bind {d}/tun {d}/dev/net/tun
             mount --move {d}/dev /dev
             # A machine that runs systemd is not one inside: postinst and
             # systemctl find no /run/systemd/system and no manager here.
             if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 bht-nosystemd /run/systemd; fi
             echo ready
             exec sleep 100000"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let _ = holder.kill();
            let out = holder.wait_with_output().unwrap();
            panic!(
                "cannot make the overlay namespace (overlayfs over /usr, /etc, /var): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Root {
            dir,
            holder,
            _syslog: syslog,
        }
    }

    /// Makes this namespace look like a host that runs systemd, as the
    /// maintainer scripts test it (/run/systemd/system), on a tmpfs of its
    /// own over /run: the machine's /run is never written. What answers
    /// systemctl, and whether /usr/sbin/policy-rc.d forbids starts and
    /// stops, is `systemd`'s (the machine's own policy-rc.d, if any, is
    /// never the one that decides).
    fn fake_systemd_host(&self, systemd: Systemd) {
        self.ok("mount -t tmpfs -o mode=0755 bht-run /run && mkdir -p /run/systemd/system");
        let policy = match systemd {
            Systemd::NotRunning | Systemd::Running => "rm -f /usr/sbin/policy-rc.d",
            Systemd::PolicyRefuses => {
                "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
            }
        };
        self.ok(policy);
        if !matches!(systemd, Systemd::NotRunning) {
            self.ok(&format!(
                "mv /usr/bin/systemctl /usr/bin/systemctl.real && cat > /usr/bin/systemctl <<'EOF'\n{FAKE_SYSTEMCTL}EOF\nchmod 755 /usr/bin/systemctl"
            ));
        }
    }

    /// Whether the faked manager runs `unit` (`systemctl is-active`).
    fn active(&self, unit: &str) -> bool {
        self.sh(&format!("systemctl --quiet is-active {unit}"))
            .status
            .success()
    }

    fn mnt_ns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.id()))
    }

    /// Runs a shell script inside the namespace (as root).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--mount={}", self.mnt_ns().display()))
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `sh` that must succeed; returns stdout and stderr together.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "in the package namespace, `{script}` failed:\n{text}"
        );
        text
    }

    /// A Command that runs in `ns` and this mount namespace, as `uid` with
    /// supplementary `groups` (or as root).
    fn command(&self, ns: &NetNs, program: &str, uid: Option<u32>, groups: &[u32]) -> Command {
        let mut cmd = Command::new(program);
        let netns = fs::File::open(ns.netns_path()).expect("open netns");
        let mnt = fs::File::open(self.mnt_ns()).expect("open mount namespace");
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: the closure runs between fork and exec and only makes raw
        // system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let ok = common::sys_ok;
                ok(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
                ok(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
                if let Some(uid) = uid {
                    ok(libc::setgroups(groups.len(), groups.as_ptr()))?;
                    ok(libc::setresgid(uid, uid, uid))?;
                    ok(libc::setresuid(uid, uid, uid))?;
                }
                Ok(())
            });
        }
        cmd.current_dir("/");
        cmd
    }

    /// Installs the package; returns dpkg's output.
    fn install(&self) -> String {
        let deb = deb();
        self.ok(&format!("dpkg -i {} 2>&1", deb.display()))
    }

    fn identity(&self, path: &str) -> String {
        self.ok(&identity_script(path))
    }

    /// Runs the helper at `path` as uid 65534 (with `groups`) for br0 in
    /// `ns`, the way QEMU does.
    fn run_helper(&self, ns: &NetNs, path: &str, groups: &[u32]) -> HelperRun {
        let (ours, theirs) = socketpair();
        clear_cloexec(theirs.as_raw_fd());
        let mut cmd = self.command(ns, path, Some(NOBODY), groups);
        cmd.args([
            "--use-vnet".to_string(),
            "--br=br0".to_string(),
            format!("--fd={}", theirs.as_raw_fd()),
        ]);
        let out = common::output(cmd.stdin(Stdio::null()));
        drop(theirs);
        HelperRun::collect(out, ours)
    }

    /// A tap through `path`, checked to be bridge-helper's: owned by the
    /// caller, in br0, with its marker.
    fn attach(&self, ns: &NetNs, path: &str, groups: &[u32]) {
        let fd = self.run_helper(ns, path, groups).expect_tap();
        let (tap, _) = tun_get_iff(&fd);
        let state = ns.tap_state(&tap);
        assert_eq!(state.master, "br0", "{path}: {state:?}");
        assert_eq!(state.owner, i64::from(NOBODY), "{path}: {state:?}");
        let link = ns.ip(&["-o", "link", "show", "dev", &tap]);
        assert!(
            link.contains(&format!("bridge-helper uid={NOBODY}")),
            "{path} did not run bridge-helper (no marker): {link}"
        );
        drop(fd);
        common::wait_for_taps(ns, &[]);
    }

    /// `bridge-helper --check ARG` typed in a login shell's PATH (a
    /// user's has no sbin) as `uid` or root; returns stdout.
    fn check_on_path(&self, ns: &NetNs, uid: Option<u32>, arg: &str) -> String {
        let mut cmd = self.command(ns, "/bin/sh", uid, &[]);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .args(["-c", &format!("bridge-helper --check {arg}")])
            .stdin(Stdio::null());
        let out = common::output(&mut cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("not found"),
            "bridge-helper is not on the PATH: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every non-directory path the installed package owns (dpkg -L).
    fn package_files(&self) -> Vec<String> {
        self.ok("dpkg -L bridge-helper")
            .lines()
            .filter(|l| l.starts_with('/') && l.len() > 1)
            .map(str::to_owned)
            .filter(|p| {
                // A directory, or a link to one (/lib on a merged /usr).
                let out = self.sh(&format!("[ -d {p} ]"));
                !out.status.success()
            })
            .collect()
    }

    /// After purge: QEMU's helper is back as it was, and nothing of ours.
    fn assert_clean(&self, original: &str, files: &[String]) {
        assert_eq!(
            self.identity(QEMU_PATH),
            original,
            "QEMU's helper is not back as it was"
        );
        self.ok(&format!("[ ! -L {QEMU_PATH} ] && [ ! -e {DIVERTED} ]"));
        let diversions = self.ok("dpkg-divert --list");
        assert!(
            !diversions.contains("bridge-helper"),
            "a diversion is left: {diversions}"
        );
        let status = self.sh("dpkg-query -W -f='${db:Status-Status}' bridge-helper");
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.is_empty() || status == "not-installed",
            "dpkg still knows the package: {status}"
        );
        for f in files {
            if f == QEMU_PATH {
                continue;
            }
            let out = self.sh(&format!("[ -e {f} ] || [ -L {f} ]"));
            assert!(!out.status.success(), "{f} is left after purge");
        }
        self.ok("[ ! -d /usr/libexec/bridge-helper ] && [ ! -d /usr/share/doc/bridge-helper ]");
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The mode bits (with file type) that `stat -c %f` prints, for a regular file.
fn stat_line(mode: u32, user: &str, group: &str) -> String {
    format!("{:x} {user} {group}", 0o100000 | mode)
}

fn ns_with_bridge() -> NetNs {
    NetNs::with_bridge(1500)
}

/// Boots the test guest with QEMU as uid 65534, `-netdev bridge` without
/// `helper=`: QEMU runs its compiled-in /usr/lib/qemu/qemu-bridge-helper.
/// Returns the marker seen on the guest's tap.
fn boot_with_qemus_default_helper(root: &Root, ns: &NetNs) -> String {
    require("qemu-system-x86_64", "qemu-system-x86");
    let image = guest::guest_image();
    let out = root.dir.join("guest");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&root.dir, fs::Permissions::from_mode(0o755)).unwrap();
    let image = image.copy_to(&out);
    std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
    ns.ip(&["addr", "add", "169.254.21.1/24", "dev", "br0"]);
    let serial = out.join("serial.log");
    let mut cmd = root.command(ns, "qemu-system-x86_64", Some(NOBODY), &[]);
    let append = guest::cmdline("169.254.21.2/24", "169.254.21.1", false);
    image
        .boot_args(&mut cmd, 256, 1, &serial, &append)
        .args(["-netdev", "bridge,id=n0,br=br0"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .current_dir(&out)
        .env("HOME", &out)
        .stdin(Stdio::null())
        .stdout(fs::File::create(out.join("qemu.stdout")).unwrap())
        .stderr(fs::File::create(out.join("qemu.stderr")).unwrap());
    let started = Instant::now();
    let mut qemu = guest::KillOnDrop::new(common::spawn(&mut cmd), "qemu");
    let mut marker = String::new();
    let deadline = Instant::now() + time::limit(BOOT_TIMEOUT);
    while Instant::now() < deadline && qemu.is_running() {
        if marker.is_empty() {
            let links = Command::new("ip")
                .args(["-n", &ns.name, "-o", "link", "show", "type", "tun"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if let Some(l) = links.lines().find(|l| l.contains(" master br0 ")) {
                // `ip -o` joins a link's lines with a backslash.
                let alias = l.split("alias ").nth(1).unwrap_or("(no alias)");
                marker = alias.split('\\').next().unwrap_or("").trim().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = qemu.wait_timeout(time::secs(5));
    let read = |n: &str| fs::read_to_string(out.join(n)).unwrap_or_default();
    let ctx = format!(
        "\n--- serial ---\n{}\n--- qemu stderr ---\n{}",
        guest::read_serial(&serial),
        read("qemu.stderr")
    );
    assert!(status.is_some_and(|s| s.success()), "QEMU: {status:?}{ctx}");
    assert!(
        guest::read_serial(&serial).contains(guest::MARK_PING_OK),
        "the guest's ping did not succeed{ctx}"
    );
    eprintln!(
        "QEMU with -netdev bridge (no helper=): guest pinged in {:.1} s, tap alias {marker:?}",
        started.elapsed().as_secs_f64()
    );
    marker
}

#[test]
fn installs_serves_qemu_through_its_own_path_and_uninstalls_to_the_byte() {
    let original = original_qemu_helper();
    // Debian's default /dev/net/tun: 0666, so the file capability is chosen.
    let root = Root::new(Tun::Mode(0o666));
    let started = Instant::now();
    let log = root.install();
    let installed = started.elapsed();
    assert!(
        log.contains("file capability cap_net_admin+ep"),
        "postinst did not say what it chose:\n{log}"
    );
    for said in [
        "bridge-helper: to choose again (after /dev/net/tun's mode changes, say): dpkg-reconfigure bridge-helper",
        &format!("bridge-helper: QEMU's own helper is kept at {DIVERTED} (dpkg-divert); QEMU and libvirt now run bridge-helper at {QEMU_PATH}; removing this package puts QEMU's helper back"),
    ] {
        assert!(log.lines().any(|l| l == said), "postinst did not say {said:?}:\n{log}");
    }
    assert!(!log.contains("warning"), "{log}");
    // A static binary depends on nothing: no Depends field, not an empty one.
    let control = root.ok(&format!("dpkg-deb --field {}", deb().display()));
    assert!(!control.contains("Depends"), "{control}");
    let diversions = root.ok("dpkg-divert --list");
    assert!(
        diversions.contains(&format!(
            "diversion of {QEMU_PATH} to {DIVERTED} by bridge-helper"
        )),
        "{diversions}"
    );
    assert_eq!(
        root.ok(&format!("readlink {QEMU_PATH}")).trim(),
        "../../libexec/bridge-helper/bridge-helper"
    );
    assert_eq!(
        root.identity(DIVERTED),
        original,
        "QEMU's helper was changed when diverted"
    );
    let ours = root.identity(OURS);
    let mode_line = ours.lines().nth(1).unwrap();
    assert_eq!(mode_line, stat_line(0o755, "root", "root"), "{ours}");
    assert_eq!(ours.lines().nth(2), Some("cap_net_admin=ep"), "{ours}");

    // What an administrator finds.
    let version = root.ok(&format!("{OURS} --version"));
    assert!(
        version.contains("ACL file: /etc/qemu/bridge.conf"),
        "{version}"
    );
    assert!(
        version.contains("settings file: /etc/qemu/bridge-helper.conf"),
        "{version}"
    );
    for (page, file) in [
        ("8 bridge-helper", "/usr/share/man/man8/bridge-helper.8.gz"),
        ("5 bridge.conf", "/usr/share/man/man5/bridge.conf.5.gz"),
        (
            "5 bridge-helper.conf",
            "/usr/share/man/man5/bridge-helper.conf.5.gz",
        ),
    ] {
        assert_eq!(root.ok(&format!("man -w {page}")).trim(), file);
    }
    // /etc/qemu is the administrator's: the package puts nothing there.
    root.ok("! dpkg -L bridge-helper | grep -q '^/etc/qemu' && [ -f /usr/share/doc/bridge-helper/examples/bridge.conf ] && [ -f /usr/share/doc/bridge-helper/examples/bridge-helper.conf ]");
    // The command every hint names is on a user's PATH and root's, and
    // is the same file with the same privilege.
    assert_eq!(root.ok("readlink -f /usr/bin/bridge-helper").trim(), OURS);
    let profile = root.ok("cat /etc/apparmor.d/abstractions/bridge-helper-libvirtd");
    assert_eq!(
        profile,
        fs::read_to_string(manifest_dir().join("debian/apparmor-libvirtd")).unwrap()
    );

    // libvirt's compiled-in default is QEMU's path, so it runs us too.
    let driver = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so";
    if Path::new(driver).exists() {
        root.ok(&format!("grep -q {QEMU_PATH} {driver}"));
    }

    // The administrator's ACL, then a tap through both paths, as uid 65534.
    root.ok("mkdir -p /etc/qemu && echo 'allow br0' > /etc/qemu/bridge.conf && chmod 0644 /etc/qemu/bridge.conf");
    let ns = ns_with_bridge();
    root.attach(&ns, QEMU_PATH, &[]);
    root.attach(&ns, OURS, &[]);
    for uid in [Some(NOBODY), None] {
        let out = root.check_on_path(&ns, uid, "--br=br0");
        assert!(
            out.ends_with("verdict: a run would attach a tap to 'br0' (allowed by /etc/qemu/bridge.conf:1)\nexit status: 0\n"),
            "{uid:?}: {out}"
        );
    }
    let marker = boot_with_qemus_default_helper(&root, &ns);
    assert_eq!(
        marker,
        format!("bridge-helper uid={NOBODY}"),
        "QEMU did not run bridge-helper"
    );

    let files = root.package_files();
    let t = Instant::now();
    let removed = root.ok("dpkg -r bridge-helper 2>&1");
    assert_eq!(
        root.identity(QEMU_PATH),
        original,
        "after dpkg -r:\n{removed}"
    );
    root.ok(&format!("[ ! -L {QEMU_PATH} ] && [ ! -e {OURS} ]"));
    assert!(!root.ok("dpkg-divert --list").contains("bridge-helper"));
    assert!(!removed.contains("warning"), "dpkg -r:\n{removed}");
    let purged = root.ok("dpkg -P bridge-helper 2>&1");
    assert!(!purged.contains("warning"), "dpkg -P:\n{purged}");
    root.assert_clean(&original, &files);
    // The administrator's ACL is theirs.
    assert_eq!(root.ok("cat /etc/qemu/bridge.conf"), "allow br0\n");
    eprintln!(
        "dpkg -i took {:.1} s, dpkg -r and -P {:.1} s",
        installed.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn setuid_root_when_tun_is_0600_and_the_acl_is_left_alone() {
    let original = original_qemu_helper();
    let root = Root::new(Tun::Mode(0o600));
    let acl = "# kept as written\nallow br0\n";
    root.ok(&format!(
        "mkdir -p /etc/qemu && printf '{}' > /etc/qemu/bridge.conf",
        acl.replace('\n', "\\n")
    ));
    let log = root.install();
    assert!(
        log.contains("setuid root: /dev/net/tun is mode 600"),
        "{log}"
    );
    let ours = root.identity(OURS);
    assert_eq!(
        ours.lines().nth(1).unwrap(),
        stat_line(0o4755, "root", "root")
    );
    assert_eq!(ours.lines().nth(2), None, "a capability was set: {ours}");
    assert_eq!(root.ok("cat /etc/qemu/bridge.conf"), acl);
    let ns = ns_with_bridge();
    root.attach(&ns, QEMU_PATH, &[]);
    let files = root.package_files();
    root.ok("dpkg -r bridge-helper && dpkg -P bridge-helper");
    root.assert_clean(&original, &files);
    assert_eq!(root.ok("cat /etc/qemu/bridge.conf"), acl);
}

/// The command lines of the first ```sh block after `heading` in the
/// README, without their comments.
fn readme_commands(heading: &str) -> Vec<String> {
    let readme = fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no ```sh block after {heading:?}"))
        .0;
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A newcomer's first hour, with the README's own commands: install the
/// package, write bridge.conf, check as the user, start a QEMU guest.
#[test]
fn a_newcomer_follows_the_readme_from_package_to_guest() {
    let root = Root::new(Tun::Mode(0o666));
    deb();
    let install = readme_commands("### The Debian package (tested on Debian 12)");
    assert_eq!(install[0], "scripts/build-deb", "{install:?}");
    let dpkg = &install[1];
    assert!(dpkg.starts_with("dpkg -i "), "{install:?}");
    let log = root.ok(&format!("cd {} && {dpkg} 2>&1", manifest_dir().display()));
    assert!(log.contains("dpkg-reconfigure bridge-helper"), "{log}");

    let configure = readme_commands("### bridge.conf: who may use which bridge");
    for line in &configure {
        root.ok(line);
    }
    assert_eq!(root.ok("cat /etc/qemu/bridge.conf"), "allow br0\n");

    let ns = ns_with_bridge();
    let check = readme_commands("### Check it");
    let mine = check
        .iter()
        .find(|l| l.as_str() == "bridge-helper --check --br=br0")
        .expect("the README's check for br0");
    let out = root.check_on_path(&ns, Some(NOBODY), &mine["bridge-helper --check ".len()..]);
    assert!(
        out.ends_with("verdict: a run would attach a tap to 'br0' (allowed by /etc/qemu/bridge.conf:1)\nexit status: 0\n"),
        "{out}"
    );

    let qemu = readme_commands("## Use");
    assert!(
        qemu[0].starts_with(
            "qemu-system-x86_64 -netdev bridge,id=n0,br=br0 -device virtio-net-pci,netdev=n0 "
        ),
        "the README's QEMU line is not the one booted here: {qemu:?}"
    );
    let marker = boot_with_qemus_default_helper(&root, &ns);
    assert_eq!(marker, format!("bridge-helper uid={NOBODY}"));
}

/// The node's mode changes after install (udev rules, a container):
/// `--check` says so, and `dpkg-reconfigure bridge-helper`, which it and
/// postinst name, makes the choice again.
#[test]
fn dpkg_reconfigure_chooses_again_when_tun_changes() {
    let root = Root::new(Tun::Mode(0o666));
    root.install();
    assert_eq!(root.identity(OURS).lines().nth(2), Some("cap_net_admin=ep"));
    root.ok("mkdir -p /etc/qemu && echo 'allow br0' > /etc/qemu/bridge.conf");
    root.ok("chmod 0600 /dev/net/tun");
    let ns = ns_with_bridge();
    let before = root.check_on_path(&ns, Some(NOBODY), "--br=br0");
    assert!(before.ends_with("exit status: 5\n"), "{before}");
    assert!(
        before.contains("dpkg-reconfigure bridge-helper"),
        "the tun line names no fix:\n{before}"
    );
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(
        log.contains("setuid root: /dev/net/tun is mode 600"),
        "{log}"
    );
    assert_eq!(
        root.ok(&format!("stat -c '%a %U' {OURS}")).trim(),
        "4755 root"
    );
    assert_eq!(
        root.identity(OURS).lines().nth(2),
        None,
        "a capability is left"
    );
    let after = root.check_on_path(&ns, Some(NOBODY), "--br=br0");
    assert!(after.ends_with("exit status: 0\n"), "{after}");
    root.attach(&ns, QEMU_PATH, &[]);
}

fn gid_of(root: &Root, group: &str) -> u32 {
    root.ok(&format!("getent group {group} | cut -d: -f3"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_statoverride_on_our_binary_is_kept_and_restricts_it_to_a_group() {
    let original = original_qemu_helper();
    let root = Root::new(Tun::Mode(0o666));
    root.ok(&format!(
        "groupadd --system bhvm && dpkg-statoverride --add root bhvm 4710 {OURS}"
    ));
    let gid = gid_of(&root, "bhvm");
    let log = root.install();
    assert!(log.contains("keeping the dpkg-statoverride"), "{log}");
    // dpkg-reconfigure alone would keep the override: the way back says so.
    assert!(
        log.contains(&format!("bridge-helper: to let the package choose instead: dpkg-statoverride --remove {OURS} && dpkg-reconfigure bridge-helper")),
        "{log}"
    );
    assert!(!log.contains("to choose again"), "{log}");
    let ours = root.identity(OURS);
    assert_eq!(
        ours.lines().nth(1).unwrap(),
        stat_line(0o4710, "root", "bhvm")
    );
    assert_eq!(
        ours.lines().nth(2),
        None,
        "a capability was set over the override: {ours}"
    );
    root.ok("echo 'allow br0' > /etc/qemu/bridge.conf 2>/dev/null || (mkdir -p /etc/qemu && echo 'allow br0' > /etc/qemu/bridge.conf)");
    let ns = ns_with_bridge();
    // Outside the group: cannot even run it.
    let mut cmd = root.command(&ns, QEMU_PATH, Some(NOBODY), &[]);
    let err = common::try_start(cmd.arg("--help").stdout(Stdio::null()))
        .err()
        .expect("a user outside the group ran the helper");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    // In the group: works through QEMU's path.
    root.attach(&ns, QEMU_PATH, &[gid]);
    let files = root.package_files();
    root.ok("dpkg -P bridge-helper");
    root.assert_clean(&original, &files);
}

#[test]
fn a_statoverride_on_qemus_path_carries_over_and_stays_with_qemus_helper() {
    let root = Root::new(Tun::Mode(0o666));
    root.ok(&format!(
        "groupadd --system bhvm && dpkg-statoverride --update --add root bhvm 4750 {QEMU_PATH}"
    ));
    let before = root.identity(QEMU_PATH);
    assert_eq!(
        before.lines().nth(1).unwrap(),
        stat_line(0o4750, "root", "bhvm")
    );
    let log = root.install();
    assert!(log.contains("applied it to"), "{log}");
    assert_eq!(
        root.identity(OURS).lines().nth(1).unwrap(),
        stat_line(0o4750, "root", "bhvm"),
        "installing us widened who may run the helper at QEMU's path"
    );
    assert_eq!(root.identity(DIVERTED), before);
    let files = root.package_files();
    root.ok("dpkg -P bridge-helper");
    root.assert_clean(&before, &files);
}

#[test]
fn a_mode_set_by_hand_on_qemus_helper_carries_over_and_says_how_to_record_it() {
    // An administrator restricted QEMU's helper by hand (no
    // dpkg-statoverride): with a 0666 tun, the package's own choice would
    // be a 0755 binary with cap_net_admin, runnable by everyone.
    let root = Root::new(Tun::Mode(0o666));
    root.ok(&format!(
        "groupadd --system bhvm && chgrp bhvm {QEMU_PATH} && chmod 4750 {QEMU_PATH}"
    ));
    let before = root.identity(QEMU_PATH);
    assert_eq!(
        before.lines().nth(1).unwrap(),
        stat_line(0o4750, "root", "bhvm")
    );
    let log = root.install();
    assert_eq!(
        root.identity(OURS).lines().nth(1).unwrap(),
        stat_line(0o4750, "root", "bhvm"),
        "installing us widened who may run the helper at QEMU's path: {log}"
    );
    assert!(
        log.contains(&format!(
            "restricted by the mode set by hand on QEMU's own helper ({DIVERTED}) (root bhvm 4750)"
        )),
        "{log}"
    );
    assert_eq!(root.identity(DIVERTED), before);
    let record = format!("dpkg-statoverride --add root bhvm 4750 {QEMU_PATH}");
    assert!(log.contains(&record), "{log}");
    // Never `chmod o+x`, which would leave QEMU's helper setuid for all.
    assert!(
        log.contains(&format!(
            "to let the package choose instead: chown root:root {DIVERTED} && chmod 0755 {DIVERTED} && dpkg-reconfigure bridge-helper"
        )),
        "{log}"
    );
    // The command it names works, and from then on the statoverride is
    // what the package follows.
    let log = root.ok(&format!("{record} && dpkg-reconfigure bridge-helper 2>&1"));
    assert_eq!(
        root.identity(OURS).lines().nth(1).unwrap(),
        stat_line(0o4750, "root", "bhvm")
    );
    // And the way back it names works too: QEMU's own helper gets its
    // Debian mode again (no setuid bit left runnable by all), and the
    // package chooses for the binary.
    let choose = command_after(&log, "to let the package choose instead: ");
    assert_eq!(
        choose,
        format!(
            "dpkg-statoverride --remove {QEMU_PATH} && chown root:root {DIVERTED} && chmod 0755 {DIVERTED} && dpkg-reconfigure bridge-helper"
        )
    );
    root.ok(&choose);
    assert_eq!(
        root.identity(DIVERTED).lines().nth(1).unwrap(),
        stat_line(0o755, "root", "root")
    );
    assert_eq!(root.identity(OURS).lines().nth(2), Some("cap_net_admin=ep"));
    let after = root.identity(DIVERTED);
    let files = root.package_files();
    root.ok("dpkg -P bridge-helper");
    root.assert_clean(&after, &files);
}

#[test]
fn without_setcap_it_falls_back_to_setuid_and_says_so() {
    let original = original_qemu_helper();
    let root = Root::new(Tun::Mode(0o666));
    root.ok("rm -f $(command -v setcap) $(command -v getcap); ! command -v setcap");
    let log = root.install();
    assert!(
        log.contains("setcap was not found; install libcap2-bin"),
        "{log}"
    );
    assert_eq!(
        root.ok(&format!("stat -c '%a %U' {OURS}")).trim(),
        "4755 root"
    );
    root.ok("mkdir -p /etc/qemu && echo 'allow br0' > /etc/qemu/bridge.conf");
    let ns = ns_with_bridge();
    root.attach(&ns, QEMU_PATH, &[]);
    root.ok("dpkg -P bridge-helper");
    // getcap is gone here, so compare what is left of the identity.
    let now = root.ok(&format!(
        "sha256sum {QEMU_PATH} | cut -d' ' -f1; stat -c '%f %U %G' {QEMU_PATH}"
    ));
    assert!(original.starts_with(&now), "{original} vs {now}");
}

#[test]
fn an_old_diversion_is_moved_and_a_foreign_one_stops_the_install() {
    let original = original_qemu_helper();
    // Left by an older layout of this package (installed or not).
    let root = Root::new(Tun::Mode(0o600));
    let old = "/usr/lib/qemu/qemu-bridge-helper.old";
    root.ok(&format!(
        "dpkg-divert --package bridge-helper --add --rename --divert {old} {QEMU_PATH}"
    ));
    let log = root.install();
    assert!(log.contains("moving the diversion"), "{log}");
    assert_eq!(root.identity(DIVERTED), original);
    root.ok(&format!("[ ! -e {old} ]"));
    let files = root.package_files();
    root.ok("dpkg -P bridge-helper");
    root.assert_clean(&original, &files);
    drop(root);

    // Someone else's diversion: refused before anything is unpacked.
    let root = Root::new(Tun::Mode(0o600));
    let other = "/usr/lib/qemu/qemu-bridge-helper.other";
    root.ok(&format!(
        "dpkg-divert --package someone-else --add --rename --divert {other} {QEMU_PATH}"
    ));
    let out = root.sh(&format!("dpkg -i {} 2>&1", deb().display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "installed over a foreign diversion:\n{text}"
    );
    assert!(
        text.contains("already diverted by the package 'someone-else'"),
        "{text}"
    );
    assert_eq!(root.identity(other), original);
    root.ok(&format!("[ ! -e {QEMU_PATH} ] && [ ! -e {OURS} ]"));
    assert!(root
        .ok("dpkg-divert --list")
        .contains(&format!("{QEMU_PATH} to {other} by someone-else")));
}

#[test]
fn qemu_installed_after_us_lands_beside_us_and_comes_back_on_removal() {
    let original = original_qemu_helper();
    let root = Root::new(Tun::Mode(0o600));
    // Take qemu-system-common's files out of the way as dpkg would before
    // a first install, then install it again after us (its .deb rebuilt
    // from this machine's files by dpkg-repack is not available; dpkg
    // --unpack of the cached archive is what apt does).
    let version = root.ok("dpkg-query -W -f='${Version}' qemu-system-common");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-deb");
    fs::create_dir_all(&cache).unwrap();
    // The cached archive is the installed version's (apt-get download
    // names it NAME_VERSION_ARCH.deb, the epoch's colon as %3a): after an
    // upgrade, the new version is fetched, never an old one reinstalled.
    let prefix = format!("qemu-system-common_{}_", version.replace(':', "%3a"));
    let cached = || {
        fs::read_dir(&cache)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".deb")
            })
    };
    if cached().is_none() {
        let out = Command::new("apt-get")
            .args(["download", "-q", &format!("qemu-system-common={version}")])
            .current_dir(&cache)
            .output()
            .expect("apt-get");
        assert!(
            out.status.success(),
            "apt-get download qemu-system-common={version} failed (needs Debian's package lists: apt-get update): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let qemu_deb = cached().unwrap_or_else(|| panic!("no {prefix}*.deb in {}", cache.display()));
    root.ok("dpkg --remove --force-depends qemu-system-common >/dev/null 2>&1");
    root.ok(&format!("[ ! -e {QEMU_PATH} ]"));
    root.install();
    root.ok(&format!("[ ! -e {DIVERTED} ] && [ -L {QEMU_PATH} ]"));
    root.ok(&format!("dpkg -i {} >/dev/null 2>&1", qemu_deb.display()));
    // dpkg put QEMU's helper at the diverted name, ours stays at its path.
    assert_eq!(
        root.identity(DIVERTED).lines().next(),
        original.lines().next()
    );
    root.ok(&format!("[ -L {QEMU_PATH} ]"));
    let ns = ns_with_bridge();
    root.ok("mkdir -p /etc/qemu && echo 'allow br0' > /etc/qemu/bridge.conf");
    root.attach(&ns, QEMU_PATH, &[]);
    root.ok("dpkg -P bridge-helper");
    assert_eq!(
        root.identity(QEMU_PATH).lines().next(),
        original.lines().next()
    );
}

/// The AppArmor snippet, read inside Debian's own profile for libvirtd
/// (from libvirt-daemon-system, downloaded, never installed), parses; so
/// does that profile when the package is gone; and a broken copy does not,
/// so the check is not vacuous. Parse only: these machines have no
/// AppArmor in the kernel, so what it allows at run time is untested.
#[test]
fn apparmor_profile_text_parses_inside_libvirts_profile() {
    common::require_root();
    require("apparmor_parser", "apparmor");
    require("dpkg-deb", "dpkg");
    // Debian's profile for the installed libvirt, cached by its version.
    let version = common::sh("dpkg-query", &["-W", "-f=${Version}", "libvirt-daemon"]);
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("libvirt-apparmor")
        .join(version.replace(':', "%3a"));
    let profile_dir = cache.join("x/etc/apparmor.d");
    if !profile_dir.join("usr.sbin.libvirtd").exists() {
        fs::create_dir_all(&cache).unwrap();
        let out = Command::new("apt-get")
            .args([
                "download",
                "-q",
                &format!("libvirt-daemon-system={version}"),
            ])
            .current_dir(&cache)
            .output()
            .expect("apt-get");
        assert!(
            out.status.success(),
            "apt-get download libvirt-daemon-system={version} failed (needs Debian's package lists: apt-get update): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::sh(
            "sh",
            &[
                "-c",
                &format!(
                    "cd {} && dpkg-deb -x libvirt-daemon-system_*.deb x",
                    cache.display()
                ),
            ],
        );
    }
    let base = std::env::temp_dir().join(format!("bht-aa-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    common::sh(
        "cp",
        &["-a", "/etc/apparmor.d/.", &base.display().to_string()],
    );
    common::sh(
        "cp",
        &[
            "-a",
            &format!("{}/.", profile_dir.display()),
            &base.display().to_string(),
        ],
    );
    fs::create_dir_all(base.join("local")).unwrap();
    let parse = |what: &str| -> Output {
        let out = Command::new("apparmor_parser")
            .args(["-Q", "-K", "--base"])
            .arg(&base)
            .arg(base.join(what))
            .output()
            .unwrap();
        out
    };
    let line = "include if exists <abstractions/bridge-helper-libvirtd>\n";
    fs::write(base.join("local/usr.sbin.libvirtd"), line).unwrap();
    let snippet = fs::read_to_string(manifest_dir().join("debian/apparmor-libvirtd")).unwrap();
    assert!(
        snippet.contains(line.trim_end()),
        "the documented line is not in the snippet's comment"
    );
    fs::write(base.join("abstractions/bridge-helper-libvirtd"), &snippet).unwrap();
    let out = parse("usr.sbin.libvirtd");
    assert!(
        out.status.success(),
        "libvirtd's profile with our snippet does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pre = Command::new("apparmor_parser")
        .args(["-p", "--base"])
        .arg(&base)
        .arg(base.join("usr.sbin.libvirtd"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&pre.stdout);
    assert!(
        text.contains("profile bridge_helper")
            && text.contains("network netlink raw")
            && text.contains("/run/bridge-helper/socket rw,"),
        "the snippet was not read into the profile"
    );
    // Package removed: the include finds nothing and the profile still loads.
    fs::remove_file(base.join("abstractions/bridge-helper-libvirtd")).unwrap();
    let out = parse("usr.sbin.libvirtd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not vacuous: a broken snippet fails.
    fs::write(
        base.join("abstractions/bridge-helper-libvirtd"),
        snippet.replace("network netlink raw,", "network netlink raw"),
    )
    .unwrap();
    let out = parse("usr.sbin.libvirtd");
    assert!(!out.status.success(), "a broken snippet parsed");
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn man_pages_render_without_warnings() {
    require("mandoc", "mandoc");
    require("groff", "groff-base");
    for page in ["bridge-helper.8", "bridge.conf.5", "bridge-helper.conf.5"] {
        let path = manifest_dir().join("man").join(page);
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "mandoc -T lint {page}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("groff")
            .args(["-ww", "-man", "-Tutf8", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff -ww {page}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.size() > 1000, "{page} is a stub");
    }
}

/// Whether the socket unit is enabled: the symlink deb-systemd-helper makes
/// (systemctl enable's), and its own record of it.
fn socket_enabled(root: &Root) -> bool {
    let link = root.sh(&format!("readlink {SOCKET_WANTS}"));
    let target = String::from_utf8_lossy(&link.stdout).trim().to_owned();
    if link.status.success() {
        assert_eq!(
            target, SOCKET_UNIT,
            "the enablement symlink leads elsewhere"
        );
    }
    link.status.success()
}

/// Everything systemd-related the package may leave in /etc and /var.
fn systemd_leftovers(root: &Root) -> String {
    root.ok(
        "find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled \
         /var/lib/systemd/deb-systemd-helper-masked -name '*bridge-helper*' 2>/dev/null; true",
    )
}

#[test]
fn the_units_are_installed_verify_clean_and_hardened() {
    require("systemd-analyze", "systemd");
    let root = Root::new(Tun::Mode(0o666));
    root.install();
    for unit in [SOCKET_UNIT, SERVICE_UNIT] {
        assert_eq!(
            root.ok(&format!("stat -c '%a %U %G' {unit}")).trim(),
            "644 root root",
            "{unit}"
        );
    }
    let socket = root.ok(&format!("cat {SOCKET_UNIT}"));
    for line in [
        "ListenStream=/run/bridge-helper/socket",
        "Accept=no",
        "SocketMode=0666",
        "WantedBy=sockets.target",
    ] {
        assert!(
            socket.lines().any(|l| l == line),
            "no {line:?} in:\n{socket}"
        );
    }
    let service = root.ok(&format!("cat {SERVICE_UNIT}"));
    assert!(service
        .lines()
        .any(|l| l == format!("ExecStart={OURS} --serve")));
    // Nothing that changes what a run sees: the same files and /proc as a
    // setuid run, and the host's network.
    for option in [
        "PrivateTmp=",
        "ProtectHome=yes",
        "ProcSubset=",
        "ProtectProc=",
        "PrivateNetwork=yes",
        "PrivateUsers=",
    ] {
        assert!(
            !service.lines().any(|l| l.starts_with(option)),
            "{option} changes what the helper sees"
        );
    }
    // Verified with the binary and the man page installed: clean.
    let out = root.sh(&format!(
        "systemd-analyze verify {SOCKET_UNIT} {SERVICE_UNIT} 2>&1"
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    // Not vacuous: a unit naming a missing program does not verify.
    root.ok(&format!(
        "sed 's|^ExecStart=.*|ExecStart=/nonexistent --serve|' {SERVICE_UNIT} > /etc/systemd/system/bht-broken.service"
    ));
    let out = root.sh("systemd-analyze verify /etc/systemd/system/bht-broken.service 2>&1");
    assert!(
        !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "systemd-analyze verify did not notice a missing program"
    );
    let out = root.ok(&format!(
        "systemd-analyze security --offline=yes {SERVICE_UNIT} 2>&1"
    ));
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for bridge-helper.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{out}"));
    eprintln!("systemd-analyze security --offline=yes: bridge-helper.service rates {score}");
    assert!(
        score <= SECURITY_CEILING,
        "bridge-helper.service rates {score}, worse than {SECURITY_CEILING}:\n{out}"
    );
}

/// The default install on a systemd host is today's, until the service is
/// chosen: a privileged binary, the socket not enabled, and a line saying
/// how to switch.
#[test]
fn on_a_systemd_host_the_default_is_still_a_privileged_binary() {
    let root = Root::new(Tun::Mode(0o666));
    root.fake_systemd_host(Systemd::NotRunning);
    let log = root.install();
    assert!(log.contains("file capability cap_net_admin+ep"), "{log}");
    assert!(
        log.contains("to use the service instead (no setuid, no capability): echo BRIDGE_HELPER_SERVICE=yes > /etc/default/bridge-helper && dpkg-reconfigure bridge-helper"),
        "{log}"
    );
    assert!(!socket_enabled(&root));
    assert_eq!(root.identity(OURS).lines().nth(2), Some("cap_net_admin=ep"));
}

/// Elsewhere (no /run/systemd/system), choosing the service changes
/// nothing: there is no systemd to start it.
#[test]
fn without_systemd_the_service_switch_keeps_the_old_choice() {
    let root = Root::new(Tun::Mode(0o600));
    root.ok("echo BRIDGE_HELPER_SERVICE=yes > /etc/default/bridge-helper");
    let log = root.install();
    assert!(
        log.contains("setuid root: /dev/net/tun is mode 600"),
        "{log}"
    );
    assert!(!log.contains("use the service"), "{log}");
    assert_eq!(
        root.ok(&format!("stat -c '%a %U' {OURS}")).trim(),
        "4755 root"
    );
    assert!(!socket_enabled(&root));
}

/// On a systemd host switched to the service: no privilege anywhere, the
/// socket enabled, its mode and group those of the administrator's
/// statoverride of QEMU's helper (else 0666); switched back by
/// dpkg-reconfigure; purge leaves nothing of systemd's behind and QEMU's
/// helper as it was.
#[test]
fn on_a_systemd_host_the_service_replaces_setuid_and_purge_cleans_up() {
    let host_had_systemd = Path::new("/run/systemd/system").exists();
    let root = Root::new(Tun::Mode(0o666));
    root.fake_systemd_host(Systemd::Running);
    root.ok(&format!(
        "groupadd --system bhvm && dpkg-statoverride --update --add root bhvm 4750 {QEMU_PATH}"
    ));
    let qemus = root.identity(QEMU_PATH);
    root.ok("echo 'BRIDGE_HELPER_SERVICE=\"yes\"' > /etc/default/bridge-helper");
    let log = root.install();
    assert!(
        log.contains(&format!(
            "installed {OURS} with no setuid bit and no capability"
        )),
        "{log}"
    );
    assert!(
        log.contains("to go back to setuid or cap_net_admin: echo BRIDGE_HELPER_SERVICE=no > /etc/default/bridge-helper && dpkg-reconfigure bridge-helper"),
        "{log}"
    );
    let ours = root.identity(OURS);
    assert_eq!(
        ours.lines().nth(1).unwrap(),
        stat_line(0o755, "root", "root"),
        "{ours}"
    );
    assert_eq!(ours.lines().nth(2), None, "a capability is left: {ours}");
    assert!(socket_enabled(&root), "the socket is not enabled:\n{log}");
    assert!(root.active("bridge-helper.socket"), "{log}");
    assert!(
        log.contains("(bridge-helper.socket enabled and active)"),
        "{log}"
    );
    let dropin = root.ok(&format!("cat {DROPIN}"));
    for line in [
        "[Socket]",
        "SocketUser=root",
        "SocketGroup=bhvm",
        "SocketMode=0660",
    ] {
        assert!(
            dropin.lines().any(|l| l == line),
            "no {line:?} in:\n{dropin}"
        );
    }
    // The drop-in is one systemd reads: the socket unit with it verifies.
    let out = root.sh(&format!("systemd-analyze verify {SOCKET_UNIT} 2>&1"));
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Whoever may execute QEMU's helper may connect: others too, or only
    // its owner.
    for (mode, socket_mode, group) in [("4755", "0666", "root"), ("4700", "0600", "bhvm")] {
        root.ok(&format!(
            "dpkg-statoverride --remove {QEMU_PATH} && dpkg-statoverride --add root {group} {mode} {QEMU_PATH}"
        ));
        root.ok("dpkg-reconfigure bridge-helper");
        let dropin = root.ok(&format!("cat {DROPIN}"));
        assert!(
            dropin.contains(&format!("SocketGroup={group}\nSocketMode={socket_mode}\n")),
            "{mode}:\n{dropin}"
        );
    }

    // The override goes, and QEMU's own file is runnable by all again (as
    // its package's next upgrade leaves it; until then it keeps the mode
    // the override gave it, which the package follows as one set by
    // hand): so does the drop-in, and anyone may connect.
    root.ok(&format!(
        "dpkg-statoverride --remove {QEMU_PATH} && chmod 0755 {DIVERTED}"
    ));
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(
        log.contains("/run/bridge-helper/socket gets mode 0666"),
        "{log}"
    );
    root.ok(&format!(
        "[ ! -e {DROPIN} ] && [ ! -e $(dirname {DROPIN}) ]"
    ));
    assert!(socket_enabled(&root));

    // And back: the socket disabled, the privilege chosen as before.
    root.ok("echo BRIDGE_HELPER_SERVICE=no > /etc/default/bridge-helper");
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(
        log.contains("disabled and stopped bridge-helper.socket"),
        "{log}"
    );
    assert!(log.contains("file capability cap_net_admin+ep"), "{log}");
    assert!(!socket_enabled(&root));
    assert!(!root.active("bridge-helper.socket"), "{log}");
    assert_eq!(root.identity(OURS).lines().nth(2), Some("cap_net_admin=ep"));

    // A dpkg-statoverride of the binary is the administrator's own choice
    // and wins over the switch.
    root.ok("echo BRIDGE_HELPER_SERVICE=yes > /etc/default/bridge-helper");
    root.ok(&format!(
        "dpkg-statoverride --update --add root bhvm 4710 {OURS}"
    ));
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(log.contains("not using the service"), "{log}");
    assert!(!socket_enabled(&root));
    root.ok(&format!("dpkg-statoverride --remove {OURS}"));
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(socket_enabled(&root), "{log}");

    // Purge: QEMU's helper as it was (with its override, and the mode it
    // gave QEMU's file), nothing of ours in systemd's places.
    root.ok(&format!(
        "dpkg-statoverride --update --add root bhvm 4750 {QEMU_PATH} && chmod 4750 {DIVERTED}"
    ));
    root.ok("dpkg-reconfigure bridge-helper 2>&1");
    root.ok(&format!("[ -e {DROPIN} ]"));
    let files = root.package_files();
    root.ok("dpkg -P bridge-helper");
    let left = systemd_leftovers(&root);
    assert!(left.trim().is_empty(), "left after purge:\n{left}");
    root.ok(&format!(
        "[ ! -e {SOCKET_WANTS} ] && [ ! -e /etc/systemd/system/bridge-helper.socket.d ]"
    ));
    root.assert_clean(&qemus, &files);
    // The machine's own /run was never touched.
    assert_eq!(Path::new("/run/systemd/system").exists(), host_had_systemd);
}

/// The command a postinst line tells the administrator to run: what
/// follows `marker` on the line that has it.
fn command_after(log: &str, marker: &str) -> String {
    log.lines()
        .find_map(|l| l.split(marker).nth(1))
        .unwrap_or_else(|| panic!("no line with {marker:?} in:\n{log}"))
        .to_owned()
}

/// Where /usr/sbin/policy-rc.d forbids starting services (Docker-built
/// images, chroots), deb-systemd-invoke starts nothing and exits 0: the
/// switch to the service says so in one line with the command to run, and
/// the binary keeps its privilege until the socket is active (without
/// either, every VM's NIC would fail). Running that command finishes the
/// switch. Back with =no, a refused stop is said too, with its command;
/// so is one on removal.
#[test]
fn where_policy_rc_d_refuses_the_switch_says_what_to_run_and_keeps_a_working_binary() {
    let root = Root::new(Tun::Mode(0o666));
    root.fake_systemd_host(Systemd::PolicyRefuses);
    root.ok("echo BRIDGE_HELPER_SERVICE=yes > /etc/default/bridge-helper");
    let log = root.install();
    assert!(
        log.contains("bridge-helper: warning: bridge-helper.socket is enabled but not active (/usr/sbin/policy-rc.d returned 101, not running 'restart bridge-helper.socket'), so /usr/libexec/bridge-helper/bridge-helper keeps its privilege; to finish switching to the service: systemctl enable --now bridge-helper.socket && dpkg-reconfigure bridge-helper\n"),
        "{log}"
    );
    assert!(!log.contains("no setuid bit and no capability"), "{log}");
    assert!(!log.contains("started"), "{log}");
    assert!(!root.active("bridge-helper.socket"));
    assert!(socket_enabled(&root), "{log}");
    assert_eq!(
        root.identity(OURS).lines().nth(2),
        Some("cap_net_admin=ep"),
        "{log}"
    );

    // What the line says to run finishes the switch.
    let finish = command_after(&log, "to finish switching to the service: ");
    let log = root.ok(&format!("{finish} 2>&1"));
    assert!(
        log.contains(&format!(
            "installed {OURS} with no setuid bit and no capability: it forwards each request to bridge-helper.service through /run/bridge-helper/socket (bridge-helper.socket enabled and active)"
        )),
        "{log}"
    );
    assert!(!log.contains("warning"), "{log}");
    assert!(root.active("bridge-helper.socket"));
    let ours = root.identity(OURS);
    assert_eq!(
        ours.lines().nth(1).unwrap(),
        stat_line(0o755, "root", "root")
    );
    assert_eq!(ours.lines().nth(2), None, "a capability is left: {ours}");

    // A new owner and mode for the socket (a statoverride of QEMU's
    // helper) take a restart, which is refused: said, with the command.
    root.ok(&format!(
        "dpkg-statoverride --add root root 4750 {QEMU_PATH}"
    ));
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(
        log.contains("bridge-helper: warning: bridge-helper.socket was not restarted (/usr/sbin/policy-rc.d returned 101, not running 'restart bridge-helper.socket'): /run/bridge-helper/socket keeps its earlier owner and mode until: systemctl restart bridge-helper.socket\n"),
        "{log}"
    );
    root.ok(&format!("dpkg-statoverride --remove {QEMU_PATH}"));

    // Back: disabled and privileged, but the stop was refused: the socket
    // still answers, and the line says so with the command.
    root.ok("echo BRIDGE_HELPER_SERVICE=no > /etc/default/bridge-helper");
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(
        log.contains("bridge-helper: disabled bridge-helper.socket: the binary gets its own privilege again\n"),
        "{log}"
    );
    assert!(
        log.contains("bridge-helper: warning: bridge-helper.socket is still active (/usr/sbin/policy-rc.d returned 101, not running 'stop bridge-helper.socket bridge-helper.service'), and the service answers at /run/bridge-helper/socket until: systemctl disable --now bridge-helper.socket\n"),
        "{log}"
    );
    assert!(!log.contains("stopped"), "{log}");
    assert!(root.active("bridge-helper.socket"));
    assert!(!socket_enabled(&root));
    assert_eq!(root.identity(OURS).lines().nth(2), Some("cap_net_admin=ep"));
    let stop = command_after(&log, "answers at /run/bridge-helper/socket until: ");
    root.ok(&stop);
    assert!(!root.active("bridge-helper.socket"));

    // Removed while the socket runs: the refused stop is said as well.
    root.ok("systemctl start bridge-helper.socket");
    let log = root.ok("dpkg -r bridge-helper 2>&1");
    assert!(
        log.contains("bridge-helper: warning: bridge-helper.socket is still active (/usr/sbin/policy-rc.d returned 101, not running 'stop bridge-helper.socket bridge-helper.service'); stop it: systemctl stop bridge-helper.socket bridge-helper.service\n"),
        "{log}"
    );
}

/// Where systemd is installed but not running (/run/systemd/system exists
/// and no manager answers), the switch to the service cannot start the
/// socket either: the same line, with systemctl's reason.
#[test]
fn with_systemd_not_running_the_switch_keeps_the_privilege_and_says_why() {
    let root = Root::new(Tun::Mode(0o600));
    root.fake_systemd_host(Systemd::NotRunning);
    root.ok("echo BRIDGE_HELPER_SERVICE=yes > /etc/default/bridge-helper");
    let log = root.install();
    let line = log
        .lines()
        .find(|l| l.contains("bridge-helper.socket is enabled but not active ("))
        .unwrap_or_else(|| panic!("no line says the socket did not start:\n{log}"));
    assert!(
        line.ends_with("), so /usr/libexec/bridge-helper/bridge-helper keeps its privilege; to finish switching to the service: systemctl enable --now bridge-helper.socket && dpkg-reconfigure bridge-helper"),
        "{line}"
    );
    assert!(!log.contains("no setuid bit and no capability"), "{log}");
    assert!(
        log.contains("setuid root: /dev/net/tun is mode 600"),
        "{log}"
    );
    assert_eq!(
        root.ok(&format!("stat -c '%a %U' {OURS}")).trim(),
        "4755 root"
    );
}

/// A fresh install, and dpkg-reconfigure on a host never switched to the
/// service, disable and stop nothing and say nothing about it
/// (deb-systemd-helper's was-enabled is true when it has no record), and a
/// socket the administrator enabled by hand is left alone.
#[test]
fn a_fresh_install_disables_and_stops_nothing() {
    let root = Root::new(Tun::Mode(0o666));
    root.fake_systemd_host(Systemd::Running);
    let log = root.install();
    assert!(log.contains("file capability cap_net_admin+ep"), "{log}");
    assert!(!log.contains("disabled"), "{log}");
    assert!(!log.contains("stopped"), "{log}");
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(!log.contains("disabled"), "{log}");
    root.ok("systemctl enable --now bridge-helper.socket");
    let log = root.ok("dpkg-reconfigure bridge-helper 2>&1");
    assert!(!log.contains("disabled"), "{log}");
    assert!(!log.contains("stopped"), "{log}");
    assert!(socket_enabled(&root), "{log}");
    assert!(root.active("bridge-helper.socket"), "{log}");
    let calls = root.ok("cat /run/bht-systemd/calls");
    assert!(
        !calls
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "stop")),
        "systemctl was asked to stop something:\n{calls}"
    );
}
