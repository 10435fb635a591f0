//! Setup: the programs and their install modes (setuid, file capability,
//! root), the network and mount namespaces the runs happen in, cleanup
//! guards, signals, and the small system-call wrappers the drivers use.

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{sys, Res, BRIDGE};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

// ---------------------------------------------------------------------------------------------
// Programs and install modes

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Mode {
    Setuid,
    Cap,
    Root,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Setuid, Mode::Cap, Mode::Root];
    pub fn short(self) -> &'static str {
        match self {
            Mode::Setuid => "setuid",
            Mode::Cap => "cap",
            Mode::Root => "root",
        }
    }
    pub fn uid(self) -> Option<u32> {
        match self {
            Mode::Setuid | Mode::Cap => Some(sys::NOBODY),
            Mode::Root => None,
        }
    }
    pub fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Role {
    Ours,
    Reference,
    /// The kernel's work and nothing else (benches/floor.c): what a helper
    /// without ACL, checks or privilege handling would cost.
    FloorWork,
    FloorStatic,
    FloorDyn,
}

impl Role {
    /// Programs that make a tap and send its fd.
    pub fn is_helper(self) -> bool {
        matches!(self, Role::Ours | Role::Reference | Role::FloorWork)
    }
}

pub struct Prog {
    pub role: Role,
    pub label: String,
    pub source: PathBuf,
    /// Arguments before the helper's own (`--use-vnet --fd=N --br=BR`).
    pub args: Vec<String>,
    /// Installed copies, indexed by `Mode::idx`.
    pub copies: [CString; 3],
    pub size: u64,
    pub linkage: String,
    /// stderr of every run goes here (opened by root before fork).
    pub log: PathBuf,
    pub log_fd: OwnedFd,
}

// ---------------------------------------------------------------------------------------------
// Cleanup guards

pub struct NetnsGuard(pub String);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if !sys::delete_netns(&self.0) {
            eprintln!("warning: could not delete netns {}", self.0);
        }
    }
}

pub struct DirGuard(pub PathBuf);
impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// Deletes namespaces and temp dirs left by earlier runs that were killed (SIGKILL skips Drop).
pub fn remove_stale(tmp: &Path) {
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

pub fn cstr(s: impl AsRef<[u8]>) -> Res<CString> {
    Ok(CString::new(s.as_ref().to_vec())?)
}

pub fn last_err(what: &str) -> Box<dyn std::error::Error> {
    format!("{what}: {}", io::Error::last_os_error()).into()
}

pub fn open_ro(path: &str) -> Res<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; the returned fd is checked and owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_err(&format!("open {path}")));
    }
    // SAFETY: `fd` was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub struct Exit {
    pub ok: bool,
    pub status: String,
    pub cpu_us: f64,
    pub maxrss_kb: i64,
}

pub fn wait_child(pid: libc::pid_t) -> Res<Exit> {
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
// Setup

pub fn ip(ns: &str, args: &[&str]) -> Res<String> {
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

pub fn link_count(ns: &str) -> Res<usize> {
    Ok(ip(ns, &["-o", "link", "show"])?.lines().count())
}

/// Forks a short-lived child that builds the private mount namespace; its fd keeps it alive.
pub fn make_mount_ns(dir: &Path) -> Res<OwnedFd> {
    let overlay_opts = cstr(format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        dir.join("etc-upper").display(),
        dir.join("etc-work").display()
    ))?;
    let tun_src = cstr(dir.join("tun").as_os_str().as_bytes())?;
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
            if let Err(step) = sys::mount_private_etc(&overlay_opts, 0, Some(&tun_src)) {
                fail(b'1' + step as u8);
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
        let step = sys::MountStep::ALL
            .get(usize::from(b[0].wrapping_sub(b'1')))
            .map_or("unknown step", |s| s.describe());
        Err(format!("mount namespace setup failed at {step}").into())
    };
    drop(release_w);
    wait_child(pid)?;
    res
}

pub fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: `p` is a valid array for pipe2 to fill.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_err("pipe2"));
    }
    // SAFETY: both fds were just created and are owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

pub fn set_mode(p: &Path, mode: u32) -> Res<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub fn chown_root(p: &Path) -> Res<()> {
    std::os::unix::fs::chown(p, Some(0), Some(0))?;
    Ok(())
}

/// `security.capability` xattr v2 granting cap_net_admin (12) in permitted + effective.
pub fn set_cap_net_admin(p: &Path) -> Res<()> {
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

/// Builds benches/floor.c, static with musl, into `dir`; returns its path.
pub fn build_floor(dir: &Path) -> Res<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/floor.c");
    let out = dir.join("floor-work.build");
    let built = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .map_err(|e| {
            format!(
                "musl-gcc: {e}; the no-checks floor needs musl-tools (scripts/install-test-deps)"
            )
        })?;
    if !built.success() {
        return Err(format!("musl-gcc could not build {}", source.display()).into());
    }
    Ok(out)
}

/// A 129-byte static x86_64 ELF that calls exit(0): the floor of spawning itself.
pub fn tiny_elf() -> Vec<u8> {
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
pub fn linkage(p: &Path) -> String {
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

pub fn install(
    dir: &Path,
    role: Role,
    label: &str,
    source: &Path,
    data: Option<Vec<u8>>,
) -> Res<Prog> {
    let bytes = match data {
        Some(d) => d,
        None => fs::read(source).map_err(|e| format!("read {}: {e}", source.display()))?,
    };
    let stem = match role {
        Role::Ours => "bh",
        Role::Reference => "qemu",
        Role::FloorWork => "floor-work",
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
        args: Vec::new(),
        copies: copies.try_into().map_err(|_| "copies")?,
        size: bytes.len() as u64,
        linkage: linkage(&dir.join("bin").join(format!("{stem}-root"))),
        log,
        log_fd: f.into(),
    })
}

pub fn add_taps(ns: &str, dir: &Path, from: usize, to: usize) -> Res<()> {
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

pub fn install_signal_handlers() {
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

pub fn check_interrupted() -> Res<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(format!("interrupted by signal {}", SIGNAL.load(Ordering::SeqCst)).into());
    }
    Ok(())
}
