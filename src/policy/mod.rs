//! What is allowed: the command line, the ACL language and its files, this
//! helper's own settings, and what an interface name may be.
//!
//! Pure code: no system calls (files are read behind
//! [`files::Files`], implemented in `system`). Driven by the fuzz
//! targets and the property tests.
#![forbid(unsafe_code)]

pub mod access;
pub mod accounts;
pub mod acl;
pub mod acl_files;
pub mod args;
pub mod compiled;
pub mod files;
pub mod ifname;
pub mod settings;
pub mod untrusted;
