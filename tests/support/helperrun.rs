//! Runs a bridge helper (QEMU's or ours) the way QEMU and libvirt do, and
//! reports what came back: the decision and, when a tap was handed over,
//! its properties as the kernel sees them.
//!
//! Each run gets a fresh `common::Sandbox` (its /etc overlay holds this
//! run's files, with the owners and modes asked for; a 0666 tun node as on
//! a stock Debian system) inside the test's network namespace, and runs the
//! helper as uid 65534 with the supplementary groups, cwd, argument vector
//! and socket fd number asked for.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{self, time, Jail, NetNs, Sandbox, NOBODY};

/// Group used for `root:GROUP 0640` includes; the caller is put in it or not.
pub const ACL_GROUP: u32 = 4242;

/// Names of all tun/tap devices in the namespace.
pub fn tun_devices(ns: &NetNs) -> Vec<String> {
    ns.ip(&["-o", "link", "show", "type", "tun"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Installed copies of a helper binary, kept for the whole test.
pub struct Installed {
    pub path: PathBuf,
    _sandbox: Sandbox,
}

impl Installed {
    pub fn new(binary: impl AsRef<Path>, mode: common::Mode) -> Installed {
        let binary = binary.as_ref();
        assert!(binary.exists(), "{} is missing", binary.display());
        let sandbox = Sandbox::new();
        let path = sandbox.install(binary, mode);
        Installed {
            path,
            _sandbox: sandbox,
        }
    }
}

/// One file under /etc (path relative to /etc, e.g. `qemu/bridge.conf`).
#[derive(Clone, Debug)]
pub struct EtcFile {
    pub rel: String,
    pub data: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl EtcFile {
    pub fn root(rel: &str, data: impl Into<Vec<u8>>) -> EtcFile {
        EtcFile {
            rel: rel.into(),
            data: data.into(),
            uid: 0,
            gid: 0,
            mode: 0o644,
        }
    }
    pub fn owned(rel: &str, data: impl Into<Vec<u8>>, uid: u32, gid: u32, mode: u32) -> EtcFile {
        EtcFile {
            rel: rel.into(),
            data: data.into(),
            uid,
            gid,
            mode,
        }
    }
}

/// How the caller runs the helper.
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// Arguments; the literal `{fd}` inside one is replaced by the fd number.
    pub args: Vec<Vec<u8>>,
    /// fd number the socket end gets in the helper.
    pub fd: RawFd,
    pub groups: Vec<u32>,
    /// cwd of the helper; files to create there (root-owned 0644).
    pub cwd_files: Vec<(String, Vec<u8>)>,
}

/// What a tap looks like from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapProps {
    /// TUNGETIFF flags (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_PERSIST...).
    pub flags: i16,
    pub mtu: u32,
    pub mac_first_byte: u8,
    pub master: Option<String>,
    pub up: bool,
    /// Bytes of ordinary data that came with the fd.
    pub data: Vec<u8>,
    /// How many fds came, in how many control messages.
    pub fds: usize,
    pub cmsgs: usize,
    /// Deleted once the received fd was closed.
    pub gone_after_close: bool,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub tap: Option<TapProps>,
    /// `ip -d link` line of the tap, for messages and informational diffs.
    pub tap_detail: String,
    pub tap_name: String,
    /// The tap's owner uid as sysfs shows it (-1: none); informational.
    pub owner: Option<i64>,
    /// tun/tap devices left in the namespace after the run (should be none).
    pub leftover_taps: Vec<String>,
}

impl Outcome {
    /// Access granted: exit 0 and a tap handed over.
    pub fn accepted(&self) -> bool {
        self.status == Some(0) && self.tap.is_some()
    }
    pub fn describe(&self) -> String {
        match (&self.tap, self.status, self.signal) {
            (Some(t), _, _) => format!(
                "ACCEPT status={:?} tap={} {t:?}",
                self.status, self.tap_name
            ),
            (None, _, Some(sig)) => format!("CRASH signal {sig} stderr={:?}", self.stderr),
            (None, st, _) => format!("REFUSE status={st:?} stderr={:?}", self.stderr),
        }
    }
}

/// Runs `helper` once in `ns` with `files` under /etc, as uid 65534.
pub fn run_helper(ns: &NetNs, helper: &Path, files: &[EtcFile], call: &Call) -> Outcome {
    let sb = Sandbox::new();
    let layer = sb.dir.join("layer");
    for f in files {
        let p = layer.join(&f.rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &f.data).unwrap();
        std::os::unix::fs::chown(&p, Some(f.uid), Some(f.gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).unwrap();
    }
    let cwd = sb.dir.join("cwd");
    fs::create_dir_all(&cwd).unwrap();
    fs::set_permissions(&cwd, fs::Permissions::from_mode(0o755)).unwrap();
    for (name, data) in &call.cwd_files {
        fs::write(cwd.join(name), data).unwrap();
    }

    let (ours, theirs) = common::socketpair();
    let fdnum = call.fd;
    let args: Vec<Vec<u8>> = call
        .args
        .iter()
        .map(|a| {
            let pat = b"{fd}";
            match a.windows(pat.len()).position(|w| w == pat) {
                Some(i) => [&a[..i], fdnum.to_string().as_bytes(), &a[i + pat.len()..]].concat(),
                None => a.clone(),
            }
        })
        .collect();
    let jail = Jail {
        uid: Some(NOBODY),
        gid: None,
        groups: call.groups.clone(),
        tun_0666: true,
    };
    let mut cmd = sb.command(ns, helper, jail);
    let sock_fd = theirs.as_raw_fd();
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)))
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: runs after the harness's own pre_exec, between fork and exec;
    // only dup2/fcntl on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            let r = if sock_fd == fdnum {
                libc::fcntl(fdnum, libc::F_SETFD, 0)
            } else {
                libc::dup2(sock_fd, fdnum)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = common::spawn(&mut cmd);
    drop(theirs);
    let out = wait_output(child, time::secs(20));
    inspect(ns, out, ours)
}

/// Collects what the helper handed over (the tap stays alive while its fd
/// is queued on our end), inspects the tap, closes it, checks it is gone.
fn inspect(ns: &NetNs, out: std::process::Output, ours: OwnedFd) -> Outcome {
    let run = common::HelperRun::collect(out, ours);
    let mut outcome = Outcome {
        status: run.code,
        signal: run.signal,
        stderr: run.stderr.trim().to_owned(),
        tap: None,
        tap_detail: String::new(),
        tap_name: String::new(),
        owner: None,
        leftover_taps: Vec::new(),
    };
    if let Some(fd) = run.fds.first() {
        let (name, flags) = common::tun_get_iff(fd);
        let detail = ns.ip(&["-o", "-d", "link", "show", "dev", &name]);
        outcome.owner = Some(ns.tap_state(&name).owner);
        let fds = run.fds.len();
        drop(run.fds);
        let deadline = Instant::now() + time::secs(5);
        let mut gone = false;
        while Instant::now() < deadline {
            if !tun_devices(ns).contains(&name) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        outcome.tap = Some(TapProps {
            flags,
            mtu: field(&detail, " mtu ")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0),
            mac_first_byte: field(&detail, " link/ether ")
                .and_then(|m| u8::from_str_radix(&m[..2.min(m.len())], 16).ok())
                .unwrap_or(0),
            master: field(&detail, " master ").map(str::to_owned),
            up: detail
                .split('>')
                .next()
                .is_some_and(|f| f.split([',', '<']).any(|x| x == "UP")),
            data: run.data.clone(),
            fds,
            cmsgs: run.cmsgs,
            gone_after_close: gone,
        });
        outcome.tap_detail = detail;
        outcome.tap_name = name;
    }
    outcome.leftover_taps = tun_devices(ns);
    // Never let one run's leftovers influence the next.
    for t in &outcome.leftover_taps {
        let _ = std::process::Command::new("ip")
            .args(["-n", &ns.name, "link", "del", "dev", t])
            .output();
    }
    outcome
}

fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)?;
    s[i + key.len()..].split_whitespace().next()
}

/// `wait_with_output` with a deadline: a hung helper is killed.
pub fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    use std::io::Read;
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().unwrap();
            panic!("helper hung for {timeout:?}; killed ({st})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}
