//! Issue 16: the client library (client/) against the real helper, in
//! each install mode: the tap it returns is the helper's, and each
//! refusal comes back typed, with nothing leaked.
mod common;
use common::*;

use std::sync::Mutex;

use bridge_helper_client::{Error, Failure, Helper, Tap};

/// Descriptor counts of this process only mean something one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn run(
    sb: &Sandbox,
    ns: &NetNs,
    mode: Mode,
    tun_0666: bool,
    helper: impl FnOnce(Helper) -> Helper,
) -> Result<Tap, Error> {
    let program = sb.install(HELPER, mode);
    let mut jail = Jail::for_mode(mode);
    jail.tun_0666 |= tun_0666;
    let before = open_fds();
    let got = helper(Helper::from_command(sb.command(ns, &program, jail)).bridge("br0")).run();
    let held = got.as_ref().map_or(0, |t| t.fds().len());
    assert_eq!(open_fds(), before + held, "descriptors leaked: {got:?}");
    got
}

#[test]
fn the_client_gets_the_helpers_tap_in_each_mode() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for (mode, tun_0666) in [
        (Mode::Root, false),
        (Mode::Setuid, false),
        (Mode::Setuid, true),
        (Mode::FileCaps, false),
    ] {
        let tap = run(&sb, &ns, mode, tun_0666, |h| h.vnet_hdr(true)).unwrap();
        assert_eq!(tap.fds().len(), 1);
        assert_eq!(ns.taps(), vec![tap.name().to_string()]);
        assert_eq!(ns.tap_state(tap.name()).master, "br0");
        drop(tap);
        assert_no_taps(&ns);
        if mode == Mode::Setuid && !tun_0666 {
            continue;
        }
        let tap = run(&sb, &ns, mode, tun_0666, |h| h.vnet_hdr(true).queues(4)).unwrap();
        assert_eq!(tap.fds().len(), 4);
        assert_eq!(ns.taps(), vec![tap.name().to_string()]);
        let details = ns.ip(&["-d", "link", "show", "dev", tap.name()]);
        assert!(details.contains("numqueues 4 "), "{details}");
        drop(tap);
        assert_no_taps(&ns);
    }
}

#[test]
fn refusals_come_back_typed() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ns = NetNs::with_bridge(1400);
    let sb = Sandbox::new();
    let refused = |got: Result<Tap, Error>| match got {
        Err(Error::Refused { class, message, .. }) => (class, message),
        other => panic!("{other:?}"),
    };
    sb.acl("allow br1\n");
    let (class, message) = refused(run(&sb, &ns, Mode::Setuid, false, |h| h));
    assert_eq!(class, Failure::Denied);
    assert!(
        message.contains("access to bridge 'br0' denied"),
        "{message}"
    );
    sb.acl("allow br0\nbogus line\n");
    let (class, _) = refused(run(&sb, &ns, Mode::FileCaps, false, |h| h));
    assert_eq!(class, Failure::AclConfig);
    sb.acl("allow br0\n");
    let (class, message) = refused(run(&sb, &ns, Mode::Setuid, false, |h| h.queues(2)));
    assert_eq!(class, Failure::Installation);
    assert!(
        message.contains("multiqueue needs /dev/net/tun"),
        "{message}"
    );
    let (class, _) = refused(run(&sb, &ns, Mode::Unprivileged, false, |h| h));
    assert_eq!(class, Failure::Installation);
    ns.ip(&["link", "del", "br0"]);
    let (class, _) = refused(run(&sb, &ns, Mode::Root, false, |h| h));
    assert_eq!(class, Failure::Bridge);
    assert_no_taps(&ns);
}
