//! Bounding the taps a user makes persistent and walks away from.
//!
//! Anyone holding a tap fd may set IFF_PERSIST without privilege; the tap
//! then outlives the VM, still in the bridge. Each run removes the calling
//! user's own abandoned ones beyond a limit, oldest first. Only taps
//! carrying the caller's marker are considered: the alias needs
//! CAP_NET_ADMIN to set or change, so a user can neither forge it onto
//! someone else's tap nor strip it from one of ours.
//!
//! Abandoned means persistent with carrier off: the tun driver turns
//! carrier off when its last fd detaches. A holder can also turn it off
//! itself (TUNSETCARRIER), which declares its own tap abandoned. Removal is
//! by interface index, never by name: an index is not reused, so whatever
//! happens to names between the listing and the removal, only a tap that
//! was listed as the caller's can go. (Proving detachment by attaching to
//! the tap by name was tried and dropped: a name can change hands in
//! between, and the attach would then touch someone else's tap.)
#![forbid(unsafe_code)]

use nix::errno::Errno;

use crate::error::Error;
use crate::escape::quote;
use crate::netlink::{Link, NlError, Route};

/// The alias that marks a tap as made by this helper for `uid`.
pub fn marker(uid: u32) -> Vec<u8> {
    format!("bridge-helper uid={uid}").into_bytes()
}

/// Which of `links` to remove so that at most `limit - 1` of the user's
/// abandoned taps remain, leaving room for the one about to be made.
/// Oldest first: interface indexes only grow.
pub fn to_reap(links: &[Link], uid: u32, limit: usize) -> Vec<&Link> {
    let mark = marker(uid);
    let mut abandoned: Vec<&Link> = links
        .iter()
        .filter(|l| l.alias.as_deref() == Some(&mark[..]))
        .filter(|l| l.carrier == Some(false) && l.tun.as_ref().is_some_and(|t| t.persist))
        .collect();
    abandoned.sort_by_key(|l| l.index);
    let excess = abandoned.len().saturating_sub(limit.saturating_sub(1));
    abandoned.truncate(excess);
    abandoned
}

/// Removes the excess and says so on stderr; returns how many went.
pub fn reap(route: &mut Route, uid: u32, limit: usize) -> Result<usize, Error> {
    let links = route
        .tun_links()
        .map_err(|e| Error::kernel("listing tap devices", e))?;
    let mut removed = 0;
    for link in to_reap(&links, uid, limit) {
        match route.delete(link.index) {
            Ok(()) => removed += 1,
            // Gone meanwhile: nothing left to do.
            Err(NlError {
                errno: Errno::ENODEV,
                ..
            }) => continue,
            Err(e) => {
                let what = format!("removing abandoned persistent tap {}", quote(&link.name));
                return Err(Error::kernel(what, e));
            }
        }
        crate::report::notice(&format!(
            "removed {}, a persistent tap of uid {uid} that nothing was attached to (at most {limit} are kept)",
            quote(&link.name)
        ));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::netlink::TunInfo;

    fn tap(index: u32, alias: Option<&[u8]>, persist: bool, attached: u32) -> Link {
        Link {
            index,
            name: format!("tap{index}").into_bytes(),
            alias: alias.map(<[u8]>::to_vec),
            carrier: Some(attached != 0),
            tun: Some(TunInfo {
                persist,
                tap: true,
                ..TunInfo::default()
            }),
            ..Link::default()
        }
    }

    #[test]
    fn only_our_own_abandoned_taps_count() {
        let ours = marker(1000);
        let theirs = marker(1001);
        let links = vec![
            tap(5, Some(&ours), true, 0),
            tap(3, Some(&ours), true, 0),
            tap(4, Some(&ours), true, 1),   // a VM is attached
            tap(6, Some(&ours), false, 0),  // not persistent: dies with its fd
            tap(7, Some(&theirs), true, 0), // another user's
            tap(8, None, true, 0),          // the administrator's
            tap(9, Some(b"bridge-helper uid=10000"), true, 0),
        ];
        let names = |v: Vec<&Link>| v.iter().map(|l| l.index).collect::<Vec<_>>();

        assert_eq!(names(to_reap(&links, 1000, 4)), Vec::<u32>::new());
        assert_eq!(names(to_reap(&links, 1000, 2)), vec![3]);
        assert_eq!(names(to_reap(&links, 1000, 1)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, 1000, 0)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, 1001, 1)), vec![7]);
    }
}
