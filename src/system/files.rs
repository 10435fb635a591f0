//! Files and descriptors: inherited descriptors, `openat` relative to a
//! checked directory, what nix's wrappers drop (mount flags it does not
//! know, a symlink read through its descriptor), extended attributes and
//! the descriptor limit (through nix).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};

/// Borrows a descriptor number the caller says we inherited, after asking
/// the kernel that it is open.
pub fn inherited_fd(fd: RawFd) -> Result<BorrowedFd<'static>, Errno> {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
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
    let fd = Errno::result(unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC) })?;
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
    Errno::result(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
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

/// The soft RLIMIT_NOFILE: every descriptor number must be below it.
pub fn nofile_limit() -> Result<u64, Errno> {
    getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft)
}
