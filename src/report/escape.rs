//! Making user-supplied bytes safe to echo on a terminal or in a log.

use std::fmt;

/// Displays bytes in single quotes, with everything that is not printable
/// ASCII written as an escape, so a hostile name cannot move the cursor,
/// change colours or forge a second line of output. Errors hold [`Bytes`]
/// instead; this is for output lines that show bytes they do not keep.
pub struct Quoted<'a>(pub &'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        Escaped(self.0).fmt(f)?;
        f.write_str("'")
    }
}

/// The same escaping without the quotes, for file paths, which read
/// better bare (`/etc/qemu/bridge.conf:3`).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            match b {
                b'\t' => f.write_str("\\t")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\\' => f.write_str("\\\\")?,
                b'\'' => f.write_str("\\'")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

/// Bytes as one word of a command for a reader to paste into a shell (a
/// name after `--br=`): bare when no shell gives any of them a meaning,
/// else in single quotes, where a POSIX shell (dash too) gives none a
/// meaning but the quote itself, written `'\''`. Not [`Quoted`], whose
/// `\'` ends a shell's quotes and lets the rest run (`';reboot;#`).
/// Bytes that are not printable ASCII keep [`Escaped`]'s escapes, for the
/// terminal: a shell takes such an escape as text, never as syntax.
pub struct Pasted<'a>(pub &'a [u8]);

impl fmt::Display for Pasted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-_.@+/".contains(b);
        if !self.0.is_empty() && self.0.iter().all(plain) {
            return Escaped(self.0).fmt(f); // nothing to escape: as it is
        }
        f.write_str("'")?;
        for &b in self.0 {
            match b {
                b'\'' => f.write_str("'\\''")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => Escaped(&[b]).fmt(f)?,
            }
        }
        f.write_str("'")
    }
}

/// Bytes from outside (argv, a file, the kernel) kept as they came, for
/// error values: displayed as [`Quoted`], so the escaping happens once,
/// where the value is shown, and cannot be forgotten where it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Self {
        Bytes(b.to_vec())
    }
}

impl From<&Vec<u8>> for Bytes {
    fn from(b: &Vec<u8>) -> Self {
        Bytes(b.clone())
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Quoted(&self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::{Bytes, Quoted};

    fn quote(bytes: &[u8]) -> String {
        Quoted(bytes).to_string()
    }

    #[test]
    fn bytes_display_quoted_and_escaped() {
        assert_eq!(Bytes(b"a\nb\xff".to_vec()).to_string(), "'a\\nb\\xff'");
    }

    #[test]
    fn each_escape_as_a_reader_expects_it() {
        let shown = super::Escaped(b"\t\n\r\\'\x1b~").to_string();
        assert_eq!(shown, "\\t\\n\\r\\\\\\'\\x1b~");
    }

    #[test]
    fn pasted_bytes_are_one_shell_word() {
        use super::Pasted;
        let pasted = |b: &[u8]| Pasted(b).to_string();
        assert_eq!(pasted(b"br-0_lab.1"), "br-0_lab.1");
        assert_eq!(pasted(b"/usr/libexec/b"), "/usr/libexec/b");
        assert_eq!(pasted(b""), "''");
        assert_eq!(pasted(b"';reboot;#"), "''\\'';reboot;#'");
        assert_eq!(pasted(b"$(id) \\\"`"), "'$(id) \\\"`'");
        assert_eq!(pasted(b"a\nb\xff"), "'a\\nb\\xff'");
    }

    #[test]
    fn printable_text_is_kept() {
        assert_eq!(quote(b"br0"), "'br0'");
    }

    #[test]
    fn control_and_high_bytes_are_escaped() {
        assert_eq!(quote(b"a\x1b[2Jb\n\xff"), "'a\\x1b[2Jb\\n\\xff'");
        assert_eq!(quote(b"it's\\"), "'it\\'s\\\\'");
    }
}
