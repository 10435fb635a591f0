//! Issue 4: properties of the ACL language and the command line.
//!
//! - The ACL parser never panics, whatever the bytes (line splitting, line
//!   parsing, include resolution over an in-memory tree).
//! - A deny for a name wins wherever it stands, in the rule list or in the
//!   files, and a deny of any of a bridge's names (altnames) wins.
//! - A name of 16 bytes or more never matches: `--br` refuses it, an ACL
//!   line naming it is an error, and a rule for its first 15 bytes does
//!   not match it (CVE-2019-13164).
//! - A file in QEMU's grammar means here what it means to QEMU's
//!   `parse_acl_file` (modelled below): whenever we accept a tree, QEMU
//!   parses it cleanly and decides the same for every bridge; whenever QEMU
//!   parses it cleanly and none of our documented deviations applies, we
//!   accept it.
//!
//! Pure functions only: no privilege, no namespace.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use bridge_helper::cli::{self, UsageError};
use bridge_helper::policy::accounts::{Accounts, Identity};
use bridge_helper::policy::bridge_conf::includes::{self, ConfigError, Origin};
use bridge_helper::policy::bridge_conf::{self, Directive, LineError, Rule, Target, Verdict};
use bridge_helper::policy::decision;
use bridge_helper::policy::files::{FileText, Files, OpenError};
use bridge_helper::policy::ifname::{self, Invalid};
use proptest::prelude::*;
use proptest::sample::select;

const MAIN: &str = "/etc/qemu/bridge.conf";

/// An in-memory file tree; a path not in it is missing.
#[derive(Debug, Clone, Default)]
struct Tree(Vec<(PathBuf, Vec<u8>)>);

impl Tree {
    fn get(&self, path: &Path) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.as_slice())
    }
}

impl Files for Tree {
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
        let Some(index) = self.0.iter().position(|(p, _)| p == path) else {
            return Err(OpenError::Missing);
        };
        let bytes = &self.0[index].1;
        if bytes.len() as u64 > limit {
            return Err(OpenError::TooBig);
        }
        Ok(FileText {
            id: (1, index as u64),
            bytes: bytes.clone(),
        })
    }
}

fn verdict(rules: &[Rule<includes::Origin>], bridge: &[u8]) -> bool {
    matches!(bridge_conf::decide(rules, bridge), Verdict::Allowed(_))
}

// ---------------------------------------------------------------------------
// A reference model of qemu-bridge-helper's parse_acl_file and its decision
// (qemu/qemu-bridge-helper.c), written from the C, byte for byte.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum QRule {
    AllowAll,
    Allow(Vec<u8>),
    DenyAll,
    Deny(Vec<u8>),
}

/// What QEMU made of a tree.
#[derive(Debug, Default)]
struct QemuResult {
    rules: Vec<QRule>,
    /// parse_acl_file of the main file returned -1: QEMU refuses everything.
    main_failed: bool,
    /// Some file (main or included) had an error; QEMU ignores one in an
    /// include and keeps the rules read before it.
    any_error: bool,
    /// Includes recursed so deep or so wide that QEMU would crash or run
    /// for ever (it has no limit).
    runaway: bool,
    opened: usize,
}

/// glib's g_ascii_isspace: its table (gstrfuncs.c) marks \t \n \f \r and
/// space, but not vertical tab (0x0b), unlike C's isspace.
fn g_ascii_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0c | b'\r')
}

/// fgets(line, 4096, f) in a loop: chunks of at most 4095 bytes, each
/// ending after a newline or when the buffer is full.
fn fgets_chunks(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut n = rest.len().min(4095);
        if let Some(nl) = rest[..n].iter().position(|&b| b == b'\n') {
            n = nl + 1;
        }
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

fn qemu_parse(tree: &Tree, path: &[u8], depth: usize, result: &mut QemuResult) -> bool {
    result.opened += 1;
    if depth > 40 || result.opened > 2000 {
        result.runaway = true;
        return false;
    }
    // fopen(); an include QEMU cannot open is skipped (its -1 is ignored).
    let Some(bytes) = tree.get(Path::new(OsStr::from_bytes(path))) else {
        return false;
    };
    for chunk in fgets_chunks(bytes) {
        // A C string: everything from the first NUL on is invisible.
        let line = chunk.split(|&b| b == 0).next().unwrap_or(&[]);
        let mut ptr = 0;
        while ptr < line.len() && g_ascii_isspace(line[ptr]) {
            ptr += 1;
        }
        if ptr == line.len() || line[ptr] == b'#' {
            continue;
        }
        let cmd_and_rest = &line[ptr..];
        let sep = cmd_and_rest
            .iter()
            .position(|&b| b == b' ')
            .or_else(|| cmd_and_rest.iter().position(|&b| b == b'\t'));
        let Some(sep) = sep else {
            result.any_error = true;
            return false; // "Invalid config line"
        };
        let cmd = &cmd_and_rest[..sep];
        let mut arg = &cmd_and_rest[sep + 1..];
        while let [first, rest @ ..] = arg {
            if !g_ascii_isspace(*first) {
                break;
            }
            arg = rest;
        }
        while let [rest @ .., last] = arg {
            if !g_ascii_isspace(*last) {
                break;
            }
            arg = rest;
        }
        if cmd != b"include" && arg.len() >= 16 {
            result.any_error = true;
            return false; // "name too long"
        }
        match cmd {
            b"deny" if arg == b"all" => result.rules.push(QRule::DenyAll),
            b"deny" => result.rules.push(QRule::Deny(arg.to_vec())),
            b"allow" if arg == b"all" => result.rules.push(QRule::AllowAll),
            b"allow" => result.rules.push(QRule::Allow(arg.to_vec())),
            b"include" => {
                // "ignore errors"
                let _ = qemu_parse(tree, arg, depth + 1, result);
            }
            _ => {
                result.any_error = true;
                return false; // "Unknown command"
            }
        }
    }
    true
}

fn qemu(tree: &Tree) -> QemuResult {
    let mut result = QemuResult::default();
    result.main_failed = !qemu_parse(tree, MAIN.as_bytes(), 0, &mut result);
    result
}

/// QEMU's decision: some allow matched and no deny did.
fn qemu_allows(rules: &[QRule], bridge: &[u8]) -> bool {
    let mut allowed = false;
    let mut denied = false;
    for rule in rules {
        match rule {
            QRule::AllowAll => allowed = true,
            QRule::Allow(n) if n == bridge => allowed = true,
            QRule::DenyAll => denied = true,
            QRule::Deny(n) if n == bridge => denied = true,
            _ => {}
        }
    }
    allowed && !denied
}

/// Our documented deviations, judged independently of our parser, for one
/// line as our parser sees it (split at '\n', without it): a line over
/// 4095 bytes, a NUL, an allow/deny name that is not a usable interface
/// name, an include without a path.
fn line_deviates(line: &[u8]) -> bool {
    if line.len() > 4095 || line.contains(&0) {
        return true;
    }
    let start = line
        .iter()
        .position(|&b| !g_ascii_isspace(b))
        .unwrap_or(line.len());
    let rest = &line[start..];
    if rest.is_empty() || rest[0] == b'#' {
        return false;
    }
    let Some(sep) = rest
        .iter()
        .position(|&b| b == b' ')
        .or_else(|| rest.iter().position(|&b| b == b'\t'))
    else {
        return false;
    };
    let (cmd, arg) = (&rest[..sep], &rest[sep + 1..]);
    let arg: Vec<u8> = {
        let s = arg
            .iter()
            .position(|&b| !g_ascii_isspace(b))
            .unwrap_or(arg.len());
        let e = arg
            .iter()
            .rposition(|&b| !g_ascii_isspace(b))
            .map_or(s, |e| e + 1);
        arg[s..e.max(s)].to_vec()
    };
    match cmd {
        b"allow" | b"deny" => arg != b"all" && !usable_name(&arg),
        b"include" => arg.is_empty(),
        _ => false,
    }
}

/// A name the kernel keeps as is, without control characters (the
/// README's rule, restated here rather than taken from ifname).
fn usable_name(n: &[u8]) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != b"."
        && n != b".."
        && !n
            .iter()
            .any(|&b| b < 0x20 || b == 0x7f || b == b'/' || b == b':' || b == b' ' || b == 0xa0)
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

const INCLUDES: [&str; 3] = [
    "/etc/qemu/inc1.conf",
    "/etc/qemu/inc2.conf",
    "/etc/qemu/missing.conf",
];

/// Bridges asked about: valid names, some of them in the rules.
const BRIDGES: [&str; 7] = [
    "br0",
    "br1",
    "virbr0",
    "all",
    "ALL",
    "#br0",
    "0123456789abcde",
];

fn ws(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(vec![" ", "\t", "\r", "\x0b", "\x0c"]), 0..=max)
        .prop_map(|v| v.concat())
}

/// White space to both QEMU and us: no vertical tab.
fn white(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(vec![" ", "\t", "\r", "\x0c"]), 0..=max).prop_map(|v| v.concat())
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => select(BRIDGES.to_vec()).prop_map(str::to_string),
        1 => select(vec![
            "", ".", "..", "a/b", "a:b", "br0 # old", "a\tb", "x\x01",
            "0123456789abcdef", "br0123456789abcd", "\u{a0}",
        ])
        .prop_map(str::to_string),
    ]
}

/// Between command and argument: mostly what QEMU splits cleanly, and
/// sometimes a tab before a space (QEMU then reads "allow\t" as the command).
fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => select(vec![" ", "\t", "  ", " \t"]),
        1 => Just("\t "),
    ]
}

/// After the argument: mostly no space (which, after a tab separator, would
/// become QEMU's split point), sometimes any whitespace.
fn trailing() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec!["", "\r", "\t", "\x0b", "\x0c\r"]).prop_map(str::to_string),
        1 => ws(2),
    ]
}

/// One line of QEMU's grammar (without its newline), mostly valid, with
/// every separator and whitespace variant and a little noise.
fn qemu_line() -> impl Strategy<Value = Vec<u8>> {
    let rule = (
        ws(2),
        select(vec!["allow", "deny"]),
        separator(),
        ws(1),
        name(),
        trailing(),
    )
        .prop_map(|(a, c, s, b, n, t)| format!("{a}{c}{s}{b}{n}{t}").into_bytes());
    let include = (ws(1), separator(), select(INCLUDES.to_vec()), trailing())
        .prop_map(|(a, s, p, t)| format!("{a}include{s}{p}{t}").into_bytes());
    let comment = (ws(2), "[ -~\t]{0,20}").prop_map(|(a, text)| format!("{a}#{text}").into_bytes());
    let noise = prop_oneof![
        select(vec![
            "allow",
            "allowbr0",
            "permit br0",
            "ALLOW br0",
            "allow\tbr0 ",
            "allow\x0bbr0",
            "include ",
            "include",
            "allow ",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(b"allow br0\0junk".to_vec()),
        // A comment that fgets cuts, so that its tail is a rule to QEMU.
        (4090usize..4100).prop_map(|n| [b"#".repeat(n), b"allow all".to_vec()].concat()),
    ];
    prop_oneof![
        10 => rule,
        3 => include,
        2 => comment,
        2 => ws(3).prop_map(String::into_bytes),
        1 => noise,
    ]
}

/// A file: lines joined by "\n" or "\r\n", with or without a final newline.
fn qemu_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(qemu_line(), 0..7),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf, last_newline)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut out = lines.join(eol);
            if last_newline && !lines.is_empty() {
                out.extend_from_slice(eol);
            }
            out
        })
}

fn qemu_tree() -> impl Strategy<Value = Tree> {
    (qemu_file(), qemu_file(), qemu_file()).prop_map(|(main, a, b)| {
        Tree(vec![
            (MAIN.into(), main),
            (INCLUDES[0].into(), a),
            (INCLUDES[1].into(), b),
        ])
    })
}

/// Only valid lines (so that our parser accepts the file), no includes.
fn valid_line() -> impl Strategy<Value = String> {
    let sep = select(vec![" ", "\t", "  "]);
    prop_oneof![
        // No trailing space: after a tab separator it would split the line.
        4 => (white(2), select(vec!["allow", "deny"]), sep, select(BRIDGES.to_vec()), select(vec!["", "\r", "\t", "\x0c\t"]))
            .prop_map(|(a, c, s, n, t)| format!("{a}{c}{s}{n}{t}")),
        1 => (white(2), "[ -~]{0,10}").prop_map(|(a, t)| format!("{a}#{t}")),
        1 => white(2),
    ]
}

/// Arbitrary bytes split at 0xff into up to three files of a tree.
fn byte_tree(bytes: &[u8]) -> Tree {
    let mut parts = bytes.splitn(3, |&b| b == 0xff);
    let paths = [MAIN, "/etc/qemu/1", "/etc/qemu/2"];
    Tree(
        paths
            .iter()
            .map(|p| (PathBuf::from(p), parts.next().unwrap_or(&[]).to_vec()))
            .collect(),
    )
}

fn argv(items: &[&[u8]]) -> Vec<OsString> {
    items
        .iter()
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    // 256 cases each; failures are reported, not written into the tree.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes: lines, parse_line and load return, never panic, and what
    /// parse_line accepts obeys the limits.
    #[test]
    fn parser_never_panics_on_any_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            // Grammar-shaped bytes get further into the parser.
            prop::collection::vec(
                prop_oneof![
                    select(b"allow deny include all # \t\r\n\x0b\x0c\0\xff/.:br0".to_vec()),
                    any::<u8>(),
                ],
                0..600,
            ),
            qemu_file(),
        ],
        inc in select(vec!["include 1\n", "include /etc/qemu/2\n", "include ../qemu/bridge.conf\n", ""]),
    ) {
        let text = [inc.as_bytes(), &bytes].concat();
        for (number, line) in bridge_conf::lines(&text) {
            prop_assert!(number >= 1);
            prop_assert!(!line.contains(&b'\n'));
            match bridge_conf::parse_line(line) {
                Ok(Some(Directive::Allow(Target::Bridge(n)) | Directive::Deny(Target::Bridge(n)))) => {
                    prop_assert!(ifname::validate(&n).is_ok());
                }
                Ok(_) => prop_assert!(line.len() <= bridge_conf::MAX_LINE && !line.contains(&0)),
                Err(e) => prop_assert!(!e.to_string().contains('\n')),
            }
        }
        let tree = byte_tree(&text);
        match includes::load(&tree, Path::new(MAIN)) {
            Ok(rules) => {
                for b in BRIDGES {
                    let _ = bridge_conf::decide(&rules, b.as_bytes());
                }
            }
            Err(e) => prop_assert!(!e.to_string().contains('\n')),
        }
    }

    /// A deny for a name, anywhere in any list of rules, decides.
    #[test]
    fn a_deny_wins_wherever_it_stands_in_the_rules(
        rules in prop::collection::vec((any::<bool>(), prop::option::of(0usize..4)), 0..20),
        at in any::<prop::sample::Index>(),
        who in 0usize..4,
        all in any::<bool>(),
    ) {
        let names = [&b"br0"[..], b"br1", b"virbr0", b"x"];
        let mut list: Vec<Rule<usize>> = rules
            .iter()
            .enumerate()
            .map(|(i, &(allow, t))| Rule {
                origin: i,
                allow,
                target: t.map_or(Target::All, |n| Target::Bridge(names[n].to_vec())),
            })
            .collect();
        let deny = Rule {
            origin: 999,
            allow: false,
            target: if all { Target::All } else { Target::Bridge(names[who].to_vec()) },
        };
        list.insert(at.index(list.len() + 1), deny);
        prop_assert!(matches!(bridge_conf::decide(&list, names[who]), Verdict::Denied(_)));
        if all {
            for n in names {
                prop_assert!(matches!(bridge_conf::decide(&list, n), Verdict::Denied(_)));
            }
        }
    }

    /// A bridge with several names (real name, altnames): a deny of any of
    /// them wins; otherwise every name that must be allowed needs an allow.
    /// Through the decision a run makes (bridge.conf alone: no grants).
    #[test]
    fn a_deny_of_any_name_of_a_bridge_wins(
        rules in prop::collection::vec((any::<bool>(), prop::option::of(0usize..5)), 0..16),
        must in prop::collection::vec(0usize..5, 1..3),
        also in prop::collection::vec(0usize..5, 0..3),
    ) {
        let names = [&b"br0"[..], b"lan0", b"virbr0", b"x", b"uplink"];
        let list: Vec<Rule<Origin>> = rules
            .iter()
            .enumerate()
            .map(|(i, &(allow, t))| Rule {
                origin: Origin { file: PathBuf::from(MAIN), line: i + 1 },
                allow,
                target: t.map_or(Target::All, |n| Target::Bridge(names[n].to_vec())),
            })
            .collect();
        let must: Vec<&[u8]> = must.iter().map(|&i| names[i]).collect();
        let also: Vec<&[u8]> = also.iter().map(|&i| names[i]).collect();
        let me = Identity { uid: 1000, gids: Vec::new() };
        let decided = decision::decide(&list, &[], &[], &me, &Accounts::default(), &must, &also)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let verdict = decided.verdict;
        let denied = must
            .iter()
            .chain(&also)
            .any(|n| matches!(bridge_conf::decide(&list, n), Verdict::Denied(_)));
        let all_allowed = must
            .iter()
            .all(|n| matches!(bridge_conf::decide(&list, n), Verdict::Allowed(_)));
        match verdict {
            Verdict::Denied(_) => prop_assert!(denied),
            Verdict::Allowed(_) => prop_assert!(!denied && all_allowed),
            Verdict::NoAllow => prop_assert!(!denied && !all_allowed),
        }
    }

    /// The same through the files: a `deny NAME` line inserted anywhere in
    /// the main file or an included one denies NAME, whatever allows it.
    #[test]
    fn a_deny_wins_wherever_it_stands_in_the_files(
        main in prop::collection::vec(valid_line(), 0..10),
        inc in prop::collection::vec(valid_line(), 0..10),
        include_at in any::<prop::sample::Index>(),
        deny_at in any::<prop::sample::Index>(),
        deny_in_include in any::<bool>(),
        who in select(BRIDGES.to_vec()),
        sep in select(vec![" ", "\t", "   "]),
    ) {
        let mut main = main;
        let mut inc = inc;
        main.insert(include_at.index(main.len() + 1), "include inc.conf".into());
        let target = if deny_in_include { &mut inc } else { &mut main };
        target.insert(deny_at.index(target.len() + 1), format!("deny{sep}{who}\r"));
        // And an allow-all, so that only the deny can refuse.
        main.insert(0, "allow all".into());
        let tree = Tree(vec![
            (MAIN.into(), main.join("\n").into_bytes()),
            ("/etc/qemu/inc.conf".into(), inc.join("\n").into_bytes()),
        ]);
        let rules = includes::load(&tree, Path::new(MAIN)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(matches!(bridge_conf::decide(&rules, who.as_bytes()), Verdict::Denied(_)));
    }

    /// 16+ bytes: refused as --br (before the ACL is read), an error as an
    /// ACL name, and never matched by a rule for its first 15 bytes.
    #[test]
    fn a_name_of_16_or_more_bytes_never_matches(
        long in prop::collection::vec(any::<u8>().prop_filter("no NUL", |&b| b != 0), 16..48),
        fd in 0i32..1000,
    ) {
        let br = [b"--br=".as_slice(), &long].concat();
        let fd_arg = format!("--fd={fd}");
        for args in [
            argv(&[&br, fd_arg.as_bytes()]),
            argv(&[b"--use-vnet", fd_arg.as_bytes(), &br]),
        ] {
            prop_assert_eq!(
                cli::parse(&args).err(),
                Some(UsageError::BadBridge(bridge_helper::report::escape::Bytes(long.clone()), Invalid::TooLong(long.len())))
            );
        }
        // As an ACL name (bytes that would split or end the line aside).
        let clean: Vec<u8> = long
            .iter()
            .map(|&b| if g_ascii_isspace(b) { b'x' } else { b })
            .collect();
        for cmd in [&b"allow "[..], b"deny ", b"deny\t"] {
            let line = [cmd, &clean].concat();
            prop_assert_eq!(
                bridge_conf::parse_line(&line),
                Err(LineError::BadName(bridge_helper::report::escape::Bytes(clean.clone()), Invalid::TooLong(clean.len())))
            );
        }
        // CVE-2019-13164: a rule for the first 15 bytes does not match.
        let prefix = &clean[..15];
        if usable_name(prefix) {
            let rules = [Rule { origin: 0, allow: true, target: Target::Bridge(prefix.to_vec()) }];
            prop_assert_eq!(bridge_conf::decide(&rules, &clean), Verdict::NoAllow);
        }
    }

    /// QEMU's grammar means the same here as there.
    #[test]
    fn a_file_in_qemus_grammar_means_the_same_here(tree in qemu_tree()) {
        let ours = includes::load(&tree, Path::new(MAIN));
        let q = qemu(&tree);
        match &ours {
            Ok(rules) => {
                // We accept only what QEMU reads cleanly...
                prop_assert!(!q.main_failed && !q.any_error && !q.runaway, "QEMU: {q:?}");
                // ...and then decide exactly as it does.
                for b in BRIDGES {
                    prop_assert_eq!(
                        verdict(rules, b.as_bytes()),
                        qemu_allows(&q.rules, b.as_bytes()),
                        "bridge {}", b
                    );
                }
            }
            Err(e) => {
                // A refusal is either QEMU's own, or one of our deviations:
                // a deviating line, an include cycle, nesting deeper than 8
                // or more than 64 files (QEMU: a crash or an endless walk).
                let bounded = matches!(
                    e,
                    ConfigError::Cycle(..) | ConfigError::TooDeep(_) | ConfigError::TooMuch(_)
                );
                if !q.main_failed && !q.any_error && !q.runaway && !bounded {
                    let deviates = tree
                        .0
                        .iter()
                        .flat_map(|(_, bytes)| bridge_conf::lines(bytes).map(|(_, l)| l))
                        .any(line_deviates);
                    prop_assert!(deviates, "QEMU accepts this tree, we refuse it: {e}");
                }
            }
        }
    }
}

/// The deviations the model must know about do occur in the generated
/// trees, and QEMU's reading of a cut comment is what the model says.
#[test]
fn model_sanity() {
    let long = [b"#".repeat(4095), b"allow all\n".to_vec()].concat();
    let tree = Tree(vec![(MAIN.into(), long)]);
    let q = qemu(&tree);
    assert_eq!(
        q.rules,
        vec![QRule::AllowAll],
        "QEMU reads the cut tail as a rule"
    );
    assert!(
        includes::load(&tree, Path::new(MAIN)).is_err(),
        "we refuse it"
    );

    let tree = Tree(vec![(MAIN.into(), b"deny br0 # old\nallow all\n".to_vec())]);
    let q = qemu(&tree);
    assert!(
        qemu_allows(&q.rules, b"br0"),
        "QEMU's deny names 'br0 # old'"
    );
    assert!(includes::load(&tree, Path::new(MAIN)).is_err());

    let tree = Tree(vec![(MAIN.into(), b"allow\tbr0\n".to_vec())]);
    assert!(qemu_allows(&qemu(&tree).rules, b"br0"));
    assert!(verdict(
        &includes::load(&tree, Path::new(MAIN)).unwrap(),
        b"br0"
    ));

    let tree = Tree(vec![(MAIN.into(), b"allow\tbr0 \n".to_vec())]);
    assert!(
        qemu(&tree).main_failed,
        "the first space splits: command 'allow\\tbr0'"
    );
    assert!(includes::load(&tree, Path::new(MAIN)).is_err());

    // Vertical tab is not glib white space: QEMU reads the name "\vbr0"
    // (matching nothing); we refuse the name.
    let tree = Tree(vec![(MAIN.into(), b"allow \x0bbr0\n".to_vec())]);
    assert!(!qemu_allows(&qemu(&tree).rules, b"br0"));
    assert!(includes::load(&tree, Path::new(MAIN)).is_err());

    // An error in an include: QEMU keeps what came before it, we refuse.
    let tree = Tree(vec![
        (MAIN.into(), b"include /etc/qemu/inc1.conf\n".to_vec()),
        (
            INCLUDES[0].into(),
            b"allow br0\nbogus\nallow br1\n".to_vec(),
        ),
    ]);
    let q = qemu(&tree);
    assert!(!q.main_failed && q.any_error);
    assert_eq!(q.rules, vec![QRule::Allow(b"br0".to_vec())]);
    assert!(includes::load(&tree, Path::new(MAIN)).is_err());
}
