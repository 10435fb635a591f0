//! Stops in a run that only a `test-hooks` build has (`--test-panic`,
//! `--test-pause*`), so that tests can race the helper at a known point or
//! read `/proc/PID/status`. One call per stage in `main`; a release build
//! compiles it to nothing.

/// Fault points that only a `test-hooks` build recognises (the command
/// line's `--test-panic`, `--test-pause*`).
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

/// Where a test may stop a run.
pub enum Stage<'a> {
    /// Privileged, nothing read yet but the arguments: `--test-panic`.
    Privileged,
    /// The tap's name is chosen, the tap not yet created.
    BeforeCreate,
    /// The tap exists with its first queue only, and no owner yet.
    BeforeQueues(&'a [u8]),
    /// The tap exists, its slot is not yet claimed.
    BeforeClaim(&'a [u8]),
    /// The tap is configured, its fd not yet sent.
    BeforeSend(&'a [u8]),
}

/// Panics or stops (SIGSTOP; the test resumes with SIGCONT) if `hook`
/// asks for `stage`.
#[cfg(feature = "test-hooks")]
pub fn checkpoint(hook: Option<TestHook>, stage: Stage<'_>) {
    use crate::report::escape::Quoted;
    let why = match (hook, stage) {
        // An address in the message: the panic hook must print none of it.
        (Some(TestHook::Panic), Stage::Privileged) => {
            panic!("forced by --test-panic at {:p}", &hook)
        }
        (Some(TestHook::PauseBeforeCreate), Stage::BeforeCreate) => {
            "paused before creating the tap".to_string()
        }
        (Some(TestHook::PauseBeforeQueues), Stage::BeforeQueues(tap)) => {
            format!("paused before attaching queues to {}", Quoted(tap))
        }
        (Some(TestHook::PauseBeforeClaim), Stage::BeforeClaim(tap)) => {
            format!("paused before claiming a slot for {}", Quoted(tap))
        }
        (Some(TestHook::PauseBeforeSend), Stage::BeforeSend(tap)) => {
            format!("paused before sending {}", Quoted(tap))
        }
        _ => return,
    };
    crate::report::output::notice(&why);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn checkpoint(_: Option<TestHook>, _: Stage<'_>) {}
