//! User and group names, from /etc/passwd and /etc/group as we parse them,
//! and who a line of bridge-helper.conf is for ([`Who`]).
//!
//! Not getpwnam(3): a static binary has no NSS, and musl's lookups ask
//! nscd, a daemon the caller may reach and answer for. Only the files
//! count, read through the same trust walk as the ACL (see
//! [`load`]), so nobody but root chooses what a name means.

use std::fmt;
use std::path::Path;

use crate::policy::files::{Files, OpenError};
use crate::report::escape::Quoted;

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
/// Large sites keep tens of thousands of accounts in the files; more than
/// this is refused rather than read without bound (here and in
/// `system::users`: one limit for each reading of the files).
pub const MAX_BYTES: u64 = 16 << 20;

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

    /// The name of `uid`: the first line for it, as [`name_of`] finds it.
    pub fn user_name(&self, uid: u32) -> Option<&[u8]> {
        self.users
            .iter()
            .find(|&&(_, id)| id == uid)
            .map(|(name, _)| name.as_slice())
    }
}

fn first(entries: &[(Vec<u8>, u32)], name: &[u8]) -> Option<u32> {
    entries.iter().find(|(n, _)| n == name).map(|&(_, id)| id)
}

/// One line of /etc/passwd or /etc/group: the name, the id, and the
/// fourth field (a user's primary gid; a group's member list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    pub id: u32,
    pub fourth: &'a [u8],
}

/// The `name:password:ID:...` lines of either file. Anything else
/// (comments, NIS `+`/`-` entries, a malformed line) names nobody and is
/// skipped, so one bad line cannot take every other account with it.
pub fn entries(text: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let mut fields = line.split(|&b| b == b':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id = number(fields.next()?)?;
        let fourth = fields.next().unwrap_or_default();
        let valid_name = !name.is_empty()
            && !name.starts_with(b"+")
            && !name.starts_with(b"-")
            && !name.starts_with(b"#");
        valid_name.then_some(Entry { name, id, fourth })
    })
}

/// Every name and its id, in file order.
pub fn parse(text: &[u8]) -> Vec<(Vec<u8>, u32)> {
    entries(text).map(|e| (e.name.to_vec(), e.id)).collect()
}

/// The name of `uid` in the text of /etc/passwd: the first line for it.
pub fn name_of(passwd: &[u8], uid: u32) -> Option<Vec<u8>> {
    entries(passwd)
        .find(|e| e.id == uid)
        .map(|e| e.name.to_vec())
}

/// A user as /etc/passwd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
}

/// The user `spec` names in the text of /etc/passwd: a decimal uid, or
/// else a name; the first line wins, as with getpwnam(3).
pub fn find_user(passwd: &[u8], spec: &[u8]) -> Option<User> {
    let by_uid = number(spec);
    entries(passwd).find_map(|e| {
        let hit = match by_uid {
            Some(want) => e.id == want,
            None => e.name == spec,
        };
        hit.then_some(())?;
        Some(User {
            name: e.name.to_vec(),
            uid: e.id,
            gid: number(e.fourth)?,
        })
    })
}

/// The groups the text of /etc/group gives `user` (lines listing the name
/// as a member), with the primary group first. Only /etc/group: PAM or
/// sssd may give a login others.
pub fn groups_of(group: &[u8], user: &User) -> Vec<u32> {
    let mut gids = vec![user.gid];
    for e in entries(group) {
        let member = e.fourth.split(|&b| b == b',').any(|m| m == user.name);
        if member && !gids.contains(&e.id) {
            gids.push(e.id);
        }
    }
    gids
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
/// The error names the file.
pub fn load(files: &impl Files) -> Result<Accounts, (&'static str, OpenError)> {
    let read = |path: &'static str| match files.read(Path::new(path), MAX_BYTES) {
        Ok(text) => Ok(parse(&text.bytes)),
        Err(OpenError::Missing) => Ok(Vec::new()),
        Err(e) => Err((path, e)),
    };
    Ok(Accounts {
        users: read(PASSWD)?,
        groups: read(GROUP)?,
    })
}

/// A user or group as a line names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    Id(u32),
    Name(Vec<u8>),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Id(n) => write!(f, "{n}"),
            Account::Name(n) => Quoted(n).fmt(f),
        }
    }
}

/// Who a line is for, as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    Everyone,
    User(Account),
    Group(Account),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Everyone => f.write_str("everyone"),
            Who::User(a) => write!(f, "user={a}"),
            Who::Group(a) => write!(f, "group={a}"),
        }
    }
}

/// The caller as the kernel reports it: real uid, and real, effective and
/// supplementary gids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Who {
    /// A name that does not resolve matches no one: a deleted account must
    /// not stop every request on the host, and for a grant that never
    /// widens access. A port line with such a name is refused before this
    /// is asked (see `select_port`): another line would apply instead, and
    /// a restriction must not fail open.
    pub fn matches(&self, me: &Identity, names: &Accounts) -> bool {
        match self {
            Who::Everyone => true,
            Who::User(a) => resolve(a, |n| names.user(n)) == Some(me.uid),
            Who::Group(a) => resolve(a, |n| names.group(n)).is_some_and(|g| me.gids.contains(&g)),
        }
    }

    /// The name, if resolving it needs /etc/passwd or /etc/group.
    pub fn needs_lookup(&self) -> bool {
        matches!(
            self,
            Who::User(Account::Name(_)) | Who::Group(Account::Name(_))
        )
    }

    /// Whether the name resolves (numbers always do).
    pub fn resolves(&self, names: &Accounts) -> bool {
        match self {
            Who::Everyone => true,
            Who::User(a) => resolve(a, |n| names.user(n)).is_some(),
            Who::Group(a) => resolve(a, |n| names.group(n)).is_some(),
        }
    }
}

fn resolve(a: &Account, lookup: impl Fn(&[u8]) -> Option<u32>) -> Option<u32> {
    match a {
        Account::Id(n) => Some(*n),
        Account::Name(n) => lookup(n),
    }
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
    fn users_by_name_or_uid_and_their_groups() {
        let passwd = b"root:x:0:0::/:/bin/sh\nalice:x:1000:100::/:/bin/sh\n";
        let alice = User {
            name: b"alice".to_vec(),
            uid: 1000,
            gid: 100,
        };
        assert_eq!(find_user(passwd, b"alice"), Some(alice.clone()));
        assert_eq!(find_user(passwd, b"1000"), Some(alice.clone()));
        assert_eq!(find_user(passwd, b"bob"), None);
        assert_eq!(find_user(passwd, b"7"), None);
        assert_eq!(find_user(passwd, b""), None);
        let group = b"users:x:100:\nkvm:x:36:bob,alice\nwheel:x:10:alicex\nbad\n";
        assert_eq!(groups_of(group, &alice), [100, 36]);
        assert_eq!(name_of(passwd, 1000).as_deref(), Some(&b"alice"[..]));
        assert_eq!(name_of(passwd, 5), None);
        // One reading of the files: a uid written 01000 is 1000, as
        // getpwuid(3) (strtoul) reads it.
        assert_eq!(
            name_of(b"bob:x:01000:1::/:\n", 1000).as_deref(),
            Some(&b"bob"[..])
        );
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
