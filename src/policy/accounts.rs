//! User and group names, from /etc/passwd and /etc/group as we parse them.
//!
//! Not getpwnam(3): a static binary has no NSS, and musl's lookups ask
//! nscd, a daemon the caller may reach and answer for. Only the files
//! count, read through the same trust walk as the ACL (see
//! [`load`]), so nobody but root chooses what a name means.

use std::path::Path;

use crate::policy::acl_files::{ConfigError, Files, OpenError};

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
/// Large sites keep tens of thousands of accounts in the files; more than
/// this is refused rather than read without bound.
const MAX_BYTES: u64 = 16 << 20;

/// Names and the numbers they stand for, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<(Vec<u8>, u32)>,
    pub groups: Vec<(Vec<u8>, u32)>,
}

impl Accounts {
    /// The first entry wins, as with getpwnam(3).
    pub fn user(&self, name: &[u8]) -> Option<u32> {
        first(&self.users, name)
    }

    pub fn group(&self, name: &[u8]) -> Option<u32> {
        first(&self.groups, name)
    }
}

fn first(entries: &[(Vec<u8>, u32)], name: &[u8]) -> Option<u32> {
    entries.iter().find(|(n, _)| n == name).map(|&(_, id)| id)
}

/// `name:password:ID:...` lines; anything else (comments, NIS `+`/`-`
/// entries, a malformed line) names nobody and is skipped, so one bad
/// line cannot take every other account with it.
pub fn parse(text: &[u8]) -> Vec<(Vec<u8>, u32)> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let id = fields.next()?;
            let valid_name = !name.is_empty()
                && !name.starts_with(b"+")
                && !name.starts_with(b"-")
                && !name.starts_with(b"#");
            (valid_name).then_some(())?;
            Some((name.to_vec(), number(id)?))
        })
        .collect()
}

/// A user or group id as written: decimal digits only, and never
/// 4294967295, which is (uid_t)-1, "no change" to the kernel.
pub fn number(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|&n| n != u32::MAX)
}

/// Reads both files. A missing file names nobody (every name in it is
/// unresolved, so its lines match no one); one the walk refuses is an
/// error, as for the ACL: it would let someone other than root choose who
/// a name is.
pub fn load(files: &impl Files) -> Result<Accounts, ConfigError> {
    let read = |path: &str| match files.read(Path::new(path), MAX_BYTES) {
        Ok(text) => Ok(parse(&text.bytes)),
        Err(OpenError::Missing) => Ok(Vec::new()),
        Err(e) => Err(ConfigError::opening(path.into(), e)),
    };
    Ok(Accounts {
        users: read(PASSWD)?,
        groups: read(GROUP)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_lines() {
        let users = parse(
            b"root:x:0:0:root:/root:/bin/bash\n\
              alice:x:1000:1000::/home/alice:/bin/sh\n\
              # a comment:x:5:5\n\
              +nis::::\n\
              broken\n\
              bob:x:notanumber:1\n\
              alice:x:2000:2000::/:/bin/sh\n\
              huge:x:4294967295:1\n\
              carol:x:4294967294:1",
        );
        assert_eq!(
            users,
            vec![
                (b"root".to_vec(), 0),
                (b"alice".to_vec(), 1000),
                (b"alice".to_vec(), 2000),
                (b"carol".to_vec(), 4294967294),
            ]
        );
        let accounts = Accounts {
            users,
            groups: parse(b"students:x:500:alice,bob\n"),
        };
        assert_eq!(accounts.user(b"alice"), Some(1000));
        assert_eq!(accounts.user(b"bob"), None);
        assert_eq!(accounts.group(b"students"), Some(500));
        assert_eq!(accounts.group(b"alice"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0"), Some(0));
        assert_eq!(number(b"007"), Some(7));
        assert_eq!(number(b"4294967294"), Some(4294967294));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"4294967295",
            b"4294967296",
            b"1e3",
            b" 1",
        ] {
            assert_eq!(number(bad), None, "{bad:?}");
        }
    }
}
