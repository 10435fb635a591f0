//! Interface-name rules shared by the command line and the ACL.

/// The kernel's IFNAMSIZ, including the terminating NUL.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;
/// Longest name the kernel keeps; anything longer would be truncated,
/// which is how CVE-2019-13164 slipped a long name past a `deny`.
pub const MAX_LEN: usize = IFNAMSIZ - 1;

/// Why a byte string is not an interface name we will act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Empty,
    TooLong(usize),
    Dot,
    /// A byte the kernel refuses ('/', ':', whitespace) or that we refuse
    /// (other control characters, NUL).
    BadByte(u8),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Empty => f.write_str("the name is empty"),
            Invalid::TooLong(n) => write!(f, "{n} bytes long, the limit is {MAX_LEN}"),
            Invalid::Dot => f.write_str("'.' and '..' are not interface names"),
            Invalid::BadByte(b) => write!(
                f,
                "contains the byte 0x{b:02x}, not allowed in an interface name"
            ),
        }
    }
}

/// Accepts exactly the names the kernel would accept unchanged (see
/// `dev_valid_name`; its `isspace` also counts 0xa0), minus control characters, which only serve to
/// confuse whoever reads the name later.
pub fn validate(name: &[u8]) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(Invalid::TooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(Invalid::Dot);
    }
    match name
        .iter()
        .find(|&&b| b == b'/' || b == b':' || b == b' ' || b == 0xa0 || b.is_ascii_control())
    {
        Some(&b) => Err(Invalid::BadByte(b)),
        None => Ok(()),
    }
}

/// A name checked once by [`validate`]: at most [`MAX_LEN`] bytes, so no
/// function that takes one can truncate it, and no unchecked byte string
/// can be passed where a name the kernel will act on is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName(Vec<u8>);

impl IfName {
    pub fn new(name: &[u8]) -> Result<IfName, Invalid> {
        validate(name)?;
        Ok(IfName(name.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_says_what_is_wrong() {
        let said = |name: &[u8]| validate(name).unwrap_err().to_string();
        assert_eq!(said(b""), "the name is empty");
        assert_eq!(said(b"0123456789abcdef"), "16 bytes long, the limit is 15");
        assert_eq!(said(b".."), "'.' and '..' are not interface names");
        assert_eq!(
            said(b"br/0"),
            "contains the byte 0x2f, not allowed in an interface name"
        );
    }

    #[test]
    fn ordinary_names_pass() {
        for n in [
            &b"br0"[..],
            b"virbr0",
            b"a",
            b"br-lan.100",
            b"123456789012345",
            b"\xc3\xa9t\xc3\xa9",
        ] {
            assert_eq!(validate(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn kernel_forbidden_names_fail() {
        assert_eq!(validate(b""), Err(Invalid::Empty));
        assert_eq!(validate(b"1234567890123456"), Err(Invalid::TooLong(16)));
        assert_eq!(validate(b"."), Err(Invalid::Dot));
        assert_eq!(validate(b".."), Err(Invalid::Dot));
        assert_eq!(validate(b"a/b"), Err(Invalid::BadByte(b'/')));
        assert_eq!(validate(b"a:b"), Err(Invalid::BadByte(b':')));
        assert_eq!(validate(b"a b"), Err(Invalid::BadByte(b' ')));
        assert_eq!(validate(b"a\tb"), Err(Invalid::BadByte(b'\t')));
        assert_eq!(validate(b"a\x1bb"), Err(Invalid::BadByte(0x1b)));
        assert_eq!(validate(b"a\x7f"), Err(Invalid::BadByte(0x7f)));
    }
}
