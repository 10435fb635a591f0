//! The tun driver's ioctls and the interface ioctls on a tap's own
//! descriptor: the system calls nix does not wrap. taps/tap.rs decides
//! what to ask.

use std::os::fd::{AsRawFd, BorrowedFd};

use libc::{TUNGETFEATURES, TUNGETIFF, TUNSETIFF, TUNSETOWNER};
use nix::errno::Errno;
use nix::unistd::Uid;

use crate::policy::ifname::IfName;

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

// libc has these as `c_ulong`, which is not the ioctl request type on musl
// (`c_int`); the tests below check the values.
const SIOCSIFHWADDR: libc::Ioctl = 0x8924;
const SIOCGIFHWADDR: libc::Ioctl = 0x8927;
const SIOCGIFINDEX: libc::Ioctl = 0x8933;
const SIOCGIFFLAGS: libc::Ioctl = 0x8913;

/// `struct ifreq` as raw bytes: the name, then a 24-byte union of which we
/// read only plain integers, so no union access is needed.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
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

pub fn tun_features(tun: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer.
    Errno::result(unsafe { libc::ioctl(tun.as_raw_fd(), TUNGETFEATURES, &mut features) })?;
    Ok(features)
}

/// Whether an interface in the socket's network namespace has this name
/// or altname. With CAP_NET_ADMIN effective, a miss also makes the kernel
/// try to load a module `netdev-NAME`: call it without.
pub fn name_in_use(sock: BorrowedFd<'_>, name: &IfName) -> Result<bool, Errno> {
    let mut req = IfReq::named(name);
    // SAFETY: SIOCGIFINDEX reads the NUL-terminated name of a struct ifreq
    // (IfReq's 40 bytes) and writes an int into its union.
    match Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFINDEX, &mut req) }) {
        Ok(_) => Ok(true),
        Err(Errno::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an interface in the socket's network namespace has this name
/// or altname, and if so whether it is running (IFF_RUNNING: up, with the
/// operational state the kernel derives from its carrier). The kernel
/// answers under RCU, without the RTNL lock, and fills in nothing else.
/// The ioctl's flags are 16 bits wide, so IFF_LOWER_UP (the carrier
/// itself) is not among them; IFF_RUNNING follows the carrier through the
/// kernel's link watch, which applies a carrier change about a second
/// later, or later still while many links' events are queued host-wide. As [`name_in_use`]: call it with CAP_NET_ADMIN lowered.
pub fn link_running(sock: BorrowedFd<'_>, name: &IfName) -> Result<Option<bool>, Errno> {
    let mut req = IfReq::named(name);
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name of a struct ifreq
    // (IfReq's 40 bytes) and writes a short into its union.
    match Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req) }) {
        Ok(_) => {
            let flags = i16::from_ne_bytes([req.data[0], req.data[1]]);
            Ok(Some(i32::from(flags) & libc::IFF_RUNNING != 0))
        }
        Err(Errno::ENODEV) => Ok(None),
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
    Errno::result(unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) })?;
    Ok(name_of(&req))
}

/// TUNGETIFF: the attached interface's name and flags.
pub fn tun_get_iff(tun: BorrowedFd<'_>) -> Result<(Vec<u8>, i16), Errno> {
    let mut req = IfReq::default();
    // SAFETY: TUNGETIFF writes a struct ifreq through the pointer.
    Errno::result(unsafe { libc::ioctl(tun.as_raw_fd(), TUNGETIFF, &mut req) })?;
    Ok((
        name_of(&req),
        i16::from_ne_bytes([req.data[0], req.data[1]]),
    ))
}

pub fn tun_set_owner(tun: BorrowedFd<'_>, uid: Uid) -> Result<(), Errno> {
    // SAFETY: TUNSETOWNER takes the uid by value, not a pointer.
    Errno::result(unsafe {
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
/// and byte order, the link type, the carrier (a queue's holder that turns
/// it off leaves the port disabled in the bridge: issue 23). Called
/// through one of our queues once the kernel counts ours alone and the
/// owner is set, so nobody else can change them again.
pub fn tun_reset_shared(tun: BorrowedFd<'_>) -> Result<(), Errno> {
    let fd = tun.as_raw_fd();
    // struct tun_filter { u16 flags; u16 count; u8 addr[][6]; }: none.
    let no_filter = [0u16; 2];
    let detach: libc::c_int = -1;
    let sndbuf: libc::c_int = libc::c_int::MAX;
    // sizeof(struct virtio_net_hdr), the kernel's default.
    let hdr_size: libc::c_int = 10;
    let off: libc::c_int = 0;
    let on: libc::c_int = 1;
    // SAFETY: each request reads at most one int or the 4-byte filter
    // header through its pointer (or takes a plain integer), all of which
    // are live for the call.
    unsafe {
        Errno::result(libc::ioctl(fd, libc::TUNSETTXFILTER, no_filter.as_ptr()))?;
        Errno::result(libc::ioctl(fd, libc::TUNDETACHFILTER, 0))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETFILTEREBPF, &detach))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETSTEERINGEBPF, &detach))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETPERSIST, 0))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETOFFLOAD, 0))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETSNDBUF, &sndbuf))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_size))?;
        Errno::result(libc::ioctl(fd, libc::TUNSETVNETLE, &off))?;
        // Only kernels built with cross-endian vnet headers know it.
        match Errno::result(libc::ioctl(fd, libc::TUNSETVNETBE, &off)) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
        Errno::result(libc::ioctl(
            fd,
            libc::TUNSETLINK,
            libc::c_ulong::from(libc::ARPHRD_ETHER),
        ))?;
        // Kernels before 5.0 have no TUNSETCARRIER, so no holder could
        // have turned it off; the read-back checks the carrier anyway.
        match Errno::result(libc::ioctl(fd, libc::TUNSETCARRIER, &on)) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The tap's MAC address, read through its own descriptor (so no name
/// lookup can race with a rename).
pub fn tap_hwaddr(tun: BorrowedFd<'_>) -> Result<[u8; 6], Errno> {
    let mut req = IfReq::default();
    // SAFETY: on a tun fd, SIOCGIFHWADDR fills a struct ifreq whose union
    // holds a sockaddr: 2 bytes of family, then the address.
    Errno::result(unsafe { libc::ioctl(tun.as_raw_fd(), SIOCGIFHWADDR, &mut req) })?;
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
    Errno::result(unsafe { libc::ioctl(tun.as_raw_fd(), SIOCSIFHWADDR, &mut req) })?;
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
            (SIOCGIFFLAGS, libc::SIOCGIFFLAGS),
        ] {
            assert_eq!(libc::c_ulong::try_from(ours), Ok(theirs));
        }
    }
}
