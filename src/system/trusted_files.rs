//! Which files may speak for the administrator: the walk of an ACL path.
//!
//! An ACL file counts only if nobody but root could have chosen what it
//! says. Whoever can change a directory on the way to a file decides which
//! file the path names, so the decision is made on the path *as written*:
//! this module looks each component up itself, from `/`, with
//! `O_PATH|O_NOFOLLOW`, reads every symlink and follows it itself, and
//! checks every object it meets before it looks anything up in it. The
//! kernel's own resolution (`open(path)`, then a look at the real path)
//! would let a user's directory on the way choose among root's files.
//!
//! The rule, for every directory a lookup happens in:
//! - it is owned by root and not writable by group or others; or
//! - it is owned by root, group- or world-writable and **sticky** (`/tmp`,
//!   `/var/tmp`, NixOS's `/nix/store` 1775 root:nixbld, Guix's
//!   `/gnu/store`). In a sticky directory only an entry's owner, the
//!   directory's owner or root may rename or remove an entry, so a
//!   root-owned entry there stays root's choice. The entry looked up in it
//!   must therefore be owned by root, and, if it is not a directory, the
//!   kernel must refuse hard links to other users' files
//!   (`fs.protected_hardlinks = 1`): otherwise anyone who can write the
//!   directory could have linked any root-owned file in under that name.
//!   A name missing there is an error, not a skip: anyone who can write
//!   the directory could create it.
//!
//! and for every object: not on procfs, sysfs, FUSE or another pseudo or
//! user-mounted file system (a magic link such as `/proc/self/fd/N` only
//! exists on procfs, so it never gets in). The file itself must be a
//! regular file owned by root and not writable by group or others.
//!
//! Races: every directory a lookup happens in was checked through the
//! descriptor the lookup uses, and only root can change what its entries
//! are (in a sticky one, only root or the root-owned entry's owner, root).
//! The file is checked through the descriptor it is read from. A read-only
//! mount is not trust on its own: the same directory may be writable
//! through another mount, so only owners and modes count.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::sys::stat::{fstat, FileStat, SFlag};

use crate::policy::files::{FileText, Files, OpenError};
use crate::policy::untrusted::{Untrusted, MAX_SYMLINKS};
use crate::system::files;

/// A file the walk found trustworthy, open for reading.
pub struct Trusted {
    pub file: File,
    /// (device, inode): what an include cycle is detected by.
    pub id: (u64, u64),
}

fn io_error(e: Errno) -> OpenError {
    match e {
        Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM => OpenError::Resources(e.into()),
        _ => OpenError::Io(e.into()),
    }
}

/// A directory the walk has checked and may look names up in.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Group- or world-writable (and so, having passed, sticky).
    open_to_others: bool,
    mode: u32,
    gid: u32,
    /// On an automounter's file system: a mount that did not happen.
    autofs: bool,
}

/// Walks `path` as written, from `/`, and opens the file it names if
/// every step is trusted. A relative `path` is taken from `/`, never from
/// the caller's working directory.
pub fn open(path: &Path) -> Result<Trusted, OpenError> {
    Walk::default().run(path)
}

/// What one run's walks share: the ACL, its includes and the settings file
/// mostly live in one directory.
#[derive(Default)]
struct Walk {
    /// Devices whose file system type was already found acceptable, and
    /// whether it is an automounter's: one `fstatfs` per file system, not
    /// per component.
    fs_checked: Vec<(u64, Fs)>,
    /// The caller's effective and supplementary groups, once asked.
    groups: Option<Vec<u32>>,
    hardlinks_protected: Option<bool>,
    root: Option<Rc<Dir>>,
    /// Directories a file was looked up in, checked, by their real path.
    /// Only root can change what is in them, so a later walk may start
    /// there as soundly as this one went on from them.
    parents: Vec<Rc<Dir>>,
}

/// Checked directories kept open at once, so a long include list cannot
/// use up the caller's descriptor limit.
const KEPT_DIRS: usize = 3;

const O_LOOKUP: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW;
const O_READ: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

fn is(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

impl Walk {
    fn run(&mut self, path: &Path) -> Result<Trusted, OpenError> {
        // Components still to walk, the next one last.
        let mut pending: Vec<Vec<u8>> = Vec::new();
        push_components(&mut pending, path.as_os_str().as_bytes());
        let mut dir = match self.kept_parent(&pending) {
            Some(parent) => {
                pending.truncate(1);
                parent
            }
            None => self.root()?,
        };
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if links == 0 && pending.is_empty() {
                self.keep(&dir);
            }
            match name.as_slice() {
                b"." => continue,
                b".." => {
                    dir = self.parent(&dir)?;
                    continue;
                }
                _ => {}
            }
            let at = dir.path.join(std::ffi::OsStr::from_bytes(&name));
            let cname = CString::new(name).map_err(|_| OpenError::Io(Errno::EINVAL.into()))?;
            let last = pending.is_empty();
            if last {
                // The common case in one step: the file itself, opened for
                // reading, checked through the descriptor that reads it.
                match files::open_at(Some(dir.fd.as_fd()), &cname, O_READ) {
                    Ok(fd) => return self.file(&dir, &at, fd),
                    // A symlink (O_NOFOLLOW), or not readable: look closer.
                    Err(Errno::ELOOP | Errno::EACCES) => {}
                    Err(e) => return Err(self.failed_lookup(&dir, &cname, at, e)),
                }
            }
            let fd = look_up(&dir, &cname, last)
                .map_err(|e| self.failed_lookup(&dir, &cname, at.clone(), e))?;
            let st = fstat(fd.as_raw_fd()).map_err(io_error)?;
            self.entry(&dir, &at, &st)?;
            let fs = self.filesystem(fd.as_fd(), &st, &at)?;
            if is(&st, SFlag::S_IFLNK) {
                // A mount flag, so not cached by device: a bind mount of
                // the same file system may have it or not. Links are few.
                if files::mount_flags(fd.as_fd()).map_err(io_error)? & ST_NOSYMFOLLOW != 0 {
                    return Err(OpenError::Refused(Untrusted::NoSymlinks { at }));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(OpenError::Refused(Untrusted::Loop));
                }
                let target = files::read_link(fd.as_fd()).map_err(io_error)?;
                if target.first() == Some(&b'/') {
                    dir = self.root()?;
                }
                push_components(&mut pending, &target);
                if pending.is_empty() {
                    // A link to "/": the walk ends on a directory.
                    return Err(OpenError::Refused(Untrusted::NotRegular));
                }
            } else if is(&st, SFlag::S_IFDIR) {
                if last {
                    return Err(OpenError::Refused(Untrusted::NotRegular));
                }
                dir = Rc::new(directory(fd, at, &st, fs.autofs)?);
            } else if last {
                // Reached only when the read-only open said EACCES.
                if !is(&st, SFlag::S_IFREG) {
                    return Err(OpenError::Refused(Untrusted::NotRegular));
                }
                file_itself(&at, &st)?;
                return Err(unreadable(&dir, &cname, at));
            } else if dir.autofs {
                return Err(self.failed_lookup(&dir, &cname, at, Errno::ENOTDIR));
            } else {
                // A file where a directory should be: ENOTDIR to the
                // kernel, "missing" to QEMU. The entry passed the checks
                // above, so it is root's choice even in a sticky directory
                // others can write: they can neither remove nor replace
                // it, so nobody but root made the path missing.
                return Err(OpenError::Missing);
            }
        }
        // The path named a directory ("/", "/etc/").
        Err(OpenError::Refused(Untrusted::NotRegular))
    }

    /// The kept directory that `components` (the path as written, the
    /// file's name first to pop) names as its file's parent, if the path
    /// is plain (no `.` or `..`) and that directory was walked before.
    fn kept_parent(&self, components: &[Vec<u8>]) -> Option<Rc<Dir>> {
        let (_, parent) = components.split_first()?;
        if parent.iter().any(|c| c == b"." || c == b"..") {
            return None;
        }
        let mut written = PathBuf::from("/");
        written.extend(parent.iter().rev().map(|c| std::ffi::OsStr::from_bytes(c)));
        self.parents.iter().find(|d| d.path == written).cloned()
    }

    fn keep(&mut self, dir: &Rc<Dir>) {
        if self.parents.len() < KEPT_DIRS && !self.parents.iter().any(|d| d.path == dir.path) {
            self.parents.push(Rc::clone(dir));
        }
    }

    fn root(&mut self) -> Result<Rc<Dir>, OpenError> {
        if let Some(root) = &self.root {
            return Ok(Rc::clone(root));
        }
        let fd = files::open_at(None, c"/", libc::O_PATH | libc::O_DIRECTORY).map_err(io_error)?;
        let st = fstat(fd.as_raw_fd()).map_err(io_error)?;
        let at = PathBuf::from("/");
        let fs = self.filesystem(fd.as_fd(), &st, &at)?;
        let root = Rc::new(directory(fd, at, &st, fs.autofs)?);
        self.root = Some(Rc::clone(&root));
        Ok(root)
    }

    /// `..`: the kernel's parent of the directory we are in (across a
    /// mount point too), checked like any other directory.
    fn parent(&mut self, dir: &Dir) -> Result<Rc<Dir>, OpenError> {
        let fd = files::open_at(
            Some(dir.fd.as_fd()),
            c"..",
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(io_error)?;
        let st = fstat(fd.as_raw_fd()).map_err(io_error)?;
        let at = dir
            .path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let fs = self.filesystem(fd.as_fd(), &st, &at)?;
        Ok(Rc::new(directory(fd, at, &st, fs.autofs)?))
    }

    /// The file at the end of the walk, open for reading.
    fn file(&mut self, dir: &Dir, at: &Path, fd: OwnedFd) -> Result<Trusted, OpenError> {
        let st = fstat(fd.as_raw_fd()).map_err(io_error)?;
        self.entry(dir, at, &st)?;
        self.filesystem(fd.as_fd(), &st, at)?;
        if !is(&st, SFlag::S_IFREG) {
            return Err(OpenError::Refused(Untrusted::NotRegular));
        }
        file_itself(at, &st)?;
        Ok(Trusted {
            file: File::from(fd),
            id: (st.st_dev, st.st_ino),
        })
    }

    /// A lookup of `name` in `dir` failed: a skip only where nobody but
    /// root could have made the name missing.
    fn failed_lookup(&self, dir: &Dir, name: &CStr, at: PathBuf, e: Errno) -> OpenError {
        if e == Errno::ENOENT && !dir.autofs {
            match unmounted_automount(dir, name) {
                Ok(true) => {
                    return OpenError::Refused(Untrusted::NotMounted {
                        dir: at.clone(),
                        at,
                    })
                }
                Ok(false) => {}
                Err(e) => return io_error(e),
            }
        }
        match e {
            Errno::ENOENT | Errno::ENOTDIR if dir.autofs => {
                OpenError::Refused(Untrusted::NotMounted {
                    at,
                    dir: dir.path.clone(),
                })
            }
            Errno::ENOENT | Errno::ENOTDIR if dir.open_to_others => {
                OpenError::Refused(Untrusted::MissingInWritable {
                    at,
                    dir: dir.path.clone(),
                    mode: dir.mode,
                })
            }
            Errno::ENOENT | Errno::ENOTDIR => OpenError::Missing,
            // In a directory others can write, nothing is skipped.
            Errno::EACCES if dir.open_to_others => {
                OpenError::Refused(Untrusted::MissingInWritable {
                    at,
                    dir: dir.path.clone(),
                    mode: dir.mode,
                })
            }
            Errno::EACCES => OpenError::Unreadable,
            e => io_error(e),
        }
    }

    /// What an entry of `dir` must be, given who else can write `dir`.
    fn entry(&mut self, dir: &Dir, at: &Path, st: &FileStat) -> Result<(), OpenError> {
        if !dir.open_to_others {
            return Ok(());
        }
        if st.st_uid != 0 {
            return Err(OpenError::Refused(Untrusted::StickyEntry {
                at: at.to_path_buf(),
                dir: dir.path.clone(),
                uid: st.st_uid,
                symlink: is(st, SFlag::S_IFLNK),
            }));
        }
        // A root-owned directory can only have been put there by root: moving
        // a directory needs write permission on it (its ".." changes). A
        // root-owned file or symlink can be brought in by anyone who can
        // write here: renamed out of any directory they can write (a root
        // file left in their home, say), or hard-linked unless the kernel
        // forbids linking others' files.
        if is(st, SFlag::S_IFDIR) {
            return Ok(());
        }
        let planted = |group| {
            Err(OpenError::Refused(Untrusted::Planted {
                at: at.to_path_buf(),
                dir: dir.path.clone(),
                group,
                symlink: is(st, SFlag::S_IFLNK),
            }))
        };
        if dir.mode & 0o002 != 0 {
            return planted(None);
        }
        // Group-writable only (NixOS's and Guix's stores): the group's
        // members are the administrator's builders, as long as the caller
        // is not one of them.
        if !self.hardlinks_protected()? {
            return Err(OpenError::Refused(Untrusted::Linkable {
                at: at.to_path_buf(),
                dir: dir.path.clone(),
            }));
        }
        if self.caller_in(dir.gid)? {
            return planted(Some(dir.gid));
        }
        Ok(())
    }

    fn hardlinks_protected(&mut self) -> Result<bool, OpenError> {
        if let Some(known) = self.hardlinks_protected {
            return Ok(known);
        }
        let protected = match std::fs::read("/proc/sys/fs/protected_hardlinks") {
            Ok(v) => v.trim_ascii() == b"1" || v.trim_ascii() == b"2",
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                ) =>
            {
                return Err(OpenError::Resources(e))
            }
            // No procfs, or no such setting: assume the worst.
            Err(_) => false,
        };
        self.hardlinks_protected = Some(protected);
        Ok(protected)
    }

    fn caller_in(&mut self, gid: u32) -> Result<bool, OpenError> {
        if self.groups.is_none() {
            let mut groups: Vec<u32> = nix::unistd::getgroups()
                .map_err(io_error)?
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            groups.push(nix::unistd::getegid().as_raw());
            self.groups = Some(groups);
        }
        Ok(self.groups.as_ref().is_some_and(|g| g.contains(&gid)))
    }

    /// Pseudo and user-mounted file systems whose files can look root-owned
    /// while their text is someone else's: /proc/self/comm of this very
    /// (non-dumpable, so root-owned) process is the name the caller ran it
    /// under, /proc/self/fd/N leads to whatever the caller holds, and a
    /// user's FUSE mount reports whatever owner it likes.
    fn filesystem(
        &mut self,
        fd: BorrowedFd<'_>,
        st: &FileStat,
        at: &Path,
    ) -> Result<Fs, OpenError> {
        use nix::sys::statfs::{self, fstatfs};
        if let Some(&(_, fs)) = self.fs_checked.iter().find(|(dev, _)| *dev == st.st_dev) {
            return Ok(fs);
        }
        let kind = fstatfs(fd).map_err(io_error)?.filesystem_type();
        let refused = [
            statfs::PROC_SUPER_MAGIC,
            statfs::SYSFS_MAGIC,
            statfs::FUSE_SUPER_MAGIC,
            statfs::CGROUP_SUPER_MAGIC,
            statfs::CGROUP2_SUPER_MAGIC,
            statfs::DEBUGFS_MAGIC,
            statfs::TRACEFS_MAGIC,
            statfs::SECURITYFS_MAGIC,
            statfs::BPF_FS_MAGIC,
            statfs::DEVPTS_SUPER_MAGIC,
            statfs::NSFS_MAGIC,
        ];
        if refused.contains(&kind) {
            return Err(OpenError::Refused(Untrusted::PseudoFs {
                at: at.to_path_buf(),
            }));
        }
        let fs = Fs {
            autofs: kind == statfs::AUTOFS_SUPER_MAGIC,
        };
        self.fs_checked.push((st.st_dev, fs));
        Ok(fs)
    }
}

/// `<linux/statfs.h>`: a mount that the kernel follows no symlink on
/// (Linux 5.10); neither libc nor nix names it yet.
const ST_NOSYMFOLLOW: libc::c_ulong = 0x2000;

/// What a walk needs to know of a file system (a superblock, so the same
/// for every mount of it) it accepted.
#[derive(Debug, Clone, Copy)]
struct Fs {
    /// An automounter's: a directory still on it did not mount.
    autofs: bool,
}

/// The file's permissions (mode bits and ACL, as `faccessat` weighs them)
/// refuse the caller: an include of it may be skipped, which is what a
/// `root:GROUP 0640` include relies on. If they allow reading it and the
/// open was refused all the same, a security module refused it, perhaps
/// one the caller chose (an AppArmor profile entered with `aa-exec` before
/// running this program); skipping would let the caller skip a deny.
fn unreadable(dir: &Dir, name: &CString, at: PathBuf) -> OpenError {
    use nix::fcntl::AtFlags;
    use nix::unistd::{faccessat, AccessFlags};
    let by_permissions = faccessat(
        Some(dir.fd.as_raw_fd()),
        name.as_c_str(),
        AccessFlags::R_OK,
        AtFlags::AT_EACCESS,
    );
    match by_permissions {
        Err(Errno::EACCES) => OpenError::Unreadable,
        Ok(()) => OpenError::Refused(Untrusted::Mediated { at }),
        Err(e) => io_error(e),
    }
}

/// Opens `name` in `dir` without following it. A name with more path after
/// it is first asked for as a directory: unlike a bare O_PATH lookup, that
/// makes the automounter mount what lives there, instead of showing its
/// empty mount point. Anything else (a symlink, a file where a directory
/// should be) is then looked up as itself.
fn look_up(dir: &Dir, name: &CString, last: bool) -> Result<OwnedFd, Errno> {
    if !last {
        match files::open_at(Some(dir.fd.as_fd()), name, O_LOOKUP | libc::O_DIRECTORY) {
            Err(Errno::ENOTDIR) => {}
            done => return done,
        }
    }
    files::open_at(Some(dir.fd.as_fd()), name, O_LOOKUP)
}

/// Whether `name` in `dir` is an automount point whose mount did not
/// happen: a direct automount whose daemon failed the mount says ENOENT to
/// the lookups that trigger it, although its mount point is there, in a
/// directory that is not itself on autofs. Looked up again as a bare
/// O_PATH, which triggers nothing, it shows the automounter's own root.
/// Any error but ENOENT is the caller's to report, never a skip.
fn unmounted_automount(dir: &Dir, name: &CStr) -> Result<bool, Errno> {
    use nix::sys::statfs::{fstatfs, AUTOFS_SUPER_MAGIC};
    match files::open_at(Some(dir.fd.as_fd()), name, O_LOOKUP) {
        Ok(fd) => Ok(fstatfs(fd.as_fd())?.filesystem_type() == AUTOFS_SUPER_MAGIC),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A directory to look names up in: root's, and closed to others unless
/// sticky.
fn directory(fd: OwnedFd, path: PathBuf, st: &FileStat, autofs: bool) -> Result<Dir, OpenError> {
    let mode = st.st_mode & 0o7777;
    let open_to_others = mode & 0o022 != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    if st.st_uid != 0 || (open_to_others && !sticky) {
        return Err(OpenError::Refused(Untrusted::Directory {
            dir: path,
            uid: st.st_uid,
            mode,
        }));
    }
    Ok(Dir {
        fd,
        path,
        open_to_others,
        mode,
        gid: st.st_gid,
        autofs,
    })
}

/// Only root may have written an ACL file: anyone else who can write one
/// can grant themselves any bridge.
fn file_itself(at: &Path, st: &FileStat) -> Result<(), OpenError> {
    if st.st_uid != 0 {
        return Err(OpenError::Refused(Untrusted::FileOwner {
            at: at.to_path_buf(),
            uid: st.st_uid,
        }));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(OpenError::Refused(Untrusted::FileWritable {
            at: at.to_path_buf(),
            mode: st.st_mode & 0o7777,
        }));
    }
    Ok(())
}

/// Pushes the components of `path` so that the first is popped first. A
/// trailing slash adds a `.`, so that, as for the kernel, the name before
/// it must be a directory (`a.conf/` is ENOTDIR, not `a.conf`).
fn push_components(pending: &mut Vec<Vec<u8>>, path: &[u8]) {
    if path.ends_with(b"/") && path.iter().any(|&b| b != b'/') {
        pending.push(b".".to_vec());
    }
    pending.extend(
        path.split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec),
    );
}

/// The real file system, read with whatever identity the process has now
/// (the caller's, once privileges are dropped), through the walk above:
/// only files nobody but root could have chosen. One value serves the
/// files of one run and keeps a few checked directories open between
/// them; drop it when they are read.
#[derive(Default)]
pub struct SystemFiles {
    walk: RefCell<Walk>,
}

impl Files for SystemFiles {
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
        let trusted = self.walk.borrow_mut().run(path)?;
        let mut bytes = Vec::new();
        trusted
            .file
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(OpenError::Io)?;
        if bytes.len() as u64 > limit {
            return Err(OpenError::TooBig);
        }
        Ok(FileText {
            id: trusted.id,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests;
