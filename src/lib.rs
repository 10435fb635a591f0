//! bridge-helper as a library: the modules behind the binary, public so
//! that fuzz targets and property tests can drive the parsers directly.
//!
//! Pure logic (no system calls, `#![forbid(unsafe_code)]`): [`args`],
//! [`acl`], [`aclfile`] (behind its `Files` trait), [`ifname`], [`escape`],
//! [`leftovers`]' selection, [`registry`], [`tapname`], [`netlink`]'s
//! message parsing.
//! System code: [`sys`] holds every `unsafe` block; [`privs`], [`fdpass`],
//! [`tap`] and [`netlink`]'s socket use it or nix's safe wrappers.

pub mod acl;
pub mod aclfile;
pub mod args;
pub mod config;
pub mod error;
pub mod escape;
pub mod fdpass;
pub mod ifname;
pub mod leftovers;
pub mod netlink;
pub mod privs;
pub mod registry;
pub mod report;
pub mod settings;
pub mod sys;
pub mod tap;
pub mod tapname;
pub mod trust;
