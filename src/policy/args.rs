//! The command line, as QEMU and libvirt write it.
//!
//! Hand-written rather than clap: the grammar is three `--name[=value]`
//! options, callers only ever use the `=` form, and a parser this small lets
//! every refusal be one escaped line, with no terminal or environment probing
//! inside a privileged process.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::policy::ifname::{self, IfName};
use crate::report::escape::quote;

pub const USAGE: &str = "usage: bridge-helper [--use-vnet] [--queues=N] --br=BRIDGE --fd=FD";

/// The most queues one run hands over. A tap takes up to 256 queues
/// (MAX_TAP_QUEUES), but one SCM_RIGHTS message carries at most 253 fds
/// (SCM_MAX_FD), and all of a run's fds travel in one message: QEMU and
/// libvirt read exactly one, and a client must never see part of a tap.
pub const MAX_QUEUES: u16 = 253;

/// What the caller asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Attach(Request),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub bridge: IfName,
    pub fd: i32,
    pub use_vnet: bool,
    /// 1 unless `--queues=N` asked for a multiqueue tap.
    pub queues: u16,
    pub hook: Option<TestHook>,
}

/// Fault points that only a `test-hooks` build recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestHook {
    Panic,
    PauseBeforeSend,
    /// After the scan and the tap, before its slot: the window in which a
    /// user's other runs can change what the scan saw.
    PauseBeforeClaim,
    /// After choosing the tap's name, before creating it: the window in
    /// which another run can take that name.
    PauseBeforeCreate,
    /// After creating a multiqueue tap, before its owner and queues 2..N:
    /// the window in which anyone may attach a queue by its name.
    PauseBeforeQueues,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown argument {0}")]
    Unknown(String),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("--fd={0}: not a file descriptor number")]
    BadFd(String),
    #[error("--br={0}: not a valid bridge name: {1}")]
    BadBridge(String, ifname::Invalid),
    #[error("{0} takes no other arguments")]
    Alone(&'static str),
    #[error(
        "--queues={0}: not a number of queues (a plain decimal number from 1 to {MAX_QUEUES})"
    )]
    BadQueues(String),
    #[error("--queues={0}: out of range: a tap's queues travel in one message of at most {MAX_QUEUES} fds")]
    QueuesOutOfRange(String),
}

/// Parses everything after argv[0].
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    let mut bridge = None;
    let mut fd = None;
    let mut use_vnet = false;
    let mut queues = None;
    let mut hook = None;
    for arg in args {
        let arg = arg.as_bytes();
        if arg == b"--help" || arg == b"--version" {
            // Alone only: a caller that passes --fd is waiting for an fd, and
            // exit status 0 must never mean success without one.
            let name = if arg == b"--help" {
                "--help"
            } else {
                "--version"
            };
            if args.len() != 1 {
                return Err(UsageError::Alone(name));
            }
            return Ok(if name == "--help" {
                Command::Help
            } else {
                Command::Version
            });
        } else if arg == b"--use-vnet" {
            // QEMU appends its own --use-vnet to a helper string that may
            // already carry one, so a repeat is normal.
            use_vnet = true;
        } else if let Some(value) = arg.strip_prefix(b"--br=") {
            if bridge.replace(value).is_some() {
                return Err(UsageError::Repeated("--br"));
            }
        } else if let Some(value) = arg.strip_prefix(b"--fd=") {
            if fd.replace(parse_fd(value)?).is_some() {
                return Err(UsageError::Repeated("--fd"));
            }
        } else if let Some(value) = arg.strip_prefix(b"--queues=") {
            if queues.replace(parse_queues(value)?).is_some() {
                return Err(UsageError::Repeated("--queues"));
            }
        } else if let Some(h) = test_hook(arg) {
            hook = Some(h);
        } else {
            return Err(UsageError::Unknown(quote(arg)));
        }
    }
    let bridge = bridge.ok_or(UsageError::Missing("--br"))?;
    let fd = fd.ok_or(UsageError::Missing("--fd"))?;
    let bridge = IfName::new(bridge).map_err(|why| UsageError::BadBridge(quote(bridge), why))?;
    Ok(Command::Attach(Request {
        bridge,
        fd,
        use_vnet,
        queues: queues.unwrap_or(1),
        hook,
    }))
}

fn parse_fd(value: &[u8]) -> Result<i32, UsageError> {
    let bad = || UsageError::BadFd(quote(value));
    // Digits only: no sign, no whitespace, no base prefixes, no overflow.
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    value
        .iter()
        .try_fold(0i32, |n, &d| {
            n.checked_mul(10)?.checked_add(i32::from(d - b'0'))
        })
        .ok_or_else(bad)
}

/// `--queues=N`: plain decimal, 1 to [`MAX_QUEUES`]. Kept apart from the
/// parser so that any front end can call it.
pub fn parse_queues(value: &[u8]) -> Result<u16, UsageError> {
    // Digits only, as for --fd; a long run of them is out of range, not
    // malformed, so that "--queues=99999999999" says what is wrong.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(UsageError::BadQueues(quote(value)));
    }
    let n = value.iter().try_fold(0u16, |n, &d| {
        n.checked_mul(10)?.checked_add(u16::from(d - b'0'))
    });
    match n {
        Some(n @ 1..=MAX_QUEUES) => Ok(n),
        _ => Err(UsageError::QueuesOutOfRange(quote(value))),
    }
}

#[cfg(feature = "test-hooks")]
fn test_hook(arg: &[u8]) -> Option<TestHook> {
    match arg {
        b"--test-panic" => Some(TestHook::Panic),
        b"--test-pause" => Some(TestHook::PauseBeforeSend),
        b"--test-pause-claim" => Some(TestHook::PauseBeforeClaim),
        b"--test-pause-create" => Some(TestHook::PauseBeforeCreate),
        b"--test-pause-queues" => Some(TestHook::PauseBeforeQueues),
        _ => None,
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_hook(_: &[u8]) -> Option<TestHook> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn run(args: &[&[u8]]) -> Result<Command, UsageError> {
        let v: Vec<OsString> = args
            .iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect();
        parse(&v)
    }

    fn attach(bridge: &[u8], fd: i32, use_vnet: bool) -> Result<Command, UsageError> {
        Ok(Command::Attach(Request {
            bridge: IfName::new(bridge).unwrap(),
            fd,
            use_vnet,
            queues: 1,
            hook: None,
        }))
    }

    #[test]
    fn qemu_and_libvirt_orders() {
        assert_eq!(
            run(&[b"--use-vnet", b"--fd=5", b"--br=br0"]),
            attach(b"br0", 5, true)
        );
        assert_eq!(
            run(&[b"--use-vnet", b"--br=br0", b"--fd=5"]),
            attach(b"br0", 5, true)
        );
        assert_eq!(run(&[b"--br=br0", b"--fd=0"]), attach(b"br0", 0, false));
        // A helper= string that already says --use-vnet gets another from QEMU.
        assert_eq!(
            run(&[b"--use-vnet", b"--use-vnet", b"--fd=3", b"--br=x"]),
            attach(b"x", 3, true)
        );
    }

    #[test]
    fn help_and_version_only_alone() {
        assert_eq!(run(&[b"--help"]), Ok(Command::Help));
        assert_eq!(run(&[b"--version"]), Ok(Command::Version));
        assert_eq!(
            run(&[b"--help", b"--fd=3"]),
            Err(UsageError::Alone("--help"))
        );
        assert_eq!(
            run(&[b"--br=br0", b"--fd=3", b"--version"]),
            Err(UsageError::Alone("--version"))
        );
    }

    #[test]
    fn missing_repeated_unknown() {
        assert_eq!(run(&[]), Err(UsageError::Missing("--br")));
        assert_eq!(run(&[b"--br=br0"]), Err(UsageError::Missing("--fd")));
        assert_eq!(run(&[b"--fd=3"]), Err(UsageError::Missing("--br")));
        assert_eq!(
            run(&[b"--br=a", b"--br=b", b"--fd=3"]),
            Err(UsageError::Repeated("--br"))
        );
        assert_eq!(
            run(&[b"--br=a", b"--fd=3", b"--fd=3"]),
            Err(UsageError::Repeated("--fd"))
        );
        assert_eq!(
            run(&[b"--br", b"br0"]),
            Err(UsageError::Unknown("'--br'".into()))
        );
        assert_eq!(run(&[b"br0"]), Err(UsageError::Unknown("'br0'".into())));
        assert_eq!(
            run(&[b"--BR=br0"]),
            Err(UsageError::Unknown("'--BR=br0'".into()))
        );
    }

    #[test]
    #[cfg(not(feature = "test-hooks"))]
    fn release_builds_know_no_test_hooks() {
        assert_eq!(
            run(&[b"--test-pause", b"--br=a", b"--fd=3"]),
            Err(UsageError::Unknown("'--test-pause'".into()))
        );
    }

    #[test]
    fn fd_must_be_plain_decimal() {
        for bad in [
            &b""[..],
            b"-1",
            b"+3",
            b" 3",
            b"3 ",
            b"0x3",
            b"3a",
            b"2147483648",
            b"99999999999",
            b"\xff",
        ] {
            let mut arg = b"--fd=".to_vec();
            arg.extend_from_slice(bad);
            assert_eq!(
                run(&[b"--br=br0", &arg]),
                Err(UsageError::BadFd(quote(bad))),
                "{bad:?}"
            );
        }
        assert_eq!(
            run(&[b"--br=br0", b"--fd=2147483647"]),
            attach(b"br0", i32::MAX, false)
        );
        assert_eq!(run(&[b"--br=br0", b"--fd=007"]), attach(b"br0", 7, false));
    }

    #[test]
    fn bridge_names_are_checked_before_anything_else() {
        let long = b"br0123456789abcd"; // 16 bytes: CVE-2019-13164
        assert!(matches!(
            run(&[&[b"--br=", &long[..]].concat(), b"--fd=3"]),
            Err(UsageError::BadBridge(_, ifname::Invalid::TooLong(16)))
        ));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a b", b"a\x1b"] {
            let arg = [b"--br=", bad].concat();
            assert!(
                matches!(run(&[&arg, b"--fd=3"]), Err(UsageError::BadBridge(..))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn queues() {
        let with = |q: &[u8]| {
            run(&[
                b"--use-vnet",
                &[b"--queues=", q].concat(),
                b"--br=br0",
                b"--fd=3",
            ])
        };
        let want = |n: u16| {
            Ok(Command::Attach(Request {
                bridge: IfName::new(b"br0").unwrap(),
                fd: 3,
                use_vnet: true,
                queues: n,
                hook: None,
            }))
        };
        assert_eq!(with(b"1"), want(1));
        assert_eq!(with(b"4"), want(4));
        assert_eq!(with(b"0004"), want(4));
        assert_eq!(with(b"253"), want(253));
        for bad in [
            &b""[..],
            b"-1",
            b"+4",
            b" 4",
            b"4 ",
            b"0x4",
            b"4a",
            b"\xff",
            b"\xd9\xa4",
        ] {
            assert_eq!(with(bad), Err(UsageError::BadQueues(quote(bad))), "{bad:?}");
        }
        for big in [
            &b"0"[..],
            b"000",
            b"254",
            b"256",
            b"65535",
            b"65536",
            b"99999999999999",
        ] {
            assert_eq!(
                with(big),
                Err(UsageError::QueuesOutOfRange(quote(big))),
                "{big:?}"
            );
        }
        assert_eq!(
            run(&[b"--queues=2", b"--queues=2", b"--br=br0", b"--fd=3"]),
            Err(UsageError::Repeated("--queues"))
        );
        assert_eq!(
            run(&[b"--queues", b"2", b"--br=br0", b"--fd=3"]),
            Err(UsageError::Unknown("'--queues'".into()))
        );
        // Without the option, a run is exactly today's: one queue.
        assert_eq!(run(&[b"--br=br0", b"--fd=3"]), attach(b"br0", 3, false));
    }

    #[test]
    fn messages_escape_user_text() {
        let err = run(&[b"--evil\x1b[31m\n"]).unwrap_err().to_string();
        assert_eq!(err, "unknown argument '--evil\\x1b[31m\\n'");
    }
}
