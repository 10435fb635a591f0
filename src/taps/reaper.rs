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

use nix::errno::Errno;

use crate::report::error::Error;
use crate::report::escape::quote;
use nix::unistd::Uid;

use crate::system::netlink::{IfIndex, Link, NlError, Rtnetlink};
use crate::taps::slots::{slot_name, Scan, BATCH};

/// The alias that marks a tap as made by this helper for `uid`.
pub fn marker(uid: Uid) -> Vec<u8> {
    format!("bridge-helper uid={uid}").into_bytes()
}

/// Which of `links` to remove so that at most `limit - 1` of the user's
/// abandoned taps remain, leaving room for the one about to be made.
/// Oldest first: interface indexes only grow.
pub fn to_reap(links: &[Link], uid: Uid, limit: usize) -> Vec<&Link> {
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

/// Removes every abandoned tap this helper made for `uid` (root's
/// `--remove-abandoned`, when access is revoked), found by a full listing:
/// a slot scan stops at a gap. Returns the names removed.
pub fn remove_all_abandoned(route: &mut Rtnetlink, uid: Uid) -> Result<Vec<Vec<u8>>, Error> {
    let links = route
        .tun_links()
        .map_err(|e| Error::kernel("listing tap devices", e))?;
    let mut removed = Vec::new();
    for link in to_reap(&links, uid, 0) {
        if delete_abandoned(route, link.index, &link.name)? {
            removed.push(link.name.clone());
        }
    }
    Ok(removed)
}

/// Removes one abandoned tap by index: whether it was still there to
/// remove (gone meanwhile is no failure).
fn delete_abandoned(route: &mut Rtnetlink, index: IfIndex, name: &[u8]) -> Result<bool, Error> {
    match route.delete(index) {
        Ok(()) => Ok(true),
        Err(NlError {
            errno: Errno::ENODEV,
            ..
        }) => Ok(false),
        Err(e) => {
            let what = format!("removing abandoned persistent tap {}", quote(name));
            Err(Error::kernel(what, e))
        }
    }
}

/// How many times a run scans again when its user's other runs took every
/// free slot it saw; a bound, so that no caller can make a run loop.
const CLAIM_ROUNDS: usize = 64;

/// The caller's taps as this run knows them, and the rule that bounds the
/// abandoned ones.
#[derive(Debug)]
pub struct CallerTaps {
    uid: Uid,
    limit: usize,
    /// The caller's slots as last scanned (see [`crate::taps::slots`]), or
    /// `None` on a kernel without altname lookups (before 5.5), where every
    /// tun device is listed instead and new taps get no slot.
    slots: Option<Scan>,
}

/// Removes the caller's abandoned taps beyond the limit, saying so on
/// stderr, and returns what the new tap's slot is chosen from.
pub fn reap(route: &mut Rtnetlink, uid: Uid, limit: usize) -> Result<CallerTaps, Error> {
    let slots = scan(route, uid)?;
    let mut own = CallerTaps { uid, limit, slots };
    own.remove_excess(route)?;
    Ok(own)
}

impl CallerTaps {
    fn remove_excess(&mut self, route: &mut Rtnetlink) -> Result<(), Error> {
        let (uid, limit) = (self.uid, self.limit);
        let doomed: Vec<(IfIndex, Vec<u8>)> = {
            let listed;
            let links = match &self.slots {
                Some(scan) => &scan.links,
                None => {
                    listed = route
                        .tun_links()
                        .map_err(|e| Error::kernel("listing tap devices", e))?;
                    &listed
                }
            };
            to_reap(links, uid, limit)
                .into_iter()
                .map(|l| (l.index, l.name.clone()))
                .collect()
        };
        for (index, name) in doomed {
            delete_abandoned(route, index, &name)?;
            if let Some(scan) = &mut self.slots {
                scan.forget(index, uid);
            }
            crate::report::output::notice(&format!(
                "removed {}, a persistent tap of uid {uid} that nothing was attached to (at most {limit} are kept)",
                quote(&name)
            ));
        }
        Ok(())
    }

    /// Puts the new tap `name` (interface `index`) in the caller's lowest
    /// free slot and returns
    /// the altname it now has, or `None` on a kernel without altnames.
    ///
    /// Only slots this run's scan saw free are tried. A slot past the
    /// scan's end may lie above taps it never saw; were the tap put there,
    /// a user who stalls some runs and lets others fill the low slots could
    /// raise each new tap above the last abandoned ones, out of every later
    /// scan's reach. When the user's other runs have taken every slot seen
    /// free, the run scans (and reaps) again instead.
    pub fn claim(
        &mut self,
        route: &mut Rtnetlink,
        index: IfIndex,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        for _ in 0..CLAIM_ROUNDS {
            let Some(seen) = &self.slots else {
                return Ok(None);
            };
            for slot in seen.holes() {
                let altname = slot_name(self.uid, slot);
                match route.add_altname(index, &altname) {
                    Ok(()) => return Ok(Some(altname)),
                    // Taken since the scan by another run of the same user.
                    Err(NlError {
                        errno: Errno::EEXIST,
                        ..
                    }) => continue,
                    Err(e) => {
                        let what = format!("{}: adding altname {}", quote(name), quote(&altname));
                        return Err(Error::kernel(what, e));
                    }
                }
            }
            self.slots = Some(scan(route, self.uid)?.ok_or_else(|| {
                Error::kernel(
                    "looking up the caller's taps by altname",
                    "no longer supported",
                )
            })?);
            self.remove_excess(route)?;
        }
        Err(Error::kernel(
            format!("{}: adding an altname", quote(name)),
            format!(
                "uid {}'s other requests took every free slot {CLAIM_ROUNDS} times in a row",
                self.uid
            ),
        ))
    }
}

/// Scans the caller's slots; `None` if the kernel cannot look links up
/// by altname.
fn scan(route: &mut Rtnetlink, uid: Uid) -> Result<Option<Scan>, Error> {
    let mut scan = Scan::default();
    while !scan.done() {
        let first = scan.next_slot();
        let names: Vec<Vec<u8>> = (first..first + BATCH)
            .map(|slot| slot_name(uid, slot))
            .collect();
        match route.links_by_altname(&names) {
            Ok(found) => scan.record(found),
            Err(NlError {
                errno: Errno::EINVAL,
                ..
            }) if first == 0 => return Ok(None),
            Err(e) => return Err(Error::kernel("looking up the caller's taps by altname", e)),
        }
    }
    Ok(Some(scan))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::system::netlink::TunInfo;

    fn tap(index: u32, alias: Option<&[u8]>, persist: bool, attached: u32) -> Link {
        Link {
            index: IfIndex(index),
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
        let ours = marker(Uid::from_raw(1000));
        let theirs = marker(Uid::from_raw(1001));
        let links = vec![
            tap(5, Some(&ours), true, 0),
            tap(3, Some(&ours), true, 0),
            tap(4, Some(&ours), true, 1),   // a VM is attached
            tap(6, Some(&ours), false, 0),  // not persistent: dies with its fd
            tap(7, Some(&theirs), true, 0), // another user's
            tap(8, None, true, 0),          // the administrator's
            tap(9, Some(b"bridge-helper uid=10000"), true, 0),
        ];
        let names = |v: Vec<&Link>| v.iter().map(|l| l.index.0).collect::<Vec<_>>();

        assert_eq!(
            names(to_reap(&links, Uid::from_raw(1000), 4)),
            Vec::<u32>::new()
        );
        assert_eq!(names(to_reap(&links, Uid::from_raw(1000), 2)), vec![3]);
        assert_eq!(names(to_reap(&links, Uid::from_raw(1000), 1)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, Uid::from_raw(1000), 0)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, Uid::from_raw(1001), 1)), vec![7]);
    }
}
