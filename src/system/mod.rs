//! The boundary with the operating system: privileges, the tun device,
//! rtnetlink, fd passing, and the walk that decides which ACL files are
//! trusted.
//!
//! Every `unsafe` block and raw system call of the program is in [`raw`],
//! each with a `SAFETY` note; the other modules here use it or nix's safe
//! wrappers and present safe functions to the rest of the program.

pub mod checkpoint;
pub mod fd_passing;
#[allow(unsafe_code)]
pub mod memory;
pub mod netlink;
pub mod privileges;
#[allow(unsafe_code)]
pub mod raw;
#[allow(unsafe_code)]
pub mod startup;
pub mod syslog;
pub mod trusted_files;
pub mod users;
