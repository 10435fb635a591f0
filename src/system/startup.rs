//! What must happen before Rust's own start-up code, and the exit that
//! needs no allocation. Rust's start-up can fail on a hostile process
//! state (a tiny stack; an RLIMIT_AS with no room for the signal stack it
//! maps), and its default panic hook would print this setuid program's
//! addresses when RUST_BACKTRACE is set; the binary runs `main.rs`'s
//! `early_setup` from `.init_array` (see [`run_before_std_init`]) to make
//! the stack usable or exit cleanly, install the one-line panic hook and
//! keep std from mapping a signal stack. tests/redteam.rs
//! (`a_small_stack_limit_gives_a_documented_status`) and tests/hostile.rs
//! (`rlimit_as_small`) show each case.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::report::status;

/// Lets a write to a file over RLIMIT_FSIZE fail with EFBIG instead of
/// killing the process with SIGXFSZ halfway through a message.
pub fn ignore_sigxfsz() {
    // SAFETY: SIG_IGN is not a handler function, so no code runs in signal
    // context; the call only changes this process's disposition.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Every signal back to its default disposition and unblocked, but those
/// this binary's own start-up ignores (SIGSEGV and SIGBUS, see
/// [`leave_faults_to_the_kernel`]; SIGPIPE, Rust's runtime; SIGXFSZ,
/// [`ignore_sigxfsz`]): for the service, so that what it inherited from
/// whoever started it (a shell's ignored SIGHUP or blocked signals, an
/// ignored SIGCHLD that would leave its sessions unwaitable) reaches
/// neither its loop nor the runs of its sessions.
pub fn reset_signals() {
    const OWN: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGPIPE, libc::SIGXFSZ];
    // 1 to 64: every signal Linux has; the kernel (SIGKILL, SIGSTOP) and
    // the C library (its own real-time signals) refuse a few, and keep them.
    for sig in (1..=64).filter(|s| !OWN.contains(s)) {
        // SAFETY: SIG_DFL is not a handler function; this only changes the
        // process's disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Sets SIGSEGV and SIGBUS to SIG_IGN before Rust's runtime starts. The
/// runtime installs its stack-overflow handler (and mmaps an alternate
/// stack for it) only over the default disposition, and that mmap is what
/// aborts the process under a tight RLIMIT_AS. A real fault still kills:
/// the kernel resets an ignored synchronous SIGSEGV/SIGBUS to the default
/// before delivering it. What is lost is only the "has overflowed its
/// stack" message, for a program without deep recursion.
pub fn leave_faults_to_the_kernel() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: SIG_IGN is not a handler function; this only changes the
        // process's disposition.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Makes sure the main thread can grow the stack it needs, before Rust's
/// runtime starts: the soft RLIMIT_STACK is raised towards 8 MiB (as far
/// as the hard limit allows); if even the hard limit leaves less than
/// 256 KiB, the process ends with one line and the environment status
/// instead of dying of SIGSEGV somewhere later.
pub fn ensure_stack() {
    const WANT: libc::rlim_t = 8 << 20;
    const NEED: libc::rlim_t = 256 << 10;
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_STACK) else {
        return;
    };
    // Raising the soft limit up to the hard one needs no privilege.
    if soft < WANT && setrlimit(Resource::RLIMIT_STACK, WANT.min(hard), hard).is_ok() {
        soft = WANT.min(hard);
    }
    if soft < NEED {
        exit_now(b"bridge-helper: RLIMIT_STACK is too small (at least 256 KiB is needed)\n");
    }
}

/// Ends the process at once with the environment status (5), writing
/// `line` to stderr, without allocating or unwinding. Whoever made a tap
/// removes it first (taps::unfinished).
pub fn exit_now(line: &[u8]) -> ! {
    // One write(2) on fd 2: no lock, no buffer (this may run before std
    // has started).
    let _ = nix::unistd::write(std::io::stderr(), line);
    // SAFETY: _exit takes an integer and does not return; skipping atexit
    // handlers and stdio flushing is the point.
    unsafe { libc::_exit(i32::from(status::INSTALLATION)) }
}

/// Puts `$name`, a `static` pointing at the `extern "C" fn()` `$f`, in the
/// ELF `.init_array`, so that the C runtime calls `$f` before `main` and
/// before Rust's own start-up code. Used by the binary only (a library
/// user, test or fuzzer must not get it).
#[macro_export]
macro_rules! run_before_std_init {
    ($name:ident = $f:path) => {
        // SAFETY (of the section): the C library calls each .init_array entry as a
        // function, with (argc, argv, envp) that an `extern "C" fn()`
        // ignores; `$f` is such a function, and `#[used]` keeps the entry
        // through LTO and section garbage collection.
        #[used]
        #[link_section = ".init_array"]
        static $name: extern "C" fn() = $f;
    };
}
