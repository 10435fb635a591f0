//! Why a path is not trusted, in words that name the fix: the refusals of
//! the file interface ([`crate::policy::files`]), which
//! `system::trusted_files` implements.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::report::escape::Escaped;

/// How many symlinks one path may pass through, as the kernel allows.
pub const MAX_SYMLINKS: usize = 40;

/// Why a path is not trusted, and what fixes it. Paths are the ones the
/// walk reached (symlinks replaced by what they point to), so the fix names
/// the object that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    NotRegular,
    FileOwner {
        at: PathBuf,
        uid: u32,
    },
    FileWritable {
        at: PathBuf,
        mode: u32,
    },
    /// A directory that is not root's, or writable by others without the
    /// sticky bit.
    Directory {
        dir: PathBuf,
        uid: u32,
        mode: u32,
    },
    /// An entry of a writable sticky directory that is not root's.
    StickyEntry {
        at: PathBuf,
        dir: PathBuf,
        uid: u32,
        symlink: bool,
    },
    /// A non-directory in a writable sticky directory while the kernel
    /// lets users hard-link others' files.
    Linkable {
        at: PathBuf,
        dir: PathBuf,
    },
    /// A non-directory in a sticky directory that anyone (`group` None),
    /// or a group the caller belongs to, can write: it may have been
    /// renamed in from elsewhere.
    Planted {
        at: PathBuf,
        dir: PathBuf,
        group: Option<u32>,
        symlink: bool,
    },
    /// A name missing from an automount point `dir`, or (`at` == `dir`)
    /// a direct automount point whose own mount failed.
    NotMounted {
        at: PathBuf,
        dir: PathBuf,
    },
    /// A symlink on a file system mounted nosymfollow.
    NoSymlinks {
        at: PathBuf,
    },
    /// A missing name in a directory others can write.
    MissingInWritable {
        at: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    PseudoFs {
        at: PathBuf,
    },
    /// Unreadable to the caller although its permissions allow reading:
    /// a security module's doing, which must not turn into a skip.
    Mediated {
        at: PathBuf,
    },
    Loop,
}

fn shown(p: &Path) -> Escaped<'_> {
    Escaped(p.as_os_str().as_bytes())
}

/// `g-w`, `o-w` or `go-w`: what `chmod` needs to close `mode` to others.
fn write_bits(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, false) => "g-w",
        (false, true) => "o-w",
        _ => "go-w",
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::NotRegular => write!(f, "not a regular file"),
            Untrusted::FileOwner { at, uid } => write!(
                f,
                "owned by uid {uid}, not root; fix: chown root {}",
                shown(at)
            ),
            Untrusted::FileWritable { at, mode } => write!(
                f,
                "writable by group or others (mode {:04o}); fix: chmod {} {}",
                mode & 0o7777,
                write_bits(*mode),
                shown(at)
            ),
            Untrusted::Directory { dir, uid, mode } => {
                write!(
                    f,
                    "lies in {}, which someone other than root can change (owner uid {uid}, mode {:04o}); fix: ",
                    shown(dir),
                    mode & 0o7777
                )?;
                match (*uid != 0, mode & 0o022 != 0) {
                    (true, true) => write!(
                        f,
                        "chown root {0} and chmod {1} {0}",
                        shown(dir),
                        write_bits(*mode)
                    ),
                    (true, false) => write!(f, "chown root {}", shown(dir)),
                    _ => write!(f, "chmod {} {}", write_bits(*mode), shown(dir)),
                }
            }
            Untrusted::StickyEntry {
                at,
                dir,
                uid,
                symlink,
            } => write!(
                f,
                "{} is owned by uid {uid} in {}, where others can create entries; fix: chown {}root {0}, or keep the file in a directory only root can change",
                shown(at),
                shown(dir),
                if *symlink { "-h " } else { "" }
            ),
            Untrusted::Linkable { at, dir } => write!(
                f,
                "{} lies in {}, which others can write, and fs.protected_hardlinks is off, so anyone there could have hard-linked a root-owned file in; fix: sysctl fs.protected_hardlinks=1, or keep the file in a directory only root can change",
                shown(at),
                shown(dir)
            ),
            Untrusted::Planted {
                at,
                dir,
                group: None,
                symlink,
            } => write!(
                f,
                "{} is a {} in {}, which anyone can write: a user can rename a root-owned one into it from a directory they can write; fix: keep the file in a root-owned directory",
                shown(at),
                planted_kind(*symlink),
                shown(dir)
            ),
            Untrusted::Planted {
                at,
                dir,
                group: Some(gid),
                symlink,
            } => write!(
                f,
                "{} is a {} in {}, which group {gid}, the caller's, can write: the caller could have renamed a root-owned one into it; fix: keep the file in a root-owned directory, or take the caller out of group {gid}",
                shown(at),
                planted_kind(*symlink),
                shown(dir)
            ),
            Untrusted::NoSymlinks { at } => write!(
                f,
                "{} is a symbolic link on a file system mounted nosymfollow, which the kernel would not follow; fix: point the include at the file itself",
                shown(at)
            ),
            Untrusted::NotMounted { at, dir } if at == dir => write!(
                f,
                "{} is an automount point that is not mounted (the mount may have failed), so an include under it cannot be skipped; fix: make the mount work, or keep the file on a file system that is always mounted",
                shown(at)
            ),
            Untrusted::NotMounted { at, dir } => write!(
                f,
                "{} is missing from {}, an automount point that is not mounted (the mount may have failed), so it cannot be skipped; fix: make the mount work, or keep the file on a file system that is always mounted",
                shown(at),
                shown(dir)
            ),
            Untrusted::MissingInWritable { at, dir, mode } => write!(
                f,
                "{} does not exist, and anyone who can write {} (mode {:04o}) could create it; fix: create it, owned by root, or include a file in a directory only root can change",
                shown(at),
                shown(dir),
                mode & 0o7777
            ),
            Untrusted::PseudoFs { at } => write!(
                f,
                "{} is on a pseudo or user-mounted file system, not one an administrator writes",
                shown(at)
            ),
            Untrusted::Mediated { at } => write!(
                f,
                "{} could not be read although its permissions allow the calling user to read it: a security module (AppArmor, SELinux, Landlock) refused, and an include refused that way is not skipped; fix: let that module's policy allow reading it",
                shown(at)
            ),
            Untrusted::Loop => write!(
                f,
                "more than {MAX_SYMLINKS} symbolic links on the way (a loop?)"
            ),
        }
    }
}

/// What a planted entry is, in the words of the message.
fn planted_kind(symlink: bool) -> &'static str {
    if symlink {
        "root-owned symbolic link"
    } else {
        "root-owned file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_name_the_right_bits() {
        let w = |mode| {
            Untrusted::FileWritable {
                at: "/etc/qemu/bridge.conf".into(),
                mode,
            }
            .to_string()
        };
        assert_eq!(
            w(0o660),
            "writable by group or others (mode 0660); fix: chmod g-w /etc/qemu/bridge.conf"
        );
        assert!(w(0o646).ends_with("chmod o-w /etc/qemu/bridge.conf"));
        assert!(w(0o666).ends_with("chmod go-w /etc/qemu/bridge.conf"));
        let d = |uid, mode| {
            Untrusted::Directory {
                dir: "/etc/qemu".into(),
                uid,
                mode,
            }
            .to_string()
        };
        assert!(d(1000, 0o755).ends_with("fix: chown root /etc/qemu"));
        assert!(d(0, 0o775).ends_with("fix: chmod g-w /etc/qemu"));
        assert!(d(1000, 0o777).ends_with("fix: chown root /etc/qemu and chmod go-w /etc/qemu"));
    }
}
