//! What a run does to the kernel's objects: it chooses the tap's name,
//! creates the tap and puts it on the bridge, and finds (and bounds) the
//! caller's abandoned persistent taps through their slot altnames.
//!
//! Decisions live here; every system call goes through `system`.
#![forbid(unsafe_code)]

pub mod naming;
pub mod reaper;
pub mod slots;
pub mod tap;
pub mod unfinished;
