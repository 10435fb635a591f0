//! Facts about processes that only /proc and the kernel know: who ran
//! us, and its name. One place for the audit line and anything else that
//! names the caller's process.

use std::ffi::CString;
use std::io::Read;

use crate::system::files;

/// The process that ran us (or, for the service, the one that ran the
/// process that connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub pid: i32,
    /// Its name as /proc/PID/comm gives it (the kernel's 15 bytes).
    pub comm: Option<Vec<u8>>,
}

pub fn parent() -> Parent {
    let pid = nix::unistd::getppid().as_raw();
    Parent {
        pid,
        comm: comm_of(pid),
    }
}

/// The name of process `pid`, if it can be read.
pub fn comm_of(pid: i32) -> Option<Vec<u8>> {
    // comm rather than status: the same name, unescaped (the line escapes
    // it), without the memory and scheduling figures status gathers first
    // (12 µs a run, bench/LEVERS.md). At most 15 bytes and a newline.
    let mut text = [0u8; 64];
    CString::new(format!("/proc/{pid}/comm"))
        .ok()
        .and_then(|path| files::open_at(None, &path, libc::O_RDONLY).ok())
        .and_then(|fd| std::fs::File::from(fd).read(&mut text).ok())
        .and_then(|n| comm_name(text.get(..n)?))
}

/// The path of the file this process runs, as the kernel keeps it
/// (/proc/self/exe: a symbolic link's target, not the link QEMU or a
/// user named), if that path still leads to that file: not when it was
/// since removed or replaced (the kernel then adds " (deleted)"), nor
/// without /proc. For the lines that name the file to fix; no decision
/// reads it.
pub fn executable() -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::MetadataExt;
    const EXE: &str = "/proc/self/exe";
    let path = std::fs::read_link(EXE).ok()?;
    let running = std::fs::metadata(EXE).ok()?;
    let named = std::fs::metadata(&path).ok()?;
    ((running.dev(), running.ino()) == (named.dev(), named.ino()))
        .then(|| path.into_os_string().into_vec())
}

/// The parent pid from the text of /proc/PID/stat: the fourth field,
/// counted after the name's closing parenthesis (a name may hold spaces
/// and parentheses of its own).
pub fn ppid_in_stat(text: &[u8]) -> Option<i32> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let _state = fields.next()?;
    std::str::from_utf8(fields.next()?).ok()?.parse().ok()
}

/// The process name from the text of /proc/PID/comm: the name's own
/// bytes (a newline among them too), then the newline the kernel adds.
pub fn comm_name(text: &[u8]) -> Option<Vec<u8>> {
    text.strip_suffix(b"\n").map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_from_proc_comm() {
        assert_eq!(
            comm_name(b"qemu-system-x86\n").as_deref(),
            Some(&b"qemu-system-x86"[..])
        );
        assert_eq!(comm_name(b"a\nb\n").as_deref(), Some(&b"a\nb"[..]));
        // Cut short: no name rather than part of one.
        assert_eq!(comm_name(b"qemu"), None);
    }

    /// The test binary's own file, by its real path: what a fix names.
    #[test]
    fn executable_is_the_file_that_runs() {
        use std::os::unix::ffi::OsStrExt;
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(executable().as_deref(), Some(exe.as_os_str().as_bytes()));
    }

    #[test]
    fn parent_pid_from_proc_stat() {
        assert_eq!(ppid_in_stat(b"42 (qemu) S 7 42 42 0 -1"), Some(7));
        // A name that looks like more fields does not shift them.
        assert_eq!(ppid_in_stat(b"42 (a) R 9 (b) S 1 2) S 13 42 0"), Some(13));
        assert_eq!(ppid_in_stat(b"42 (qemu"), None);
        assert_eq!(ppid_in_stat(b"42 (qemu) S"), None);
    }
}
