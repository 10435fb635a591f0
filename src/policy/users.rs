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

/// A user as /etc/passwd has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
}

/// The user `spec` names: a decimal uid, or else a name.
pub fn find(passwd: &[u8], spec: &[u8]) -> Option<User> {
    let by_uid = std::str::from_utf8(spec)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok());
    passwd.split(|&b| b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        let [name, _, uid, gid, ..] = f.as_slice() else {
            return None;
        };
        let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u32>().ok();
        let (uid, gid) = (number(uid)?, number(gid)?);
        let hit = match by_uid {
            Some(want) => uid == want,
            None => *name == spec,
        };
        (hit && !name.is_empty()).then(|| User {
            name: name.to_vec(),
            uid,
            gid,
        })
    })
}

/// The supplementary groups /etc/group gives `user` (lines listing the
/// name as a member), with the primary group first. Only /etc/group: PAM
/// or sssd may give a login others.
pub fn groups_of(group: &[u8], user: &User) -> Vec<u32> {
    let mut gids = vec![user.gid];
    for line in group.split(|&b| b == b'\n') {
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        let [_, _, gid, members] = f.as_slice() else {
            continue;
        };
        let Some(gid) = std::str::from_utf8(gid)
            .ok()
            .and_then(|g| g.parse::<u32>().ok())
        else {
            continue;
        };
        if members
            .split(|&b| b == b',')
            .any(|m| m == user.name.as_slice())
            && !gids.contains(&gid)
        {
            gids.push(gid);
        }
    }
    gids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_or_uid_and_their_groups() {
        let passwd = b"root:x:0:0::/:/bin/sh\nalice:x:1000:100::/:/bin/sh\n";
        let alice = User {
            name: b"alice".to_vec(),
            uid: 1000,
            gid: 100,
        };
        assert_eq!(find(passwd, b"alice"), Some(alice.clone()));
        assert_eq!(find(passwd, b"1000"), Some(alice.clone()));
        assert_eq!(find(passwd, b"bob"), None);
        assert_eq!(find(passwd, b"7"), None);
        assert_eq!(find(passwd, b""), None);
        let group = b"users:x:100:\nkvm:x:36:bob,alice\nwheel:x:10:alicex\nbad\n";
        assert_eq!(groups_of(group, &alice), [100, 36]);
    }

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
