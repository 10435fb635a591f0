//! Where a user's helper-made taps can be found without listing every
//! interface on the host.
//!
//! Each tap gets an alternative name `bridge-helper.<uid>.<slot>`, with
//! the lowest slot that is free. The kernel finds a link by altname in
//! constant time, and only CAP_NET_ADMIN can add or remove one, so the
//! caller can neither forge an entry nor strip one. Finding the caller's
//! taps is then a scan of slots 0, 1, 2, … that ends after [`GAP`] empty
//! slots in a row: its cost follows the caller's own taps, not the host's.
//!
//! A tap holds its slot from its first instant: it is created under a
//! name that is itself the slot's, [`birth_name`] (`bh<uid>-<slot>` in
//! hex, at most 15 bytes), gets the altname, and only then is renamed to
//! its `tapN` (issue 23: a multiqueue tap takes anyone's queue by name
//! before it has an owner, and such a queue's holder can make it
//! persistent at any point of that window). A slot is taken while a link
//! has either name; the scan looks both up, in the same requests. Only
//! CAP_NET_ADMIN can create or rename a link, so neither name can be
//! forged onto a tap, or stripped from one.
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

/// Slots asked about per netlink request: one request when the caller has
/// no taps at all.
pub const BATCH: usize = 4;

/// More slots than any real caller fills; a scan stops here regardless.
pub const MAX_SLOTS: usize = 1 << 16;

/// The altname that puts a tap in `uid`'s slot `slot`. At 16 bytes or
/// more it can never clash with a primary interface name (at most 15).
pub fn slot_name(uid: Uid, slot: usize) -> Vec<u8> {
    format!("bridge-helper.{uid}.{slot}").into_bytes()
}

/// The name a tap is created under for `uid`'s slot `slot`, before it
/// gets its `tapN`: `bh`, the uid in 8 hex digits, `-`, the slot in 4.
/// `None` past [`MAX_SLOTS`], which no scan reaches.
pub fn birth_name(uid: Uid, slot: usize) -> Option<IfName> {
    if slot >= MAX_SLOTS {
        return None;
    }
    IfName::new(format!("bh{:08x}-{slot:04x}", uid.as_raw()).as_bytes()).ok()
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
    link.altnames.contains(&slot_name(uid, slot))
        || birth_name(uid, slot).is_some_and(|n| n.as_bytes() == link.name)
}

/// What a scan of one user's slots found.
#[derive(Debug, Default)]
pub struct Scan {
    /// For each slot scanned, whether a link holds it.
    taken: Vec<bool>,
    /// The links found, each once even if it holds several slots.
    pub links: Vec<Link>,
    seen: BTreeSet<IfIndex>,
}

impl Scan {
    /// Records the answers for the next slots in order: for each, the
    /// links found by its two names (two runs of one user racing can leave
    /// two taps in one slot).
    pub fn record(&mut self, answers: impl IntoIterator<Item = [Option<Link>; 2]>) {
        for answer in answers {
            self.taken.push(answer.iter().any(Option::is_some));
            for link in answer.into_iter().flatten() {
                if self.seen.insert(link.index) {
                    self.links.push(link);
                }
            }
        }
    }

    /// The slot the next request should start at.
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
                .map(|&s| slot_name(Uid::from_raw(uid), s))
                .collect(),
            ..Link::default()
        }
    }

    fn scan(layout: &[Option<u32>], uid: u32) -> Scan {
        let mut s = Scan::default();
        let answers = layout
            .iter()
            .enumerate()
            .map(|(slot, index)| [index.map(|i| link(i, uid, &[slot])), None]);
        s.record(answers);
        s
    }

    #[test]
    fn names_never_clash_with_interface_names() {
        assert_eq!(slot_name(Uid::from_raw(0), 0), b"bridge-helper.0.0");
        assert!(slot_name(Uid::from_raw(0), 0).len() >= 16);
        assert!(slot_name(Uid::from_raw(u32::MAX), MAX_SLOTS).len() < 128);
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
        s.record([[None, None], [None, None], [Some(born), None]]);
        assert_eq!(s.holes(), [0, 1]);
        s.forget(IfIndex(10), uid);
        assert_eq!(s.holes(), [0, 1, 2]);
    }

    #[test]
    fn a_user_without_taps_costs_one_batch() {
        let s = scan(&[None; BATCH], 7);
        assert!(s.done());
        assert_eq!(s.holes(), [0, 1, 2, 3]);
    }

    #[test]
    fn the_scan_looks_past_short_gaps() {
        let mut layout = vec![Some(10), None, None, Some(11)];
        layout.extend([None; GAP - 1]);
        let s = scan(&layout, 7);
        assert!(!s.done());
        assert_eq!(s.holes(), [1, 2, 4, 5, 6]);
        assert_eq!(
            s.next_slot(),
            7,
            "the next request starts after the last answer"
        );
        let mut s = s;
        s.record([[None, None]]);
        assert!(s.done());
        assert_eq!(s.next_slot(), 8);
        assert_eq!(s.links.len(), 2);
    }

    #[test]
    fn removed_taps_free_their_slots() {
        let mut s = scan(&[Some(10), Some(11), Some(12)], 7);
        s.forget(IfIndex(11), Uid::from_raw(7));
        assert_eq!(s.holes(), [1]);
        assert_eq!(s.links.len(), 2);
        s.forget(IfIndex(99), Uid::from_raw(7));
        assert_eq!(s.links.len(), 2);
    }

    #[test]
    fn a_link_in_two_slots_is_counted_once() {
        let mut s = Scan::default();
        s.record([
            [Some(link(10, 7, &[0, 1])), None],
            [None, Some(link(10, 7, &[0, 1]))],
        ]);
        assert_eq!(s.links.len(), 1);
        s.forget(IfIndex(10), Uid::from_raw(7));
        assert_eq!(s.holes(), [0, 1]);
    }

    #[test]
    fn scans_end() {
        let mut s = Scan::default();
        s.record(
            (0..MAX_SLOTS).map(|i| [Some(link(u32::try_from(i).unwrap() + 1, 7, &[i])), None]),
        );
        assert!(s.done());
        assert!(s.holes().is_empty());
    }
}
