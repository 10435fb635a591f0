//! Issue 26, point 5: the service holds against hostile local clients.
//! Many requests of every kind (granted, refused, malformed, abandoned
//! mid-request, 64 of one user at once) leave the service's descriptors,
//! sessions and memory where they started and no tap behind; a silent or
//! trickling client holds nothing past its deadline and delays nobody.
//! `BH_SERVICE_REQUESTS=N` sets the number of requests (default 10000).
mod common;
#[path = "support/service.rs"]
mod service;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use service::{request, Service};

fn requests() -> usize {
    std::env::var("BH_SERVICE_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn many_requests_of_every_kind_leave_the_service_as_it_started() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\ndeny br1\n");
    let svc = Service::start(&sb, &ns);
    // Warm up (the first requests map what the loop keeps), then measure.
    for _ in 0..20 {
        assert_eq!(svc.ask(&request(b"br0")).status, 0);
    }
    svc.wait_idle(Duration::from_secs(5));
    let (fds, rss) = (svc.open_fds(), svc.rss_kb());
    let n = requests();
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let svc = &svc;
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    match i % 4 {
                        0 => {
                            let r = svc.ask(&request(b"br0"));
                            assert_eq!((r.status, r.tap, r.fds.len()), (0, true, 1), "{}", r.line);
                        }
                        1 => {
                            let r = svc.ask(&request(b"br1"));
                            assert_eq!((r.status, r.fds.len()), (4, 0), "{}", r.line);
                            assert!(
                                r.line.contains("denied by /etc/qemu/bridge.conf:2"),
                                "{}",
                                r.line
                            );
                        }
                        2 => {
                            let r = svc.ask(b"BHRQ\x01\x09");
                            assert_eq!((r.status, r.fds.len()), (2, 0), "{}", r.line);
                        }
                        3 if i % 64 == 3 => {
                            // Killed mid-request: half a request, then gone.
                            let mut c = svc.connect();
                            let _ = c.write_all(&request(b"br0")[..7]);
                        }
                        _ => {
                            // Half a request, then the sending side closed
                            // (as by a client killed mid-write), waiting for
                            // the session's end: abandoned sessions of one
                            // uid beyond 64 at once would be refused as busy,
                            // by design.
                            let mut c = svc.connect();
                            c.write_all(&request(b"br0")[..7]).unwrap();
                            c.shutdown(std::net::Shutdown::Write).unwrap();
                            let r = service::read_reply(&c);
                            assert_eq!((r.status, r.fds.len()), (2, 0), "{}", r.line);
                        }
                    }
                }
            });
        }
    });
    svc.wait_idle(Duration::from_secs(15));
    assert_eq!(svc.open_fds(), fds, "the service's descriptors");
    // Sessions are forks that run code: safe only with no other thread.
    assert_eq!(svc.threads(), 1, "the service's threads");
    assert!(svc.children().is_empty());
    // The loop keeps nothing per request; a little slack for the heap.
    let grown = svc.rss_kb().saturating_sub(rss);
    assert!(
        grown < 1024,
        "the service grew by {grown} kB over {n} requests"
    );
    assert_no_taps(&ns);
}

#[test]
fn sixty_four_vms_of_one_user_started_at_once_all_get_their_taps() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    // Installed once before the threads (the copy is made on first use).
    sb.install(HELPER, Mode::Unprivileged);
    let taps: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..64)
            .map(|_| s.spawn(|| svc.forward(&sb, Jail::user(NOBODY), &["--br=br0"])))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().expect_tap())
            .collect()
    });
    assert_eq!(taps.len(), 64);
    assert_eq!(ns.taps().len(), 64);
    drop(taps);
    svc.wait_idle(Duration::from_secs(10));
    assert_no_taps(&ns);
}

#[test]
fn silent_and_trickling_clients_hold_nothing_past_the_deadline_and_delay_nobody() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let fds = svc.open_fds();
    let start = Instant::now();
    // Silent clients, and one that sends a byte every 300 ms.
    let silent: Vec<_> = (0..32).map(|_| svc.connect()).collect();
    let trickler = std::thread::spawn({
        let mut c = svc.connect();
        move || {
            for b in request(b"br0") {
                if c.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            service::read_reply(&c)
        }
    });
    // Meanwhile another request is answered at once.
    let asked = Instant::now();
    let r = svc.ask(&request(b"br0"));
    assert_eq!((r.status, r.fds.len()), (0, 1), "{}", r.line);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "delayed {:?}",
        asked.elapsed()
    );
    // Each stalled client gets its answer at the deadline, and is closed.
    for c in &silent {
        let r = service::read_reply(c);
        assert_eq!(r.status, 5, "{}", r.line);
        assert!(
            r.line.contains("no complete request within 2 s"),
            "{}",
            r.line
        );
    }
    let r = trickler.join().unwrap();
    assert!(
        r.line.contains("no complete request within 2 s"),
        "{}",
        r.line
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    drop(silent);
    svc.wait_idle(Duration::from_secs(5));
    assert_eq!(svc.open_fds(), fds);
}

#[test]
fn a_client_that_never_reads_holds_nothing() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let fds = svc.open_fds();
    let mut deaf = Vec::new();
    for _ in 0..16 {
        let mut c = svc.connect();
        c.write_all(&request(b"br0")).unwrap();
        deaf.push(c);
    }
    // Their sessions end though nobody reads: the answers are sent
    // without waiting.
    svc.wait_idle(Duration::from_secs(5));
    assert_eq!(svc.open_fds(), fds);
    drop(deaf);
    assert_no_taps(&ns);
}
