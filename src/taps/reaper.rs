//! Bounding the taps a user makes persistent and walks away from.
//!
//! Anyone holding a tap fd may set IFF_PERSIST without privilege; the tap
//! then outlives the VM, still in the bridge. Each run removes the calling
//! user's own abandoned ones beyond a limit, oldest first. Only taps this
//! helper made for the caller are considered: those carrying the caller's
//! marker (the alias), and those still under the name they were created
//! with ([`slots::birth_name`]), which the tap has from its first instant
//! until it gets the alias in the same request as its `tapN`. Both need
//! CAP_NET_ADMIN to set or change, so a user can neither forge them onto
//! someone else's tap nor strip them from one of ours.
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

use crate::report::error::{Doing, Error, KernelCause};
use crate::report::escape::{Bytes, Quoted};
use nix::unistd::Uid;

use crate::policy::ifname::IfName;
use crate::system::netlink::{IfIndex, Link, NlError, Rtnetlink};
use crate::system::privileges::Lookups;
use crate::system::tun;
use crate::taps::slots::{self, birth_name, slot_name, Found, Scan, MAX_SLOTS};

/// The alias that marks a tap as made by this helper for `uid`.
pub fn marker(uid: Uid) -> Vec<u8> {
    format!("bridge-helper uid={uid}").into_bytes()
}

/// Whom this helper made `link` for: the uid of its marker, or of the
/// name it was created under if it never got its `tapN`. `None` for a
/// tap the helper did not make.
pub fn made_for(link: &Link) -> Option<Uid> {
    let by_alias = link
        .alias
        .as_deref()
        .and_then(|a| a.strip_prefix(b"bridge-helper uid="))
        .and_then(|u| std::str::from_utf8(u).ok())
        .and_then(|u| u.parse::<u32>().ok())
        .map(Uid::from_raw)
        .filter(|&uid| link.alias.as_deref() == Some(&marker(uid)[..]));
    by_alias.or_else(|| slots::birth_name_uid(&link.name))
}

/// Which of `links` to remove so that at most `limit - 1` of the user's
/// abandoned taps remain, leaving room for the one about to be made.
/// Oldest first: interface indexes only grow. An abandoned tap still
/// under its birth name is always removed: no run handed it over (it
/// was left by a run killed before it was done), so no VM can be waiting
/// for it, and it may have no owner, which lets any user attach to it.
pub fn to_reap(links: &[Link], uid: Uid, limit: usize) -> Vec<&Link> {
    let mut abandoned: Vec<&Link> = links
        .iter()
        .filter(|l| made_for(l) == Some(uid))
        .filter(|l| l.carrier == Some(false) && l.tun.as_ref().is_some_and(|t| t.persist))
        .collect();
    abandoned.sort_by_key(|l| (!unfinished(l), l.index));
    let unfinished_ones = abandoned.iter().filter(|l| unfinished(l)).count();
    let kept = limit.saturating_sub(1);
    let excess = abandoned.len().saturating_sub(kept).max(unfinished_ones);
    abandoned.truncate(excess);
    abandoned
}

/// Whether `link` still has the name a run created it under: the run
/// never finished it.
fn unfinished(link: &Link) -> bool {
    slots::birth_name_uid(&link.name).is_some()
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
            let tap = Bytes::from(name);
            Err(Error::kernel(Doing::RemoveAbandoned { tap }, e))
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
    lookups: Lookups,
    /// The caller's slots as last scanned (see [`crate::taps::slots`]), or
    /// `None` once the kernel turned an altname down as one without them
    /// (before 5.5), where every tun device is listed instead and new taps
    /// get no slot.
    slots: Option<Scan>,
}

/// Removes the caller's abandoned taps beyond the limit, saying so on
/// stderr, and returns what the new tap's slot is chosen from. `lookups`
/// is how the scan looks names up (see [`tun::link_running`]).
pub fn reap(
    route: &mut Rtnetlink,
    uid: Uid,
    lookups: Lookups,
    limit: usize,
) -> Result<CallerTaps, Error> {
    let slots = Some(scan(route, uid, lookups)?);
    let mut own = CallerTaps {
        uid,
        limit,
        lookups,
        slots,
    };
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
            let why = if slots::birth_name_uid(&name).is_some() {
                ", left unfinished by a run that was killed".to_string()
            } else {
                format!(" (at most {limit} are kept)")
            };
            crate::report::output::notice(&format!(
                "removed {}, a persistent tap of uid {uid} that nothing was attached to{why}",
                Quoted(&name)
            ));
        }
        Ok(())
    }

    /// Gives the new tap its [`birth_name`] in a free slot of the caller's:
    /// `create` is TUNSETIFF with IFF_TUN_EXCL under a name, returning
    /// `None` if the name exists by now (another run of the same user took
    /// the slot since the scan). Returns the name the kernel gave the tap
    /// and its slot. Slots are chosen as in [`CallerTaps::claim`].
    pub fn create<T>(
        &mut self,
        route: &mut Rtnetlink,
        mut create: impl FnMut(&IfName) -> Result<Option<T>, Error>,
    ) -> Result<(T, usize), Error> {
        for _ in 0..CLAIM_ROUNDS {
            let candidates = match &self.slots {
                Some(seen) => seen.holes(),
                None => (0..MAX_SLOTS).collect(),
            };
            for slot in candidates {
                let Some(name) = birth_name(self.uid, slot) else {
                    continue;
                };
                if let Some(made) = create(&name)? {
                    return Ok((made, slot));
                }
            }
            self.rescan(route)?;
        }
        Err(self.slots_exhausted("creating a tap (TUNSETIFF)"))
    }

    fn rescan(&mut self, route: &mut Rtnetlink) -> Result<(), Error> {
        self.slots = Some(scan(route, self.uid, self.lookups)?);
        self.remove_excess(route)
    }

    fn slots_exhausted(&self, doing: impl Into<Doing>) -> Error {
        let (uid, rounds) = (self.uid.as_raw(), CLAIM_ROUNDS);
        Error::kernel(doing, KernelCause::SlotsTaken { uid, rounds })
    }

    /// Puts the new tap `name` (interface `index`, created for slot
    /// `born`) in the caller's slot `born` if its altname is still free,
    /// else in the lowest free one, and returns
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
        born: Option<usize>,
    ) -> Result<Option<Vec<u8>>, Error> {
        for _ in 0..CLAIM_ROUNDS {
            let Some(seen) = &self.slots else {
                return Ok(None);
            };
            // Its own birth slot first: in the usual case both names of
            // the tap are for one slot.
            let mut holes = seen.holes();
            holes.sort_by_key(|&slot| Some(slot) != born);
            for slot in holes {
                let Some(altname) = slot_name(self.uid, slot) else {
                    continue;
                };
                let altname = altname.as_bytes().to_vec();
                match route.add_altname(index, &altname) {
                    Ok(()) => return Ok(Some(altname)),
                    // Taken since the scan by another run of the same user.
                    Err(NlError {
                        errno: Errno::EEXIST,
                        ..
                    }) => continue,
                    // A kernel without altnames (before 5.5) knows no
                    // RTM_NEWLINKPROP, and the scan found taps by their
                    // birth names alone: list every tun device now and
                    // bound the abandoned ones among them (the new tap is
                    // not one: ours holds it), as a run did before slots.
                    // Newer kernels pay nothing for this fallback.
                    Err(NlError {
                        errno: Errno::EOPNOTSUPP,
                        ..
                    }) => {
                        self.slots = None;
                        self.remove_excess(route)?;
                        return Ok(None);
                    }
                    Err(e) => {
                        let (tap, altname) = (Bytes::from(name), Bytes(altname));
                        return Err(Error::kernel(Doing::AddAltname { tap, altname }, e));
                    }
                }
            }
            self.rescan(route)?;
        }
        Err(self.slots_exhausted(Doing::OnTap(Bytes::from(name), "adding an altname")))
    }
}

/// Scans the caller's slots, both names of each, and reads whole the
/// links found that may be abandoned (see [`Found`]).
///
/// The names are looked up by interface ioctl, with CAP_NET_ADMIN lowered
/// (a miss would otherwise load a module), under RCU and without the RTNL
/// lock. That lookup only tells whether a link is running; a running one
/// is skipped only where `to_reap` would skip it (abandoned is carrier
/// off; see [`Found::Running`] for the second the kernel may lag). Every
/// other link found is read by the same name in one netlink request, and
/// `to_reap` applies to what the kernel says of it then, unchanged.
fn scan(route: &mut Rtnetlink, uid: Uid, lookups: Lookups) -> Result<Scan, Error> {
    let looked_up = |errno| Error::kernel("looking up the caller's taps (SIOCGIFFLAGS)", errno);
    let sock = route.socket();
    let (mut scan, to_read) = lookups.run(|| {
        let mut scan = Scan::default();
        let mut to_read = Vec::new();
        while !scan.done() {
            let slot = scan.next_slot();
            let names = [slot_name(uid, slot), birth_name(uid, slot)];
            let mut found = [Found::Nothing; 2];
            for (name, found) in names.into_iter().zip(&mut found) {
                // Both names exist below MAX_SLOTS, where every scan ends.
                let Some(name) = name else { continue };
                *found = match tun::link_running(sock, &name).map_err(looked_up)? {
                    None => Found::Nothing,
                    Some(true) => Found::Running,
                    Some(false) => {
                        to_read.push(name);
                        Found::Other
                    }
                };
            }
            scan.record(found);
        }
        Ok::<_, Error>((scan, to_read))
    })??;
    // A few names per request: the kernel queues every answer of a request
    // before the first is read, and a hundred or so taps' answers overflow
    // the socket's receive buffer (ENOBUFS), which a user who abandons that
    // many at once would turn into every later run failing before it reaps.
    for names in to_read.chunks(READ_BATCH) {
        let links = route
            .links_by_name(names)
            .map_err(|e| Error::kernel("looking up the caller's taps", e))?;
        scan.read(links.into_iter().flatten());
    }
    Ok(scan)
}

/// Links read whole per netlink request by [`scan`]: each answer takes a
/// few KiB of the receive buffer (about 200 KiB by default).
const READ_BATCH: usize = 8;

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

    #[test]
    fn a_tap_left_under_its_birth_name_counts_for_its_user_alone() {
        let born = |index, uid, slot| {
            let mut link = tap(index, None, true, 0);
            link.name = birth_name(Uid::from_raw(uid), slot)
                .unwrap()
                .as_bytes()
                .to_vec();
            link
        };
        let links = vec![
            born(3, 1000, 0),
            born(4, 1001, 0),
            tap(5, Some(b"bridge-helper uid=01000"), true, 0), // not our marker
            born(6, 1000, 1),
        ];
        assert_eq!(made_for(&links[0]), Some(Uid::from_raw(1000)));
        assert_eq!(made_for(&links[2]), None);
        let reaped: Vec<u32> = to_reap(&links, Uid::from_raw(1000), 0)
            .iter()
            .map(|l| l.index.0)
            .collect();
        assert_eq!(reaped, [3, 6]);
        // Whatever the limit: no VM can be waiting for them.
        let mut with_finished = links.clone();
        with_finished.push(tap(2, Some(&marker(Uid::from_raw(1000))), true, 0));
        let reaped: Vec<u32> = to_reap(&with_finished, Uid::from_raw(1000), 8)
            .iter()
            .map(|l| l.index.0)
            .collect();
        assert_eq!(reaped, [3, 6]);
        let reaped: Vec<u32> = to_reap(&with_finished, Uid::from_raw(1000), 1)
            .iter()
            .map(|l| l.index.0)
            .collect();
        assert_eq!(reaped, [3, 6, 2]);
    }
}
