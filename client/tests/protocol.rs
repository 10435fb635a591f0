//! The client against fake helpers: each way a helper can fail or break
//! the protocol gives its error, and no descriptor leaks.
//!
//! A fake helper is this test binary run again (through `sh`, which
//! takes the helper's arguments) with `BHC_FAKE` naming what it does. It
//! makes its taps in a network namespace of its own, so it must run as
//! root, like the helper's own tests.

use std::fs;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Mutex;

use bridge_helper_client::{Error, Failure, Helper, Mismatch, Protocol};

/// Descriptor counts of this process are only meaningful one run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the client's tests make taps in a private network namespace: run them as root"
    );
}

/// A helper that does `mode` (see `fake_helper_entry`).
fn fake(mode: &str) -> Helper {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        r#"BHC_ARGS="$*" exec "$0" --exact fake_helper_entry --nocapture -q"#,
    ])
    .arg(exe)
    .env("BHC_FAKE", mode);
    Helper::from_command(cmd)
}

/// Held by every test for its whole length: the descriptor counts of
/// this process only mean something while no other test opens or closes.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `helper` and checks that this process has exactly as many
/// descriptors afterwards as before (plus the tap's, if it succeeded).
fn run(helper: Helper) -> Result<bridge_helper_client::Tap, Error> {
    let before = open_fds();
    let got = helper.run();
    let held = got.as_ref().map_or(0, |t| t.fds().len());
    assert_eq!(open_fds(), before + held, "descriptors leaked: {got:?}");
    got
}

#[test]
fn a_good_fake_gives_its_tap() {
    let _alone = alone();
    require_root();
    let tap = run(fake("ok").bridge("br0").vnet_hdr(true).queues(3)).unwrap();
    assert_eq!(tap.fds().len(), 3);
    assert!(tap.name().starts_with("fake"), "{}", tap.name());
    assert!(tap.vnet_hdr());
    let tap = run(fake("ok").bridge("br0")).unwrap();
    assert_eq!(tap.fds().len(), 1);
}

#[test]
fn missing_helper() {
    let _alone = alone();
    let e = run(Helper::new("/nonexistent/bridge-helper").bridge("br0")).unwrap_err();
    match e {
        Error::Spawn { program, source } => {
            assert_eq!(program, "/nonexistent/bridge-helper");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn missing_helper_with_a_chosen_child_fd() {
    let _alone = alone();
    // The child's dup2 to fd 3 must not take the spawn's own error pipe.
    let e = run(Helper::new("/nonexistent/bridge-helper")
        .bridge("br0")
        .child_fd(3))
    .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
}

#[test]
fn a_chosen_child_fd_is_where_the_socket_is() {
    let _alone = alone();
    require_root();
    let tap = run(fake("ok").bridge("br0").child_fd(9)).unwrap();
    assert_eq!(tap.fds().len(), 1);
    let tap = run(fake("ok").bridge("br0").child_fd(3).queues(2)).unwrap();
    assert_eq!(tap.fds().len(), 2);
}

#[test]
fn each_exit_status_is_its_class() {
    let _alone = alone();
    for (status, class) in [
        (2, Failure::Usage),
        (3, Failure::AclConfig),
        (4, Failure::Denied),
        (5, Failure::Installation),
        (6, Failure::Fd),
        (7, Failure::Bridge),
        (8, Failure::Kernel),
        (70, Failure::Bug),
        (1, Failure::Other),
    ] {
        let e = run(fake(&format!("status:{status}")).bridge("br0")).unwrap_err();
        match e {
            Error::Refused {
                class: c,
                status: s,
                message,
            } => {
                assert_eq!((c, s), (class, status));
                assert_eq!(message, format!("refused with {status}"));
            }
            e => panic!("{status}: {e:?}"),
        }
    }
}

#[test]
fn a_refusal_that_sent_fds_anyway_closes_them() {
    let _alone = alone();
    require_root();
    let e = run(fake("ok-then-status:4").bridge("br0").queues(2)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                class: Failure::Denied,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_chatty_helper_neither_blocks_nor_floods_the_error() {
    let _alone = alone();
    let e = run(fake("chatty").bridge("br0")).unwrap_err();
    match e {
        Error::Refused { message, .. } => assert!(message.len() <= 4096),
        e => panic!("{e:?}"),
    }
}

#[test]
fn helper_killed() {
    let _alone = alone();
    require_root();
    let e = run(fake("killed").bridge("br0").queues(2)).unwrap_err();
    match e {
        Error::Killed { signal, message } => {
            assert_eq!(signal, libc::SIGKILL);
            assert_eq!(message, "about to die");
        }
        e => panic!("{e:?}"),
    }
}

fn protocol(mode: &str, queues: u16) -> Protocol {
    match run(fake(mode).bridge("br0").queues(queues)).unwrap_err() {
        Error::Protocol(p) => p,
        e => panic!("{mode}: {e:?}"),
    }
}

fn mismatch(mode: &str, queues: u16, vnet: bool) -> Mismatch {
    let got = run(fake(mode).bridge("br0").queues(queues).vnet_hdr(vnet));
    match got.unwrap_err() {
        Error::NotTheTap { why, .. } => why,
        e => panic!("{mode}: {e:?}"),
    }
}

#[test]
fn wrong_numbers_of_fds() {
    let _alone = alone();
    require_root();
    assert_eq!(
        protocol("send:1", 2),
        Protocol::WrongCount {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        protocol("send:2", 1),
        Protocol::WrongCount {
            expected: 1,
            got: 2
        }
    );
    assert_eq!(protocol("send:5", 2), Protocol::Truncated);
    assert_eq!(
        protocol("two-messages", 2),
        Protocol::WrongCount {
            expected: 2,
            got: 1
        }
    );
}

#[test]
fn nothing_or_no_data_byte() {
    let _alone = alone();
    require_root();
    assert_eq!(protocol("nothing", 1), Protocol::NothingSent);
    // On a stream socket, descriptors without a data byte are not sent.
    assert_eq!(protocol("no-data-byte", 1), Protocol::NothingSent);
    assert_eq!(protocol("data-only", 1), Protocol::NoDescriptors);
    assert_eq!(protocol("two-bytes", 1), Protocol::DataBytes(2));
    assert_eq!(protocol("trailing", 1), Protocol::Trailing);
}

#[test]
fn fds_that_are_not_the_tap() {
    let _alone = alone();
    require_root();
    assert!(matches!(mismatch("devnull", 1, false), Mismatch::NotTun(_)));
    assert!(matches!(mismatch("pipe", 1, false), Mismatch::NotTun(_)));
    assert!(matches!(
        mismatch("unattached-tun", 1, false),
        Mismatch::NotTun(_)
    ));
    assert!(matches!(
        mismatch("two-taps", 2, false),
        Mismatch::OtherInterface { .. }
    ));
    for (mode, queues, vnet) in [
        ("tun", 1, false),
        ("persist", 1, false),
        ("single-queue", 2, false),
        ("ok-no-vnet", 1, true),
    ] {
        assert!(
            matches!(mismatch(mode, queues, vnet), Mismatch::Flags { .. }),
            "{mode}"
        );
    }
}

// ---- the fake helper ----

const IFF_TUN: i16 = 0x0001;
const IFF_TAP: i16 = 0x0002;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// Not a test: the fake helper's body, run only when `BHC_FAKE` is set.
#[test]
fn fake_helper_entry() {
    let Ok(mode) = std::env::var("BHC_FAKE") else {
        return;
    };
    let args = std::env::var("BHC_ARGS").unwrap_or_default();
    let arg = |name: &str| {
        args.split(' ')
            .find_map(|a| a.strip_prefix(name))
            .map(str::to_string)
    };
    let sock: RawFd = arg("--fd=").and_then(|v| v.parse().ok()).unwrap_or(-1);
    let queues: usize = arg("--queues=").and_then(|v| v.parse().ok()).unwrap_or(1);
    let vnet = args.split(' ').any(|a| a == "--use-vnet");
    let exit = |code: i32, line: &str| -> ! {
        if !line.is_empty() {
            let _ = writeln!(std::io::stderr(), "bridge-helper: {line}");
        }
        std::process::exit(code)
    };
    if sock < 3 || arg("--br=").as_deref() != Some("br0") {
        exit(2, &format!("fake: bad arguments {args:?}"));
    }
    let mut tap_flags = IFF_TAP | IFF_NO_PI;
    if vnet {
        tap_flags |= IFF_VNET_HDR;
    }
    if queues > 1 {
        tap_flags |= IFF_MULTI_QUEUE;
    }
    let make_taps = |name: &str, flags: i16, n: usize| -> Vec<OwnedFd> {
        (0..n).map(|_| tun(name, flags)).collect()
    };
    // SAFETY: a thread-local namespace change in this short-lived process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        exit(5, "fake: unshare(CLONE_NEWNET) failed: not root?");
    }
    let (mode, then) = mode.split_once("-then-").unwrap_or((&mode, ""));
    let fds: Vec<OwnedFd> = match mode {
        "ok" => make_taps("fake0", tap_flags, queues),
        "ok-no-vnet" => make_taps("fake0", tap_flags & !IFF_VNET_HDR, queues),
        "single-queue" => make_taps("fake0", IFF_TAP | IFF_NO_PI, 1)
            .into_iter()
            .chain(Some(open_tun()))
            .collect(),
        "tun" => make_taps("fake0", IFF_TUN | IFF_NO_PI, 1),
        "persist" => {
            let fds = make_taps("fake0", tap_flags, 1);
            // SAFETY: TUNSETPERSIST takes an integer.
            unsafe { libc::ioctl(fds[0].as_raw_fd(), libc::TUNSETPERSIST, 1) };
            fds
        }
        "two-taps" => {
            let mut fds = make_taps("fake0", tap_flags, 1);
            fds.extend(make_taps("fake1", tap_flags, 1));
            fds
        }
        "devnull" => vec![fs::File::open("/dev/null").unwrap().into()],
        "pipe" => {
            let (r, _w) = nix::unistd::pipe().unwrap();
            vec![r]
        }
        "unattached-tun" => vec![open_tun()],
        m if m.starts_with("send:") => {
            let n = m[5..].parse().unwrap();
            make_taps("fake0", tap_flags | IFF_MULTI_QUEUE, n)
        }
        "two-messages" => {
            let fds = make_taps("fake0", tap_flags, queues);
            send(sock, &[0], &fds[..1]);
            send(sock, &[0], &fds[1..]);
            exit(0, "");
        }
        "nothing" => exit(0, ""),
        "no-data-byte" => {
            let fds = make_taps("fake0", tap_flags, queues);
            send(sock, &[], &fds);
            exit(0, "");
        }
        "data-only" => {
            send(sock, &[0], &[]);
            exit(0, "");
        }
        "two-bytes" => {
            send(sock, &[0, 0], &make_taps("fake0", tap_flags, queues));
            exit(0, "");
        }
        "trailing" => {
            send(sock, &[0], &make_taps("fake0", tap_flags, queues));
            send(sock, &[0], &make_taps("fake1", tap_flags, 1));
            exit(0, "");
        }
        "killed" => {
            send(sock, &[0], &make_taps("fake0", tap_flags, queues));
            let _ = writeln!(std::io::stderr(), "bridge-helper: about to die");
            // SAFETY: kills this process.
            unsafe { libc::raise(libc::SIGKILL) };
            unreachable!()
        }
        "chatty" => {
            let line = "x".repeat(1 << 20);
            exit(4, &line);
        }
        m if m.starts_with("status:") => {
            let status: i32 = m[7..].parse().unwrap();
            exit(status, &format!("refused with {status}"));
        }
        m => exit(70, &format!("fake: unknown mode {m}")),
    };
    send(sock, &[0], &fds);
    match then.strip_prefix("status:") {
        Some(s) => exit(s.parse().unwrap(), "refused after sending"),
        None => exit(0, ""),
    }
}

fn open_tun() -> OwnedFd {
    fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun")
        .into()
}

fn tun(name: &str, flags: i16) -> OwnedFd {
    let fd = open_tun();
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
    assert_eq!(
        r,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

fn send(sock: RawFd, data: &[u8], fds: &[OwnedFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock, &[IoSlice::new(data)], cmsgs, MsgFlags::empty(), None).unwrap();
}
