//! bridge-helper: a memory-safe replacement for qemu-bridge-helper.
//!
//! The order of `run` is the security argument: privileges go first, then
//! input is read, then everything is checked, and only then is anything
//! created. See README.md and SECURITY.md.

#![deny(unsafe_code)]
// As Firecracker does: a cast that can truncate, wrap or lose a sign is a
// bug waiting for an input; use try_from, from, or cast_signed/unsigned.
#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use bridge_helper::cli::{self, Command};
use bridge_helper::report::error::Error;
use bridge_helper::report::escape::{Bytes, Quoted};
use bridge_helper::report::{audit, output};
use bridge_helper::service::{forward, server, wire};
use bridge_helper::system::checkpoint::{checkpoint, Stage};
use bridge_helper::system::netlink::Rtnetlink;
use bridge_helper::system::trusted_files::SystemFiles;
use bridge_helper::system::users;
use bridge_helper::system::{fd_passing, memory, privileges, startup};
use bridge_helper::taps::{reaper, tap, unfinished};
use bridge_helper::{check, steps};

/// The system allocator; running out of memory is the clean exit (status
/// 5, the unfinished tap removed), never an abort.
#[global_allocator]
static ALLOCATOR: memory::ExitWhenExhausted = memory::ExitWhenExhausted::new(out_of_memory);

fn out_of_memory() -> ! {
    unfinished::remove();
    startup::exit_now(b"bridge-helper: out of memory (is RLIMIT_AS or RLIMIT_DATA too low?)\n")
}

// Before Rust's own start-up code, which can fail on a hostile process
// state (a tiny stack, an RLIMIT_AS with no room for its signal stack) and
// whose default panic hook would print this setuid program's addresses when
// RUST_BACKTRACE is set: make the stack usable or exit cleanly, install the
// one-line panic hook (for the whole life of the process: std's start-up
// does not replace it), and keep std from mapping a signal stack at all.
bridge_helper::run_before_std_init!(EARLY_SETUP = early_setup);

extern "C" fn early_setup() {
    // Stack first: everything after it may need more than a tiny limit.
    startup::ensure_stack();
    output::install_panic_hook();
    startup::leave_faults_to_the_kernel();
}

fn main() -> ExitCode {
    startup::ignore_sigxfsz();
    if server::asked_to_serve() {
        // Each session runs its request through `served`, in the forked
        // process, as a setuid run by the peer (see service::server).
        let outcome =
            std::panic::catch_unwind(|| server::serve(served)).unwrap_or(Err(Error::Panicked));
        return ExitCode::from(status_of(outcome));
    }
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    ExitCode::from(exit_status(audit::Record::default(), |audit| {
        run(audit, &argv)
    }))
}

/// The exit status of `run` (a run of this binary, or a session's
/// request), with the one line on stderr for a failure: `audit` says
/// whose request it is.
fn exit_status(
    mut audit: audit::Record,
    run: impl FnOnce(&mut audit::Record) -> Result<(), Error>,
) -> u8 {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut audit)))
        .unwrap_or(Err(Error::Panicked));
    if let Err(e) = &outcome {
        // Whatever failed, even a panic: no tap outlives a failed run, not
        // even a multiqueue tap made persistent through a queue attached
        // and closed while it had no owner.
        unfinished::remove();
        audit.failed(e);
    }
    status_of(outcome)
}

/// The exit status, with the one line on stderr for a failure.
fn status_of(outcome: Result<(), Error>) -> u8 {
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            if let Some(line) = e.line() {
                output::notice(&line);
            }
            e.status()
        }
    }
}

/// A run, in order: privileges first, then the command line, then what it
/// asks for. `audit` learns who asked for what as the run goes, and logs
/// the outcome (see report::audit).
fn run(audit: &mut audit::Record, argv: &[OsString]) -> Result<(), Error> {
    let mut caller = privileges::drop_to_caller()?;
    audit.caller(caller.uid);
    match cli::parse(argv)? {
        Command::Help => {
            audit.quiet();
            output::print(output::HELP);
            Ok(())
        }
        Command::Version => {
            audit.quiet();
            output::print(&output::version());
            Ok(())
        }
        Command::Check(request) => {
            audit.quiet();
            check::run(caller, &request)
        }
        Command::Serve => {
            audit.quiet();
            Err(cli::UsageError::ServeNotRoot.into())
        }
        Command::RemoveAbandoned(user) => {
            audit.quiet();
            caller.settle()?;
            remove_abandoned(&caller, &user)
        }
        Command::Attach(request) => attach(audit, caller, request),
    }
}

/// A request to the service, in its session, from the process state a
/// setuid run starts in: what a run of this binary with the request's
/// command line does, without parsing one. After the drop, as a run
/// parses its command line after it, the wire's request becomes the
/// parser's typed request through the parser's own checks (its tap to
/// `fd`, the session's connection), or is refused with the parser's line.
fn served(audit: audit::Record, request: &wire::Request, fd: i32) -> u8 {
    exit_status(audit, |audit| {
        let caller = privileges::drop_to_caller()?;
        audit.caller(caller.uid);
        attach(audit, caller, request.attach(fd)?)
    })
}

/// A tap for the caller, in order: everything is read and checked before
/// anything is created, and the fd is sent last.
fn attach(
    audit: &mut audit::Record,
    mut caller: privileges::Caller,
    request: cli::Request,
) -> Result<(), Error> {
    audit.bridge(request.bridge.as_bytes());
    caller.settle()?;
    if caller.install.asks_service() {
        // Installed without privilege, or privileged only in a user
        // namespace whose capabilities do not reach this network: the
        // service makes the tap and logs the request (see
        // service::forward).
        audit.quiet();
        let forwarded = forward::attach(&request);
        if caller.install == privileges::Install::OtherUserNamespace {
            return forwarded.map_err(Error::in_user_namespace);
        }
        return forwarded;
    }
    caller.require_net_admin()?;
    checkpoint(request.hook, Stage::Privileged);
    let socket = fd_passing::verify(request.fd, &caller.tun.own_fds())?;
    // Everything the decision needs, read as the caller through one walk
    // (the files share their directories).
    let files = SystemFiles::default();
    let rules = steps::rules(&files)?;
    let conf = steps::settings(&files)?;
    let max_abandoned_taps = conf.max_abandoned_taps;
    let policy = steps::policy(rules, conf, &files, caller.uid)?;
    drop(files);
    audit.caller_name(policy.caller_name());
    // Decided on the name alone first, so that a refused caller learns
    // nothing about which bridges exist.
    steps::access_by_name(&policy, &request.bridge)?;
    let mut route = Rtnetlink::open().map_err(|e| Error::kernel("opening a netlink socket", e))?;
    let access = steps::access(&policy, &mut route, &request.bridge)?;
    let mut own_taps = reaper::reap(&mut route, caller.uid, caller.lookups(), max_abandoned_taps)?;
    let name = caller.without_net_admin(|| tap::free_name(&route))?;
    checkpoint(request.hook, Stage::BeforeCreate);
    // Every queue's descriptor first: a run that cannot have them all
    // creates nothing.
    let (first, more) = caller.tun.for_queues(request.queues)?;
    // A multiqueue tap under a name that is the caller's slot until it is
    // renamed below: findable by the caller's later runs from its first
    // instant, as anyone may attach to it before it has an owner.
    let mut tap = tap::create(
        &mut route,
        &mut own_taps,
        first,
        request.use_vnet,
        !more.is_empty(),
        name.as_ref(),
    )?;
    checkpoint(request.hook, Stage::BeforeQueues(&tap.name));
    tap.add_queues(&mut route, more, caller.uid)?;
    checkpoint(request.hook, Stage::BeforeClaim(&tap.name));
    let slot = own_taps.claim(&mut route, tap.index, &tap.name, tap.born)?;
    tap.rename(&mut route, name.as_ref(), caller.uid)?;
    tap.attach(
        &mut route,
        &access.bridge,
        caller.uid,
        slot.as_deref(),
        access.port.as_ref().map(|p| &p.settings),
    )?;
    checkpoint(request.hook, Stage::BeforeSend(&tap.name));
    privileges::drop_all()?;
    // Before the fd leaves: once the caller has it, it may kill us.
    audit.granted(&tap.name, &access.rule);
    fd_passing::send(socket, request.fd, &tap.fds())?;
    unfinished::handed_over();
    Ok(())
}

/// `--remove-abandoned --user=USER`: root only, for when a user's access
/// is revoked.
fn remove_abandoned(caller: &privileges::Caller, spec: &[u8]) -> Result<(), Error> {
    if !caller.uid.is_root() {
        return Err(cli::UsageError::NotRoot(Bytes::from(spec)).into());
    }
    caller.require_net_admin()?;
    let uid = users::uid_of(spec).ok_or_else(|| cli::UsageError::NoUser(Bytes::from(spec)))?;
    let mut route = Rtnetlink::open().map_err(|e| Error::kernel("opening a netlink socket", e))?;
    let removed = reaper::remove_all_abandoned(&mut route, uid)?;
    let names: Vec<String> = removed.iter().map(|n| Quoted(n).to_string()).collect();
    output::print(&format!(
        "removed {} abandoned tap(s) of uid {uid}{}{}\n",
        removed.len(),
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    ));
    Ok(())
}
