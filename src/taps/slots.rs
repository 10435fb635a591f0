//! Where a user's helper-made taps can be found without listing every
//! interface on the host.
//!
//! Each tap gets an alternative name [`slot_name`], `bh<uid>.<slot>` in
//! hex (15 bytes, e.g. `bh000003e8.0000` for uid 1000 in slot 0), with
//! the lowest slot that is free. The kernel finds a link by altname in
//! constant time, and only CAP_NET_ADMIN can add or remove one, so the
//! caller can neither forge an entry nor strip one. Finding the caller's
//! taps is then a scan of slots 0, 1, 2, … that ends after [`GAP`] empty
//! slots in a row: its cost follows the caller's own taps, not the host's.
//!
//! A tap holds its slot from its first instant: it is created under a
//! name that is itself the slot's, [`birth_name`] (`bh<uid>-<slot>` in
//! hex), gets the altname, and only then is renamed to its `tapN` (issue
//! 23: a multiqueue tap takes anyone's queue by name before it has an
//! owner, and such a queue's holder can make it persistent at any point
//! of that window). A slot is taken while a link has either name; the
//! scan looks both up, always: two runs of one user racing can leave a
//! killed run's tap under a slot's birth name while the other's tap took
//! that slot's altname. Only CAP_NET_ADMIN can create or rename a link or
//! add an altname, so neither name can be forged onto a tap, or stripped
//! from one. (Both names fit in an interface name, so an administrator
//! could give another interface one of them: that interface then takes the
//! slot, and counts as the user's only by the marker or a birth name.)
//!
//! The scan looks names up with an interface ioctl, which the kernel
//! answers under RCU, without the RTNL lock that every run of every user
//! needs, and without filling in the link: see [`Found`]. Only links that
//! may be abandoned are then read whole, in one request (many runs of one
//! user at once would otherwise each fill all of that user's live taps
//! under the lock).
//!
//! A slot empties when its tap goes away with its last fd. Taps above a
//! gap of [`GAP`] empty slots are not seen. A new tap only ever takes a
//! slot its own run's scan saw free (see `reaper::CallerTaps::claim`), so
//! every slot below it was looked at: to hide abandoned taps, a user must
//! hold them and the [`GAP`] taps below at once, then close those. What can
//! hide is bounded by what the user once held open, and repeated requests
//! cannot add to it; it is found again when a scan next reaches it.

use std::collections::BTreeSet;

use nix::unistd::Uid;

use crate::policy::ifname::IfName;
use crate::system::netlink::{IfIndex, Link};

/// Consecutive empty slots that end a scan.
pub const GAP: usize = 4;

/// More slots than any real caller fills; a scan stops here regardless.
/// Four hex digits name every slot below it.
pub const MAX_SLOTS: usize = 1 << 16;

/// `bh`, the uid in 8 hex digits, `sep`, the slot in 4: 15 bytes.
fn slot_ifname(uid: Uid, slot: usize, sep: char) -> Option<IfName> {
    if slot >= MAX_SLOTS {
        return None;
    }
    IfName::new(format!("bh{:08x}{sep}{slot:04x}", uid.as_raw()).as_bytes()).ok()
}

/// The altname that puts a tap in `uid`'s slot `slot`: `bh`, the uid in 8
/// hex digits, `.`, the slot in 4. Short enough for the interface ioctls
/// that the scan looks it up with; never a [`birth_name`]. `None` past
/// [`MAX_SLOTS`], which no scan reaches.
pub fn slot_name(uid: Uid, slot: usize) -> Option<IfName> {
    slot_ifname(uid, slot, '.')
}

/// The name a tap is created under for `uid`'s slot `slot`, before it
/// gets its `tapN`: `bh`, the uid in 8 hex digits, `-`, the slot in 4.
/// `None` past [`MAX_SLOTS`], which no scan reaches.
pub fn birth_name(uid: Uid, slot: usize) -> Option<IfName> {
    slot_ifname(uid, slot, '-')
}

/// The uid a [`birth_name`] is for; `None` for any other name.
pub fn birth_name_uid(name: &[u8]) -> Option<Uid> {
    let rest = name.strip_prefix(b"bh")?;
    let (uid, slot) = (rest.get(..8)?, rest.get(8..)?);
    let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !(hex(uid) && slot.len() == 5 && slot[0] == b'-' && hex(&slot[1..])) {
        return None;
    }
    let uid = u32::from_str_radix(std::str::from_utf8(uid).ok()?, 16).ok()?;
    Some(Uid::from_raw(uid))
}

/// Whether `link` holds `uid`'s slot `slot`, by either name.
fn holds(link: &Link, uid: Uid, slot: usize) -> bool {
    let is = |name: Option<IfName>| name.map(|n| n.as_bytes().to_vec());
    is(slot_name(uid, slot)).is_some_and(|n| link.altnames.contains(&n))
        || is(birth_name(uid, slot)).is_some_and(|n| n == link.name)
}

/// What looking up one of a slot's names by interface ioctl found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No link has the name: for this name, the slot is free.
    Nothing,
    /// A running link (IFF_RUNNING: up, with its carrier on as the kernel
    /// last applied it). The slot is taken, and the link is not read: it
    /// is skipped only where `reaper::to_reap` would skip it, which takes
    /// carrier off for abandoned. The kernel applies a carrier change to
    /// IFF_RUNNING late (its link watch: one host-wide queue, about 100
    /// links a second, so about a second unless someone queues many link
    /// events), so a tap abandoned within that lag is left to a later run,
    /// as one abandoned just after the scan is.
    Running,
    /// Any other link: the slot is taken, and the link is read whole so
    /// that `reaper::to_reap` decides.
    Other,
}

/// What a scan of one user's slots found.
#[derive(Debug, Default)]
pub struct Scan {
    /// For each slot scanned, whether a link holds it.
    taken: Vec<bool>,
    /// The links read whole (see [`Found::Other`]), each once even if it
    /// holds several slots.
    pub links: Vec<Link>,
    seen: BTreeSet<IfIndex>,
}

impl Scan {
    /// Records what the next slot's two names found (two runs of one user
    /// racing can leave two taps in one slot, one by each name).
    pub fn record(&mut self, found: [Found; 2]) {
        self.taken.push(found.iter().any(|f| *f != Found::Nothing));
    }

    /// Adds links read whole after [`Scan::record`] found them.
    pub fn read(&mut self, links: impl IntoIterator<Item = Link>) {
        for link in links {
            if self.seen.insert(link.index) {
                self.links.push(link);
            }
        }
    }

    /// The slot to look up next.
    pub fn next_slot(&self) -> usize {
        self.taken.len()
    }

    /// Whether the scan has seen [`GAP`] empty slots in a row at its end,
    /// or has gone as far as any scan goes.
    pub fn done(&self) -> bool {
        let trailing = self.taken.iter().rev().take_while(|t| !**t).count();
        trailing >= GAP || self.taken.len() >= MAX_SLOTS
    }

    /// Marks the slots of links that have since been removed as free.
    pub fn forget(&mut self, index: IfIndex, uid: Uid) {
        let Some(link) = self.links.iter().find(|l| l.index == index) else {
            return;
        };
        for (slot, taken) in self.taken.iter_mut().enumerate() {
            if *taken && holds(link, uid, slot) {
                *taken = false;
            }
        }
        self.links.retain(|l| l.index != index);
    }

    /// The slots the scan saw free, lowest first. A finished scan ends in
    /// [`GAP`] of them, so there is always a choice; slots past its end
    /// are never offered (see `reaper::CallerTaps::claim`).
    pub fn holes(&self) -> Vec<usize> {
        let seen = self.taken.iter().enumerate();
        seen.filter(|(_, t)| !**t).map(|(slot, _)| slot).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, uid: u32, slots: &[usize]) -> Link {
        Link {
            index: IfIndex(index),
            altnames: slots
                .iter()
                .map(|&s| {
                    slot_name(Uid::from_raw(uid), s)
                        .unwrap()
                        .as_bytes()
                        .to_vec()
                })
                .collect(),
            ..Link::default()
        }
    }

    fn scan(layout: &[Found]) -> Scan {
        let mut s = Scan::default();
        for found in layout {
            s.record([*found, Found::Nothing]);
        }
        s
    }

    const NO: Found = Found::Nothing;
    const RUNNING: Found = Found::Running;
    const OTHER: Found = Found::Other;

    #[test]
    fn slot_names_fit_an_ioctl_and_are_never_birth_names() {
        let name = slot_name(Uid::from_raw(1000), 0).unwrap();
        assert_eq!(name.as_bytes(), b"bh000003e8.0000");
        let name = slot_name(Uid::from_raw(u32::MAX), MAX_SLOTS - 1).unwrap();
        assert_eq!(name.as_bytes(), b"bhffffffff.ffff");
        assert_eq!(birth_name_uid(name.as_bytes()), None);
        assert!(slot_name(Uid::from_raw(0), MAX_SLOTS).is_none());
        for slot in [0, 1, 0x1234, MAX_SLOTS - 1] {
            let uid = Uid::from_raw(65534);
            assert_ne!(slot_name(uid, slot), birth_name(uid, slot));
        }
    }

    #[test]
    fn birth_names_are_short_and_read_back() {
        let name = birth_name(Uid::from_raw(u32::MAX), MAX_SLOTS - 1).unwrap();
        assert_eq!(name.as_bytes(), b"bhffffffff-ffff");
        assert_eq!(
            birth_name_uid(name.as_bytes()),
            Some(Uid::from_raw(u32::MAX))
        );
        let name = birth_name(Uid::from_raw(65534), 0).unwrap();
        assert_eq!(name.as_bytes(), b"bh0000fffe-0000");
        assert_eq!(birth_name_uid(name.as_bytes()), Some(Uid::from_raw(65534)));
        assert!(birth_name(Uid::from_raw(0), MAX_SLOTS).is_none());
        for other in [
            &b"tap0"[..],
            b"bh0000fffe-000",
            b"bh0000fffe-00000",
            b"bh0000FFFE-0000",
            b"bh0000fffe.0000",
            b"bx0000fffe-0000",
        ] {
            assert_eq!(birth_name_uid(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_tap_holds_its_slot_by_either_name() {
        let uid = Uid::from_raw(7);
        let mut born = link(10, 7, &[]);
        born.name = birth_name(uid, 2).unwrap().as_bytes().to_vec();
        let mut s = Scan::default();
        s.record([NO, NO]);
        s.record([NO, NO]);
        s.record([NO, OTHER]);
        s.read([born]);
        assert_eq!(s.holes(), [0, 1]);
        s.forget(IfIndex(10), uid);
        assert_eq!(s.holes(), [0, 1, 2]);
    }

    #[test]
    fn running_links_take_their_slots_unread() {
        let mut s = scan(&[RUNNING, OTHER, RUNNING]);
        s.read([link(11, 7, &[1])]);
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.next_slot(), 3);
        s.forget(IfIndex(11), Uid::from_raw(7));
        assert_eq!(s.holes(), [1]);
    }

    #[test]
    fn a_user_without_taps_costs_one_gap() {
        let s = scan(&[NO; GAP]);
        assert!(s.done());
        assert_eq!(s.holes(), [0, 1, 2, 3]);
    }

    #[test]
    fn the_scan_looks_past_short_gaps() {
        let mut layout = vec![OTHER, NO, NO, RUNNING];
        layout.extend([NO; GAP - 1]);
        let mut s = scan(&layout);
        assert!(!s.done());
        assert_eq!(s.holes(), [1, 2, 4, 5, 6]);
        assert_eq!(s.next_slot(), 7, "the next lookup follows the last");
        s.record([NO, NO]);
        assert!(s.done());
        assert_eq!(s.next_slot(), 8);
        s.record([NO, RUNNING]);
        assert_eq!(s.holes(), [1, 2, 4, 5, 6, 7], "either name takes a slot");
    }

    #[test]
    fn removed_taps_free_their_slots() {
        let mut s = scan(&[OTHER, OTHER, OTHER]);
        s.read([link(10, 7, &[0]), link(11, 7, &[1]), link(12, 7, &[2])]);
        s.forget(IfIndex(11), Uid::from_raw(7));
        assert_eq!(s.holes(), [1]);
        assert_eq!(s.links.len(), 2);
        s.forget(IfIndex(99), Uid::from_raw(7));
        assert_eq!(s.links.len(), 2);
    }

    #[test]
    fn a_link_in_two_slots_is_counted_once() {
        let mut s = scan(&[OTHER, OTHER]);
        s.read([link(10, 7, &[0, 1]), link(10, 7, &[0, 1])]);
        assert_eq!(s.links.len(), 1);
        s.forget(IfIndex(10), Uid::from_raw(7));
        assert_eq!(s.holes(), [0, 1]);
    }

    #[test]
    fn scans_end() {
        let s = scan(&vec![RUNNING; MAX_SLOTS]);
        assert!(s.done());
        assert!(s.holes().is_empty());
    }
}
