//! The system calls that nix does not wrap safely. Every `unsafe` block of
//! the program is in this file, each with the reason it is sound; the rest
//! of the program sees only safe functions.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use nix::unistd::Uid;

use crate::policy::ifname::IfName;

pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;

// The tun flags as the ifreq's `short` field takes them. libc has them as
// `c_int`; the tests below check that the values agree.
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;
pub const IFF_PERSIST: i16 = 0x0800;
/// TUNSETIFF fails with EBUSY if the name exists, rather than attaching.
pub const IFF_TUN_EXCL: i16 = 0x8000_u16.cast_signed();
/// A tap whose every TUNSETIFF by name adds a queue (`--queues`).
pub const IFF_MULTI_QUEUE: i16 = 0x0100;

use libc::{TUNGETFEATURES, TUNGETIFF, TUNSETIFF, TUNSETOWNER};
// libc has these as `c_ulong`, which is not the ioctl request type on musl
// (`c_int`); the tests below check the values.
const SIOCSIFHWADDR: libc::Ioctl = 0x8924;
const SIOCGIFHWADDR: libc::Ioctl = 0x8927;
const SIOCGIFINDEX: libc::Ioctl = 0x8933;

/// `struct ifreq` as raw bytes: the name, then a 24-byte union of which we
/// read only plain integers, so no union access is needed.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

/// `check` for the `long` that `syscall(2)` returns.
fn check_long(ret: libc::c_long) -> Result<libc::c_int, Errno> {
    check(libc::c_int::try_from(ret).unwrap_or(-1))
}

impl IfReq {
    /// An ifreq naming `name`, NUL-terminated: an IfName is at most 15
    /// bytes, so it always fits whole.
    fn named(name: &IfName) -> IfReq {
        let mut req = IfReq::default();
        let name = name.as_bytes();
        req.name[..name.len()].copy_from_slice(name);
        req
    }
}

fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The three capability sets as bit masks (we never need caps above 63).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

pub fn capget() -> Result<CapSets, Errno> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and an array of two data structs,
    // both live, writable and laid out as the kernel expects (repr(C)).
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check_long(ret)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

pub fn capset(sets: &CapSets) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| {
        let [a, b, c, d, e, f, g, h] = v.to_le_bytes();
        (
            u32::from_le_bytes([a, b, c, d]),
            u32::from_le_bytes([e, f, g, h]),
        )
    };
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: as in capget; the kernel only reads `data`.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check_long(ret)?;
    Ok(())
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<libc::c_int, Errno> {
    // SAFETY: every option used here takes integer arguments only; the
    // unused trailing ones must be zero.
    check(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Empties the bounding set, so nothing this process might exec can ever
/// regain a capability. Stops at the first number the kernel does not know.
pub fn drop_bounding_set() -> Result<(), Errno> {
    for cap in 0..64 {
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(Errno::EINVAL) if cap > libc::c_ulong::from(CAP_NET_ADMIN) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn clear_ambient() -> Result<(), Errno> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers; the remaining
    // arguments must be zero.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

pub fn set_keepcaps(on: bool) -> Result<(), Errno> {
    prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on)).map(drop)
}

pub fn set_no_new_privs() -> Result<(), Errno> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop)
}

/// Borrows a descriptor number the caller says we inherited, after asking
/// the kernel that it is open.
pub fn inherited_fd(fd: RawFd) -> Result<BorrowedFd<'static>, Errno> {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open (checked just above), and this program
    // never closes a descriptor it did not open itself, so it stays open for
    // the rest of the process's life.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// openat(2) of `name` in `dir` (or of an absolute `name` when `dir` is
/// None), always close-on-exec.
pub fn open_at(
    dir: Option<BorrowedFd<'_>>,
    name: &CStr,
    flags: libc::c_int,
) -> Result<OwnedFd, Errno> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `name` is NUL-terminated and outlives the call, which only
    // reads it; the flags take no mode argument (no O_CREAT).
    let fd = check(unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: openat just returned this descriptor: it is open and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount flags of the file system `fd` is on (`statvfs.f_flag`), as
/// the kernel reports them: nix's `Statvfs::flag` drops the flags it does
/// not know, such as ST_NOSYMFOLLOW.
pub fn mount_flags(fd: BorrowedFd<'_>) -> Result<libc::c_ulong, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the whole struct statvfs through the pointer,
    // which points at enough writable memory for one.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it initialised the struct.
    Ok(unsafe { st.assume_init() }.f_flag)
}

/// The target of the symlink that `link` (an `O_PATH|O_NOFOLLOW`
/// descriptor) is, read through that descriptor: no name is looked up.
pub fn read_link(link: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into `buf`, which
    // is live and writable; the empty name (NUL-terminated) makes it read
    // the link `link` refers to.
    let n = unsafe {
        libc::readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| Errno::last())?;
    if n >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// The value of the extended attribute `name` of the file `path` leads to
/// (at most 64 bytes: enough for `security.capability`), or `None`.
pub fn xattr(path: &CStr, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    // SAFETY: `path` and `name` are NUL-terminated; the kernel writes at
    // most `buf.len()` bytes into `buf`, which outlives the call.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    Some(buf.get(..n)?.to_vec())
}

pub fn tun_features(tun: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), TUNGETFEATURES, &mut features) })?;
    Ok(features)
}

/// Whether an interface in the socket's network namespace has this name
/// or altname. With CAP_NET_ADMIN effective, a miss also makes the kernel
/// try to load a module `netdev-NAME`: call it without.
pub fn name_in_use(sock: BorrowedFd<'_>, name: &IfName) -> Result<bool, Errno> {
    let mut req = IfReq::named(name);
    // SAFETY: SIOCGIFINDEX reads the NUL-terminated name of a struct ifreq
    // (IfReq's 40 bytes) and writes an int into its union.
    match check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFINDEX, &mut req) }) {
        Ok(_) => Ok(true),
        Err(Errno::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// TUNSETIFF with a name or a name pattern; returns the name the kernel
/// gave the interface.
pub fn tun_set_iff(tun: BorrowedFd<'_>, pattern: &IfName, flags: i16) -> Result<Vec<u8>, Errno> {
    let mut req = IfReq::named(pattern);
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes, which
    // IfReq is) through the pointer.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) })?;
    Ok(name_of(&req))
}

/// TUNGETIFF: the attached interface's name and flags.
pub fn tun_get_iff(tun: BorrowedFd<'_>) -> Result<(Vec<u8>, i16), Errno> {
    let mut req = IfReq::default();
    // SAFETY: TUNGETIFF writes a struct ifreq through the pointer.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), TUNGETIFF, &mut req) })?;
    Ok((
        name_of(&req),
        i16::from_ne_bytes([req.data[0], req.data[1]]),
    ))
}

pub fn tun_set_owner(tun: BorrowedFd<'_>, uid: Uid) -> Result<(), Errno> {
    // SAFETY: TUNSETOWNER takes the uid by value, not a pointer.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            TUNSETOWNER,
            libc::c_ulong::from(uid.as_raw()),
        )
    })?;
    Ok(())
}

/// Puts back every setting of a multiqueue tap that whoever holds one of
/// its queues may change without privilege, and that applies to the whole
/// tap: the TX filter, a classic or eBPF filter, the eBPF steering
/// program, persistence, offloads, the send buffer, the vnet header's size
/// and byte order, the link type. Called through one of our queues once
/// the kernel counts ours alone and the owner is set, so nobody else can
/// change them again.
pub fn tun_reset_shared(tun: BorrowedFd<'_>) -> Result<(), Errno> {
    let fd = tun.as_raw_fd();
    // struct tun_filter { u16 flags; u16 count; u8 addr[][6]; }: none.
    let no_filter = [0u16; 2];
    let detach: libc::c_int = -1;
    let sndbuf: libc::c_int = libc::c_int::MAX;
    // sizeof(struct virtio_net_hdr), the kernel's default.
    let hdr_size: libc::c_int = 10;
    let off: libc::c_int = 0;
    // SAFETY: each request reads at most one int or the 4-byte filter
    // header through its pointer (or takes a plain integer), all of which
    // are live for the call.
    unsafe {
        check(libc::ioctl(fd, libc::TUNSETTXFILTER, no_filter.as_ptr()))?;
        check(libc::ioctl(fd, libc::TUNDETACHFILTER, 0))?;
        check(libc::ioctl(fd, libc::TUNSETFILTEREBPF, &detach))?;
        check(libc::ioctl(fd, libc::TUNSETSTEERINGEBPF, &detach))?;
        check(libc::ioctl(fd, libc::TUNSETPERSIST, 0))?;
        check(libc::ioctl(fd, libc::TUNSETOFFLOAD, 0))?;
        check(libc::ioctl(fd, libc::TUNSETSNDBUF, &sndbuf))?;
        check(libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_size))?;
        check(libc::ioctl(fd, libc::TUNSETVNETLE, &off))?;
        // Only kernels built with cross-endian vnet headers know it.
        match check(libc::ioctl(fd, libc::TUNSETVNETBE, &off)) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
        check(libc::ioctl(
            fd,
            libc::TUNSETLINK,
            libc::c_ulong::from(libc::ARPHRD_ETHER),
        ))?;
    }
    Ok(())
}

/// The tap's MAC address, read through its own descriptor (so no name
/// lookup can race with a rename).
pub fn tap_hwaddr(tun: BorrowedFd<'_>) -> Result<[u8; 6], Errno> {
    let mut req = IfReq::default();
    // SAFETY: on a tun fd, SIOCGIFHWADDR fills a struct ifreq whose union
    // holds a sockaddr: 2 bytes of family, then the address.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), SIOCGIFHWADDR, &mut req) })?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.data[2..8]);
    Ok(mac)
}

/// Sets the tap's MAC address through its own descriptor (no name is
/// looked up), while it is still down.
pub fn tap_set_hwaddr(tun: BorrowedFd<'_>, mac: [u8; 6]) -> Result<(), Errno> {
    let mut req = IfReq::default();
    req.data[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    req.data[2..8].copy_from_slice(&mac);
    // SAFETY: on a tun fd, SIOCSIFHWADDR reads a struct ifreq whose union
    // holds a sockaddr (family, then the address): IfReq's 40 bytes.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), SIOCSIFHWADDR, &mut req) })?;
    Ok(())
}

fn name_of(req: &IfReq) -> Vec<u8> {
    let end = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.name.len());
    req.name[..end].to_vec()
}

/// The soft RLIMIT_NOFILE: every descriptor number must be below it.
pub fn nofile_limit() -> Result<u64, Errno> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit through the pointer.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim.rlim_cur)
}

/// Asks the kernel for extended acknowledgements (an error string with a
/// failed request) without the request echoed back.
pub fn netlink_ext_ack(sock: BorrowedFd<'_>) -> Result<(), Errno> {
    const INT_LEN: libc::socklen_t = 4;
    const _: () = assert!(std::mem::size_of::<libc::c_int>() == 4);
    const SOL_NETLINK: libc::c_int = 270;
    const NETLINK_CAP_ACK: libc::c_int = 10;
    const NETLINK_EXT_ACK: libc::c_int = 11;
    let on: libc::c_int = 1;
    for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
        // SAFETY: both options read one int through the pointer, whose size
        // is passed alongside.
        check(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                SOL_NETLINK,
                opt,
                (&on as *const libc::c_int).cast(),
                INT_LEN,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_kernel_constants_are_libcs() {
        for (ours, theirs) in [
            (IFF_TAP, libc::IFF_TAP),
            (IFF_NO_PI, libc::IFF_NO_PI),
            (IFF_VNET_HDR, libc::IFF_VNET_HDR),
            (IFF_PERSIST, libc::IFF_PERSIST),
            (IFF_TUN_EXCL, libc::IFF_TUN_EXCL),
            (IFF_MULTI_QUEUE, libc::IFF_MULTI_QUEUE),
        ] {
            assert_eq!(i32::from(ours.cast_unsigned()), theirs);
        }
        for (ours, theirs) in [
            (SIOCSIFHWADDR, libc::SIOCSIFHWADDR),
            (SIOCGIFHWADDR, libc::SIOCGIFHWADDR),
            (SIOCGIFINDEX, libc::SIOCGIFINDEX),
        ] {
            assert_eq!(libc::c_ulong::try_from(ours), Ok(theirs));
        }
    }
}
