//! Every fixed time limit of the tests, scaled by one variable.
//!
//! `BH_TEST_TIME_SCALE` (a positive number, default 2) multiplies every
//! deadline and every "did not arrive" window in the suite: how long a run
//! may take before it counts as a hang, how long a guest may take to boot
//! under TCG, how long a closed tap may linger. The default holds on a
//! 2-core machine that something else keeps busy; raise it on slower
//! machines (a limit that fires says which one it was and how long it
//! waited). Limits only bound waiting: a passing test takes as long with
//! any scale, except for its "did not arrive" windows.
use std::sync::OnceLock;
use std::time::Duration;

pub const VAR: &str = "BH_TEST_TIME_SCALE";
const DEFAULT: f64 = 2.0;

/// The factor from `BH_TEST_TIME_SCALE`; a value that is not a positive
/// number stops the test with one line saying so.
pub fn scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var(VAR) {
        Err(_) => DEFAULT,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => x,
            _ => panic!("{VAR}={v:?}: not a positive number (e.g. {VAR}=3)"),
        },
    })
}

/// `base`, the limit on an idle machine, times [`scale`].
pub fn limit(base: Duration) -> Duration {
    base.mul_f64(scale())
}

/// [`limit`] of `n` seconds.
pub fn secs(n: u64) -> Duration {
    limit(Duration::from_secs(n))
}

/// [`limit`] of `n` milliseconds.
pub fn millis(n: u64) -> Duration {
    limit(Duration::from_millis(n))
}
