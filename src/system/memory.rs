//! The global allocator: the system's, except that running out of memory
//! ends the run the way every other failure does (one line, status 5, the
//! unfinished tap removed) instead of Rust's default, a message and
//! SIGABRT that would leave a multiqueue tap behind.

use std::alloc::{GlobalAlloc, Layout, System};

/// [`System`], calling `exit` instead of returning null.
pub struct ExitWhenExhausted {
    exit: fn() -> !,
}

impl ExitWhenExhausted {
    /// `exit` must not allocate: it runs when allocating has just failed.
    pub const fn new(exit: fn() -> !) -> ExitWhenExhausted {
        ExitWhenExhausted { exit }
    }

    fn or_exit(&self, ptr: *mut u8) -> *mut u8 {
        if ptr.is_null() {
            (self.exit)()
        }
        ptr
    }
}

// SAFETY: every call goes to `System` with our caller's arguments, so
// System's guarantees hold; a null is never returned (the process ends).
unsafe impl GlobalAlloc for ExitWhenExhausted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds GlobalAlloc::alloc's contract.
        self.or_exit(unsafe { System.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        self.or_exit(unsafe { System.alloc_zeroed(layout) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System (every allocation does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: as for dealloc; our caller upholds the rest.
        self.or_exit(unsafe { System.realloc(ptr, layout, size) })
    }
}
