//! Facts about processes that only /proc and the kernel know: who ran
//! us, and its name. One place for the audit line and anything else that
//! names the caller's process.

use std::ffi::CString;
use std::io::Read;

use crate::system::files;

/// The process that ran us.
pub struct Parent {
    pub pid: i32,
    /// Its name as /proc/PID/comm gives it (the kernel's 15 bytes).
    pub comm: Option<Vec<u8>>,
}

pub fn parent() -> Parent {
    let pid = nix::unistd::getppid().as_raw();
    // comm rather than status: the same name, unescaped (the line escapes
    // it), without the memory and scheduling figures status gathers first
    // (12 µs a run, bench/LEVERS.md). At most 15 bytes and a newline.
    let mut text = [0u8; 64];
    let comm = CString::new(format!("/proc/{pid}/comm"))
        .ok()
        .and_then(|path| files::open_at(None, &path, libc::O_RDONLY).ok())
        .and_then(|fd| std::fs::File::from(fd).read(&mut text).ok())
        .and_then(|n| comm_name(text.get(..n)?));
    Parent { pid, comm }
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
}
