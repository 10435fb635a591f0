//! The netlink socket options nix has no wrapper for.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

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
        Errno::result(unsafe {
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
