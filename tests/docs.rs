//! The examples in the man pages and the README are what they claim to be:
//! every command is valid shell, every bridge-helper command line is
//! accepted by the helper's own argument parser, and every file shown
//! parses as that file. An example of a kind this test does not know
//! fails it, so a new one cannot go unchecked.
//!
//! The commands themselves run in tests/package.rs (the newcomer's path
//! through the README) and the other suites; here they are linted.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use bridge_helper::cli as args;
use bridge_helper::policy::bridge_conf as acl;
use bridge_helper::policy::helper_conf::{self as settings, Settings};

/// What an example is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Shell commands, one a line (continued with a backslash).
    Commands,
    /// A terminal transcript: commands after `$ `, their output between.
    Transcript,
    /// Lines of bridge.conf.
    Acl,
    /// Lines of bridge-helper.conf.
    Settings,
    /// Text that is neither (an audit line, libvirt's XML, a systemd
    /// drop-in): shown, not run.
    Shown,
}

struct Example {
    source: String,
    kind: Kind,
    text: String,
}

fn manifest(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// roff's escapes, as the page renders them.
fn unroff(line: &str) -> String {
    line.replace("\\-", "-")
        .replace("\\e", "\\")
        .replace("\\(dq", "\"")
        .replace("\\(aq", "'")
}

const COMMANDS: &[&str] = &[
    "bridge-helper",
    "qemu-system-x86_64",
    "echo",
    "install",
    "dpkg-statoverride",
    "dpkg-reconfigure",
    "dpkg",
    "apparmor_parser",
    "setcap",
    "chmod",
    "systemctl",
    "ip",
    "bridge",
    "journalctl",
    "systemctl",
    "grep",
    "mkdir",
    "ls",
    "ln",
    "scripts/demo",
    "scripts/build-deb",
    "scripts/install-test-deps",
    "scripts/rust-target",
    "cargo",
];

/// Splits a block into paragraphs (blank lines between) and says what
/// each is, from its first line or the file its heading comment names.
fn classify(source: &str, default_file: Option<Kind>, block: &str) -> Vec<Example> {
    let mut out = Vec::new();
    for para in block.split("\n\n") {
        let para = para.trim_matches('\n');
        if para.is_empty() {
            continue;
        }
        let first = para.lines().next().unwrap_or_default().trim();
        let first_word = first.split_whitespace().next().unwrap_or_default();
        let kind = if first.starts_with("$ ") {
            Kind::Transcript
        } else if first.starts_with("# /etc/qemu/bridge.conf") {
            Kind::Acl
        } else if first.starts_with("# /etc/qemu/bridge-helper.conf") {
            Kind::Settings
        } else if first.starts_with('<')
            || first.starts_with('[')
            || first.starts_with("bridge-helper[")
        {
            Kind::Shown
        } else if COMMANDS.contains(&first_word)
            || (first.starts_with('#')
                && para
                    .lines()
                    .skip(1)
                    .all(|l| COMMANDS.contains(&l.split_whitespace().next().unwrap_or_default())))
        {
            Kind::Commands
        } else if let Some(kind) = default_file {
            kind
        } else {
            panic!("{source}: an example this test does not know how to check:\n{para}");
        };
        out.push(Example {
            source: source.to_owned(),
            kind,
            text: para.to_owned(),
        });
    }
    out
}

fn man_examples(page: &str) -> Vec<Example> {
    let text = manifest(&format!("man/{page}"));
    let default_file = match page {
        "bridge.conf.5" => Some(Kind::Acl),
        "bridge-helper.conf.5" => Some(Kind::Settings),
        _ => None,
    };
    let mut out = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        match (line, &mut block) {
            (".EX", None) => block = Some(Vec::new()),
            (".EE", Some(lines)) => {
                out.extend(classify(
                    &format!("man/{page}"),
                    default_file,
                    &lines.join("\n"),
                ));
                block = None;
            }
            (l, Some(lines)) => lines.push(unroff(l)),
            _ => {}
        }
    }
    assert!(block.is_none(), "{page}: .EX without .EE");
    out
}

fn readme_examples() -> Vec<Example> {
    let text = manifest("README.md");
    let mut out = Vec::new();
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            match block.take() {
                None => block = Some((lang.to_owned(), Vec::new())),
                Some((lang, lines)) => {
                    let body = lines.join("\n");
                    match lang.as_str() {
                        "sh" => out.push(Example {
                            source: "README.md".into(),
                            kind: Kind::Commands,
                            text: body,
                        }),
                        "xml" => out.push(Example {
                            source: "README.md".into(),
                            kind: Kind::Shown,
                            text: body,
                        }),
                        "" => out.extend(classify("README.md", Some(Kind::Settings), &body)),
                        other => panic!("README.md: a ```{other} block this test does not check"),
                    }
                }
            }
        } else if let Some((_, lines)) = &mut block {
            lines.push(line);
        }
    }
    out
}

/// The command lines of an example: continuations joined, comments and
/// (for a transcript) output left out.
fn command_lines(ex: &Example) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in ex.text.lines() {
        let line = match ex.kind {
            Kind::Transcript if current.is_empty() => match line.strip_prefix("$ ") {
                Some(cmd) => cmd,
                None => continue,
            },
            _ => line,
        };
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let whole = std::mem::take(&mut current);
                if !whole.trim().is_empty() && !whole.trim_start().starts_with('#') {
                    lines.push(whole);
                }
            }
        }
    }
    lines
}

/// The words of a bridge-helper command line, as the shell would pass
/// them (the examples quote nothing in them), up to a pipe or comment.
fn helper_argv(line: &str) -> Option<Vec<OsString>> {
    let line = line.split(['|', '#']).next().unwrap_or_default();
    let mut words = line.split_whitespace();
    (words.next()? == "bridge-helper").then(|| words.map(OsString::from).collect())
}

fn check(ex: &Example) -> usize {
    match ex.kind {
        Kind::Commands | Kind::Transcript => {
            let lines = command_lines(ex);
            assert!(
                !lines.is_empty(),
                "{}: no command in:\n{}",
                ex.source,
                ex.text
            );
            for line in &lines {
                let out = Command::new("bash")
                    .args(["-n", "-c", line])
                    .output()
                    .expect("bash");
                assert!(
                    out.status.success(),
                    "{}: not valid shell: {line}\n{}",
                    ex.source,
                    String::from_utf8_lossy(&out.stderr)
                );
                if let Some(argv) = helper_argv(line) {
                    if let Err(e) = args::parse(&argv) {
                        panic!("{}: the helper refuses `{line}`: {e}", ex.source);
                    }
                }
                if line.starts_with("qemu-system-") {
                    assert!(line.contains("-netdev bridge,id="), "{}: {line}", ex.source);
                }
            }
            lines.len()
        }
        Kind::Acl => {
            for (n, line) in acl::lines(ex.text.as_bytes()) {
                if let Err(e) = acl::parse_line(line) {
                    panic!("{}: bridge.conf line {n}: {e}\n{}", ex.source, ex.text);
                }
            }
            1
        }
        Kind::Settings => {
            if let Err((n, e)) = settings::parse(ex.text.as_bytes(), Settings::with_limit(4)) {
                panic!(
                    "{}: bridge-helper.conf line {n}: {e}\n{}",
                    ex.source, ex.text
                );
            }
            1
        }
        Kind::Shown => 0,
    }
}

#[test]
fn man_page_examples_are_valid_commands_and_files() {
    let mut helper_lines = 0;
    for page in ["bridge-helper.8", "bridge.conf.5", "bridge-helper.conf.5"] {
        let examples = man_examples(page);
        assert!(!examples.is_empty(), "{page} has no examples");
        for ex in &examples {
            check(ex);
            helper_lines += command_lines(ex)
                .iter()
                .filter(|l| helper_argv(l).is_some())
                .count();
        }
    }
    // --check, --check --user, --remove-abandoned, a multiqueue run.
    assert!(helper_lines >= 6, "{helper_lines}");
}

#[test]
fn readme_examples_are_valid_commands_and_files() {
    let examples = readme_examples();
    let checked: usize = examples.iter().map(check).sum();
    assert!(checked >= 8, "{checked}");
    // The test command CI runs, exactly.
    let ci = manifest(".ci/run");
    let command = "cargo test --locked --features test-hooks --no-fail-fast";
    assert!(
        ci.lines().any(|l| l == command),
        ".ci/run does not run `{command}`"
    );
    assert!(
        examples
            .iter()
            .flat_map(command_lines)
            .any(|l| l
                .split("&&")
                .any(|c| c.split('#').next().unwrap().trim() == command)),
        "the README's quick start does not give `{command}`"
    );
}

/// The README's first quick-start command is CI's too: `.ci/run` runs
/// `scripts/demo` and fails unless it shows both outcomes, in the words
/// the demo prints them (its "QEMU" side formats the line), and the
/// `--check` the refusal names reaching the run's status.
#[test]
fn ci_runs_the_demo_and_requires_a_granted_and_a_refused_run() {
    let first = readme_examples()
        .iter()
        .flat_map(command_lines)
        .next()
        .map(|l| l.split('#').next().unwrap().trim().to_string());
    assert_eq!(first.as_deref(), Some("scripts/demo"));
    let ci = manifest(".ci/run");
    let demo = ci
        .lines()
        .find(|l| l.starts_with("demo=$(scripts/demo "))
        .expect(".ci/run does not run scripts/demo");
    assert!(demo.contains("|| {"), "a failed demo must fail CI: {demo}");
    for outcome in [
        "'exit status 0, 1 fd received'",
        "'exit status 4, 0 fd received'",
        "'^  exit status: 4$'",
    ] {
        assert!(
            ci.lines()
                .any(|l| l.contains(&format!("! grep -q {outcome} <<<\"$demo\""))),
            ".ci/run does not require {outcome}"
        );
    }
    assert!(
        manifest("scripts/demo")
            .contains(r#"print(f"  exit status {status}, {len(fds)} fd received", flush=True)"#),
        "scripts/demo no longer prints the line .ci/run looks for"
    );
    // After the refusal, the check it names, typed as the line gives it
    // (`bridge-helper` on PATH), its report indented as the runs' lines.
    let demo = manifest("scripts/demo");
    assert!(
        demo.contains("bridge-helper --check --br=br1 | sed 's/^/  /'"),
        "scripts/demo no longer runs the check the refusal names"
    );
    // The binary .ci/run checks is the one cargo built, wherever that is.
    assert!(ci.contains(r#"binary="${CARGO_TARGET_DIR:-target}/"#));
}

/// The parser is not vacuous: it refuses what the helper refuses.
#[test]
fn a_wrong_example_would_fail() {
    let bad = Example {
        source: "test".into(),
        kind: Kind::Commands,
        text: "bridge-helper --check --fd=3".into(),
    };
    assert!(std::panic::catch_unwind(|| check(&bad)).is_err());
    let bad = Example {
        source: "test".into(),
        kind: Kind::Acl,
        text: "allow br0 user=alice".into(),
    };
    assert!(std::panic::catch_unwind(|| check(&bad)).is_err());
}
