use super::*;
use std::os::unix::ffi::OsStringExt;

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
    assert_eq!(
        run(&[b"--br", b"br0"]),
        Err(UsageError::Unknown("'--br'".into()))
    );
    assert_eq!(run(&[b"br0"]), Err(UsageError::Unknown("'br0'".into())));
    assert_eq!(
        run(&[b"--BR=br0"]),
        Err(UsageError::Unknown("'--BR=br0'".into()))
    );
}

#[test]
#[cfg(not(feature = "test-hooks"))]
fn release_builds_know_no_test_hooks() {
    assert_eq!(
        run(&[b"--test-pause", b"--br=a", b"--fd=3"]),
        Err(UsageError::Unknown("'--test-pause'".into()))
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
            Err(UsageError::BadFd(quote(bad))),
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
        assert_eq!(with(bad), Err(UsageError::BadQueues(quote(bad))), "{bad:?}");
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
            Err(UsageError::QueuesOutOfRange(quote(big))),
            "{big:?}"
        );
    }
    assert_eq!(
        run(&[b"--queues=2", b"--queues=2", b"--br=br0", b"--fd=3"]),
        Err(UsageError::Repeated("--queues"))
    );
    assert_eq!(
        run(&[b"--queues", b"2", b"--br=br0", b"--fd=3"]),
        Err(UsageError::Unknown("'--queues'".into()))
    );
    // Without the option, a run is exactly today's: one queue.
    assert_eq!(run(&[b"--br=br0", b"--fd=3"]), attach(b"br0", 3, false));
}

#[test]
fn every_clap_refusal_is_restated_from_argv() {
    let unknown = |a: &str| Err(UsageError::Unknown(a.into()));
    assert_eq!(run(&[b"--br", b"br0"]), unknown("'--br'"));
    assert_eq!(run(&[b"--br=br0", b"--fd"]), unknown("'--fd'"));
    assert_eq!(
        run(&[b"--use-vnet=1", b"--br=b"]),
        unknown("'--use-vnet=1'")
    );
    assert_eq!(run(&[b"-h"]), unknown("'-h'"));
    assert_eq!(run(&[b"--", b"--br=br0", b"--fd=3"]), unknown("'--'"));
    assert_eq!(run(&[b"--br=br0", b"", b"--fd=3"]), unknown("''"));
    assert_eq!(run(&[b"--\xff\x1b[2J"]), unknown("'--\\xff\\x1b[2J'"));
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
        Err(UsageError::BadBridge("''".into(), ifname::Invalid::Empty))
    );
    assert_eq!(
        run(&[b"--br=br0", b"--fd="]),
        Err(UsageError::BadFd("''".into()))
    );
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

#[test]
fn the_callers_lines_are_read_without_clap() {
    // QEMU's and libvirt's orders, QEMU's extra --use-vnet, --queues.
    for line in [
        &[&b"--use-vnet"[..], b"--fd=5", b"--br=br0"][..],
        &[b"--use-vnet", b"--br=br0", b"--fd=5"],
        &[b"--use-vnet", b"--use-vnet", b"--fd=5", b"--br=br0"],
        &[b"--br=br0", b"--fd=5", b"--queues=4"],
    ] {
        let table = plain_attach(&os(line));
        assert!(table.is_some(), "{line:?}");
        assert_eq!(table.map(Command::Attach), parse_with_clap(&os(line)).ok());
    }
}

#[test]
fn lines_the_table_does_not_read_go_to_clap() {
    for line in [
        &[][..],
        &[&b"--br=a"[..], b"--br=b", b"--fd=3"],
        &[b"--br=br0", b"--fd=3", b"--fd=3"],
        &[b"--br", b"br0", b"--fd=3"],
        &[b"--br=br0", b"--fd=3", b"--help"],
        &[b"--br=br0", b"--fd=-1"],
        &[b"--br=a/b", b"--fd=3"],
        &[b"--br=br0", b"--fd=3", b"--queues=0"],
        &[b"--br=br0", b"--fd=3", b"--use-vnet=1"],
        &[b"--br=br0", b"--fd=3", b"--check"],
        &[b"--br=br0", b"--fd=3", b"--"],
        &[b"--br=br0", b"--fd=3", b"--test-pause"],
    ] {
        assert_eq!(plain_attach(&os(line)), None, "{line:?}");
    }
}

const NAMES: &[&[u8]] = &[
    b"--use-vnet",
    b"--br",
    b"--fd",
    b"--queues",
    b"--check",
    b"--user",
    b"--help",
    b"--remove-abandoned",
    b"--version",
    b"--test-panic",
    b"--test-pause",
    b"--test-pause-claim",
    b"--test-pause-create",
    b"--test-pause-queues",
    b"--brx",
    b"--fdx",
    b"--queuesx",
    b"--use-vnetx",
    b"--use",
    b"--b",
    b"-b",
    b"--",
    b"br0",
];

/// Values that pass, fail, are empty, hyphenated, start with `=`, are too
/// long or not UTF-8.
fn value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        Just(b"br0".to_vec()),
        Just(b"3".to_vec()),
        Just(b"4".to_vec()),
        Just(Vec::new()),
        Just(b"-x".to_vec()),
        Just(b"=3".to_vec()),
        Just(b"007".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"br0123456789abcd".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..5),
    ]
}

/// One argument near the grammar's edges: a row's name or a near miss,
/// alone, with `=VALUE`, or a bare value.
fn near_the_grammar() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::strategy::Strategy;
    (proptest::sample::select(NAMES), 0..3u8, value()).prop_map(|(name, how, value)| match how {
        0 => name.to_vec(),
        1 => [name, b"=", &value].concat(),
        _ => value,
    })
}

/// An attach line, its values drawn from [`value`], perhaps without its
/// bridge or fd, with a `--queues`, extra `--use-vnet`s and a stray
/// argument, in any order: a good share are lines the table reads.
fn attach_like() -> impl proptest::strategy::Strategy<Value = Vec<Vec<u8>>> {
    use proptest::prelude::*;
    let good = |values: &'static [&'static [u8]]| {
        prop_oneof![
            2 => proptest::sample::select(values).prop_map(<[u8]>::to_vec),
            1 => value(),
        ]
    };
    (
        proptest::option::weighted(0.9, good(&[b"br0", b"-x", b"a=b", b"virbr0", b"\xff"])),
        proptest::option::weighted(0.9, good(&[b"3", b"007", b"0", b"2147483647"])),
        proptest::option::of(good(&[b"1", b"4", b"253", b"0004"])),
        0..3usize,
        proptest::collection::vec(
            proptest::prop_oneof![near_the_grammar(), attach_option()],
            0..3,
        ),
    )
        .prop_map(|(br, fd, queues, vnets, stray)| {
            let mut line: Vec<Vec<u8>> = br
                .map(|b| [&b"--br="[..], &b].concat())
                .into_iter()
                .collect();
            line.extend(fd.map(|f| [&b"--fd="[..], &f].concat()));
            line.extend(queues.map(|q| [&b"--queues="[..], &q].concat()));
            line.extend(std::iter::repeat_n(b"--use-vnet".to_vec(), vnets));
            line.extend(stray);
            line
        })
        .prop_shuffle()
}

/// A second, valid attach option: what makes a repeat.
fn attach_option() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::strategy::Strategy;
    const VALID: &[&[u8]] = &[b"--br=br1", b"--fd=4", b"--queues=4", b"--use-vnet"];
    proptest::sample::select(VALID).prop_map(<[u8]>::to_vec)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(2048))]
    #[test]
    fn where_the_table_answers_clap_agrees(
        line in proptest::prop_oneof![
            proptest::collection::vec(near_the_grammar(), 0..6),
            attach_like(),
        ],
    ) {
        let line = os(&line);
        if let Some(request) = plain_attach(&line) {
            proptest::prop_assert_eq!(parse_with_clap(&line), Ok(Command::Attach(request)));
        }
        proptest::prop_assert_eq!(parse(&line), parse_with_clap(&line));
    }
}

/// Every line of up to four arguments from a small set of rows, near
/// misses and values: wherever the table answers, clap reads the same.
#[test]
fn on_every_short_line_the_table_agrees_with_clap() {
    let mut tokens: Vec<Vec<u8>> = [&b"--use-vnet"[..], b"--use-vnet=", b"--use-vnetx", b"--"]
        .iter()
        .map(|t| t.to_vec())
        .collect();
    for name in [&b"--br"[..], b"--fd", b"--queues", b"--brx", b"--b"] {
        tokens.push(name.to_vec());
        for value in [&b"br0"[..], b"3", b"", b"=3"] {
            tokens.push([name, b"=", value].concat());
        }
    }
    let mut line = Vec::new();
    fn each(tokens: &[Vec<u8>], line: &mut Vec<Vec<u8>>, left: usize) {
        let args = os(line);
        // Elsewhere `parse` is `parse_with_clap` by construction.
        if let Some(request) = plain_attach(&args) {
            assert_eq!(
                parse_with_clap(&args),
                Ok(Command::Attach(request)),
                "{line:?}"
            );
        }
        if left > 0 {
            for t in tokens {
                line.push(t.clone());
                each(tokens, line, left - 1);
                line.pop();
            }
        }
    }
    each(&tokens, &mut line, 4);
}
