//! Red team of the slot scan by SIOCGIFFLAGS (commits 627b379..9fa380d).
mod common;
use common::*;

/// What the user leaves by holding `n` taps from the helper, making each
/// persistent and closing them all (taps in use are not bounded, so any
/// number can be held first): `n` abandoned taps in slots 0..n, each with
/// the marker, in the bridge, up, carrier off. Built here as root in one
/// `ip -batch` for speed; the helper made the same state in
/// `abandoned_taps_are_bounded_per_user_and_others_are_never_touched`.
fn leave_abandoned(ns: &NetNs, n: u16) {
    let mut batch = String::new();
    for slot in 0..n {
        let tap = format!("rs{slot}");
        batch += &format!("tuntap add dev {tap} mode tap user {NOBODY}\n");
        batch += &format!("link set {tap} master br0 alias \"bridge-helper uid={NOBODY}\" up\n");
        batch += &format!(
            "link property add dev {tap} altname {}\n",
            slot_name(NOBODY, slot)
        );
    }
    let file = std::env::temp_dir().join(format!("redslots-{}", ns.name));
    std::fs::write(&file, batch).unwrap();
    ns.ip(&["-batch", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
}

/// A user who leaves many abandoned taps at once must find them bounded
/// by the next run, as the old scan (four slots a request) did; the new
/// scan reads every non-running link in one netlink batch, whose answers
/// overflow the socket's receive buffer.
#[test]
fn many_abandoned_taps_at_once_are_still_bounded_by_the_next_run() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let n = 200;
    leave_abandoned(&ns, n);
    assert_eq!(ns.persistent_taps().len(), usize::from(n));
    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let _fd = run.expect_tap();
    assert_eq!(ns.persistent_taps().len(), 3);
}

/// The same, all made by the user: hold many taps from the helper (taps
/// in use are not bounded), make them persistent, close them all at once.
#[test]
fn a_user_cannot_leave_so_many_abandoned_taps_that_runs_stop_reaping() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let held: Vec<_> = (0..120)
        .map(|_| sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]).expect_tap())
        .collect();
    let names: Vec<String> = held.iter().map(|fd| tun_get_iff(fd).0).collect();
    for fd in &held {
        make_persistent_as(&sb, &ns, fd, NOBODY);
    }
    drop(held);
    wait_detached(&ns, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let run = sb.run_helper(&ns, Mode::Setuid, &["--br=br0"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("removed '").count(),
        117,
        "{}",
        run.stderr
    );
    let _fd = run.expect_tap();
    assert_eq!(ns.persistent_taps().len(), 3);
}
