//! Reading /etc/passwd for a user's name (see [`crate::policy::users`]).

use std::io::Read;

use nix::unistd::Uid;

use crate::policy::users;

/// Enough for any real passwd file; more is not read.
const LIMIT: u64 = 4 << 20;

/// The caller's name, if /etc/passwd has one (read with the process's
/// identity at the time: the caller's, after the drop).
pub fn name_of_uid(uid: Uid) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    std::fs::File::open("/etc/passwd")
        .ok()?
        .take(LIMIT)
        .read_to_end(&mut text)
        .ok()?;
    users::name_of(&text, uid.as_raw())
}
