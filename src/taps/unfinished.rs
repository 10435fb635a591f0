//! The run's one piece of global state: the tap it made and has not yet
//! handed over. A tap usually dies with its descriptors, but a multiqueue
//! tap made persistent through a queue attached while it had no owner
//! would outlive a run that ends in the middle of `Tap::add_queues`; so a
//! run that ends without choosing to (an error, a panic, memory running
//! out) removes it. Global because the allocator's exit must find it.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use crate::system::netlink::{self, IfIndex};

/// The unfinished tap's interface index; 0 when there is none.
static UNFINISHED: AtomicU32 = AtomicU32::new(0);

/// Marks tap `index` for removal should the run fail.
pub fn mark(index: IfIndex) {
    UNFINISHED.store(index.0, SeqCst);
}

/// The tap was handed over: it is the caller's now.
pub fn handed_over() {
    UNFINISHED.store(0, SeqCst);
}

/// Deletes the unfinished tap, if any, by index, without allocating.
/// Best effort: after the final privilege drop the kernel refuses, and by
/// then the tap is marked and checked.
pub fn remove() {
    match UNFINISHED.swap(0, SeqCst) {
        0 => {}
        index => netlink::delete_now(IfIndex(index)),
    }
}
