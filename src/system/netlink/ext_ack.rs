//! The netlink socket options nix has no wrapper for.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Asks the kernel for extended acknowledgements (an error string with a
/// failed request) without the request echoed back.
pub fn netlink_ext_ack(sock: BorrowedFd<'_>) -> Result<(), Errno> {
    const INT_LEN: libc::socklen_t = 4;
    const _: () = assert!(std::mem::size_of::<libc::c_int>() == 4);
    let on: libc::c_int = 1;
    for opt in [libc::NETLINK_CAP_ACK, libc::NETLINK_EXT_ACK] {
        // SAFETY: both options read one int through the pointer, whose size
        // is passed alongside.
        Errno::result(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_NETLINK,
                opt,
                (&on as *const libc::c_int).cast(),
                INT_LEN,
            )
        })?;
    }
    Ok(())
}
