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
//! A slot empties when its tap goes away with its last fd. Taps above a
//! gap of [`GAP`] empty slots are not seen. A new tap only ever takes a
//! slot its own run's scan saw free (see `reaper::CallerTaps::claim`), so
//! every slot below it was looked at: to hide abandoned taps, a user must
//! hold them and the [`GAP`] taps below at once, then close those. What can
//! hide is bounded by what the user once held open, and repeated requests
//! cannot add to it; it is found again when a scan next reaches it.

use std::collections::BTreeSet;

use nix::unistd::Uid;

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
    /// Records the answers for the next slots in order.
    pub fn record(&mut self, answers: impl IntoIterator<Item = Option<Link>>) {
        for answer in answers {
            self.taken.push(answer.is_some());
            if let Some(link) = answer {
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
            if *taken && link.altnames.contains(&slot_name(uid, slot)) {
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
            .map(|(slot, index)| index.map(|i| link(i, uid, &[slot])));
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
        let mut s = s;
        s.record([None]);
        assert!(s.done());
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
        s.record([Some(link(10, 7, &[0, 1])), Some(link(10, 7, &[0, 1]))]);
        assert_eq!(s.links.len(), 1);
        s.forget(IfIndex(10), Uid::from_raw(7));
        assert_eq!(s.holes(), [0, 1]);
    }

    #[test]
    fn scans_end() {
        let mut s = Scan::default();
        s.record((0..MAX_SLOTS).map(|i| Some(link(u32::try_from(i).unwrap() + 1, 7, &[i]))));
        assert!(s.done());
        assert!(s.holes().is_empty());
    }
}
