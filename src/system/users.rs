//! Reading /etc/passwd for a user's name (see [`crate::policy::users`]).

use std::io::Read;

use nix::unistd::Uid;

use crate::policy::users;

/// Enough for any real passwd file; more is not read.
const LIMIT: u64 = 4 << 20;

fn read(path: &str) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(LIMIT)
        .read_to_end(&mut text)
        .ok()?;
    Some(text)
}

/// The user `spec` (a name or a decimal uid) names in /etc/passwd.
pub fn find(spec: &[u8]) -> Option<users::User> {
    users::find(&read("/etc/passwd")?, spec)
}

/// `user`'s groups as /etc/group gives them, primary first.
pub fn groups(user: &users::User) -> Vec<u32> {
    users::groups_of(&read("/etc/group").unwrap_or_default(), user)
}

/// The caller's name, if /etc/passwd has one (read with the process's
/// identity at the time: the caller's, after the drop).
pub fn name_of_uid(uid: Uid) -> Option<Vec<u8>> {
    users::name_of(&read("/etc/passwd")?, uid.as_raw())
}
