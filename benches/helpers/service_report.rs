//! The service rows' tables and targets (issue 26), after the main report.

use std::fmt::Write as _;

use crate::drivers::ConcRound;
use crate::service::{Client, Level, Serve};
use crate::stats::{f0, r2, ratio, ratio_cells, row, stats, summarize, summary_cells};

fn cells(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn conc_med(v: &[ConcRound], f: fn(&ConcRound) -> f64) -> Option<f64> {
    stats(&v.iter().map(f).collect::<Vec<_>>()).map(|s| s.med)
}

/// The service section: interleaved runs, K at once, cold starts, targets.
pub fn render(levels: &[Level], n: usize, rounds: usize, cold: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## The service (issue 26): forwarder and client crate against the setuid mode\n\n\
         The service (`bridge-helper --serve`, as built from this tree) runs as the tests run it: \
         `setpriv` with the unit's capability bounding set and no new privileges, \
         `systemd-socket-activate -l /run/bridge-helper/socket`, in a mount namespace of its own \
         (an empty tmpfs on `/run`). *Forwarder*: our binary with no setuid bit and no capability, \
         run as nobody QEMU-style (`--use-vnet --fd=N --br=BR`), spawn → fd. *Client crate*: \
         `bridge_helper_client::Service::request` in a child already in the namespaces as nobody, \
         from the call to its return (it returns once the tap has arrived and is verified: a usable \
         tap), so its `fd` and `exit` are one figure. N={n} each, \
         interleaved with our setuid mode and QEMU's helper (setuid) in a fixed-seed shuffled \
         order (µs)."
    );
    let header = cells(&[
        "client", "fd med", "fd p99", "fd min", "fd max", "exit med", "exit p99", "exit min",
        "exit max", "cpu med", "rss med", "fail/N",
    ]);
    for l in levels {
        let _ = writeln!(out, "\n### {} taps already on the bridge\n", l.taps);
        row(&mut out, &header);
        row(&mut out, &vec!["---".into(); header.len()]);
        let sum = |c| l.seq.get(&c).map(|v| summarize(v));
        for c in Client::ALL {
            if let Some(s) = sum(c) {
                let mut r = vec![c.label().to_string()];
                r.extend(summary_cells(&s));
                row(&mut out, &r);
            }
        }
        for (a, b) in [
            (Client::Forwarder, Client::Setuid),
            (Client::Direct, Client::Setuid),
            (Client::Setuid, Client::Qemu),
            (Client::Forwarder, Client::Qemu),
        ] {
            if let (Some(x), Some(y)) = (sum(a), sum(b)) {
                let mut r = vec![format!("**{} / {}**", a.label(), b.label())];
                r.extend(ratio_cells(&x, &y));
                row(&mut out, &r);
            }
        }
    }

    let _ = writeln!(
        out,
        "\n### K at once, {rounds} rounds each, interleaved\n\n\
         `total` = first fork (client crate: the release of K ready children) → all reaped (ms, \
         median of rounds [min–max]); `fds` = → all fds received (ms, median).\n"
    );
    let h = cells(&[
        "taps",
        "K",
        "client",
        "total ms",
        "fds ms",
        "failures",
        "distinct taps (min)",
    ]);
    row(&mut out, &h);
    row(&mut out, &vec!["---".into(); h.len()]);
    for l in levels {
        for c in Client::ALL {
            let Some(v) = l.conc.get(&c) else { continue };
            let tot: Vec<f64> = v.iter().map(|r| r.total_us / 1e3).collect();
            let Some(s) = stats(&tot) else { continue };
            row(
                &mut out,
                &[
                    l.taps.to_string(),
                    l.k.to_string(),
                    c.label().into(),
                    format!("{:.1} [{:.1}–{:.1}]", s.med, s.min, s.max),
                    format!("{:.1}", conc_med(v, |r| r.all_fds_us / 1e3).unwrap_or(0.0)),
                    format!(
                        "{}/{}",
                        v.iter().map(|r| r.fails).sum::<usize>(),
                        v.len() * l.k
                    ),
                    v.iter().map(|r| r.distinct).min().unwrap_or(0).to_string(),
                ],
            );
        }
    }

    let _ = writeln!(
        out,
        "\n### Cold starts: the first request to a service not running yet, {cold} each\n\n\
         A fresh `systemd-socket-activate` holding only the socket; the request starts the \
         service (exec, set-up, accept) as systemd's socket unit would. µs; ratios to the same \
         client's warm median and to our setuid mode's warm spawn → fd median.\n"
    );
    let h = cells(&[
        "taps", "client", "med", "min", "max", "fail/N", "/ warm", "/ setuid",
    ]);
    row(&mut out, &h);
    row(&mut out, &vec!["---".into(); h.len()]);
    for l in levels {
        let warm = |c| l.seq.get(&c).and_then(|v| summarize(v).fd).map(|s| s.med);
        for (c, v) in &l.cold {
            let s = summarize(v);
            let fd = s.fd;
            row(
                &mut out,
                &[
                    l.taps.to_string(),
                    c.label().into(),
                    fd.map_or("—".into(), |s| format!("{:.0}", s.med)),
                    fd.map_or("—".into(), |s| format!("{:.0}", s.min)),
                    fd.map_or("—".into(), |s| format!("{:.0}", s.max)),
                    format!("{}/{}", s.fails, s.n),
                    r2(ratio(fd.map(|s| s.med), warm(*c))),
                    r2(ratio(fd.map(|s| s.med), warm(Client::Setuid))),
                ],
            );
        }
    }
    targets(&mut out, levels);
    floor_info(&mut out, levels);
    out
}

/// The forwarded floor against the service's budgets: what the
/// architecture costs with nothing but the kernel's work done (info, not
/// targets).
fn floor_info(out: &mut String, levels: &[Level]) {
    if !levels.iter().any(|l| l.seq.contains_key(&Client::Floor)) {
        return;
    }
    let _ = writeln!(
        out,
        "\n### The forwarded floor (info)\n\n\
         `benches/floor.c` reached the way the service is: a root server on a Unix socket (a fork \
         per connection, as ours, or pre-forked spares that accept by themselves), its forwarder \
         exec'd as ours is, or the bench connecting in process as the client crate is timed; no \
         checks anywhere. Medians of the interleaved runs above (spawn → fd; call → fd). The \
         forwarder's budget is 0.2× our setuid mode's median: what a forwarded request may add \
         to a run for 1.2×.\n"
    );
    row(out, &cells(&["(info)", "taps", "value"]));
    row(out, &vec!["---".into(); 3]);
    for l in levels {
        let fd = |c| l.seq.get(&c).and_then(|v| summarize(v).fd).map(|s| s.med);
        let (floor, setuid) = (fd(Client::Floor), fd(Client::Setuid));
        let budget = setuid.map(|s| 0.2 * s);
        let line = |out: &mut String, what: String, value: String| {
            row(out, &[what, l.taps.to_string(), value]);
        };
        line(
            out,
            "floor, setuid; our setuid mode: median µs".into(),
            format!("{}; {}", f0(floor), f0(setuid)),
        );
        for s in Serve::ALL {
            let (name, fwd, direct) = (
                s.arg(),
                fd(Client::FloorForward(s)),
                fd(Client::FloorDirect(s)),
            );
            line(
                out,
                format!("floor forwarder ({name}): median µs, / floor"),
                format!("{}, {}", f0(fwd), r2(ratio(fwd, floor))),
            );
            let extra = fwd.zip(floor).map(|(a, b)| a - b);
            line(
                out,
                format!(
                    "floor forwarder ({name}) − floor, µs, against 0.2× our setuid mode (µs), share"
                ),
                format!(
                    "{} against {}, {}",
                    f0(extra),
                    f0(budget),
                    r2(ratio(extra, budget))
                ),
            );
            line(
                out,
                format!("floor client ({name}): median µs, / our setuid mode (target 0.85)"),
                format!("{}, {}", f0(direct), r2(ratio(direct, setuid))),
            );
        }
        let ours = |a, b| fd(a).zip(fd(b)).map(|(a, b)| a - b);
        line(
            out,
            "beyond the floor, µs: our setuid mode − floor; forwarder − floor forwarder (fork); \
             client crate − floor client (fork)"
                .into(),
            format!(
                "{}; {}; {}",
                f0(ours(Client::Setuid, Client::Floor)),
                f0(ours(Client::Forwarder, Client::FloorForward(Serve::Fork))),
                f0(ours(Client::Direct, Client::FloorDirect(Serve::Fork))),
            ),
        );
    }
}

/// Issue 26's speed targets, against our setuid mode and QEMU's helper
/// from the same interleaved run.
fn targets(out: &mut String, levels: &[Level]) {
    let _ = writeln!(out, "\n### Service targets\n");
    row(out, &cells(&["target", "taps", "value", "verdict"]));
    row(out, &vec!["---".into(); 4]);
    let line = |out: &mut String, what: &str, taps: usize, v: Option<f64>, limit: f64| {
        let verdict = match v {
            Some(v) if v <= limit => "PASS",
            Some(_) => "FAIL",
            None => "n/a",
        };
        row(out, &[what.into(), taps.to_string(), r2(v), verdict.into()]);
    };
    for l in levels {
        let fd = |c| l.seq.get(&c).and_then(|v| summarize(v).fd).map(|s| s.med);
        let total = |c| l.conc.get(&c).and_then(|v| conc_med(v, |r| r.total_us));
        line(
            out,
            "forwarder + service, median spawn→fd ≤ 1.2× our setuid mode",
            l.taps,
            ratio(fd(Client::Forwarder), fd(Client::Setuid)),
            1.2,
        );
        line(
            out,
            "client crate → service, median request ≤ 0.85× our setuid mode's spawn→fd",
            l.taps,
            ratio(fd(Client::Direct), fd(Client::Setuid)),
            0.85,
        );
        for c in [Client::Forwarder, Client::Direct] {
            line(
                out,
                &format!(
                    "{} at once ({}), total ≤ 0.80× QEMU's helper",
                    l.k,
                    c.label()
                ),
                l.taps,
                ratio(total(c), total(Client::Qemu)),
                0.80,
            );
            let v = l.conc.get(&c).map(|v| v.as_slice()).unwrap_or_default();
            let fails: usize = v.iter().map(|r| r.fails).sum();
            let distinct = v.iter().map(|r| r.distinct).min().unwrap_or(0);
            let ok = !v.is_empty() && fails == 0 && distinct == l.k;
            row(
                out,
                &[
                    format!(
                        "{} at once ({}): 0 failures, {} distinct taps",
                        l.k,
                        c.label(),
                        l.k
                    ),
                    l.taps.to_string(),
                    format!("{fails} failures, min {distinct} distinct"),
                    if ok { "PASS" } else { "FAIL" }.into(),
                ],
            );
        }
    }
}
