//! bridge-helper: a memory-safe replacement for qemu-bridge-helper.
//!
//! The order of `run` is the security argument: privileges go first, then
//! input is read, then everything is checked, and only then is anything
//! created. See README.md and SECURITY.md.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use bridge_helper::acl::{self, Verdict};
use bridge_helper::args::{self, Command, TestHook};
use bridge_helper::error::{self, Error};
use bridge_helper::escape::quote;
use bridge_helper::{
    aclfile, config, fdpass, leftovers, netlink, privs, report, settings, sys, tap,
};

/// Allocation failure is an exit with status 5, never an abort.
#[global_allocator]
static ALLOCATOR: sys::ExitOnOom = sys::ExitOnOom;

// Before Rust's own start-up code, which can fail on a hostile process
// state (a tiny stack, an RLIMIT_AS with no room for its signal stack) and
// whose default panic hook would print this setuid program's addresses when
// RUST_BACKTRACE is set: make the stack usable or exit cleanly, install the
// one-line panic hook, and keep std from mapping a signal stack at all.
bridge_helper::run_before_std_init!(EARLY_SETUP = early_setup);

extern "C" fn early_setup() {
    // Stack first: everything after it may need more than a tiny limit.
    sys::ensure_stack();
    report::install_panic_hook();
    sys::leave_faults_to_the_kernel();
}

fn main() -> ExitCode {
    report::install_panic_hook();
    sys::ignore_sigxfsz();
    match std::panic::catch_unwind(run).unwrap_or(Err(Error::Internal)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Internal) => ExitCode::from(error::status::INTERNAL),
        Err(e) => {
            report::notice(&e.to_string());
            ExitCode::from(e.status())
        }
    }
}

fn run() -> Result<(), Error> {
    let mut privileges = privs::drop_to_caller()?;
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let request = match args::parse(&argv)? {
        Command::Help => return report::print(report::HELP),
        Command::Version => return report::print(&report::version()),
        Command::Attach(request) => request,
    };
    privileges.require_net_admin()?;
    if request.hook == Some(TestHook::Panic) {
        panic!("forced by --test-panic at {:p}", &request);
    }
    let socket = fdpass::verify(request.fd, &privileges.tun.own_fds())?;
    let rules = aclfile::load(&aclfile::SystemFiles, Path::new(config::ACL_FILE))?;
    // Decided on the name alone first, so that a refused caller learns
    // nothing about which bridges exist.
    authorize(acl::decide_names(&rules, &[&request.bridge], &[]))?;

    let mut route =
        netlink::Route::open().map_err(|e| Error::kernel("opening a netlink socket", e))?;
    let bridge = tap::find_bridge(&mut route, &request.bridge)?;
    // The kernel finds a bridge by its altnames too: a deny of any of its
    // names holds, and its real name must be allowed as well.
    let altnames: Vec<&[u8]> = bridge.altnames.iter().map(Vec::as_slice).collect();
    authorize(acl::decide_names(
        &rules,
        &[&request.bridge, &bridge.name],
        &altnames,
    ))?;
    let defaults = settings::Settings {
        max_abandoned_taps: config::MAX_ABANDONED,
    };
    let settings = settings::load(
        &aclfile::SystemFiles,
        Path::new(config::SETTINGS_FILE),
        defaults,
    )?;
    let mut registry = leftovers::reap(&mut route, privileges.uid, settings.max_abandoned_taps)?;
    let name = privileges.lowered(|| tap::free_name(&route))?;
    if request.hook == Some(TestHook::PauseBeforeCreate) {
        pause("paused before creating the tap");
    }
    let tap = tap::create(
        &mut route,
        privileges.tun.for_tap()?,
        request.use_vnet,
        name.as_deref(),
    )?;
    if request.hook == Some(TestHook::PauseBeforeClaim) {
        pause(&format!(
            "paused before claiming a slot for {}",
            quote(&tap.name)
        ));
    }
    // Findable by the caller's later runs before it is in the bridge.
    let slot = registry.claim(&mut route, tap.index, &tap.name)?;
    tap.attach(&mut route, &bridge, privileges.uid, slot.as_deref())?;
    if request.hook == Some(TestHook::PauseBeforeSend) {
        pause(&format!("paused before sending {}", quote(&tap.name)));
    }
    privs::drop_all()?;
    fdpass::send(socket, request.fd, tap.fd.as_fd())
}

/// A test-hooks stop: the test resumes the run with SIGCONT.
fn pause(why: &str) {
    report::notice(why);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
}

/// Turns the ACL's verdict on a bridge name into the run's outcome.
fn authorize((bridge, verdict): (&[u8], Verdict<'_, aclfile::Origin>)) -> Result<(), Error> {
    match verdict {
        Verdict::Allowed(_) => Ok(()),
        Verdict::Denied(rule) => Err(Error::DeniedBy {
            bridge: quote(bridge),
            rule: rule.to_string(),
        }),
        Verdict::NoAllow => Err(Error::NotAllowed {
            bridge: quote(bridge),
            file: config::ACL_FILE.into(),
        }),
    }
}
