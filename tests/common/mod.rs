//! Shared harness for the privileged integration tests.
//!
//! Every test gets its own network namespace (deleted on drop) and its own
//! sandbox directory. The program under test runs inside that namespace and
//! inside a private mount namespace whose /etc is a read-only overlay with
//! the sandbox's `qemu/` on top, so the compiled-in /etc/qemu/bridge.conf is
//! the test's file and the machine's /etc is never touched. Its /dev is
//! the machine's too, with two entries of the sandbox's own on top: a
//! /dev/net/tun of the mode the test asks for (never the machine's mode)
//! and a /dev/log that only the sandbox reads (no run writes to the
//! machine's log).
//!
//! What the benchmark needs too (the QEMU reference, tap flags, sockets,
//! SCM_RIGHTS, the tun node and the overlay mount) is in `sys.rs`,
//! re-exported here.
#![allow(dead_code)]

pub mod sys;
pub mod time;
#[allow(unused_imports)] // each test file uses some of them
pub use sys::{
    qemu_reference_helper, IFF_NO_PI, IFF_PERSIST, IFF_TAP, IFF_VNET_HDR, NOBODY, QEMU_HELPER,
};

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const HELPER: &str = env!("CARGO_BIN_EXE_bridge-helper");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A raw system call's result, for code between fork and exec (no
/// allocation): a negative value is the errno's error.
pub fn sys_ok(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs a command that must succeed; panics with its output otherwise.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails loudly if the suite is not run as root: these tests cannot be
/// skipped into a pass.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests must run as root (they create network namespaces); run them with sudo"
    );
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        require_root();
        let name = unique("bht");
        sh("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A netns with one bridge `br0` of the given MTU, up.
    pub fn with_bridge(mtu: u32) -> NetNs {
        let ns = NetNs::new();
        ns.add_bridge("br0", mtu);
        ns
    }

    pub fn add_bridge(&self, name: &str, mtu: u32) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        self.ip(&["link", "set", name, "mtu", &mtu.to_string(), "up"]);
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// The names of the persistent tun/tap devices in the namespace.
    pub fn persistent_taps(&self) -> Vec<String> {
        self.ip(&["-o", "-d", "link", "show", "type", "tun"])
            .lines()
            .filter(|l| l.contains("persist on"))
            .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
            .collect()
    }

    /// Runs a shell snippet inside the namespace (with its own /sys).
    pub fn exec(&self, script: &str) -> String {
        sh("ip", &["netns", "exec", &self.name, "sh", "-c", script])
    }

    /// The alternative names of `dev`, as `ip -d link show` lists them.
    pub fn altnames(&self, dev: &str) -> Vec<String> {
        self.ip(&["-d", "link", "show", "dev", dev])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("altname "))
            .map(str::to_string)
            .collect()
    }

    /// Names of all interfaces whose name starts with "tap", and of the
    /// helper's taps that still have the name they were created under
    /// (`bh<uid>-<slot>`, until they get their `tapN`).
    pub fn taps(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("tap") || is_birth_name(n))
            .collect()
    }

    /// What sysfs says about a tap: master, mtu, flags, address, owner, tun_flags.
    pub fn tap_state(&self, tap: &str) -> TapState {
        let out = self.exec(&format!(
            "cd /sys/class/net/{tap} && basename \"$(readlink master)\" && cat mtu flags address owner tun_flags"
        ));
        let v: Vec<&str> = out.lines().collect();
        assert_eq!(v.len(), 6, "unexpected sysfs output for {tap}: {out}");
        let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        TapState {
            master: v[0].to_string(),
            mtu: v[1].parse().unwrap(),
            flags: hex(v[2]),
            address: v[3].to_string(),
            owner: v[4].parse().unwrap(),
            tun_flags: hex(v[5]),
        }
    }

    /// Whether no fd holds the tap: the tun driver drops carrier when its
    /// last queue detaches (a tap that is down never shows carrier).
    /// Whether nothing holds `tap`: its carrier is off, and the kernel has
    /// applied that to its operational state too (its link watch may take
    /// up to a second), which is what the helper's slot scan reads
    /// (IFF_RUNNING) before it looks at the carrier.
    pub fn detached(&self, tap: &str) -> bool {
        let line = self.ip(&["-o", "link", "show", "dev", tap]);
        let flags = line.split(['<', '>']).nth(1).unwrap_or_default();
        let flag = |f: &str| flags.split(',').any(|g| g == f);
        // IFF_RUNNING: up, and operationally up or unknown.
        let running =
            flag("UP") && (line.contains(" state UP ") || line.contains(" state UNKNOWN "));
        !flag("LOWER_UP") && !running
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        sys::delete_netns(&self.name);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapState {
    pub master: String,
    pub mtu: u32,
    pub flags: u32,
    pub address: String,
    /// -1 (unset) is shown by the kernel as -1.
    pub owner: i64,
    pub tun_flags: u32,
}

/// How the helper is installed for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run by root, as is.
    Root,
    /// A setuid-root copy run by uid 65534.
    Setuid,
    /// A `cap_net_admin+ep` copy run by uid 65534 (with a 0666 tun node).
    FileCaps,
    /// A plain copy with no privilege at all, run by uid 65534.
    Unprivileged,
}

impl Mode {
    pub fn uid(self) -> Option<u32> {
        (self != Mode::Root).then_some(NOBODY)
    }
}

/// A temporary directory (0755, removed on drop) holding the /etc/qemu
/// layer, helper copies, the /dev layer (a /dev/log socket) and tun nodes
/// of both modes.
pub struct Sandbox {
    pub dir: PathBuf,
    /// Bound at the runs' /dev/log: what they log stays here.
    syslog: std::os::unix::net::UnixDatagram,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        require_root();
        let dir = std::env::temp_dir().join(unique("bht-sandbox-"));
        fs::create_dir_all(dir.join("layer/qemu")).unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("dev-layer/net")).unwrap();
        fs::create_dir_all(dir.join("dev-stash")).unwrap();
        for d in [
            &dir,
            &dir.join("layer"),
            &dir.join("layer/qemu"),
            &dir.join("bin"),
            &dir.join("dev-layer"),
            &dir.join("dev-layer/net"),
        ] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Mount points for the sandbox's tun node, and its /dev/log.
        fs::write(dir.join("dev-layer/net/tun"), "").unwrap();
        let syslog = std::os::unix::net::UnixDatagram::bind(dir.join("dev-layer/log")).unwrap();
        fs::set_permissions(dir.join("dev-layer/log"), fs::Permissions::from_mode(0o666)).unwrap();
        syslog.set_nonblocking(true).unwrap();
        for mode in [0o600, 0o666] {
            let node = dir.join(format!("tun-{mode:o}"));
            sys::make_tun_node(&node, mode).unwrap_or_else(|e| panic!("mknod tun: {e}"));
        }
        Sandbox { dir, syslog }
    }

    /// A sandbox whose runs see accounts of its own (see `accounts`).
    pub fn with_accounts() -> Sandbox {
        let sb = Sandbox::new();
        sb.accounts("");
        sb
    }

    /// Gives the runs /etc/passwd and /etc/group of the sandbox's own in
    /// place of the machine's: root, and nobody (65534) whose one group is
    /// nogroup (65534), plus the lines `more_groups` of /etc/group. A text
    /// that names an account then holds on any machine, whatever its
    /// /etc/passwd maps 65534 to and whichever groups list nobody.
    pub fn accounts(&self, more_groups: &str) -> &Self {
        let layer = self.dir.join("layer");
        let write = |name: &str, text: String| {
            let path = layer.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        };
        write(
            "passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        );
        write(
            "group",
            format!("root:x:0:\nnogroup:x:{NOBODY}:\n{more_groups}"),
        );
        self
    }

    /// Every line the runs have sent to their /dev/log so far.
    pub fn logged(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = self.syslog.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// Writes the main ACL file, root-owned, mode 0644.
    pub fn acl(&self, text: impl AsRef<[u8]>) -> &Self {
        self.etc_file("bridge.conf", text, 0o644)
    }

    /// Writes a file under the sandbox's /etc/qemu.
    pub fn etc_file(&self, name: &str, text: impl AsRef<[u8]>, mode: u32) -> &Self {
        let path = self.dir.join("layer/qemu").join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// chown of a file under the sandbox's /etc/qemu.
    pub fn etc_chown(&self, name: &str, uid: u32, gid: u32) -> &Self {
        chown(self.dir.join("layer/qemu").join(name), Some(uid), Some(gid)).unwrap();
        self
    }

    /// Installs a copy of `binary` as `mode` requires; returns its path.
    pub fn install(&self, binary: impl AsRef<Path>, mode: Mode) -> PathBuf {
        let binary = binary.as_ref();
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        let path = self
            .dir
            .join("bin")
            .join(format!("{name}-{mode:?}").to_lowercase());
        if path.exists() {
            return path;
        }
        // Copied by a separate `cp` process: a writable descriptor to an
        // executable in this (multithreaded) process would be inherited by
        // any child another test thread forks meanwhile, and make exec of
        // the copy fail with ETXTBSY until that child execs.
        let ok = Command::new("cp")
            .arg(binary)
            .arg(&path)
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "cp {} {}",
            binary.display(),
            path.display()
        );
        chown(&path, Some(0), Some(0)).unwrap();
        match mode {
            Mode::Root | Mode::Unprivileged => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap()
            }
            Mode::Setuid => fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap(),
            Mode::FileCaps => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
                let out = Command::new("setcap")
                    .arg("cap_net_admin+ep")
                    .arg(&path)
                    .output();
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => panic!("setcap failed: {}", String::from_utf8_lossy(&o.stderr)),
                    Err(e) => panic!("setcap is missing (install libcap2-bin): {e}"),
                }
            }
        }
        path
    }

    /// The sandbox's 0666 tun node, for a thread that opens it as
    /// another user (the attacks of issue 23).
    pub fn tun_node(&self) -> PathBuf {
        self.dir.join("tun-666")
    }

    /// A Command that runs `program` in `ns`, with this sandbox's /etc/qemu,
    /// as `uid` (with `groups` as supplementary groups) or as root.
    pub fn command(&self, ns: &NetNs, program: impl AsRef<OsStr>, jail: Jail) -> Command {
        let mut cmd = Command::new(program);
        let netns = fs::File::open(ns.netns_path()).expect("open netns");
        let lower = format!("lowerdir={}:/etc", self.dir.join("layer").display());
        let lower = CString::new(lower).unwrap();
        let dev = PrivateDev::new(&self.dir, if jail.tun_0666 { 0o666 } else { 0o600 });
        let groups: Vec<libc::gid_t> = jail.groups.clone();
        // SAFETY: the closure runs between fork and exec and only makes raw
        // system calls on data prepared before the fork (no allocation).
        unsafe {
            cmd.pre_exec(move || {
                let ok = sys_ok;
                ok(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
                sys::mount_private_etc(&lower, libc::MS_RDONLY, None)
                    .map_err(|_| io::Error::last_os_error())?;
                dev.mount()?;
                if let Some(uid) = jail.uid {
                    let gid = jail.gid.unwrap_or(uid);
                    ok(libc::setgroups(groups.len(), groups.as_ptr()))?;
                    ok(libc::setresgid(gid, gid, gid))?;
                    ok(libc::setresuid(uid, uid, uid))?;
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs the helper installed as `mode` with `args` and a fresh socketpair
    /// whose far end is appended as `--fd=N` (unless `fd_arg` is false).
    pub fn run_helper(&self, ns: &NetNs, mode: Mode, args: &[&str]) -> HelperRun {
        let program = self.install(HELPER, mode);
        let mut jail = Jail::for_mode(mode);
        jail.uid = mode.uid();
        self.run_program(ns, &program, jail, args, true)
    }

    /// Like run_helper, for any program (QEMU's helper, a wrapper).
    pub fn run_program(
        &self,
        ns: &NetNs,
        program: &Path,
        jail: Jail,
        args: &[&str],
        fd_arg: bool,
    ) -> HelperRun {
        let mut cmd = self.command(ns, program, jail);
        cmd.args(args);
        let (child, ours) = spawn_with_socket(&mut cmd, fd_arg);
        let out = child.wait_with_output().expect("wait");
        HelperRun::collect(out, ours)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Who and with what the program runs.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    /// The run's /dev/net/tun is mode 0666 (Debian's, with udev), else
    /// 0600; never whatever the machine's own node is.
    pub tun_0666: bool,
}

/// The run's /dev: an overlay of the sandbox's `dev-layer` on the
/// machine's /dev (read-only), the machine's mounts under /dev (pts, shm)
/// carried over, and bound on top the sandbox's /dev/log socket and its
/// tun node of the chosen mode. Paths prepared before the fork; `mount`
/// runs between fork and exec, in the run's own mount namespace.
struct PrivateDev {
    overlay: CString,
    log: CString,
    tun: CString,
    /// (a mount under /dev, where it waits while the overlay goes on)
    submounts: Vec<(CString, CString)>,
}

impl PrivateDev {
    fn new(sandbox: &Path, tun_mode: u32) -> PrivateDev {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let layer = sandbox.join("dev-layer");
        let overlay = format!("lowerdir={}:/dev", layer.display());
        let mut submounts = Vec::new();
        for mount_point in mounts_under_dev() {
            // A mount point of the same kind: a bind of a file (such as a
            // tun node) needs a file, a directory a directory.
            let stash = sandbox.join("dev-stash").join(submounts.len().to_string());
            // (Another thread of the test may be making the same one.)
            let made = if mount_point.is_dir() {
                fs::create_dir(&stash)
            } else {
                fs::File::options()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&stash)
                    .map(drop)
            };
            if let Err(e) = made {
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists,
                    "{}: {e}",
                    stash.display()
                );
            }
            submounts.push((c(&mount_point), c(&stash)));
        }
        PrivateDev {
            overlay: CString::new(overlay).unwrap(),
            log: c(&layer.join("log")),
            tun: c(&sandbox.join(format!("tun-{tun_mode:o}"))),
            submounts,
        }
    }

    /// Only raw system calls on the prepared strings (no allocation).
    fn mount(&self) -> io::Result<()> {
        let bind = |from: &CString, to: &CStr, flags: libc::c_ulong| {
            // SAFETY: NUL-terminated paths; null where the kernel ignores it.
            sys_ok(unsafe {
                libc::mount(
                    from.as_ptr(),
                    to.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | flags,
                    std::ptr::null(),
                )
            })
        };
        for (mount_point, stash) in &self.submounts {
            bind(mount_point, stash, libc::MS_REC)?;
        }
        // SAFETY: as above.
        sys_ok(unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                c"/dev".as_ptr(),
                c"overlay".as_ptr(),
                libc::MS_RDONLY,
                self.overlay.as_ptr().cast(),
            )
        })?;
        for (mount_point, stash) in &self.submounts {
            bind(stash, mount_point, libc::MS_REC)?;
            // SAFETY: a NUL-terminated path.
            sys_ok(unsafe { libc::umount2(stash.as_ptr(), libc::MNT_DETACH) })?;
        }
        bind(&self.log, c"/dev/log", 0)?;
        bind(&self.tun, c"/dev/net/tun", 0)
    }
}

/// The mount points strictly below /dev (devpts, shm...): an overlay of
/// /dev shows only /dev's own file system.
fn mounts_under_dev() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with("/dev/") && !p.contains('\\'))
        .map(PathBuf::from)
        .collect();
    // Each mount point once (a mount stacked on another shows twice), and
    // none below another: the recursive bind carries those along.
    points.sort();
    points.dedup();
    let outer = points.clone();
    points.retain(|p| !outer.iter().any(|o| o != p && p.starts_with(o)));
    points
}

impl Jail {
    pub fn root() -> Jail {
        Jail::default()
    }
    pub fn user(uid: u32) -> Jail {
        Jail {
            uid: Some(uid),
            ..Jail::default()
        }
    }
    pub fn for_mode(mode: Mode) -> Jail {
        Jail {
            uid: mode.uid(),
            tun_0666: matches!(mode, Mode::FileCaps | Mode::Unprivileged),
            ..Jail::default()
        }
    }
}

/// Spawns, retrying ETXTBSY: another test thread may have forked while a
/// helper copy was still open for writing, and its child keeps that write
/// descriptor until it execs.
pub fn spawn(cmd: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.expect("spawn"),
        }
    }
    panic!("spawn: executable stayed busy (ETXTBSY)");
}

/// Starts `cmd` (stdin null, output piped) with the far end of a fresh
/// socketpair inherited, appended as `--fd=N` if `fd_arg`; returns the
/// child and our end.
pub fn spawn_with_socket(cmd: &mut Command, fd_arg: bool) -> (std::process::Child, OwnedFd) {
    let (ours, theirs) = socketpair();
    if fd_arg {
        cmd.arg(format!("--fd={}", theirs.as_raw_fd()));
    }
    clear_cloexec(theirs.as_raw_fd());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd);
    drop(theirs);
    (child, ours)
}

/// `Command::output` with the same retry.
pub fn output(cmd: &mut Command) -> Output {
    spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .wait_with_output()
        .expect("wait")
}

pub fn socketpair() -> (OwnedFd, OwnedFd) {
    sys::socketpair().expect("socketpair")
}

pub fn clear_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD with an int argument on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
}

/// What a helper run produced: exit status, output, and every fd that
/// arrived on our end of the socket (with the message layout).
pub struct HelperRun {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub fds: Vec<OwnedFd>,
    pub cmsgs: usize,
    pub data: Vec<u8>,
}

impl HelperRun {
    pub fn collect(out: Output, ours: OwnedFd) -> HelperRun {
        use std::os::unix::process::ExitStatusExt;
        let (fds, cmsgs, data) = receive_all(&ours);
        HelperRun {
            code: out.status.code(),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            fds,
            cmsgs,
            data,
        }
    }

    /// Asserts success the way libvirt checks it: status 0, exactly one fd
    /// in one control message, at least one data byte. Returns the fd.
    pub fn expect_tap(mut self) -> OwnedFd {
        assert_eq!(self.code, Some(0), "helper failed: {}", self.stderr);
        assert_eq!(
            (self.fds.len(), self.cmsgs),
            (1, 1),
            "expected exactly one fd in one message"
        );
        assert!(!self.data.is_empty(), "no data byte came with the fd");
        self.fds.pop().unwrap()
    }

    /// Asserts a refusal: the status, one stderr line containing `text`, no fd.
    pub fn expect_refusal(&self, status: i32, text: &str) {
        assert_eq!(self.code, Some(status), "stderr: {}", self.stderr);
        assert!(self.fds.is_empty(), "a refused run sent an fd");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "expected one line, got: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.starts_with("bridge-helper: "),
            "stderr: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.contains(text),
            "expected {text:?} in {:?}",
            self.stderr
        );
    }
}

/// Reads everything on the socket without blocking (the sender has exited).
fn receive_all(sock: &OwnedFd) -> (Vec<OwnedFd>, usize, Vec<u8>) {
    let mut fds = Vec::new();
    let mut cmsgs = 0;
    let mut data = Vec::new();
    loop {
        let mut buf = [0u8; 64];
        let msg = match sys::recv_with_fds(sock.as_raw_fd(), &mut buf, true) {
            Ok(m) => m,
            Err(_) => break,
        };
        if msg.bytes == 0 {
            break;
        }
        cmsgs += msg.cmsgs;
        fds.extend(msg.fds);
        data.extend_from_slice(&buf[..msg.bytes]);
    }
    (fds, cmsgs, data)
}

/// TUNGETIFF on a received fd: (name, flags).
pub fn tun_get_iff(fd: &OwnedFd) -> (String, i16) {
    sys::tun_iff(fd.as_raw_fd()).unwrap_or_else(|e| panic!("TUNGETIFF: {e}"))
}

/// Makes the tap persistent as `uid` and closes it, then waits until the
/// kernel shows it detached: what a VM that walks away leaves behind.
pub fn abandon_as(sb: &Sandbox, ns: &NetNs, fd: OwnedFd, uid: u32) {
    let (name, _) = tun_get_iff(&fd);
    make_persistent_as(sb, ns, &fd, uid);
    drop(fd);
    wait_detached(ns, &[&name]);
}

/// Waits (3 s, scaled) until nothing holds the taps `names`. Closing our fds
/// is not enough: a child forked by a parallel test may hold copies until
/// its exec, and the fork can fall between two of our closes, so other
/// taps being gone says nothing about these.
pub fn wait_detached(ns: &NetNs, names: &[&str]) {
    let limit = time::secs(3);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if names.iter().all(|name| ns.detached(name)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{names:?} still attached {limit:?} after their fds were closed");
}

/// As `uid` (inside the namespace), sets IFF_PERSIST on a tap fd we hold:
/// what any holder of the fd may do without privilege.
pub fn make_persistent_as(sb: &Sandbox, ns: &NetNs, fd: &OwnedFd, uid: u32) {
    let raw = fd.as_raw_fd();
    let mut cmd = sb.command(ns, "/bin/true", Jail::user(uid));
    // SAFETY: one ioctl with an integer argument between fork and exec.
    unsafe {
        cmd.pre_exec(
            move || match libc::ioctl(raw, libc::TUNSETPERSIST, 1 as libc::c_ulong) {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            },
        );
    }
    let status = cmd.status().expect("TUNSETPERSIST as the fd holder");
    assert!(status.success());
}

/// Waits (2 s, scaled) until the namespace holds exactly the taps `keep`: a
/// closed tap lingers while a child forked by a parallel test still holds
/// a copy of its fd, until that child's exec closes it.
pub fn wait_for_taps(ns: &NetNs, keep: &[&str]) {
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    let limit = time::secs(2);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let mut now = ns.taps();
        now.sort();
        if now == want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("taps {:?} after {limit:?}, wanted {want:?}", ns.taps());
}

/// A success: one fd that is a tap in `bridge`, nothing printed; the tap
/// goes away with the fd.
pub fn attached_to(ns: &NetNs, run: HelperRun, bridge: &str) {
    assert!(run.stderr.is_empty(), "stderr: {:?}", run.stderr);
    let fd = run.expect_tap();
    let (name, _) = tun_get_iff(&fd);
    assert_eq!(ns.tap_state(&name).master, bridge);
    drop(fd);
    assert_no_taps(ns);
}

/// Waits (1 s, scaled) until no tap is left in the namespace.
pub fn assert_no_taps(ns: &NetNs) {
    let limit = time::secs(1);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if ns.taps().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("taps left behind after {limit:?}: {:?}", ns.taps());
}

// ---------------------------------------------------------------------------
// Generic helpers added for tests/hostile.rs (new items only; nothing above
// this line depends on them).
// ---------------------------------------------------------------------------

/// How long any one helper run may take before the test calls it a hang
/// (times BH_TEST_TIME_SCALE, as every limit `Running` waits with).
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Sandbox {
    /// The real path of a name under the sandbox's /etc/qemu (for
    /// directories, symlinks, FIFOs that `etc_file` cannot make).
    pub fn etc_path(&self, name: &str) -> PathBuf {
        self.dir.join("layer/qemu").join(name)
    }
}

/// A spawned program whose piped stdout and stderr are drained by threads,
/// so it can be watched (stopped, signalled) while it runs. Dropping it
/// unwaited kills it: a failed test leaves no stopped helper behind.
pub struct Running {
    child: Option<std::process::Child>,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

fn drain(r: Option<impl io::Read + Send + 'static>) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

/// Spawns (retrying ETXTBSY, like `spawn`) and returns the spawn error
/// instead of panicking, for tests where exec itself may fail.
pub fn try_start(cmd: &mut Command) -> io::Result<Running> {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => return Err(e),
            Ok(mut child) => {
                let out = drain(child.stdout.take());
                let err = drain(child.stderr.take());
                return Ok(Running {
                    child: Some(child),
                    out,
                    err,
                });
            }
        }
    }
    panic!("spawn: executable stayed busy (ETXTBSY)");
}

/// `try_start` that must succeed.
pub fn start(cmd: &mut Command) -> Running {
    try_start(cmd).expect("spawn")
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Waits at most `limit` (times BH_TEST_TIME_SCALE) for the exit; on
    /// timeout kills the program and panics (a hang is a failure, never a
    /// pass).
    pub fn wait_within(mut self, limit: std::time::Duration) -> Output {
        let limit = time::limit(limit);
        let mut child = self.child.take().expect("running");
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("program still running after {limit:?}: killed (a hang)");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().expect("reader thread"))
                .unwrap_or_default()
        };
        Output {
            status,
            stdout: join(self.out.take()),
            stderr: join(self.err.take()),
        }
    }

    /// The state letter of /proc/PID/stat (R, S, T, Z...), if it still exists.
    pub fn state(&self) -> Option<char> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The command name may contain spaces and ')'; the state follows the last ')'.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Waits until the program has stopped itself (state T); panics if it
    /// exits or is still not stopped after `limit`.
    pub fn wait_stopped(&self, limit: std::time::Duration) {
        let limit = time::limit(limit);
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.state() {
                Some('T') => return,
                Some('Z') | None => panic!("exited instead of stopping"),
                _ if std::time::Instant::now() > deadline => {
                    panic!("not stopped after {limit:?}")
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a setuid copy `helper` (test-hooks build) with `hook`, one of
/// its `--test-pause-*` options, on br0, and returns it once it has stopped
/// itself there, with our end of its socket.
pub fn stopped_at(sb: &Sandbox, ns: &NetNs, helper: &Path, hook: &str) -> (Running, OwnedFd) {
    stopped_as(
        sb,
        ns,
        helper,
        Jail::for_mode(Mode::Setuid),
        &[hook, "--br=br0"],
    )
}

/// Starts `helper ARGS --fd=N` as `jail` and returns it once it has
/// stopped itself at the `--test-pause-*` stop among `args`.
pub fn stopped_as(
    sb: &Sandbox,
    ns: &NetNs,
    helper: &Path,
    jail: Jail,
    args: &[&str],
) -> (Running, OwnedFd) {
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = sb.command(ns, helper, jail);
    cmd.args(args)
        .arg(format!("--fd={}", theirs.as_raw_fd()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let running = start(&mut cmd);
    drop(theirs);
    running.wait_stopped(std::time::Duration::from_secs(10));
    (running, ours)
}

/// A root run of `--queues=N` on br0, stopped after the tap was created and
/// before its other queues are attached: the moment the tap has no owner.
pub fn paused_before_queues(sb: &Sandbox, ns: &NetNs, queues: u16) -> (Running, OwnedFd) {
    let helper = sb.install(HELPER, Mode::Root);
    let queues = format!("--queues={queues}");
    stopped_as(
        sb,
        ns,
        &helper,
        Jail::root(),
        &["--test-pause-queues", &queues, "--br=br0"],
    )
}

pub const IFF_MULTI_QUEUE: i16 = 0x0100;

/// What another local user can do to a multiqueue tap that has no owner
/// yet: attach a queue by its name, then `then` with it (as that user).
/// Done from a thread that enters `ns` and becomes uid 65534 alone (raw
/// setresuid is per thread).
pub fn foreign_queue(
    ns: &NetNs,
    tap: &str,
    then: impl FnOnce(&OwnedFd) -> io::Result<()> + Send + 'static,
) -> io::Result<OwnedFd> {
    let netns = fs::File::open(ns.netns_path())?;
    let name = tap.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on a live fd; per-thread, and this thread ends here.
        sys_ok(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) })?;
        let tun: OwnedFd = fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?
            .into();
        let nobody = libc::c_long::from(NOBODY);
        // SAFETY: the raw system call changes this thread's ids only.
        if unsafe { libc::syscall(libc::SYS_setresuid, nobody, nobody, nobody) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        let flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq.
        sys_ok(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) })?;
        then(&tun)?;
        Ok(tun)
    })
    .join()
    .unwrap()
}

/// Lets a run stopped by `stopped_at` go on, and collects it.
pub fn resume(running: Running, ours: OwnedFd) -> HelperRun {
    let pid = nix::unistd::Pid::from_raw(running.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = running.wait_within(std::time::Duration::from_secs(10));
    HelperRun::collect(out, ours)
}

/// `output` with a hang limit: stdout and stderr piped, killed and failed
/// after `limit`.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    start(cmd.stdout(Stdio::piped()).stderr(Stdio::piped())).wait_within(limit)
}

/// Asserts that `stderr` is one line of printable ASCII and nothing else:
/// no raw control byte (ESC, CR, a second newline), no raw non-ASCII byte
/// (U+FFFD here stands for bytes that were not UTF-8).
pub fn assert_one_clean_line(stderr: &str) {
    let body = stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stderr does not end in one newline: {stderr:?}"));
    assert!(
        body.chars().all(|c| (' '..='~').contains(&c)),
        "raw control or non-ASCII text reached stderr: {stderr:?}"
    );
}

/// A private /dev for a run (bind-mounted over /dev in its own mount
/// namespace, so the machine's is never touched): a 0666 tun node, and a
/// datagram socket bound at /dev/log that the test reads (`log`), for the
/// audit line.
pub struct Dev {
    pub dir: PathBuf,
    pub log: Option<std::os::unix::net::UnixDatagram>,
}

pub fn private_dev(sb: &Sandbox, log: bool) -> Dev {
    let dir = sb.dir.join("dev");
    fs::create_dir_all(dir.join("net")).unwrap();
    for d in [&dir, &dir.join("net")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if !dir.join("net/tun").exists() {
        sys::make_tun_node(&dir.join("net/tun"), 0o666).unwrap();
    }
    let _ = fs::remove_file(dir.join("log"));
    let log = log.then(|| {
        let sock = std::os::unix::net::UnixDatagram::bind(dir.join("log")).unwrap();
        fs::set_permissions(dir.join("log"), fs::Permissions::from_mode(0o666)).unwrap();
        sock.set_nonblocking(true).unwrap();
        sock
    });
    Dev { dir, log }
}

impl Dev {
    /// Every datagram waiting at /dev/log, as text.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = self.log.as_ref().expect("a /dev/log").recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// `program` in `ns` with the sandbox's /etc and this /dev, as nobody.
    pub fn command(&self, sb: &Sandbox, ns: &NetNs, program: &Path) -> Command {
        let mut cmd = sb.command(ns, program, Jail::root());
        let dir = CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: runs after the sandbox's own pre_exec (which unshared the
        // mount namespace); raw system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                sys_ok(libc::mount(
                    dir.as_ptr(),
                    c"/dev".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                sys_ok(libc::setgroups(0, std::ptr::null()))?;
                sys_ok(libc::setresgid(NOBODY, NOBODY, NOBODY))?;
                sys_ok(libc::setresuid(NOBODY, NOBODY, NOBODY))
            });
        }
        cmd
    }
}

/// Issue 23's attacker: a thread in `ns` that becomes `uid` alone (raw
/// setresuid is per thread), opens the 0666 tun node `tun` as that user,
/// and loops TUNSETIFF(IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE) over `names`,
/// the names a new tap may have while it has no owner, until one attaches
/// or `stop` is set. On a hit it runs `then` on the attached queue (which
/// is closed when `then` returns) and gives back what `then` returned.
pub fn attach_in_a_loop<T: Send + 'static>(
    ns: &NetNs,
    tun: PathBuf,
    uid: u32,
    names: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    then: impl FnOnce(&OwnedFd) -> T + Send + 'static,
) -> std::thread::JoinHandle<io::Result<Option<T>>> {
    let netns = fs::File::open(ns.netns_path()).expect("open netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on a live fd; per-thread, and this thread ends here.
        sys_ok(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) })?;
        let id = libc::c_long::from(uid);
        // SAFETY: the raw system call changes this thread's ids only.
        if unsafe { libc::syscall(libc::SYS_setresuid, id, id, id) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let tun: OwnedFd = fs::File::options()
            .read(true)
            .write(true)
            .open(&tun)?
            .into();
        let requests: Vec<[u8; 40]> = names
            .iter()
            .map(|name| {
                let mut ifr = [0u8; 40];
                ifr[..name.len()].copy_from_slice(name.as_bytes());
                let flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
                ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
                ifr
            })
            .collect();
        let _ = ready_tx.send(());
        while !stop.load(Ordering::SeqCst) {
            for ifr in &requests {
                let mut ifr = *ifr;
                // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq.
                if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } == 0 {
                    return Ok(Some(then(&tun)));
                }
            }
        }
        Ok(None)
    });
    // Looping before the caller goes on to start the victim.
    let _ = ready_rx.recv();
    handle
}

/// The name a run creates its tap under for `uid`'s slot `slot`, before
/// renaming it to its `tapN` (issue 23): `bh`, the uid in 8 hex digits,
/// `-`, the slot in 4.
pub fn birth_name(uid: u32, slot: u16) -> String {
    format!("bh{uid:08x}-{slot:04x}")
}

/// The altname that lists a tap in `uid`'s slot `slot`: `bh`, the uid in
/// 8 hex digits, `.`, the slot in 4.
pub fn slot_name(uid: u32, slot: u16) -> String {
    format!("bh{uid:08x}.{slot:04x}")
}

/// Whether `name` is a [`birth_name`].
pub fn is_birth_name(name: &str) -> bool {
    let b = name.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    b.len() == 15 && b.starts_with(b"bh") && b[10] == b'-' && hex(&b[2..10]) && hex(&b[11..])
}

/// The names a run's tap may have while it may have no owner: the first
/// `tapN`s and the caller's first slots' birth names.
pub fn window_names(caller: u32) -> Vec<String> {
    (0..4)
        .map(|n| format!("tap{n}"))
        .chain((0..8).map(|slot| birth_name(caller, slot)))
        .collect()
}

/// The words of the commands a shell runs for `line`, a command line as a
/// reader would paste it from a message: each program it names
/// (`bridge-helper`, `chown`, `chmod`, `setcap`) is a script that prints
/// its name and each of its arguments, NUL-terminated, and anything else
/// the line made the shell do (a second command, a substitution) shows in
/// what comes back. Pasted into Debian's /bin/sh (dash) and into bash,
/// which must agree. Run as nobody, with only those programs on PATH.
pub fn pasted_words(line: &str) -> Vec<Vec<u8>> {
    let bin = std::env::temp_dir().join(unique("bht-paste-"));
    fs::create_dir(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for program in ["bridge-helper", "chown", "chmod", "setcap"] {
        let path = bin.join(program);
        fs::write(&path, "#!/bin/sh\nprintf '%s\\0' \"${0##*/}\" \"$@\"\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = |shell: &str| {
        let out = Command::new(shell)
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("PATH", &bin)
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/")
            .output()
            .expect("run a shell");
        let mut words: Vec<Vec<u8>> = out.stdout.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
        // The last NUL ends the last word.
        if words.last().is_some_and(Vec::is_empty) {
            words.pop();
        }
        words
    };
    let (sh, bash) = (run("/bin/sh"), run("/bin/bash"));
    let _ = fs::remove_dir_all(&bin);
    let shown = |words: &[Vec<u8>]| -> Vec<String> {
        words
            .iter()
            .map(|w| String::from_utf8_lossy(w).into())
            .collect()
    };
    assert_eq!(
        sh,
        bash,
        "{line}: /bin/sh ran {:?}, bash {:?}",
        shown(&sh),
        shown(&bash)
    );
    sh
}
