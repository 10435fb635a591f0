//! The command line, as QEMU and libvirt write it, parsed with clap.
//!
//! clap is built with its `std` feature only: no colour, terminal-width or
//! environment probing, no suggestions, no help rendering, inside a
//! privileged process. clap decides whether the command line parses; every
//! refusal is then stated by us, from the bytes of argv (escaped), never in
//! clap's rendering of user input.
//!
//! The grammar is the table [`OPTIONS`]: `--name=value` only, any order,
//! a flag marked `repeats` may be given again (QEMU appends its own
//! `--use-vnet` to a helper string that may already carry one), every other
//! option at most once. Adding an option is a row there and a line in
//! [`parse`] reading it.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches};

use crate::policy::ifname::{self, IfName};
use crate::report::escape::Bytes;
use crate::system::checkpoint::TestHook;

/// The most queues one run hands over. A tap takes up to 256 queues
/// (MAX_TAP_QUEUES), but all of a run's fds travel in one SCM_RIGHTS
/// message: QEMU and libvirt read exactly one, and a client must never see
/// part of a tap.
pub const MAX_QUEUES: u16 = crate::system::SCM_MAX_FD;

pub const USAGE: &str = "usage: bridge-helper [--use-vnet] [--queues=N] --br=BRIDGE --fd=FD | --check [--br=BRIDGE] [--user=USER] | --remove-abandoned --user=USER | --serve";

/// One option of the grammar.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// As written on the command line, `--` included.
    pub name: &'static str,
    /// Written `--name=VALUE` (never `--name VALUE`).
    pub value: bool,
    /// May be given more than once (flags only).
    pub repeats: bool,
}

const fn flag(name: &'static str) -> Opt {
    Opt {
        name,
        value: false,
        repeats: false,
    }
}

const fn value(name: &'static str) -> Opt {
    Opt {
        name,
        value: true,
        repeats: false,
    }
}

pub const OPTIONS: &[Opt] = &[
    Opt {
        repeats: true,
        ..flag("--use-vnet")
    },
    value("--br"),
    value("--fd"),
    value("--queues"),
    flag("--check"),
    value("--user"),
    flag("--remove-abandoned"),
    // Root's `--serve` never reaches the parser (see service::server::
    // asked_to_serve): here it is anyone else's, refused in one line.
    flag("--serve"),
    flag("--help"),
    flag("--version"),
];

/// Fault points that only a `test-hooks` build recognises.
#[cfg(feature = "test-hooks")]
const TEST_OPTIONS: &[Opt] = &[
    Opt {
        repeats: true,
        ..flag("--test-panic")
    },
    Opt {
        repeats: true,
        ..flag("--test-pause")
    },
    Opt {
        repeats: true,
        ..flag("--test-pause-claim")
    },
    Opt {
        repeats: true,
        ..flag("--test-pause-create")
    },
    Opt {
        repeats: true,
        ..flag("--test-pause-queues")
    },
];
#[cfg(not(feature = "test-hooks"))]
const TEST_OPTIONS: &[Opt] = &[];

fn options() -> impl Iterator<Item = &'static Opt> {
    OPTIONS.iter().chain(TEST_OPTIONS)
}

/// What the caller asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Attach(Request),
    Check(CheckRequest),
    /// `--remove-abandoned --user=USER` (root only): removes the abandoned
    /// persistent taps this helper made for USER.
    RemoveAbandoned(Vec<u8>),
    /// `--serve` by anyone but root (root's never gets here): refused.
    Serve,
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

/// `--check [--br=BRIDGE] [--user=USER]`: what a run would decide, with
/// nothing created, changed or sent.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckRequest {
    pub bridge: Option<IfName>,
    /// A user name or a decimal uid, as given (root only; resolved later).
    pub user: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown argument {0}")]
    Unknown(Bytes),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("--fd={0}: not a file descriptor number")]
    BadFd(Bytes),
    #[error("--br={0}: not a valid bridge name: {1}")]
    BadBridge(Bytes, ifname::Invalid),
    #[error("{0} takes no other arguments")]
    Alone(&'static str),
    #[error(
        "--queues={0}: not a number of queues (a plain decimal number from 1 to {MAX_QUEUES})"
    )]
    BadQueues(Bytes),
    #[error("--queues={0}: out of range: a tap's queues travel in one message of at most {MAX_QUEUES} fds")]
    QueuesOutOfRange(Bytes),
    #[error("{0} cannot be used with {1}")]
    Conflict(&'static str, &'static str),
    #[error("{0} needs {1}")]
    Needs(&'static str, &'static str),
    #[error("--user={0}: only root may use --user")]
    NotRoot(Bytes),
    #[error("--serve: only root may run the service")]
    ServeNotRoot,
    #[error("--user={0}: no such user in /etc/passwd")]
    NoUser(Bytes),
}

/// clap's view of the grammar: built from [`OPTIONS`], with clap's own
/// --help, --version, help subcommand and positionals switched off.
fn grammar() -> clap::Command {
    let mut cmd = clap::Command::new("bridge-helper")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    for opt in options() {
        let long = &opt.name[2..];
        let arg = Arg::new(long).long(long);
        cmd = cmd.arg(match (opt.value, opt.repeats) {
            (true, _) => arg
                .action(ArgAction::Set)
                .require_equals(true)
                .num_args(1)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString)),
            (false, true) => arg.action(ArgAction::Count),
            (false, false) => arg.action(ArgAction::SetTrue),
        });
    }
    cmd
}

/// Parses everything after argv[0].
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    let m = grammar()
        .try_get_matches_from(args)
        .map_err(|e| refusal(e.kind(), args))?;
    for (alone, command) in [
        ("--help", Command::Help),
        ("--version", Command::Version),
        ("--serve", Command::Serve),
    ] {
        if given(&m, alone) {
            // Alone only: a caller that passes --fd is waiting for an fd, and
            // exit status 0 must never mean success without one.
            if args.len() != 1 {
                return Err(UsageError::Alone(alone));
            }
            return Ok(command);
        }
    }
    let fd = value_of(&m, "--fd").map(parse_fd).transpose()?;
    let queues = value_of(&m, "--queues").map(parse_queues).transpose()?;
    let bridge = value_of(&m, "--br");
    let user = value_of(&m, "--user");
    if given(&m, "--remove-abandoned") {
        for other in ["--check", "--br", "--fd", "--use-vnet", "--queues"] {
            if given(&m, other) {
                return Err(UsageError::Conflict(other, "--remove-abandoned"));
            }
        }
        let user = user.ok_or(UsageError::Needs("--remove-abandoned", "--user"))?;
        return Ok(Command::RemoveAbandoned(user.to_vec()));
    }
    if given(&m, "--check") {
        if fd.is_some() {
            return Err(UsageError::Conflict("--fd", "--check"));
        }
        if queues.is_some() {
            return Err(UsageError::Conflict("--queues", "--check"));
        }
        return Ok(Command::Check(CheckRequest {
            bridge: bridge.map(bridge_name).transpose()?,
            user: user.map(<[u8]>::to_vec),
        }));
    }
    if user.is_some() {
        return Err(UsageError::Needs("--user", "--check"));
    }
    let bridge = bridge.ok_or(UsageError::Missing("--br"))?;
    let fd = fd.ok_or(UsageError::Missing("--fd"))?;
    Ok(Command::Attach(Request {
        bridge: bridge_name(bridge)?,
        fd,
        use_vnet: given(&m, "--use-vnet"),
        queues: queues.unwrap_or(1),
        hook: test_hook(&m),
    }))
}

fn given(m: &ArgMatches, name: &str) -> bool {
    let id = &name[2..];
    match options().find(|o| o.name == name) {
        Some(Opt { value: true, .. }) => m.contains_id(id),
        Some(Opt { repeats: true, .. }) => m.get_count(id) > 0,
        Some(_) => m.get_flag(id),
        None => false,
    }
}

fn value_of<'m>(m: &'m ArgMatches, name: &str) -> Option<&'m [u8]> {
    m.get_one::<OsString>(&name[2..])
        .map(|v| OsStr::as_bytes(v))
}

/// `--br=VALUE`: an interface name, or the line that says why not. Public
/// for the service, whose wire carries the bridge as QEMU writes it after
/// `--br=` and whose request is checked as this parser checks it.
pub fn bridge_name(value: &[u8]) -> Result<IfName, UsageError> {
    IfName::new(value).map_err(|why| UsageError::BadBridge(Bytes::from(value), why))
}

/// clap's refusal, restated from argv: clap's kind says what went wrong,
/// the bytes of argv say where (clap's own context would be a lossy UTF-8
/// copy, and is not built without its error-context feature).
fn refusal(kind: ErrorKind, args: &[OsString]) -> UsageError {
    let found = match kind {
        // A second occurrence of a once-only option.
        ErrorKind::ArgumentConflict => first_repeat(args).or_else(|| first_unknown(args)),
        // Not in the table, `--name VALUE` or `--name` without `=`, a
        // value given to a flag, a positional, `--`.
        ErrorKind::UnknownArgument
        | ErrorKind::NoEquals
        | ErrorKind::TooManyValues
        | ErrorKind::InvalidSubcommand
        | ErrorKind::InvalidValue => first_unknown(args).or_else(|| first_repeat(args)),
        // Nothing else can come from this grammar (no required arguments,
        // no UTF-8 values, no help or version rendering), but clap may grow
        // kinds: still say which argument, never clap's text.
        _ => first_unknown(args).or_else(|| first_repeat(args)),
    };
    found.unwrap_or_else(|| {
        UsageError::Unknown(Bytes::from(args.first().map_or(&b""[..], |a| a.as_bytes())))
    })
}

/// The first argument that is no option of the table as written.
fn first_unknown(args: &[OsString]) -> Option<UsageError> {
    args.iter()
        .map(|a| a.as_bytes())
        .find(|a| !options().any(|o| written_as(o, a)))
        .map(|a| UsageError::Unknown(Bytes::from(a)))
}

/// The first once-only option given a second time.
fn first_repeat(args: &[OsString]) -> Option<UsageError> {
    let mut seen: Vec<&'static str> = Vec::new();
    for a in args {
        let Some(opt) = options().find(|o| written_as(o, a.as_bytes())) else {
            continue;
        };
        if !opt.repeats && seen.contains(&opt.name) {
            return Some(UsageError::Repeated(opt.name));
        }
        seen.push(opt.name);
    }
    None
}

fn written_as(opt: &Opt, arg: &[u8]) -> bool {
    match arg.strip_prefix(opt.name.as_bytes()) {
        Some(rest) if opt.value => rest.starts_with(b"="),
        Some(rest) => rest.is_empty(),
        None => false,
    }
}

fn parse_fd(value: &[u8]) -> Result<i32, UsageError> {
    let bad = || UsageError::BadFd(Bytes::from(value));
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
        return Err(UsageError::BadQueues(Bytes::from(value)));
    }
    let n = value.iter().try_fold(0u16, |n, &d| {
        n.checked_mul(10)?.checked_add(u16::from(d - b'0'))
    });
    match n {
        Some(n) if queues_in_range(n) => Ok(n),
        _ => Err(UsageError::QueuesOutOfRange(Bytes::from(value))),
    }
}

/// Whether a run may hand over a tap of `n` queues: 1 to [`MAX_QUEUES`].
/// The one range check, for the command line and the service's wire.
pub fn queues_in_range(n: u16) -> bool {
    (1..=MAX_QUEUES).contains(&n)
}

#[cfg(feature = "test-hooks")]
fn test_hook(m: &ArgMatches) -> Option<TestHook> {
    [
        ("--test-panic", TestHook::Panic),
        ("--test-pause", TestHook::PauseBeforeSend),
        ("--test-pause-claim", TestHook::PauseBeforeClaim),
        ("--test-pause-create", TestHook::PauseBeforeCreate),
        ("--test-pause-queues", TestHook::PauseBeforeQueues),
    ]
    .into_iter()
    .find(|(name, _)| given(m, name))
    .map(|(_, hook)| hook)
}

#[cfg(not(feature = "test-hooks"))]
fn test_hook(_: &ArgMatches) -> Option<TestHook> {
    None
}

#[cfg(test)]
mod tests;
