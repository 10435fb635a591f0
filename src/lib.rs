//! bridge-helper as a library: the modules behind the binary, public so
//! that fuzz targets, property tests and the benchmark can drive them.
//!
//! Five rooms, each with a module doc that says what it may touch:
//! - [`cli`]: what the caller asked for (the command line, with clap).
//! - [`policy`]: what is allowed (bridge.conf, bridge-helper.conf, the
//!   decision from both, interface names). Pure code, no system calls; it
//!   owns the types of the interfaces `system` implements for it.
//! - [`taps`]: what a run does to the kernel's objects (naming, creating,
//!   attaching, finding and reaping a user's abandoned taps), through the
//!   safe functions of `system`.
//! - [`system`]: the boundary with the operating system. Every `unsafe`
//!   block and raw system call is in a `system` file of its topic (caps,
//!   files, memory, peer, service, startup, tun, netlink's ext_ack), each
//!   with a `SAFETY` note; the other system modules use them or nix's safe
//!   wrappers.
//! - [`report`]: the one error type, its exit statuses, escaping, and the
//!   one line a run prints.
//!
//! [`service`] is the privileged service (`--serve`) and the forwarder
//! that asks it when the binary runs without privilege.
//!
//! Beside them, [`steps`] holds the decisions a run takes before it
//! creates anything, shared by `main.rs` and [`check`] (`--check`), so that
//! the two cannot disagree.
//!
//! `unsafe` is denied here and in `main.rs`, and allowed only on those
//! `system` files, one `#[allow(unsafe_code)]` each where the module is
//! declared (`system/mod.rs`; `system/netlink/mod.rs` for ext_ack).
#![deny(unsafe_code)]
// As Firecracker does: a cast that can truncate, wrap or lose a sign is a
// bug waiting for an input; use try_from, from, or cast_signed/unsigned.
#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

pub mod check;
pub mod cli;
pub mod policy;
pub mod report;
pub mod service;
pub mod steps;
pub mod system;
pub mod taps;
