//! Reading /etc/passwd and /etc/group as the process is now, plainly (not
//! through the trust walk): for the log's user name, and for root's
//! `--check --user` and `--remove-abandoned` (parsed by
//! [`crate::policy::accounts`]).

use std::io::Read;

use nix::unistd::Uid;

use crate::policy::accounts::{self, User, MAX_BYTES};
use crate::system::files;

/// The whole file in about two reads: sized first, so that the buffer
/// does not grow read by read.
fn read(path: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    whole(file, size, MAX_BYTES)
}

/// All of `file` (`size` bytes, as its metadata says), or `None` if it
/// holds more than `limit` bytes. Never a part: a file cut at the limit
/// ends in a line cut short, which reads as another uid, gid or member
/// (`alice:x:10001:100` cut to `alice:x:10001:10`).
fn whole(file: impl Read, size: u64, limit: u64) -> Option<Vec<u8>> {
    let mut text = Vec::with_capacity(usize::try_from(size.min(limit)).ok()? + 1);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut text)
        .ok()?;
    (u64::try_from(text.len()).ok()? <= limit).then_some(text)
}

/// The user `spec` (a name or a decimal uid) names in /etc/passwd.
pub fn find(spec: &[u8]) -> Option<User> {
    accounts::find_user(&read(accounts::PASSWD)?, spec)
}

/// The uid `spec` names: a user of /etc/passwd, or any decimal uid but
/// -1, listed or not (an account from LDAP or sssd, which this static
/// binary cannot ask about, runs the helper by its uid all the same).
pub fn uid_of(spec: &[u8]) -> Option<Uid> {
    find(spec)
        .map(|u| u.uid)
        .or_else(|| accounts::number(spec))
        .map(Uid::from_raw)
}

/// `user`'s groups as /etc/group gives them, primary first.
pub fn groups(user: &User) -> Vec<u32> {
    accounts::groups_of(&read(accounts::GROUP).unwrap_or_default(), user)
}

/// The name of group `gid` in /etc/group, read plainly (for a line).
pub fn group_name(gid: u32) -> Option<Vec<u8>> {
    accounts::name_of(&read(accounts::GROUP)?, gid)
}

/// The caller's name, if /etc/passwd has one (read with the process's
/// identity at the time: the caller's, after the drop). This runs for
/// the log on every request whose run has not read the file already (for
/// a line of bridge-helper.conf that names an account, through the walk:
/// `Policy::caller_name`): the file is read in chunks into a buffer
/// on the stack, and reading stops at the chunk that has the line, usually
/// the first (one read, no allocation). Lines longer than the buffer end
/// the search.
pub fn name_of_uid(uid: Uid) -> Option<Vec<u8>> {
    // openat: musl's open() adds an fcntl for O_CLOEXEC.
    let fd = files::open_at(None, c"/etc/passwd", libc::O_RDONLY).ok()?;
    name_in(std::fs::File::from(fd), uid)
}

fn name_in(mut file: impl Read, uid: Uid) -> Option<Vec<u8>> {
    let mut buf = [0u8; 8192];
    let (mut kept, mut total) = (0, 0u64);
    loop {
        let n = file.read(buf.get_mut(kept..)?).ok()?;
        total += u64::try_from(n).ok()?;
        if total > MAX_BYTES {
            return None;
        }
        let end = kept + n;
        let whole = if n == 0 {
            end
        } else {
            buf.get(..end)?
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)
        };
        if let Some(name) = accounts::name_of(buf.get(..whole)?, uid.as_raw()) {
            return Some(name);
        }
        // At the end, or one line fills the whole buffer.
        if n == 0 || (whole == 0 && end == buf.len()) {
            return None;
        }
        buf.copy_within(whole..end, 0);
        kept = end - whole;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes a read, as a pipe or a slow file may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_file_over_the_limit_is_not_read_in_part() {
        let passwd = b"root:x:0:0::/:/bin/sh\nalice:x:10001:100::/:/bin/sh\n";
        let size = u64::try_from(passwd.len()).unwrap();
        assert_eq!(whole(&passwd[..], size, size).as_deref(), Some(&passwd[..]));
        // Cut at 38 bytes the file would say alice's gid is 10.
        assert_eq!(whole(&passwd[..], size, 38), None);
        // Grown since it was sized: still whole, or nothing.
        assert_eq!(whole(&passwd[..], 3, size).as_deref(), Some(&passwd[..]));
    }

    #[test]
    fn found_across_chunks_and_past_the_buffer() {
        let mut text = Vec::new();
        for i in 0..2000 {
            text.extend_from_slice(
                format!("user{i}:x:{}:100::/home:/bin/sh\n", 2000 + i).as_bytes(),
            );
        }
        text.extend_from_slice(b"last:x:9:9::/:/bin/sh");
        for step in [1, 7, 100, 8192, 1 << 20] {
            let find = |uid| name_in(Trickle(&text, step), Uid::from_raw(uid));
            assert_eq!(find(2000).as_deref(), Some(&b"user0"[..]), "{step}");
            assert_eq!(find(3999).as_deref(), Some(&b"user1999"[..]), "{step}");
            assert_eq!(find(9).as_deref(), Some(&b"last"[..]), "{step}");
            assert_eq!(find(5), None, "{step}");
        }
        let long = [vec![b'x'; 9000], b":x:1:1::/:\n".to_vec()].concat();
        assert_eq!(name_in(&long[..], Uid::from_raw(1)), None);
    }
}
