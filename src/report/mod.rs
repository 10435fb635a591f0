//! Reporting: the one error type with its typed causes, the single place
//! that maps it to exit statuses, escaping of user-controlled text, and
//! everything the program prints (one line on stderr, `--help`,
//! `--version`, the panic hook).
#![forbid(unsafe_code)]

pub mod audit;
pub mod error;
pub mod escape;
pub mod output;
pub mod status;
