//! The test-support pieces shared by the integration tests and the
//! benchmark: one definition each of what both need from the system.
//!
//! - [`qemu_reference_helper`], [`qemu_helper_truename`] and
//!   [`check_qemu_helper`]: QEMU's `qemu-bridge-helper` as the reference,
//!   found where a `dpkg-divert` put it and checked to really be QEMU's
//!   (never a copy of bridge-helper, which would compare it with itself);
//! - [`NOBODY`], the unprivileged caller;
//! - the tap flags [`IFF_TAP`], [`IFF_NO_PI`], [`IFF_PERSIST`],
//!   [`IFF_VNET_HDR`] (libc's, as the `short` of `struct ifreq`) and
//!   [`tun_iff`] (TUNGETIFF on a received fd);
//! - [`socketpair`] and [`recv_with_fds`] (one `recvmsg` with its
//!   SCM_RIGHTS descriptors);
//! - [`make_tun_node`] (a /dev/net/tun twin of a given mode) and
//!   [`mount_private_etc`] (the mount namespace with an overlay /etc);
//! - [`delete_netns`], for the network-namespace guards.
//!
//! The tests reach it as `common::sys` (re-exported from `common`); the
//! benchmark includes this file alone with
//! `#[path = "../../tests/common/sys.rs"] mod sys;`, so it uses nothing of
//! `common` and has no test policy: errors are returned, and each side
//! panics or reports them its own way.
#![allow(dead_code)]

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unprivileged caller (uid and gid `nobody`).
pub const NOBODY: u32 = 65534;

/// Where Debian's qemu-system-common installs QEMU's helper.
pub const QEMU_HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";

/// The first words QEMU's helper prints on stderr for `--help` (with
/// status 1); bridge-helper's usage line starts differently.
const QEMU_USAGE: &[u8] = b"Usage: qemu-bridge-helper ";

/// Where the real file of QEMU's helper is: `dpkg-divert --truename`
/// names the diverted copy while bridge-helper's package has put itself at
/// [`QEMU_HELPER`], and the path itself otherwise (and where there is no
/// dpkg-divert at all).
pub fn qemu_helper_truename() -> io::Result<PathBuf> {
    match Command::new("dpkg-divert")
        .args(["--truename", QEMU_HELPER])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathBuf::from(QEMU_HELPER)),
        Err(e) => Err(e),
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(PathBuf::from(text.trim_end_matches('\n')))
        }
        Ok(out) => Err(io::Error::other(format!(
            "dpkg-divert --truename {QEMU_HELPER}: {}",
            out.status
        ))),
    }
}

/// `Err(why)` unless `candidate` really is QEMU's helper: a regular file,
/// not byte for byte `ours` (the bridge-helper under test), and answering
/// `--help` as QEMU's does (its usage line on stderr, nothing on stdout,
/// status 1).
pub fn check_qemu_helper(candidate: &Path, ours: &Path) -> Result<(), String> {
    let shown = candidate.display();
    let bytes = fs::read(candidate).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if fs::read(ours).is_ok_and(|o| o == bytes) {
        return Err(format!(
            "{shown} is a copy of bridge-helper ({}), not QEMU's helper",
            ours.display()
        ));
    }
    let out = Command::new(candidate)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.code() != Some(1) || !out.stdout.is_empty() || !out.stderr.starts_with(QEMU_USAGE)
    {
        return Err(format!(
            "{shown} does not answer --help as QEMU's helper does ({}, stdout {:?}, stderr {:?})",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The reference for the differential, persist and end-to-end tests:
/// QEMU's helper where dpkg-divert says it is, checked against the
/// bridge-helper under test. Panics loudly if it is missing or is not
/// QEMU's: those tests must never compare bridge-helper with itself.
/// (Checked once per test binary.)
pub fn qemu_reference_helper() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED.get_or_init(find_and_check_reference).clone()
}

fn find_and_check_reference() -> PathBuf {
    let path = qemu_helper_truename().expect("dpkg-divert --truename");
    assert!(
        path.exists(),
        "{} is missing: install the Debian package qemu-system-common",
        path.display()
    );
    if let Err(why) = check_qemu_helper(&path, Path::new(env!("CARGO_BIN_EXE_bridge-helper"))) {
        panic!("the reference is not QEMU's qemu-bridge-helper: {why}");
    }
    path
}

/// A libc `IFF_*` flag as the `short` of `struct ifreq` (libc declares
/// them `c_int`); a flag that did not fit would fail the build.
const fn ifr_flag(flag: libc::c_int) -> i16 {
    assert!(flag >= i16::MIN as libc::c_int && flag <= i16::MAX as libc::c_int);
    flag as i16
}

pub const IFF_TAP: i16 = ifr_flag(libc::IFF_TAP);
pub const IFF_NO_PI: i16 = ifr_flag(libc::IFF_NO_PI);
pub const IFF_PERSIST: i16 = ifr_flag(libc::IFF_PERSIST);
pub const IFF_VNET_HDR: i16 = ifr_flag(libc::IFF_VNET_HDR);

/// TUNGETIFF on a tun/tap fd: its interface name and flags.
pub fn tun_iff(fd: RawFd) -> io::Result<(String, i16)> {
    let mut ifr = [0u8; 40];
    // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes on 64-bit Linux)
    // into `ifr`, which is that large.
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF, ifr.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = ifr[..16].iter().position(|&b| b == 0).unwrap_or(16);
    Ok((
        String::from_utf8_lossy(&ifr[..end]).into_owned(),
        i16::from_ne_bytes([ifr[16], ifr[17]]),
    ))
}

/// A connected pair of Unix stream sockets, both close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// What one `recvmsg` brought: how many data bytes (in the caller's
/// buffer), the descriptors of its SCM_RIGHTS messages (close-on-exec) and
/// how many control messages there were.
pub struct Received {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
    pub cmsgs: usize,
}

/// One `recvmsg` on `sock` into `buf`, with room for 253 descriptors
/// (SCM_MAX_FD: a whole `--queues` run);
/// `dontwait` makes it non-blocking. Retries EINTR.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], dontwait: bool) -> io::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if dontwait {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut got = Received {
        bytes: msg.bytes,
        fds: Vec::new(),
        cmsgs: 0,
    };
    for c in msg.cmsgs()? {
        got.cmsgs += 1;
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: SCM_RIGHTS installed these descriptors for us; each
            // is taken into an OwnedFd exactly once.
            got.fds
                .extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(got)
}

/// Makes `path` a character device equal to /dev/net/tun (10, 200) with
/// `mode` (0666 as Debian's udev makes it, 0600 as the kernel does), so a
/// run gets the node it needs whatever the machine's own node is.
pub fn make_tun_node(path: &Path, mode: u32) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; mknod only reads it.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode, libc::makedev(10, 200)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The step of [`mount_private_etc`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountStep {
    Unshare,
    Private,
    Overlay,
    Tun,
}

impl MountStep {
    pub const ALL: [MountStep; 4] = [
        MountStep::Unshare,
        MountStep::Private,
        MountStep::Overlay,
        MountStep::Tun,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            MountStep::Unshare => "unshare(CLONE_NEWNS)",
            MountStep::Private => "make / rprivate",
            MountStep::Overlay => "mount overlayfs on /etc",
            MountStep::Tun => "bind-mount 0666 tun over /dev/net/tun",
        }
    }
}

/// Moves the calling process into a new private mount namespace whose
/// /etc is an overlayfs mounted with `options` and `flags` (e.g.
/// `lowerdir=LAYER:/etc`, `MS_RDONLY`), with `tun`, if given, bind-mounted
/// over /dev/net/tun. Only raw system calls on the caller's buffers (no
/// allocation), so it may run between fork and exec; on failure errno is
/// still that of the failed step.
pub fn mount_private_etc(
    options: &CStr,
    flags: libc::c_ulong,
    tun: Option<&CStr>,
) -> Result<(), MountStep> {
    let ok = |r: libc::c_int, step| if r == 0 { Ok(()) } else { Err(step) };
    // SAFETY: unshare and mount with valid NUL-terminated strings or null
    // pointers where the kernel ignores the argument.
    unsafe {
        ok(libc::unshare(libc::CLONE_NEWNS), MountStep::Unshare)?;
        ok(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            MountStep::Private,
        )?;
        ok(
            libc::mount(
                c"overlay".as_ptr(),
                c"/etc".as_ptr(),
                c"overlay".as_ptr(),
                flags,
                options.as_ptr().cast(),
            ),
            MountStep::Overlay,
        )?;
        if let Some(tun) = tun {
            ok(
                libc::mount(
                    tun.as_ptr(),
                    c"/dev/net/tun".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                MountStep::Tun,
            )?;
        }
    }
    Ok(())
}

/// `ip netns del NAME`; whether it worked.
pub fn delete_netns(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "del", name])
        .status()
        .is_ok_and(|s| s.success())
}
