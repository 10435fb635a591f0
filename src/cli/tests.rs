use super::*;
use std::os::unix::ffi::OsStringExt;

/// An argument as the refusal carries it.
fn b(text: &str) -> Bytes {
    Bytes(text.as_bytes().to_vec())
}

fn os<A: AsRef<[u8]>>(args: &[A]) -> Vec<OsString> {
    args.iter()
        .map(|a| OsString::from_vec(a.as_ref().to_vec()))
        .collect()
}

fn run(args: &[&[u8]]) -> Result<Command, UsageError> {
    parse(&os(args))
}

fn attach(bridge: &[u8], fd: i32, use_vnet: bool) -> Result<Command, UsageError> {
    Ok(Command::Attach(Request {
        bridge: IfName::new(bridge).unwrap(),
        fd,
        use_vnet,
        queues: 1,
        hook: None,
    }))
}

#[test]
fn qemu_and_libvirt_orders() {
    assert_eq!(
        run(&[b"--use-vnet", b"--fd=5", b"--br=br0"]),
        attach(b"br0", 5, true)
    );
    assert_eq!(
        run(&[b"--use-vnet", b"--br=br0", b"--fd=5"]),
        attach(b"br0", 5, true)
    );
    assert_eq!(run(&[b"--br=br0", b"--fd=0"]), attach(b"br0", 0, false));
    // A helper= string that already says --use-vnet gets another from QEMU.
    assert_eq!(
        run(&[b"--use-vnet", b"--use-vnet", b"--fd=3", b"--br=x"]),
        attach(b"x", 3, true)
    );
}

#[test]
fn help_and_version_only_alone() {
    assert_eq!(run(&[b"--help"]), Ok(Command::Help));
    assert_eq!(run(&[b"--version"]), Ok(Command::Version));
    assert_eq!(
        run(&[b"--help", b"--fd=3"]),
        Err(UsageError::Alone("--help"))
    );
    assert_eq!(
        run(&[b"--br=br0", b"--fd=3", b"--version"]),
        Err(UsageError::Alone("--version"))
    );
    // Root's --serve is taken before parsing; anyone else's is refused.
    assert_eq!(run(&[b"--serve"]), Ok(Command::Serve));
    assert_eq!(
        run(&[b"--serve", b"--br=br0"]),
        Err(UsageError::Alone("--serve"))
    );
}

#[test]
fn missing_repeated_unknown() {
    assert_eq!(run(&[]), Err(UsageError::Missing("--br")));
    assert_eq!(run(&[b"--br=br0"]), Err(UsageError::Missing("--fd")));
    assert_eq!(run(&[b"--fd=3"]), Err(UsageError::Missing("--br")));
    assert_eq!(
        run(&[b"--br=a", b"--br=b", b"--fd=3"]),
        Err(UsageError::Repeated("--br"))
    );
    assert_eq!(
        run(&[b"--br=a", b"--fd=3", b"--fd=3"]),
        Err(UsageError::Repeated("--fd"))
    );
    assert_eq!(run(&[b"--br", b"br0"]), Err(UsageError::Unknown(b("--br"))));
    assert_eq!(run(&[b"br0"]), Err(UsageError::Unknown(b("br0"))));
    assert_eq!(run(&[b"--BR=br0"]), Err(UsageError::Unknown(b("--BR=br0"))));
}

#[test]
#[cfg(not(feature = "test-hooks"))]
fn release_builds_know_no_test_hooks() {
    assert_eq!(
        run(&[b"--test-pause", b"--br=a", b"--fd=3"]),
        Err(UsageError::Unknown(b("--test-pause")))
    );
}

#[test]
fn fd_must_be_plain_decimal() {
    for bad in [
        &b""[..],
        b"-1",
        b"+3",
        b" 3",
        b"3 ",
        b"0x3",
        b"3a",
        b"2147483648",
        b"99999999999",
        b"\xff",
    ] {
        let mut arg = b"--fd=".to_vec();
        arg.extend_from_slice(bad);
        assert_eq!(
            run(&[b"--br=br0", &arg]),
            Err(UsageError::BadFd(Bytes::from(bad))),
            "{bad:?}"
        );
    }
    assert_eq!(
        run(&[b"--br=br0", b"--fd=2147483647"]),
        attach(b"br0", i32::MAX, false)
    );
    assert_eq!(run(&[b"--br=br0", b"--fd=007"]), attach(b"br0", 7, false));
}

#[test]
fn bridge_names_are_checked_before_anything_else() {
    let long = b"br0123456789abcd"; // 16 bytes: CVE-2019-13164
    assert!(matches!(
        run(&[&[b"--br=", &long[..]].concat(), b"--fd=3"]),
        Err(UsageError::BadBridge(_, ifname::Invalid::TooLong(16)))
    ));
    for bad in [&b""[..], b".", b"..", b"a/b", b"a b", b"a\x1b"] {
        let arg = [b"--br=", bad].concat();
        assert!(
            matches!(run(&[&arg, b"--fd=3"]), Err(UsageError::BadBridge(..))),
            "{bad:?}"
        );
    }
}

#[test]
fn queues() {
    let with = |q: &[u8]| {
        run(&[
            b"--use-vnet",
            &[b"--queues=", q].concat(),
            b"--br=br0",
            b"--fd=3",
        ])
    };
    let want = |n: u16| {
        Ok(Command::Attach(Request {
            bridge: IfName::new(b"br0").unwrap(),
            fd: 3,
            use_vnet: true,
            queues: n,
            hook: None,
        }))
    };
    assert_eq!(with(b"1"), want(1));
    assert_eq!(with(b"4"), want(4));
    assert_eq!(with(b"0004"), want(4));
    assert_eq!(with(b"253"), want(253));
    for bad in [
        &b""[..],
        b"-1",
        b"+4",
        b" 4",
        b"4 ",
        b"0x4",
        b"4a",
        b"\xff",
        b"\xd9\xa4",
    ] {
        assert_eq!(
            with(bad),
            Err(UsageError::BadQueues(Bytes::from(bad))),
            "{bad:?}"
        );
    }
    for big in [
        &b"0"[..],
        b"000",
        b"254",
        b"256",
        b"65535",
        b"65536",
        b"99999999999999",
    ] {
        assert_eq!(
            with(big),
            Err(UsageError::QueuesOutOfRange(Bytes::from(big))),
            "{big:?}"
        );
    }
    assert_eq!(
        run(&[b"--queues=2", b"--queues=2", b"--br=br0", b"--fd=3"]),
        Err(UsageError::Repeated("--queues"))
    );
    assert_eq!(
        run(&[b"--queues", b"2", b"--br=br0", b"--fd=3"]),
        Err(UsageError::Unknown(b("--queues")))
    );
    // Without the option, a run is exactly today's: one queue.
    assert_eq!(run(&[b"--br=br0", b"--fd=3"]), attach(b"br0", 3, false));
}

#[test]
fn every_clap_refusal_is_restated_from_argv() {
    let unknown = |a: &str| Err(UsageError::Unknown(b(a)));
    assert_eq!(run(&[b"--br", b"br0"]), unknown("--br"));
    assert_eq!(run(&[b"--br=br0", b"--fd"]), unknown("--fd"));
    assert_eq!(run(&[b"--use-vnet=1", b"--br=b"]), unknown("--use-vnet=1"));
    assert_eq!(run(&[b"-h"]), unknown("-h"));
    assert_eq!(run(&[b"--", b"--br=br0", b"--fd=3"]), unknown("--"));
    assert_eq!(run(&[b"--br=br0", b"", b"--fd=3"]), unknown(""));
    // Kept as bytes; escaped where it is shown.
    let hostile = run(&[b"--\xff\x1b[2J"]).unwrap_err();
    assert_eq!(
        hostile,
        UsageError::Unknown(Bytes(b"--\xff\x1b[2J".to_vec()))
    );
    assert_eq!(hostile.to_string(), "unknown argument '--\\xff\\x1b[2J'");
    assert_eq!(
        run(&[b"--check", b"--check"]),
        Err(UsageError::Repeated("--check"))
    );
    assert_eq!(
        run(&[b"--help", b"--help"]),
        Err(UsageError::Repeated("--help"))
    );
    assert_eq!(
        run(&[b"--br=", b"--fd=3"]),
        Err(UsageError::BadBridge(b(""), ifname::Invalid::Empty))
    );
    assert_eq!(run(&[b"--br=br0", b"--fd="]), Err(UsageError::BadFd(b(""))));
    assert_eq!(run(&[b"--br=-x", b"--fd=3"]), attach(b"-x", 3, false));
    assert_eq!(run(&[b"--br=a=b", b"--fd=3"]), attach(b"a=b", 3, false));
}

#[test]
fn check_grammar() {
    let check = |bridge: Option<&[u8]>, user: Option<&[u8]>| {
        Ok(Command::Check(CheckRequest {
            bridge: bridge.map(|b| IfName::new(b).unwrap()),
            user: user.map(<[u8]>::to_vec),
        }))
    };
    assert_eq!(run(&[b"--check"]), check(None, None));
    assert_eq!(run(&[b"--br=br0", b"--check"]), check(Some(b"br0"), None));
    assert_eq!(
        run(&[b"--check", b"--user=1000", b"--use-vnet", b"--br=x"]),
        check(Some(b"x"), Some(b"1000"))
    );
    assert_eq!(
        run(&[b"--check", b"--fd=3"]),
        Err(UsageError::Conflict("--fd", "--check"))
    );
    assert_eq!(
        run(&[b"--br=x", b"--fd=3", b"--user=bob"]),
        Err(UsageError::Needs("--user", "--check"))
    );
    assert_eq!(
        run(&[b"--user=bob", b"--remove-abandoned"]),
        Ok(Command::RemoveAbandoned(b"bob".to_vec()))
    );
    assert_eq!(
        run(&[b"--remove-abandoned"]),
        Err(UsageError::Needs("--remove-abandoned", "--user"))
    );
    assert_eq!(
        run(&[b"--remove-abandoned", b"--user=1", b"--check"]),
        Err(UsageError::Conflict("--check", "--remove-abandoned"))
    );
    assert_eq!(
        run(&[b"--check", b"--help"]),
        Err(UsageError::Alone("--help"))
    );
    assert!(matches!(
        run(&[b"--check", b"--br=a/b"]),
        Err(UsageError::BadBridge(..))
    ));
}

#[test]
fn messages_escape_user_text() {
    let err = run(&[b"--evil\x1b[31m\n"]).unwrap_err().to_string();
    assert_eq!(err, "unknown argument '--evil\\x1b[31m\\n'");
}
