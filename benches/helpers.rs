//! Side-by-side benchmark: `bridge-helper` against QEMU's `qemu-bridge-helper`.
//!
//! Run as root from the repository root (one command; figures side by side):
//!
//! ```text
//! cargo bench --bench helpers
//! cargo bench --bench helpers -- --n 200 --k 64 --rounds 3 --taps 0,100,1000
//! ```
//!
//! What it does (see `bench/RESULTS.md` for the last results):
//! - creates its own network namespace `bhbench-<pid>` with bridge `bhbr0` (deleted at the end,
//!   also on error or panic); the machine's own interfaces are never touched;
//! - prepares one private mount namespace (kept alive by an fd) in which `/etc` is an overlayfs
//!   whose upper layer holds `qemu/bridge.conf` = `allow bhbr0`, and `/dev/net/tun` is a 0666
//!   node bind-mounted over the host's (0600 here); the real `/etc` is never written;
//! - copies each program into a 0755 temp dir as a setuid-root copy, a `cap_net_admin+ep` copy
//!   and a plain copy; each run forks, joins the mount and network namespaces, drops to uid/gid
//!   65534 (setuid and cap modes) and execs `HELPER --use-vnet --fd=N --br=bhbr0`;
//! - times spawn -> fd received (recvmsg) and spawn -> exit (wait4), checks each fd with
//!   TUNGETIFF, closes it, and checks that the taps vanished.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const REFERENCE: &str = "/usr/lib/qemu/qemu-bridge-helper";
const BRIDGE: &str = "bhbr0";
const NOBODY: u32 = 65534;
/// `_IOR('T', 210, unsigned int)`
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const IFF_TAP: libc::c_short = 0x0002;
/// A Linux bridge takes at most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved).
const BRIDGE_MAX_PORTS: usize = 1023;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    n: usize,
    k: usize,
    warmup: usize,
    rounds: usize,
    taps: Vec<usize>,
    helper: Option<PathBuf>,
    reference: PathBuf,
    out: Option<PathBuf>,
}

const USAGE: &str = "usage: cargo bench --bench helpers -- [--n N] [--k K] [--warmup W] \
[--rounds R] [--taps 0,100,1000] [--helper PATH] [--reference PATH] [--out FILE | --no-save]";

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        n: 200,
        k: 64,
        warmup: 10,
        rounds: 3,
        taps: vec![0, 100, 1000],
        helper: option_env!("CARGO_BIN_EXE_bridge-helper").map(PathBuf::from),
        reference: PathBuf::from(REFERENCE),
        out: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bench/RESULTS.md"
        ))),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`; required (see real_main)
            "--n" => o.n = val("--n")?.parse()?,
            "--k" => o.k = val("--k")?.parse()?,
            "--warmup" => o.warmup = val("--warmup")?.parse()?,
            "--rounds" => o.rounds = val("--rounds")?.parse()?,
            "--taps" => {
                o.taps = val("--taps")?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?;
                o.taps.sort_unstable();
                o.taps.dedup();
            }
            "--helper" => o.helper = Some(PathBuf::from(val("--helper")?)),
            "--reference" => o.reference = PathBuf::from(val("--reference")?),
            "--out" => o.out = Some(PathBuf::from(val("--out")?)),
            "--no-save" => o.out = None,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if o.n == 0 || o.k == 0 || o.rounds == 0 {
        return Err("--n, --k and --rounds must be > 0".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Programs and install modes

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    Setuid,
    Cap,
    Root,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Setuid, Mode::Cap, Mode::Root];
    fn short(self) -> &'static str {
        match self {
            Mode::Setuid => "setuid",
            Mode::Cap => "cap",
            Mode::Root => "root",
        }
    }
    fn uid(self) -> Option<u32> {
        match self {
            Mode::Setuid | Mode::Cap => Some(NOBODY),
            Mode::Root => None,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Role {
    Ours,
    Reference,
    FloorStatic,
    FloorDyn,
}

impl Role {
    fn is_helper(self) -> bool {
        matches!(self, Role::Ours | Role::Reference)
    }
}

struct Prog {
    role: Role,
    label: String,
    source: PathBuf,
    /// Installed copies, indexed by `Mode::idx`.
    copies: [CString; 3],
    size: u64,
    linkage: String,
    /// stderr of every run goes here (opened by root before fork).
    log: PathBuf,
    log_fd: OwnedFd,
}

// ---------------------------------------------------------------------------------------------
// Cleanup guards

struct NetnsGuard(String);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.0])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("warning: could not delete netns {}", self.0);
        }
    }
}

struct DirGuard(PathBuf);
impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// Deletes namespaces and temp dirs left by earlier runs that were killed (SIGKILL skips Drop).
fn remove_stale(tmp: &Path) {
    let alive = |name: &str| {
        name.strip_prefix("bhbench-")
            .and_then(|p| p.parse::<u32>().ok())
            .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(rd) = fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if alive(&name) == Some(false) {
                eprintln!("removing stale netns {name}");
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
    if let Ok(rd) = fs::read_dir(tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if alive(&name) == Some(false) {
                eprintln!("removing stale dir {}", e.path().display());
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small syscall wrappers

fn cstr(s: impl AsRef<[u8]>) -> Res<CString> {
    Ok(CString::new(s.as_ref().to_vec())?)
}

fn last_err(what: &str) -> Box<dyn std::error::Error> {
    format!("{what}: {}", io::Error::last_os_error()).into()
}

fn open_ro(path: &str) -> Res<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; the returned fd is checked and owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_err(&format!("open {path}")));
    }
    // SAFETY: `fd` was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socketpair() -> Res<(OwnedFd, OwnedFd)> {
    let mut sv = [0 as RawFd; 2];
    // SAFETY: `sv` is a valid array of two ints for socketpair to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(last_err("socketpair"));
    }
    // SAFETY: both fds were just created by socketpair() and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// Receives one byte and at most one SCM_RIGHTS fd. `Ok(None)` means EOF or no fd attached.
fn recv_fd(sock: RawFd) -> Res<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers (`byte`, `cbuf`) of the stated sizes.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(last_err("recvmsg"));
    }
    let mut got: Option<OwnedFd> = None;
    // SAFETY: the CMSG_* helpers walk the control buffer filled in by the kernel, bounded by
    // msg_controllen; every fd found is taken into an OwnedFd exactly once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if got.is_none() {
                        got = Some(fd);
                    } // extra fds are dropped (closed)
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(got)
}

/// TUNGETIFF on the received fd: `Ok(name)` if it is a tap.
fn tap_name(fd: RawFd) -> Result<String, String> {
    let mut ifr = [0u8; 40];
    // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes on x86_64/aarch64) into `ifr`.
    let r = unsafe { libc::ioctl(fd, TUNGETIFF as _, ifr.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("TUNGETIFF: {}", io::Error::last_os_error()));
    }
    let name_len = ifr[..16].iter().position(|&b| b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&ifr[..name_len]).into_owned();
    let flags = libc::c_short::from_ne_bytes([ifr[16], ifr[17]]);
    if flags & IFF_TAP == 0 {
        return Err(format!("{name}: not a tap (flags {flags:#x})"));
    }
    Ok(name)
}

struct Exit {
    ok: bool,
    status: String,
    cpu_us: f64,
    maxrss_kb: i64,
}

fn wait_child(pid: libc::pid_t) -> Res<Exit> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zero is a valid initial value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `ru` are valid out-pointers; `pid` is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(last_err("wait4"));
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let status = if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else {
        format!("signal {}", libc::WTERMSIG(status))
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Ok(Exit {
        ok,
        status,
        cpu_us: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kb: ru.ru_maxrss,
    })
}

// ---------------------------------------------------------------------------------------------
// Spawning: fork, join the namespaces, drop privileges, exec. Everything is allocated before
// fork; the child only makes async-signal-safe libc calls.

struct Ns {
    mnt: OwnedFd,
    net: OwnedFd,
    devnull: OwnedFd,
}

struct ExecPlan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    uid: Option<u32>,
    keep_fd: RawFd,
    stderr_fd: RawFd,
}

impl ExecPlan {
    fn new(
        path: &CStr,
        args: &[String],
        uid: Option<u32>,
        keep_fd: RawFd,
        stderr_fd: RawFd,
    ) -> Res<Self> {
        let mut argv = vec![path.to_owned()];
        for a in args {
            argv.push(cstr(a)?);
        }
        let envp = vec![cstr("PATH=/usr/sbin:/usr/bin:/sbin:/bin")?];
        let mut argv_ptrs: Vec<_> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ExecPlan {
            path: path.to_owned(),
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            uid,
            keep_fd,
            stderr_fd,
        })
    }
}

fn child_die(msg: &[u8]) -> ! {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a live buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// Runs in the forked child only.
fn child_exec(ns: &Ns, p: &ExecPlan) -> ! {
    // SAFETY: only async-signal-safe syscalls on fds and buffers prepared before fork.
    unsafe {
        if libc::dup2(p.stderr_fd, 2) < 0
            || libc::dup2(ns.devnull.as_raw_fd(), 0) < 0
            || libc::dup2(ns.devnull.as_raw_fd(), 1) < 0
        {
            child_die(b"bench child: dup2 failed\n");
        }
        if libc::setns(ns.mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
            child_die(b"bench child: setns(mnt) failed\n");
        }
        if libc::setns(ns.net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            child_die(b"bench child: setns(net) failed\n");
        }
        if p.keep_fd >= 0 && libc::fcntl(p.keep_fd, libc::F_SETFD, 0) != 0 {
            child_die(b"bench child: fcntl failed\n");
        }
        if let Some(id) = p.uid {
            // raw syscalls: plain, with no libc bookkeeping between fork and exec
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
            {
                child_die(b"bench child: privilege drop failed\n");
            }
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
    }
    child_die(b"bench child: execve failed\n")
}

fn fork_exec(ns: &Ns, p: &ExecPlan) -> Res<libc::pid_t> {
    // SAFETY: the bench is single-threaded; the child only calls `child_exec`, which never
    // returns and makes async-signal-safe calls only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    if pid == 0 {
        child_exec(ns, p);
    }
    Ok(pid)
}

fn helper_args(fd: RawFd) -> Vec<String> {
    vec![
        "--use-vnet".into(),
        format!("--fd={fd}"),
        format!("--br={BRIDGE}"),
    ]
}

#[derive(Clone, Default)]
struct Run {
    fd_us: Option<f64>,
    exit_us: f64,
    ok: bool,
    cpu_us: f64,
    maxrss_kb: i64,
    err: Option<String>,
}

/// One run: spawn, receive the fd, wait. Returns the run and the received fd (kept open so the
/// caller can inspect the tap before it vanishes).
fn run_once(ns: &Ns, prog: &Prog, mode: Mode) -> Res<(Run, Option<OwnedFd>)> {
    let (mine, theirs) = socketpair()?;
    let plan = ExecPlan::new(
        &prog.copies[mode.idx()],
        &helper_args(theirs.as_raw_fd()),
        mode.uid(),
        theirs.as_raw_fd(),
        prog.log_fd.as_raw_fd(),
    )?;
    let t0 = Instant::now();
    let pid = fork_exec(ns, &plan)?;
    drop(theirs);
    let mut run = Run::default();
    let mut tap = None;
    if prog.role.is_helper() {
        match recv_fd(mine.as_raw_fd()) {
            Ok(Some(fd)) => {
                run.fd_us = Some(t0.elapsed().as_secs_f64() * 1e6);
                tap = Some(fd);
            }
            Ok(None) => run.err = Some("no fd received".into()),
            Err(e) => run.err = Some(e.to_string()),
        }
    }
    let exit = wait_child(pid)?;
    run.exit_us = t0.elapsed().as_secs_f64() * 1e6;
    run.cpu_us = exit.cpu_us;
    run.maxrss_kb = exit.maxrss_kb;
    run.ok = exit.ok && run.err.is_none();
    if !exit.ok && run.err.is_none() {
        run.err = Some(exit.status.clone());
    }
    if let Some(fd) = &tap {
        if let Err(e) = tap_name(fd.as_raw_fd()) {
            run.ok = false;
            run.err = Some(e);
        }
    }
    if !exit.ok {
        if let Some(e) = &mut run.err {
            if !e.contains(&exit.status) {
                *e = format!("{e}; {}", exit.status);
            }
        }
    }
    Ok((run, tap))
}

// ---------------------------------------------------------------------------------------------
// Setup

fn ip(ns: &str, args: &[&str]) -> Res<String> {
    let out = Command::new("ip").arg("-n").arg(ns).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_count(ns: &str) -> Res<usize> {
    Ok(ip(ns, &["-o", "link", "show"])?.lines().count())
}

/// Forks a short-lived child that builds the private mount namespace; its fd keeps it alive.
fn make_mount_ns(dir: &Path) -> Res<OwnedFd> {
    let overlay_opts = cstr(format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        dir.join("etc-upper").display(),
        dir.join("etc-work").display()
    ))?;
    let tun_src = cstr(dir.join("tun").as_os_str().as_bytes())?;
    let (root, etc, tun_dst, overlay) = (
        cstr("/")?,
        cstr("/etc")?,
        cstr("/dev/net/tun")?,
        cstr("overlay")?,
    );
    let (ready_r, ready_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    // SAFETY: single-threaded; the child makes only async-signal-safe calls and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls on buffers allocated before fork.
        unsafe {
            // the child must not hold the parent's ends, or neither side ever sees EOF
            libc::close(release_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            let fail = |code: u8| -> ! {
                libc::write(ready_w.as_raw_fd(), [code].as_ptr().cast(), 1);
                libc::_exit(1)
            };
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                fail(b'1');
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                fail(b'2');
            }
            if libc::mount(
                overlay.as_ptr(),
                etc.as_ptr(),
                overlay.as_ptr(),
                0,
                overlay_opts.as_ptr().cast(),
            ) != 0
            {
                fail(b'3');
            }
            if libc::mount(
                tun_src.as_ptr(),
                tun_dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                fail(b'4');
            }
            libc::write(ready_w.as_raw_fd(), b"k".as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(release_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0)
        }
    }
    drop(ready_w);
    drop(release_r);
    let mut b = [0u8; 1];
    let got = fs::File::from(ready_r).read(&mut b).unwrap_or(0);
    let res = if got == 1 && b[0] == b'k' {
        open_ro(&format!("/proc/{pid}/ns/mnt"))
    } else {
        let step = match b[0] {
            b'1' => "unshare(CLONE_NEWNS)",
            b'2' => "make / rprivate",
            b'3' => "mount overlayfs on /etc",
            b'4' => "bind-mount 0666 tun over /dev/net/tun",
            _ => "unknown step",
        };
        Err(format!("mount namespace setup failed at {step}").into())
    };
    drop(release_w);
    wait_child(pid)?;
    res
}

fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: `p` is a valid array for pipe2 to fill.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_err("pipe2"));
    }
    // SAFETY: both fds were just created and are owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn set_mode(p: &Path, mode: u32) -> Res<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn chown_root(p: &Path) -> Res<()> {
    std::os::unix::fs::chown(p, Some(0), Some(0))?;
    Ok(())
}

/// `security.capability` xattr v2 granting cap_net_admin (12) in permitted + effective.
fn set_cap_net_admin(p: &Path) -> Res<()> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
    v.extend_from_slice(&(1u32 << 12).to_le_bytes()); // permitted[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    let (path, name) = (
        cstr(p.as_os_str().as_bytes())?,
        cstr("security.capability")?,
    );
    // SAFETY: valid C strings and a live value buffer of the stated length.
    let r = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r != 0 {
        return Err(last_err(&format!(
            "setxattr security.capability {}",
            p.display()
        )));
    }
    Ok(())
}

/// A 129-byte static x86_64 ELF that calls exit(0): the floor of spawning itself.
fn tiny_elf() -> Vec<u8> {
    let base: u64 = 0x40_0000;
    let code: [u8; 9] = [0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]; // mov eax,60; xor edi,edi; syscall
    let total = (64 + 56 + code.len()) as u64;
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + 120).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize phentsize phnum shentsize shnum shstrndx
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0u64, base, base, total, total, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes()); // offset vaddr paddr filesz memsz align
    }
    e.extend_from_slice(&code);
    e
}

/// "static", "static-pie" or "dynamic (N libs)" from the ELF program headers.
fn linkage(p: &Path) -> String {
    let Ok(d) = fs::read(p) else {
        return "?".into();
    };
    if d.len() < 64 || &d[..4] != b"\x7fELF" || d[4] != 2 {
        return "not ELF64".into();
    }
    let u16at = |o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let (etype, phoff) = (
        u16at(16),
        u64::from_le_bytes(d[32..40].try_into().unwrap()) as usize,
    );
    let (phentsize, phnum) = (u16at(54), u16at(56));
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= d.len() && u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) == 3
    });
    if !interp {
        return if etype == 3 { "static-pie" } else { "static" }.into();
    }
    let libs = Command::new("ldd")
        .arg(p)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("=>"))
                .count()
        })
        .unwrap_or(0);
    format!("dynamic ({libs} shared libs)")
}

fn install(dir: &Path, role: Role, label: &str, source: &Path, data: Option<Vec<u8>>) -> Res<Prog> {
    let bytes = match data {
        Some(d) => d,
        None => fs::read(source).map_err(|e| format!("read {}: {e}", source.display()))?,
    };
    let stem = match role {
        Role::Ours => "bh",
        Role::Reference => "qemu",
        Role::FloorStatic => "floor-static",
        Role::FloorDyn => "floor-dyn",
    };
    let mut copies = Vec::new();
    for mode in Mode::ALL {
        let p = dir.join("bin").join(format!("{stem}-{}", mode.short()));
        fs::write(&p, &bytes)?;
        chown_root(&p)?; // chown clears setuid bits and file caps: do it first
        match mode {
            Mode::Setuid => set_mode(&p, 0o4755)?,
            Mode::Cap => {
                set_mode(&p, 0o755)?;
                set_cap_net_admin(&p)?;
            }
            Mode::Root => set_mode(&p, 0o755)?,
        }
        copies.push(cstr(p.as_os_str().as_bytes())?);
    }
    let log = dir.join(format!("{stem}.stderr"));
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    Ok(Prog {
        role,
        label: label.into(),
        source: source.into(),
        copies: copies.try_into().map_err(|_| "copies")?,
        size: bytes.len() as u64,
        linkage: linkage(&dir.join("bin").join(format!("{stem}-root"))),
        log,
        log_fd: f.into(),
    })
}

fn add_taps(ns: &str, dir: &Path, from: usize, to: usize) -> Res<()> {
    if to <= from {
        return Ok(());
    }
    let mut batch = String::new();
    for i in from..to {
        let _ = writeln!(batch, "tuntap add dev tap{i} mode tap");
        let _ = writeln!(batch, "link set dev tap{i} master {BRIDGE} up");
    }
    let f = dir.join("taps.batch");
    fs::write(&f, batch)?;
    ip(ns, &["-batch", &f.to_string_lossy()])?;
    Ok(())
}

fn install_signal_handlers() {
    extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
        let from = unsafe { (*info).si_pid() };
        SIGNAL.store(sig * 100_000 + from, Ordering::SeqCst);
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction is plain old data; the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn check_interrupted() -> Res<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(format!("interrupted by signal {}", SIGNAL.load(Ordering::SeqCst)).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Copy)]
struct Stats {
    med: f64,
    p99: f64,
    min: f64,
    max: f64,
}

/// Nearest-rank percentiles.
fn stats(v: &[f64]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some(Stats {
        med: rank(50.0),
        p99: rank(99.0),
        min: s[0],
        max: s[s.len() - 1],
    })
}

fn f0(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn r2(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("**{v:.2}**"))
}

/// Per (program, mode) summary of sequential runs.
#[derive(Clone, Copy, Default)]
struct Summary {
    fd: Option<Stats>,
    exit: Option<Stats>,
    cpu_med: Option<f64>,
    rss_med: Option<f64>,
    fails: usize,
    n: usize,
}

fn summarize(runs: &[Run]) -> Summary {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.ok).collect();
    let fd: Vec<f64> = ok.iter().filter_map(|r| r.fd_us).collect();
    let exit: Vec<f64> = ok.iter().map(|r| r.exit_us).collect();
    let cpu: Vec<f64> = ok.iter().map(|r| r.cpu_us).collect();
    let rss: Vec<f64> = ok.iter().map(|r| r.maxrss_kb as f64).collect();
    Summary {
        fd: stats(&fd),
        exit: stats(&exit),
        cpu_med: stats(&cpu).map(|s| s.med),
        rss_med: stats(&rss).map(|s| s.med),
        fails: runs.len() - ok.len(),
        n: runs.len(),
    }
}

fn summary_cells(s: &Summary) -> Vec<String> {
    let g = |st: Option<Stats>, f: fn(Stats) -> f64| f0(st.map(f));
    vec![
        g(s.fd, |x| x.med),
        g(s.fd, |x| x.p99),
        g(s.fd, |x| x.min),
        g(s.fd, |x| x.max),
        g(s.exit, |x| x.med),
        g(s.exit, |x| x.p99),
        g(s.exit, |x| x.min),
        g(s.exit, |x| x.max),
        f0(s.cpu_med),
        f0(s.rss_med),
        format!("{}/{}", s.fails, s.n),
    ]
}

fn ratio_cells(a: &Summary, b: &Summary) -> Vec<String> {
    let g = |x: Option<Stats>, y: Option<Stats>, f: fn(Stats) -> f64| r2(ratio(x.map(f), y.map(f)));
    vec![
        g(a.fd, b.fd, |x| x.med),
        g(a.fd, b.fd, |x| x.p99),
        g(a.fd, b.fd, |x| x.min),
        g(a.fd, b.fd, |x| x.max),
        g(a.exit, b.exit, |x| x.med),
        g(a.exit, b.exit, |x| x.p99),
        g(a.exit, b.exit, |x| x.min),
        g(a.exit, b.exit, |x| x.max),
        r2(ratio(a.cpu_med, b.cpu_med)),
        r2(ratio(a.rss_med, b.rss_med)),
        String::new(),
    ]
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

// ---------------------------------------------------------------------------------------------
// Phases

/// xorshift64*: a fixed-seed shuffle, so each program gets every predecessor alike (a fixed
/// rotation would always run the same program right after another helper's tap teardown).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

type SeqResults = BTreeMap<(Role, Mode), Vec<Run>>;

fn sequential(ns: &Ns, progs: &[Prog], n: usize, warmup: usize, net: &str) -> Res<SeqResults> {
    let mut res: SeqResults = BTreeMap::new();
    let before = link_count(net)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut order: Vec<(usize, Mode)> = (0..progs.len())
        .flat_map(|p| Mode::ALL.map(|m| (p, m)))
        .collect();
    for i in 0..warmup + n {
        check_interrupted()?;
        // every (program, mode) once per iteration, in a shuffled order
        rng.shuffle(&mut order);
        for &(pi, mode) in &order {
            {
                let prog = &progs[pi];
                let (run, tap) = run_once(ns, prog, mode)?;
                drop(tap); // closing the only fd destroys the tap
                if let Some(e) = &run.err {
                    if res
                        .values()
                        .map(|v| v.iter().filter(|r| !r.ok).count())
                        .sum::<usize>()
                        < 5
                    {
                        eprintln!("  {} [{}] failed: {e}", prog.label, mode.short());
                    }
                }
                if i >= warmup {
                    res.entry((prog.role, mode)).or_default().push(run);
                }
            }
        }
    }
    let after = link_count(net)?;
    if after != before {
        return Err(format!("{} links left behind after sequential runs", after - before).into());
    }
    Ok(res)
}

struct ConcRound {
    total_us: f64,
    all_fds_us: f64,
    fails: usize,
    distinct: usize,
}

fn concurrent(ns: &Ns, prog: &Prog, mode: Mode, k: usize) -> Res<ConcRound> {
    let mut pairs = Vec::with_capacity(k);
    let mut plans = Vec::with_capacity(k);
    for _ in 0..k {
        let (mine, theirs) = socketpair()?;
        plans.push(ExecPlan::new(
            &prog.copies[mode.idx()],
            &helper_args(theirs.as_raw_fd()),
            mode.uid(),
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?);
        pairs.push((mine, Some(theirs)));
    }
    let mut pids = Vec::with_capacity(k);
    let t0 = Instant::now();
    for (plan, pair) in plans.iter().zip(pairs.iter_mut()) {
        pids.push(fork_exec(ns, plan)?);
        pair.1 = None; // close the child's end in the parent
    }
    let mut fds: Vec<Option<OwnedFd>> = (0..k).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..k).collect();
    let mut fails = 0;
    while !pending.is_empty() {
        let mut pfds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: pairs[i].0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a live array of the stated length.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, 10_000) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(last_err("poll"));
        }
        if r == 0 {
            return Err(format!("{} helpers still silent after 10 s", pending.len()).into());
        }
        let mut still = Vec::new();
        for (pfd, &i) in pfds.iter().zip(pending.iter()) {
            if pfd.revents == 0 {
                still.push(i);
                continue;
            }
            match recv_fd(pfd.fd) {
                Ok(Some(fd)) => fds[i] = Some(fd),
                _ => fails += 1,
            }
        }
        pending = still;
    }
    let all_fds_us = t0.elapsed().as_secs_f64() * 1e6;
    let mut exits_ok = Vec::with_capacity(k);
    for &pid in &pids {
        exits_ok.push(wait_child(pid)?.ok);
    }
    let total_us = t0.elapsed().as_secs_f64() * 1e6;
    let mut names = HashSet::new();
    for (fd, ok) in fds.iter().zip(exits_ok) {
        match fd {
            Some(fd) => match tap_name(fd.as_raw_fd()) {
                Ok(name) if ok => {
                    names.insert(name);
                }
                _ => fails += 1,
            },
            None if !ok => {} // already counted as a failure (no fd)
            None => {}
        }
    }
    Ok(ConcRound {
        total_us,
        all_fds_us,
        fails,
        distinct: names.len(),
    })
}

struct Resource {
    syscalls: Option<(u64, u64)>,
    rss_kb: Option<u64>,
    note: String,
}

/// One run under `strace -c -f` and one under `/usr/bin/time -v`.
fn resources(ns: &Ns, prog: &Prog, mode: Mode, dir: &Path) -> Res<Resource> {
    let copy = prog.copies[mode.idx()].to_string_lossy().into_owned();
    let mut note = String::new();
    let mut syscalls = None;
    if prog.role.is_helper() && Path::new("/usr/bin/strace").exists() {
        let out = dir.join(format!("strace-{:?}-{}", prog.role, mode.short()));
        let (mine, theirs) = socketpair()?;
        let mut args: Vec<String> = vec!["-f".into(), "-c".into(), "-o".into()];
        args.push(out.to_string_lossy().into_owned());
        if mode.uid().is_some() {
            // strace runs as root and starts the helper as nobody: setuid/file caps still apply
            args.extend(["-u".into(), "nobody".into()]);
        }
        args.push(copy.clone());
        args.extend(helper_args(theirs.as_raw_fd()));
        let plan = ExecPlan::new(
            &cstr("/usr/bin/strace")?,
            &args,
            None,
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?;
        let pid = fork_exec(ns, &plan)?;
        drop(theirs);
        let fd = recv_fd(mine.as_raw_fd()).ok().flatten();
        let ok = wait_child(pid)?.ok;
        let tap_ok = fd.as_ref().is_some_and(|f| tap_name(f.as_raw_fd()).is_ok());
        drop(fd);
        if !(ok && tap_ok) {
            note.push_str("strace run failed; ");
        }
        let text = fs::read_to_string(&out).unwrap_or_default();
        syscalls = text
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| {
                let nums: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|t| t.parse::<u64>().ok())
                    .collect();
                // columns: % time, seconds, usecs/call, calls, [errors]; only integers survive
                match nums.as_slice() {
                    [_, calls, errors] => Some((*calls, *errors)),
                    [_, calls] => Some((*calls, 0)),
                    _ => None,
                }
            });
    }
    let mut rss_kb = None;
    if Path::new("/usr/bin/time").exists() {
        let out = dir.join(format!("time-{:?}-{}", prog.role, mode.short()));
        fs::write(&out, "")?;
        set_mode(&out, 0o666)?; // written by `time` running as nobody
        let (mine, theirs) = socketpair()?;
        let mut args: Vec<String> = vec!["-v".into(), "-o".into()];
        args.push(out.to_string_lossy().into_owned());
        args.push(copy);
        args.extend(helper_args(theirs.as_raw_fd()));
        let plan = ExecPlan::new(
            &cstr("/usr/bin/time")?,
            &args,
            mode.uid(),
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?;
        let pid = fork_exec(ns, &plan)?;
        drop(theirs);
        let fd = if prog.role.is_helper() {
            recv_fd(mine.as_raw_fd()).ok().flatten()
        } else {
            None
        };
        let ok = wait_child(pid)?.ok;
        if prog.role.is_helper() && !(ok && fd.is_some()) {
            note.push_str("time run failed; ");
        }
        drop(fd);
        rss_kb = fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes):")
                    .and_then(|v| v.trim().parse().ok())
            });
    }
    Ok(Resource {
        syscalls,
        rss_kb,
        note,
    })
}

/// On the first run of each helper and mode: the tap is on the bridge, up, has the bridge's
/// MTU and a MAC starting with fe.
fn sanity(ns: &Ns, prog: &Prog, mode: Mode, net: &str) -> Res<String> {
    let (run, tap) = run_once(ns, prog, mode)?;
    let Some(fd) = tap.filter(|_| run.ok) else {
        let log = fs::read_to_string(&prog.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        return Err(format!(
            "{} [{}] does not work: {} (stderr: {})",
            prog.label,
            mode.short(),
            run.err.unwrap_or_default(),
            tail.join(" / ")
        )
        .into());
    };
    let name = tap_name(fd.as_raw_fd())?;
    let info = ip(net, &["-o", "link", "show", "dev", &name])?;
    let br_mtu = ip(net, &["-o", "link", "show", "dev", BRIDGE])?
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let mut problems = Vec::new();
    if !info.contains(&format!("master {BRIDGE}")) {
        problems.push("not on the bridge");
    }
    if !info.contains(&format!("mtu {br_mtu} ")) {
        problems.push("MTU differs from the bridge's");
    }
    if !info.contains("link/ether fe:") {
        problems.push("MAC does not start with fe");
    }
    if !info.contains(",UP") && !info.contains("<UP") {
        problems.push("not up");
    }
    Ok(if problems.is_empty() {
        "ok".into()
    } else {
        problems.join(", ")
    })
}

// ---------------------------------------------------------------------------------------------
// Main

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn machine(load_at_start: &str) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "- date: {}\n- load average at the start: {}\n- nproc: {nproc}\n- CPU: {cpu}\n- kernel: {}\n- rustc: {}\n- QEMU package: {}\n- repo commit: {}\n- load average at the end: {}\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        load_at_start,
        sh("uname", &["-srvm"]),
        sh("rustc", &["-V"]),
        sh("dpkg-query", &["-W", "-f", "${Version}", "qemu-system-common"]),
        sh("git", &["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]),
        fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    )
}

fn main() {
    let code = match real_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench failed: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn real_main() -> Res<()> {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("helpers bench: run it with `cargo bench --bench helpers` (as root); nothing to do here");
        return Ok(());
    }
    let o = parse_opts()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the benchmark must run as root (it creates a network namespace and setuid copies)"
                .into(),
        );
    }
    install_signal_handlers();
    let started = Instant::now();
    let load_at_start = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let name = format!("bhbench-{pid}");

    // temp dir (0755, root) with copies, overlay layers and the 0666 tun node
    let dir = tmp.join(&name);
    fs::create_dir(&dir)?;
    let _dir_guard = DirGuard(dir.clone());
    for sub in ["bin", "etc-upper", "etc-upper/qemu", "etc-work"] {
        fs::create_dir(dir.join(sub))?;
    }
    for sub in ["", "bin", "etc-upper", "etc-upper/qemu"] {
        set_mode(&dir.join(sub), 0o755)?;
    }
    let conf = dir.join("etc-upper/qemu/bridge.conf");
    fs::write(&conf, format!("allow {BRIDGE}\n"))?;
    chown_root(&conf)?;
    set_mode(&conf, 0o644)?;
    {
        let d = cstr(dir.as_os_str().as_bytes())?;
        // SAFETY: statvfs is plain old data and `d` a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out-pointer.
        if unsafe { libc::statvfs(d.as_ptr(), &mut st) } != 0 {
            return Err(last_err("statvfs"));
        }
        if st.f_flag & libc::ST_NOSUID != 0 {
            return Err(format!(
                "{} is on a nosuid mount: set TMPDIR elsewhere",
                tmp.display()
            )
            .into());
        }
        let tun = cstr(dir.join("tun").as_os_str().as_bytes())?;
        // SAFETY: valid path; creates a char device node (10, 200) = /dev/net/tun.
        if unsafe { libc::mknod(tun.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) } != 0
        {
            return Err(last_err("mknod tun"));
        }
        set_mode(&dir.join("tun"), 0o666)?;
    }

    // programs
    let mut notes = Vec::new();
    let mut progs = Vec::new();
    let ours_path = o.helper.clone().filter(|p| p.exists());
    let ref_present = o.reference.exists();
    match (&ours_path, ref_present) {
        (Some(p), _) => progs.push(install(&dir, Role::Ours, "bridge-helper", p, None)?),
        (None, true) => {
            notes.push(format!(
                "**bridge-helper binary not found ({}): its column is a STAND-IN running QEMU's helper**",
                o.helper.as_ref().map_or("not built".into(), |p| p.display().to_string())
            ));
            progs.push(install(
                &dir,
                Role::Ours,
                "bridge-helper [stand-in: QEMU]",
                &o.reference,
                None,
            )?);
        }
        (None, false) => return Err("neither bridge-helper nor the reference helper found".into()),
    }
    if ref_present {
        let ref_label = if o.reference == Path::new(REFERENCE) {
            "qemu-bridge-helper".to_string()
        } else {
            format!("reference {}", o.reference.display())
        };
        progs.push(install(
            &dir,
            Role::Reference,
            &ref_label,
            &o.reference,
            None,
        )?);
    } else {
        notes.push(format!(
            "**reference helper {} absent: no ratios**",
            o.reference.display()
        ));
    }
    if cfg!(target_arch = "x86_64") {
        progs.push(install(
            &dir,
            Role::FloorStatic,
            "floor: 129-byte static ELF, exit(0)",
            Path::new("(generated)"),
            Some(tiny_elf()),
        )?);
    }
    progs.push(install(
        &dir,
        Role::FloorDyn,
        "floor: /bin/true (dynamic glibc)",
        Path::new("/bin/true"),
        None,
    )?);

    // network namespace with a bridge
    let status = Command::new("ip").args(["netns", "add", &name]).status()?;
    if !status.success() {
        return Err(format!("ip netns add {name} failed").into());
    }
    let _ns_guard = NetnsGuard(name.clone());
    ip(&name, &["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&name, &["link", "set", BRIDGE, "up"])?;
    let ns = Ns {
        mnt: make_mount_ns(&dir)?,
        net: open_ro(&format!("/run/netns/{name}"))?,
        devnull: open_ro("/dev/null")?,
    };

    eprintln!(
        "bench: netns {name}, N={} K={} rounds={} warmup={} taps={:?}",
        o.n, o.k, o.rounds, o.warmup, o.taps
    );
    let mut sanity_rows = Vec::new();
    for p in progs.iter().filter(|p| p.role.is_helper()) {
        for mode in Mode::ALL {
            sanity_rows.push((p.label.clone(), mode, sanity(&ns, p, mode, &name)?));
        }
    }

    let mut seq: Vec<(usize, SeqResults)> = Vec::new();
    let mut conc: Vec<(usize, usize, Role, Mode, Vec<ConcRound>)> = Vec::new();
    let mut res: BTreeMap<(usize, Role, Mode), Resource> = BTreeMap::new();
    let mut have = 0;
    for &level in &o.taps {
        check_interrupted()?;
        add_taps(&name, &dir, have, level)?;
        have = have.max(level);
        let t = Instant::now();
        eprintln!("bench: {level} taps on the bridge: sequential runs");
        seq.push((level, sequential(&ns, &progs, o.n, o.warmup, &name)?));
        eprintln!(
            "bench:   done in {:.1} s; concurrent runs",
            t.elapsed().as_secs_f64()
        );
        let before = link_count(&name)?;
        let k = o.k.min(BRIDGE_MAX_PORTS.saturating_sub(level));
        if k < o.k {
            notes.push(format!(
                "At {level} taps the concurrent runs use K={k}, not {}: a bridge takes at most {BRIDGE_MAX_PORTS} ports.",
                o.k
            ));
        }
        let helpers: Vec<&Prog> = progs.iter().filter(|p| p.role.is_helper()).collect();
        let mut rounds: BTreeMap<(Role, Mode), Vec<ConcRound>> = BTreeMap::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut order: Vec<(usize, Mode)> = (0..helpers.len())
            .flat_map(|p| Mode::ALL.map(|m| (p, m)))
            .collect();
        for _ in 0..o.rounds {
            rng.shuffle(&mut order);
            for &(pi, mode) in &order {
                {
                    check_interrupted()?;
                    let p = helpers[pi];
                    rounds
                        .entry((p.role, mode))
                        .or_default()
                        .push(concurrent(&ns, p, mode, k)?);
                    let after = link_count(&name)?;
                    if after != before {
                        return Err(format!(
                            "{} taps left behind after a concurrent round",
                            after - before
                        )
                        .into());
                    }
                }
            }
        }
        for ((role, mode), v) in rounds {
            conc.push((level, k, role, mode, v));
        }
        eprintln!("bench:   strace / time runs");
        for p in &progs {
            for mode in Mode::ALL {
                if p.role != Role::FloorDyn {
                    res.insert((level, p.role, mode), resources(&ns, p, mode, &dir)?);
                }
            }
        }
    }

    // ------------------------------------------------------------------ report
    let label = |r: Role| {
        progs
            .iter()
            .find(|p| p.role == r)
            .map_or("?".into(), |p| p.label.clone())
    };
    let has_ref = progs.iter().any(|p| p.role == Role::Reference);
    let mut out = String::new();
    let _ = writeln!(out, "# bridge-helper benchmark: last results\n");
    let _ = writeln!(
        out,
        "Command (as root, from the repository root): `cargo bench --bench helpers{}`\n",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .fold(String::new(), |acc, a| if acc.is_empty() {
                format!(" -- {a}")
            } else {
                format!("{acc} {a}")
            })
    );
    let _ = writeln!(out, "## Machine\n\n{}", machine(&load_at_start));
    for n in &notes {
        let _ = writeln!(out, "{n}\n");
    }
    let _ = writeln!(out, "## Programs\n");
    row(
        &mut out,
        &[
            "program".into(),
            "source".into(),
            "size (bytes)".into(),
            "linkage".into(),
        ],
    );
    row(&mut out, &vec!["---".into(); 4]);
    for p in &progs {
        row(
            &mut out,
            &[
                p.label.clone(),
                format!("`{}`", p.source.display()),
                p.size.to_string(),
                p.linkage.clone(),
            ],
        );
    }
    if let (Some(a), Some(b)) = (
        progs.iter().find(|p| p.role == Role::Ours),
        progs.iter().find(|p| p.role == Role::Reference),
    ) {
        row(
            &mut out,
            &[
                "ratio".into(),
                String::new(),
                r2(ratio(Some(a.size as f64), Some(b.size as f64))),
                String::new(),
            ],
        );
    }
    let _ = writeln!(
        out,
        "\nFirst-run check (tap on the bridge, up, bridge's MTU, MAC fe:…):\n"
    );
    for (l, m, s) in &sanity_rows {
        let _ = writeln!(out, "- {l} [{}]: {s}", m.short());
    }

    let _ = writeln!(
        out,
        "\n## Sequential runs, N={} each after {} warm-up, interleaved (µs; nearest-rank percentiles)\n\n\
         `fd` = spawn → fd received; `exit` = spawn → reaped; `cpu` = child user+sys (wait4); \
         `rss` = ru_maxrss KiB (includes the forked bench image: compare with the floors); \
         ratios are bridge-helper / qemu-bridge-helper.",
        o.n, o.warmup
    );
    let header: Vec<String> = [
        "mode", "program", "fd med", "fd p99", "fd min", "fd max", "exit med", "exit p99",
        "exit min", "exit max", "cpu med", "rss med", "fail/N",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (level, r) in &seq {
        let _ = writeln!(out, "\n### {level} taps already on the bridge\n");
        row(&mut out, &header);
        row(&mut out, &vec!["---".into(); header.len()]);
        for mode in Mode::ALL {
            let sum = |role| r.get(&(role, mode)).map(|v| summarize(v));
            for p in &progs {
                if let Some(s) = sum(p.role) {
                    let mut c = vec![mode.short().to_string(), p.label.clone()];
                    c.extend(summary_cells(&s));
                    row(&mut out, &c);
                }
            }
            if let (Some(a), Some(b)) = (sum(Role::Ours), sum(Role::Reference)) {
                let mut c = vec![mode.short().to_string(), "**ratio**".into()];
                c.extend(ratio_cells(&a, &b));
                row(&mut out, &c);
            }
        }
    }

    let _ = writeln!(
        out,
        "\n## Concurrent: K helpers forked at once on one bridge, {} rounds each, interleaved\n\n\
         `total` = first fork → all reaped (ms, median of rounds [min–max]); \
         `fds` = first fork → all fds received (ms, median).\n",
        o.rounds
    );
    let cells = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    row(
        &mut out,
        &cells(&[
            "taps",
            "K",
            "mode",
            "program",
            "total ms",
            "fds ms",
            "failures",
            "distinct taps (min)",
        ]),
    );
    row(&mut out, &vec!["---".into(); 8]);
    let med = |v: &[f64]| stats(v).map(|s| s.med);
    let get_conc = |level: usize, role: Role, mode: Mode| {
        conc.iter()
            .find(|c| c.0 == level && c.2 == role && c.3 == mode)
            .map(|c| (c.1, &c.4))
    };
    for &level in &o.taps {
        for mode in Mode::ALL {
            for role in [Role::Ours, Role::Reference] {
                if let Some((k, v)) = get_conc(level, role, mode) {
                    let tot: Vec<f64> = v.iter().map(|c| c.total_us / 1e3).collect();
                    let fds: Vec<f64> = v.iter().map(|c| c.all_fds_us / 1e3).collect();
                    let s = stats(&tot).ok_or("no rounds")?;
                    let fails: usize = v.iter().map(|c| c.fails).sum();
                    row(
                        &mut out,
                        &[
                            level.to_string(),
                            k.to_string(),
                            mode.short().into(),
                            label(role),
                            format!("{:.1} [{:.1}–{:.1}]", s.med, s.min, s.max),
                            format!("{:.1}", med(&fds).unwrap_or(0.0)),
                            format!("{fails}/{}", v.len() * k),
                            v.iter().map(|c| c.distinct).min().unwrap_or(0).to_string(),
                        ],
                    );
                }
            }
            if let (Some((k, a)), Some((_, b))) = (
                get_conc(level, Role::Ours, mode),
                get_conc(level, Role::Reference, mode),
            ) {
                let t = |v: &Vec<ConcRound>| med(&v.iter().map(|c| c.total_us).collect::<Vec<_>>());
                let f =
                    |v: &Vec<ConcRound>| med(&v.iter().map(|c| c.all_fds_us).collect::<Vec<_>>());
                row(
                    &mut out,
                    &[
                        level.to_string(),
                        k.to_string(),
                        mode.short().into(),
                        "**ratio**".into(),
                        r2(ratio(t(a), t(b))),
                        r2(ratio(f(a), f(b))),
                        String::new(),
                        String::new(),
                    ],
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "\n## One run each under `strace -c -f` and `/usr/bin/time -v`, at each tap count\n\n\
         setuid/cap modes: strace runs as root and starts the copy with `-u nobody`, so the setuid bit \
         and file capability still apply (counted syscalls are the real setuid/cap path). \
         `time -v` runs as the mode's user; its peak RSS includes `time`'s own forked image: \
         the floor row shows that baseline.\n"
    );
    row(
        &mut out,
        &cells(&[
            "taps",
            "mode",
            "program",
            "syscalls",
            "failed syscalls",
            "peak RSS KiB",
            "note",
        ]),
    );
    row(&mut out, &vec!["---".into(); 7]);
    for &level in &o.taps {
        for mode in Mode::ALL {
            for p in &progs {
                if let Some(r) = res.get(&(level, p.role, mode)) {
                    row(
                        &mut out,
                        &[
                            level.to_string(),
                            mode.short().into(),
                            p.label.clone(),
                            r.syscalls.map_or("—".into(), |s| s.0.to_string()),
                            r.syscalls.map_or("—".into(), |s| s.1.to_string()),
                            r.rss_kb.map_or("—".into(), |v| v.to_string()),
                            r.note.clone(),
                        ],
                    );
                }
            }
            if let (Some(a), Some(b)) = (
                res.get(&(level, Role::Ours, mode)),
                res.get(&(level, Role::Reference, mode)),
            ) {
                row(
                    &mut out,
                    &[
                        level.to_string(),
                        mode.short().into(),
                        "**ratio**".into(),
                        r2(ratio(
                            a.syscalls.map(|s| s.0 as f64),
                            b.syscalls.map(|s| s.0 as f64),
                        )),
                        String::new(),
                        r2(ratio(
                            a.rss_kb.map(|v| v as f64),
                            b.rss_kb.map(|v| v as f64),
                        )),
                        String::new(),
                    ],
                );
            }
        }
    }

    // targets of issue 5
    if has_ref {
        let _ = writeln!(out, "\n## Targets (issue 5)\n");
        row(&mut out, &cells(&["target", "taps", "value", "verdict"]));
        row(&mut out, &vec!["---".into(); 4]);
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        for (level, r) in &seq {
            let level = *level;
            let s = |role, mode| r.get(&(role, mode)).map(|v| summarize(v));
            let fr = |mode, f: fn(Stats) -> f64| {
                ratio(
                    s(Role::Ours, mode).and_then(|x| x.fd).map(f),
                    s(Role::Reference, mode).and_then(|x| x.fd).map(f),
                )
            };
            for (mode, limit) in [(Mode::Setuid, 0.7), (Mode::Root, 0.6)] {
                let v = fr(mode, |x| x.med);
                row(
                    &mut out,
                    &[
                        format!("median spawn→fd ≤ {limit}× ({})", mode.short()),
                        level.to_string(),
                        r2(v),
                        verdict(v.map(|v| v <= limit)).into(),
                    ],
                );
            }
            for mode in Mode::ALL {
                let v = fr(mode, |x| x.p99);
                row(
                    &mut out,
                    &[
                        format!("p99 spawn→fd ≤ 1.0× ({})", mode.short()),
                        level.to_string(),
                        r2(v),
                        verdict(v.map(|v| v <= 1.0)).into(),
                    ],
                );
            }
            // the share of the time above the spawn floor
            if let Some(fl) = s(Role::FloorStatic, Mode::Setuid).and_then(|x| x.exit) {
                let above = |role| {
                    s(role, Mode::Setuid)
                        .and_then(|x| x.fd)
                        .map(|x| x.med - fl.med)
                };
                row(
                    &mut out,
                    &[
                        "(info) median spawn→fd above the static floor (setuid)".into(),
                        level.to_string(),
                        r2(ratio(above(Role::Ours), above(Role::Reference))),
                        String::new(),
                    ],
                );
            }
            for mode in Mode::ALL {
                let (a, b) = (
                    res.get(&(level, Role::Ours, mode)),
                    res.get(&(level, Role::Reference, mode)),
                );
                let sc = a.and_then(|a| a.syscalls).zip(b.and_then(|b| b.syscalls));
                row(
                    &mut out,
                    &[
                        format!("fewer syscalls ({})", mode.short()),
                        level.to_string(),
                        sc.map_or("—".into(), |(a, b)| format!("{} vs {}", a.0, b.0)),
                        verdict(sc.map(|(a, b)| a.0 < b.0)).into(),
                    ],
                );
                let rs = a.and_then(|a| a.rss_kb).zip(b.and_then(|b| b.rss_kb));
                row(
                    &mut out,
                    &[
                        format!("peak RSS no higher ({})", mode.short()),
                        level.to_string(),
                        rs.map_or("—".into(), |(a, b)| format!("{a} vs {b} KiB")),
                        verdict(rs.map(|(a, b)| a <= b)).into(),
                    ],
                );
            }
            let mine = || conc.iter().filter(|c| c.0 == level && c.2 == Role::Ours);
            let k = mine().map(|c| c.1).next().unwrap_or(0);
            let f: usize = mine().flat_map(|c| c.4.iter()).map(|c| c.fails).sum();
            let d = mine()
                .flat_map(|c| c.4.iter())
                .map(|c| c.distinct)
                .min()
                .unwrap_or(0);
            row(
                &mut out,
                &[
                    format!("{k} concurrent: 0 failures, {k} distinct taps"),
                    level.to_string(),
                    format!("{f} failures, min {d} distinct"),
                    verdict(Some(f == 0 && d == k)).into(),
                ],
            );
        }
    }
    let total_fails: usize = seq
        .iter()
        .flat_map(|(_, r)| r.values())
        .flatten()
        .filter(|r| !r.ok)
        .count();
    let _ = writeln!(
        out,
        "\nEvery received fd was checked with TUNGETIFF (must be a tap) and closed; link counts in the \
         namespace were checked to return to their baseline after every sequential phase and every \
         concurrent round. Failed sequential runs in total: {total_fails}. Bench wall time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "\nMethod notes: each run is fork → setns(mount ns) → setns(netns) → setgroups/setresgid/setresuid(65534) \
         (not for root) → execve, timed from just before fork. The private mount namespace has `/etc` as an \
         overlayfs holding `qemu/bridge.conf` = `allow {BRIDGE}` and a 0666 `/dev/net/tun` bind-mounted over \
         the host's 0600 node in all modes (QEMU's helper drops to the caller's uid before opening it, so \
         it needs 0666 in setuid mode as well as cap mode, as on a stock Debian host). Every iteration runs \
         each (program, mode) once in a fixed-seed shuffled order; the floors run the same spawn path."
    );

    println!("{out}");
    if let Some(path) = &o.out {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, &out)?;
        eprintln!("bench: results saved to {}", path.display());
    }
    drop(ns);
    Ok(())
}
