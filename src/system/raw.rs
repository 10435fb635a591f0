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

/// Lets a write to a file over RLIMIT_FSIZE fail with EFBIG instead of
/// killing the process with SIGXFSZ halfway through a message.
pub fn ignore_sigxfsz() {
    // SAFETY: SIG_IGN is not a handler function, so no code runs in signal
    // context; the call only changes this process's disposition.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Sets SIGSEGV and SIGBUS to SIG_IGN before Rust's runtime starts. The
/// runtime installs its stack-overflow handler (and mmaps an alternate
/// stack for it) only over the default disposition, and that mmap is what
/// aborts the process under a tight RLIMIT_AS. A real fault still kills:
/// the kernel resets an ignored synchronous SIGSEGV/SIGBUS to the default
/// before delivering it. What is lost is only the "has overflowed its
/// stack" message, for a program without deep recursion.
pub fn leave_faults_to_the_kernel() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: SIG_IGN is not a handler function; this only changes the
        // process's disposition.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Makes sure the main thread can grow the stack it needs, before Rust's
/// runtime starts: the soft RLIMIT_STACK is raised towards 8 MiB (as far
/// as the hard limit allows); if even the hard limit leaves less than
/// 256 KiB, the process ends with one line and the environment status
/// instead of dying of SIGSEGV somewhere later.
pub fn ensure_stack() {
    const WANT: libc::rlim_t = 8 << 20;
    const NEED: libc::rlim_t = 256 << 10;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit through the pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < WANT {
        let raised = libc::rlimit {
            rlim_cur: WANT.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_STACK, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur < NEED {
        exit_now(b"bridge-helper: RLIMIT_STACK is too small (at least 256 KiB is needed)\n");
    }
}

/// Ends the process at once with the environment status, without
/// allocating or unwinding, removing an unfinished tap first.
fn exit_now(line: &[u8]) -> ! {
    remove_unfinished_tap();
    // SAFETY: write only reads line.len() bytes of `line`; _exit takes an
    // integer and does not return.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(libc::c_int::from(
            crate::report::error::status::INSTALLATION,
        ))
    }
}

/// The interface index of the tap this run made and has not handed over
/// (0: none). A tap usually dies with its descriptors, but a multiqueue tap
/// made persistent through a queue attached while it had no owner would
/// outlive a run that ends in the middle of `Tap::add_queues`; so a run
/// that ends without choosing to (out of memory, a panic) removes it.
static UNFINISHED_TAP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Marks tap `index` for removal should the run end abnormally.
pub fn remove_on_abnormal_end(index: crate::system::netlink::IfIndex) {
    UNFINISHED_TAP.store(index.0, std::sync::atomic::Ordering::SeqCst);
}

/// The tap was handed over: it is the caller's now.
pub fn tap_handed_over() {
    UNFINISHED_TAP.store(0, std::sync::atomic::Ordering::SeqCst);
}

/// Deletes the unfinished tap, if any, by index, with system calls only:
/// it runs where allocating may be what failed. Best effort (after the
/// final privilege drop it fails with EPERM, and by then the tap is marked
/// and checked). rtnetlink handles a request within the `sendto`, so the
/// tap is gone when this returns.
pub fn remove_unfinished_tap() {
    let index = UNFINISHED_TAP.swap(0, std::sync::atomic::Ordering::SeqCst);
    if index == 0 {
        return;
    }
    const RTM_DELLINK: u16 = 17;
    const NLM_F_REQUEST: u16 = 1;
    // struct nlmsghdr (16 bytes), then struct ifinfomsg (16 bytes) with
    // family AF_UNSPEC and the index.
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[20..24].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: an all-zero sockaddr_nl is valid (the kernel as peer).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = AF_NETLINK;
    // SAFETY: socket, sendto and close take integers and pointers to the
    // two local buffers, with their sizes; nothing else is touched.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return;
        }
        libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            SOCKADDR_NL_LEN,
        );
        libc::close(fd);
    }
}

const AF_NETLINK: libc::sa_family_t = 16;
const _: () = assert!(libc::AF_NETLINK == 16);
const SOCKADDR_NL_LEN: libc::socklen_t = 12;
const _: () = assert!(std::mem::size_of::<libc::sockaddr_nl>() == 12);

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

/// The binary's global allocator. A run is short and allocates little, so
/// it hands out memory from one block, mapped at the first allocation,
/// front to back, and never takes any back: one `mmap` instead of musl's
/// `mmap`/`munmap` per size class and its free lists, which cost a run more
/// than a tenth of a millisecond (bench/LEVERS.md). Memory the block cannot
/// hold comes from the system allocator, and so does everything under a
/// tight RLIMIT_AS or RLIMIT_DATA or when the block cannot be mapped, so
/// that small limits end as they did before the block: status 5 and one
/// line, never a crash (a block in `.bss` made exec itself fail). A failed
/// allocation ends the process that way instead of with Rust's default, a
/// message and SIGABRT. Never returns null.
pub struct Arena {
    /// The block: null until the first allocation, [`UNMAPPED`] if it
    /// could not be mapped.
    block: std::sync::atomic::AtomicPtr<u8>,
    /// Offset of the first byte never handed out; only grows.
    used: std::sync::atomic::AtomicUsize,
}

/// Enough for a run's arguments, files, netlink buffer and audit line; a
/// `--check` over many taps goes on in the system allocator.
const ARENA_BYTES: usize = 256 * 1024;

/// What C's malloc guarantees, and code in the process relies on: the
/// unwinder's exception object asks Rust for 8-byte alignment but is read
/// with 16-byte instructions (a panic crashed with SIGSEGV without this).
const MIN_ALIGN: usize = 16;

/// Marks a block that could not be mapped; never a page address.
const UNMAPPED: *mut u8 = std::ptr::NonNull::dangling().as_ptr();

impl Arena {
    pub const fn new() -> Arena {
        Arena {
            block: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            used: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The block, mapped now if this is the first allocation.
    fn block(&self) -> Option<*mut u8> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        match self.block.load(Acquire) {
            p if p == UNMAPPED => return None,
            p if !p.is_null() => return Some(p),
            _ => {}
        }
        let mine = if roomy_limits() {
            map_block()
        } else {
            UNMAPPED
        };
        let block = match self
            .block
            .compare_exchange(std::ptr::null_mut(), mine, AcqRel, Acquire)
        {
            Ok(_) => mine,
            // Another thread mapped one first: use it, give ours back.
            Err(theirs) => {
                if mine != UNMAPPED {
                    // SAFETY: our own mapping, never handed out.
                    unsafe { libc::munmap(mine.cast(), ARENA_BYTES) };
                }
                theirs
            }
        };
        (block != UNMAPPED).then_some(block)
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let block = self.block.load(std::sync::atomic::Ordering::Acquire);
        block != UNMAPPED
            && !block.is_null()
            && (block as usize..block as usize + ARENA_BYTES).contains(&(ptr as usize))
    }

    /// Reserves `layout` from the block: its address, or `None` when full
    /// or unmapped. Bytes past `used` were never handed out, so they are
    /// still zero.
    fn take(&self, layout: std::alloc::Layout) -> Option<*mut u8> {
        use std::sync::atomic::Ordering::Relaxed;
        let block = self.block()?;
        let base = block as usize;
        let mut used = self.used.load(Relaxed);
        loop {
            let align = layout.align().max(MIN_ALIGN);
            let start = (base + used).checked_next_multiple_of(align)? - base;
            let end = start.checked_add(layout.size())?;
            // `start` inside too: a zero-sized layout (never asked for by
            // std) must not get the address just past the block.
            if end > ARENA_BYTES || start >= ARENA_BYTES {
                return None;
            }
            match self.used.compare_exchange_weak(used, end, Relaxed, Relaxed) {
                Ok(_) => return Some(block.wrapping_add(start)),
                Err(now) => used = now,
            }
        }
    }

    /// Grows the block's most recent allocation, `old` bytes at `ptr` (in
    /// the block), to `new` bytes where it lies, if there is room.
    fn resize_last(&self, ptr: *mut u8, old: usize, new: usize) -> bool {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let start = ptr as usize - self.block.load(Acquire) as usize;
        let Some(end) = start.checked_add(new).filter(|&end| end <= ARENA_BYTES) else {
            return false;
        };
        self.used
            .compare_exchange(start + old, end, Relaxed, Relaxed)
            .is_ok()
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

/// Whether memory is plentiful enough for the block to change nothing but
/// speed. Under a tight RLIMIT_AS the block would take what the stack
/// later needs (a stack that cannot grow is a SIGSEGV); under a tight
/// RLIMIT_DATA, what musl's own allocations need (a run that would have
/// succeeded ends with status 5). Without the block, the system allocator
/// runs out first, and that is the clean exit.
fn roomy_limits() -> bool {
    const ROOMY: libc::rlim_t = 64 << 20;
    [libc::RLIMIT_AS, libc::RLIMIT_DATA]
        .into_iter()
        .all(|resource| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one struct rlimit through the pointer.
            let got = unsafe { libc::getrlimit(resource, &mut lim) };
            got == 0 && (lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= ROOMY)
        })
}

/// A fresh block, or [`UNMAPPED`] (RLIMIT_DATA, no memory).
fn map_block() -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping; no memory of ours is
    // touched. Its pages read as zero until written.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ARENA_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            // NORESERVE changes nothing for 256 KiB but keeps the kernel
            // from merging the block with a neighbouring mapping, so
            // /proc/PID/maps shows it whole (tests/hostile.rs looks).
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        UNMAPPED
    } else {
        mapped.cast()
    }
}

fn or_exit(ptr: *mut u8) -> *mut u8 {
    if ptr.is_null() {
        out_of_memory();
    }
    ptr
}

/// Ends the process at once, without allocating. A tap already made dies
/// with its descriptor; none has been sent (sending allocates nothing after
/// the fact).
fn out_of_memory() -> ! {
    exit_now(b"bridge-helper: out of memory (is RLIMIT_AS or RLIMIT_DATA too low?)\n")
}

// SAFETY: a pointer from the block points to a range that `take`
// reserved for it alone (aligned as asked, inside the mapping), which
// stays valid for the life of the process since nothing is ever unmapped;
// every other pointer comes from `System`, whose guarantees hold, and goes
// back to it. Null is never returned.
unsafe impl std::alloc::GlobalAlloc for Arena {
    // Out of line, each: inlined at every allocation site, the bump and
    // its fallbacks made the binary 90 KiB larger.
    #[inline(never)]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        match self.take(layout) {
            Some(ptr) => ptr,
            // SAFETY: our caller upholds GlobalAlloc::alloc's contract.
            None => or_exit(unsafe { std::alloc::System.alloc(layout) }),
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        match self.take(layout) {
            // Never handed out before, so still as mapped: zero.
            Some(ptr) => ptr,
            // SAFETY: as for alloc.
            None => or_exit(unsafe { std::alloc::System.alloc_zeroed(layout) }),
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if !self.owns(ptr) {
            // SAFETY: not from the block, so from `System`.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: from `System`; our caller upholds the rest.
            return or_exit(unsafe { std::alloc::System.realloc(ptr, layout, size) });
        }
        // Shrinking is free anywhere (nothing is taken back); growing in
        // place only at the end of what was handed out.
        if size <= layout.size() || self.resize_last(ptr, layout.size(), size) {
            return ptr;
        }
        // SAFETY: our caller guarantees that `size`, rounded up to the
        // alignment, does not overflow isize.
        let new_layout =
            unsafe { std::alloc::Layout::from_size_align_unchecked(size, layout.align()) };
        // SAFETY: as for alloc, with the layout just made.
        let new = unsafe { self.alloc(new_layout) };
        // SAFETY: both ranges are valid for the smaller size, and they are
        // disjoint: `new` was reserved after `ptr`'s range was.
        unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(size)) };
        new
    }
}

/// Puts `$name`, a `static` pointing at the `extern "C" fn()` `$f`, in the
/// ELF `.init_array`, so that the C runtime calls `$f` before `main` and
/// before Rust's own start-up code. Used by the binary only (a library
/// user, test or fuzzer must not get it).
#[macro_export]
macro_rules! run_before_std_init {
    ($name:ident = $f:path) => {
        // SAFETY (of the section): the C library calls each .init_array entry as a
        // function, with (argc, argv, envp) that an `extern "C" fn()`
        // ignores; `$f` is such a function, and `#[used]` keeps the entry
        // through LTO and section garbage collection.
        #[used]
        #[link_section = ".init_array"]
        static $name: extern "C" fn() = $f;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    mod arena {
        use std::alloc::{GlobalAlloc, Layout};

        use super::super::{Arena, ARENA_BYTES};

        fn layout(size: usize, align: usize) -> Layout {
            Layout::from_size_align(size, align).unwrap()
        }

        #[test]
        fn hands_out_aligned_disjoint_zeroed_memory() {
            static A: Arena = Arena::new();
            // SAFETY: each pointer is used within its layout only.
            unsafe {
                let a = A.alloc(layout(3, 1));
                let b = A.alloc_zeroed(layout(64, 64));
                assert!(A.owns(a) && A.owns(b));
                assert_eq!(a as usize % 16, 0, "as malloc aligns");
                assert_eq!(b as usize % 64, 0);
                assert!(b as usize >= a as usize + 3);
                assert!(std::slice::from_raw_parts(b, 64).iter().all(|&x| x == 0));
                a.write_bytes(0xff, 3);
                A.dealloc(a, layout(3, 1));
                // Nothing is taken back, so nothing dirty is handed out again.
                let c = A.alloc_zeroed(layout(3, 1));
                assert!(std::slice::from_raw_parts(c, 3).iter().all(|&x| x == 0));
            }
        }

        #[test]
        fn grows_the_last_block_in_place_and_copies_others() {
            static A: Arena = Arena::new();
            // SAFETY: as above; each realloc passes the block's current layout.
            unsafe {
                let a = A.alloc(layout(8, 8));
                a.write_bytes(7, 8);
                let grown = A.realloc(a, layout(8, 8), 4096);
                assert_eq!(grown, a, "the last block grows where it is");
                let b = A.alloc(layout(8, 8));
                let moved = A.realloc(grown, layout(4096, 8), 8192);
                assert_ne!(moved, grown);
                assert!(moved as usize > b as usize);
                assert!(std::slice::from_raw_parts(moved, 8).iter().all(|&x| x == 7));
                assert_eq!(
                    A.realloc(moved, layout(8192, 8), 16),
                    moved,
                    "shrinks in place"
                );
            }
        }

        #[test]
        fn goes_on_in_the_system_allocator_when_full() {
            static A: Arena = Arena::new();
            // SAFETY: as above; the big block goes back to where it came from.
            unsafe {
                let big = A.alloc(layout(ARENA_BYTES - 100, 1));
                assert!(A.owns(big));
                let spill = A.alloc_zeroed(layout(4096, 8));
                assert!(!A.owns(spill));
                assert!(std::slice::from_raw_parts(spill, 4096)
                    .iter()
                    .all(|&x| x == 0));
                let grown = A.realloc(big, layout(ARENA_BYTES - 100, 1), ARENA_BYTES + 1);
                assert!(!A.owns(grown));
                A.dealloc(grown, layout(ARENA_BYTES + 1, 1));
                A.dealloc(spill, layout(4096, 8));
            }
        }
    }

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
