//! The boundary with the operating system: privileges, the tun device,
//! rtnetlink, fd passing, and the walk that decides which ACL files are
//! trusted.
//!
//! Every `unsafe` block and raw system call of the program is here, by
//! topic, each with a `SAFETY` note, in the files marked
//! `#[allow(unsafe_code)]` below (caps, files, memory, peer, service,
//! startup, tun, and netlink's ext_ack); the other modules use them or nix's
//! safe wrappers and present safe functions to the rest of the program.

#[allow(unsafe_code)]
pub mod caps;
pub mod checkpoint;
pub mod fd_passing;
#[allow(unsafe_code)]
pub mod files;
#[allow(unsafe_code)]
pub mod memory;
pub mod netlink;
#[allow(unsafe_code)]
pub mod peer;
pub mod privileges;
pub mod process;
#[allow(unsafe_code)]
pub mod service;
#[allow(unsafe_code)]
pub mod startup;
pub mod syslog;
pub mod trusted_files;
#[allow(unsafe_code)]
pub mod tun;
pub mod users;

/// The most descriptors one SCM_RIGHTS message carries: the kernel's
/// SCM_MAX_FD (include/net/scm.h; libc does not export it). A send of more
/// fails with EINVAL; a receive buffer of this size holds any message.
/// Here, not in `fd_passing`, because both ends use it: the hand-over
/// (`fd_passing`) and the forwarder's receive (`service`).
pub const SCM_MAX_FD: u16 = 253;
