//! Statistics (nearest-rank percentiles, per-program summaries) and the
//! table cells and rows they are printed as.

use std::fmt::Write as _;

use crate::drivers::Run;

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Copy)]
pub struct Stats {
    pub med: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentiles.
pub fn stats(v: &[f64]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some(Stats {
        med: rank(50.0),
        p99: rank(99.0),
        min: s[0],
        max: s[s.len() - 1],
    })
}

pub fn f0(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn r2(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("**{v:.2}**"))
}

/// Per (program, mode) summary of sequential runs.
#[derive(Clone, Copy, Default)]
pub struct Summary {
    pub fd: Option<Stats>,
    pub exit: Option<Stats>,
    pub cpu_med: Option<f64>,
    pub rss_med: Option<f64>,
    pub fails: usize,
    pub n: usize,
}

pub fn summarize(runs: &[Run]) -> Summary {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.ok).collect();
    let fd: Vec<f64> = ok.iter().filter_map(|r| r.fd_us).collect();
    let exit: Vec<f64> = ok.iter().map(|r| r.exit_us).collect();
    let cpu: Vec<f64> = ok.iter().map(|r| r.cpu_us).collect();
    let rss: Vec<f64> = ok.iter().map(|r| r.maxrss_kb as f64).collect();
    Summary {
        fd: stats(&fd),
        exit: stats(&exit),
        cpu_med: stats(&cpu).map(|s| s.med),
        rss_med: stats(&rss).map(|s| s.med),
        fails: runs.len() - ok.len(),
        n: runs.len(),
    }
}

pub fn summary_cells(s: &Summary) -> Vec<String> {
    let g = |st: Option<Stats>, f: fn(Stats) -> f64| f0(st.map(f));
    vec![
        g(s.fd, |x| x.med),
        g(s.fd, |x| x.p99),
        g(s.fd, |x| x.min),
        g(s.fd, |x| x.max),
        g(s.exit, |x| x.med),
        g(s.exit, |x| x.p99),
        g(s.exit, |x| x.min),
        g(s.exit, |x| x.max),
        f0(s.cpu_med),
        f0(s.rss_med),
        format!("{}/{}", s.fails, s.n),
    ]
}

pub fn ratio_cells(a: &Summary, b: &Summary) -> Vec<String> {
    let g = |x: Option<Stats>, y: Option<Stats>, f: fn(Stats) -> f64| r2(ratio(x.map(f), y.map(f)));
    vec![
        g(a.fd, b.fd, |x| x.med),
        g(a.fd, b.fd, |x| x.p99),
        g(a.fd, b.fd, |x| x.min),
        g(a.fd, b.fd, |x| x.max),
        g(a.exit, b.exit, |x| x.med),
        g(a.exit, b.exit, |x| x.p99),
        g(a.exit, b.exit, |x| x.min),
        g(a.exit, b.exit, |x| x.max),
        r2(ratio(a.cpu_med, b.cpu_med)),
        r2(ratio(a.rss_med, b.rss_med)),
        String::new(),
    ]
}

pub fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}
