//! Capabilities and the prctl calls of the privilege drop that nix does
//! not wrap (the bounding and ambient sets, the dumpable value as the
//! kernel gives it); nix's own wrappers serve for the others.
//! privileges.rs decides what to hold when.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_KILL: u32 = 5;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;

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
    Errno::result(ret)?;
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
    Errno::result(ret)?;
    Ok(())
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<libc::c_int, Errno> {
    // SAFETY: every option used here takes integer arguments only; the
    // unused trailing ones must be zero.
    Errno::result(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Drops from the bounding set every capability not in `keep` (a mask of
/// `1 << CAP_*`), so nothing this process might exec can ever regain one.
/// Stops at the first number the kernel does not know.
pub fn drop_bounding_set(keep: u64) -> Result<(), Errno> {
    for cap in 0..64 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(Errno::EINVAL) if cap > libc::c_ulong::from(CAP_NET_ADMIN) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn clear_ambient() -> Result<(), Errno> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map(drop)
}

/// Whether this process is dumpable as ptrace means it, and so may be
/// examined by its own user (what the service requires of a peer, see
/// `service::identity`): the kernel's SUID_DUMP_USER (1;
/// linux/sched/coredump.h, not in libc). One that started with its real
/// and effective ids apart (under setpriv, or a setuid or setgid program)
/// is not, unless fs.suid_dumpable is 1, and the drop to its real ids does
/// not make it so again; under fs.suid_dumpable 2 it reads 2, as
/// unexaminable as 0.
pub fn dumpable() -> Result<bool, Errno> {
    const SUID_DUMP_USER: libc::c_int = 1;
    prctl(libc::PR_GET_DUMPABLE, 0).map(|value| value == SUID_DUMP_USER)
}

/// Whether capabilities held in this process's user namespace count in
/// its network namespace, where a run makes its tap: they do when the
/// user namespace owns the network namespace or is an ancestor of its
/// owner (the kernel's `ns_capable`), and that is exactly when the kernel
/// answers `NS_GET_USERNS` on it (otherwise EPERM: `ns_get_owner` in
/// kernel/user_namespace.c). Always so in the initial user namespace;
/// not for root of `unshare --user --map-root-user` on the host's network.
pub fn reach_network_namespace() -> Result<bool, Errno> {
    let net = super::files::open_at(None, c"/proc/self/ns/net", libc::O_RDONLY)?;
    // SAFETY: NS_GET_USERNS takes no argument; on success it returns a new
    // descriptor, which nothing else owns and which is closed at once.
    let rc = unsafe { libc::ioctl(net.as_raw_fd(), libc::NS_GET_USERNS) };
    match Errno::result(rc) {
        // SAFETY: the ioctl just returned this open descriptor.
        Ok(owner) => drop(unsafe { OwnedFd::from_raw_fd(owner) }),
        Err(Errno::EPERM) => return Ok(false),
        Err(e) => return Err(e),
    }
    Ok(true)
}
