//! Exit statuses, one per class of failure, as documented in
//! bridge-helper(8) and `--help`.
//! A leaf: the system code that must exit before `main` or without
//! allocating uses these without reaching into the error type.

pub const USAGE: u8 = 2;
pub const ACL_CONFIG: u8 = 3;
pub const DENIED: u8 = 4;
pub const INSTALLATION: u8 = 5;
pub const FD: u8 = 6;
pub const BRIDGE: u8 = 7;
pub const KERNEL: u8 = 8;
pub const INTERNAL: u8 = 70;
