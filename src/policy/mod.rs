//! What is allowed: bridge.conf ([`bridge_conf`], QEMU's language and its
//! includes), bridge-helper.conf ([`helper_conf`], this helper's own
//! settings, grants and port lines), the [`decision`] made from both, and
//! what an interface name may be. The command line is [`crate::cli`].
//!
//! Pure code: no system calls (files are read behind
//! [`files::Files`], implemented in `system`). Driven by the fuzz
//! targets and the property tests.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod bridge_conf;
pub mod compiled;
pub mod decision;
pub mod files;
pub mod helper_conf;
pub mod ifname;
pub mod untrusted;
