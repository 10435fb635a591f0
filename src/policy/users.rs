//! User names from /etc/passwd, parsed here: the binary is static (musl),
//! with no NSS, so names from LDAP or sssd are not seen; a uid without a
//! line is shown as a number only.

/// The name of `uid` in the text of /etc/passwd: the first line whose
/// third field is exactly `uid` in decimal.
pub fn name_of(passwd: &[u8], uid: u32) -> Option<Vec<u8>> {
    let want = uid.to_string();
    passwd.split(|&b| b == b'\n').find_map(|line| {
        let mut fields = line.split(|&b| b == b':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id = fields.next()?;
        (id == want.as_bytes() && !name.is_empty()).then(|| name.to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::name_of;

    #[test]
    fn names_by_uid() {
        let text = b"root:x:0:0:root:/root:/bin/sh\n\nalice:x:1000:1000::/home/a:/bin/sh\n+:::\nbad\n:x:7:7\nbob:x:01001:1::/:\n";
        assert_eq!(name_of(text, 0).as_deref(), Some(&b"root"[..]));
        assert_eq!(name_of(text, 1000).as_deref(), Some(&b"alice"[..]));
        // Not a plain decimal match, an empty name: nothing.
        assert_eq!(name_of(text, 1001), None);
        assert_eq!(name_of(text, 7), None);
        assert_eq!(name_of(text, 5), None);
    }
}
