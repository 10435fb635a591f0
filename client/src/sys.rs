//! Every `unsafe` block of the crate, each with the reason it is sound:
//! what runs between fork and exec, the receive that turns descriptor
//! numbers into owned descriptors, and the tun ioctl. The rest of the
//! crate sees only safe functions.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Makes the child see `fd` (close-on-exec in this process) as descriptor
/// `at`, inheritable across its exec; other close-on-exec descriptors
/// stay closed to it.
pub fn place_in_child(cmd: &mut Command, fd: RawFd, at: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes two system calls
    // (dup2 or fcntl) on integers captured before the fork, allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if fd == at {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            } else {
                // dup2 leaves the new descriptor without FD_CLOEXEC.
                check(libc::dup2(fd, at))?;
            }
            Ok(())
        });
    }
}

/// Makes `fds` (close-on-exec here) inheritable by the child only.
pub fn inherit_in_child(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: as in place_in_child: only fcntl, on integers of a vector
    // allocated before the fork and only read in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
            Ok(())
        });
    }
}

/// A close-on-exec duplicate of `fd` at number `at` or above. Held across
/// the spawn, it keeps `at` from being any descriptor the standard library
/// opens for the spawn itself (its exec-error pipe), which the child's dup2
/// to `at` would otherwise replace.
pub fn hold_number(fd: BorrowedFd<'_>, at: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer; on success the new
    // descriptor is ours alone, so it is owned exactly once.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, at) })?;
    // SAFETY: just returned by the kernel, open, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// What one `recvmsg` brought.
pub struct Received {
    pub bytes: usize,
    /// Every descriptor that arrived, owned: dropped, they are closed.
    pub fds: Vec<OwnedFd>,
    pub rights_messages: usize,
    pub other_messages: usize,
    pub truncated: bool,
}

/// One non-blocking `recvmsg` with `MSG_CMSG_CLOEXEC`, room for
/// `room` descriptors and `data_room` bytes. Every descriptor the kernel
/// installed is owned on return, whatever else is wrong: the control
/// messages are walked by hand because a truncated message (MSG_CTRUNC)
/// still carries the descriptors that fitted, which must be closed.
pub fn receive(sock: BorrowedFd<'_>, room: usize, data_room: usize) -> io::Result<Received> {
    let fd_size = std::mem::size_of::<RawFd>();
    let fd_bytes = libc::c_uint::try_from(room * fd_size)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = usize::try_from(unsafe { libc::CMSG_SPACE(fd_bytes) })
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // u64 elements: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut data = vec![0u8; data_room];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // The field's type differs between glibc (size_t) and musl (socklen_t).
    #[allow(clippy::useless_conversion)]
    {
        msg.msg_controllen = (control.len() * 8)
            .try_into()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    }
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    let n = loop {
        // SAFETY: msg points at one live iovec over `data` and at
        // `control`, with their true lengths; the kernel writes within
        // them and updates msg's lengths and flags.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        match usize::try_from(n) {
            Ok(n) => break n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    };
    let mut got = Received {
        bytes: n,
        fds: Vec::new(),
        rights_messages: 0,
        other_messages: 0,
        truncated: msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0,
    };
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen as
    // the kernel set them; each header is read where CMSG_FIRSTHDR or
    // CMSG_NXTHDR says one is, inside the aligned buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null, so a whole header is inside the buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            got.rights_messages += 1;
            // SAFETY: CMSG_LEN is arithmetic.
            let empty = usize::try_from(unsafe { libc::CMSG_LEN(0) }).unwrap_or(usize::MAX);
            // size_t on glibc, socklen_t on musl.
            #[allow(clippy::useless_conversion)]
            let len = usize::try_from(header.cmsg_len).unwrap_or(0);
            let count = len.saturating_sub(empty) / fd_size;
            // SAFETY: CMSG_DATA points at the payload of this header.
            let first = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `count` whole descriptors fit in cmsg_len, which
                // the kernel kept within the buffer; the payload may be
                // unaligned, hence read_unaligned.
                let fd = unsafe { first.add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS installed this descriptor in this
                // process for us; it is taken into an OwnedFd once.
                got.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        } else {
            got.other_messages += 1;
        }
        // SAFETY: as for CMSG_FIRSTHDR; returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(got)
}

/// TUNGETIFF: the name and flags of the interface a tun descriptor holds.
pub fn tun_get_iff(fd: BorrowedFd<'_>) -> io::Result<(Vec<u8>, i16)> {
    let mut ifr = [0u8; 40];
    // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes on 64-bit Linux,
    // the size of `ifr`) through the pointer; on any other file it fails
    // without writing.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, ifr.as_mut_ptr()) })?;
    let end = ifr[..16].iter().position(|&b| b == 0).unwrap_or(16);
    Ok((ifr[..end].to_vec(), i16::from_ne_bytes([ifr[16], ifr[17]])))
}
