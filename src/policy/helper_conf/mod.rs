//! /etc/qemu/bridge-helper.conf: settings of this helper alone, in a file
//! QEMU's helper never reads, so bridge.conf stays valid for both.
//!
//! Optional. One setting per line, `#` comments and blank lines allowed:
//!
//! ```text
//! max-abandoned-taps 4
//! allow br-lab group=students
//! port br-lab group=students isolated vlan=20
//! ```
//!
//! The `allow` and `port` lines are [`lines`]'s; [`crate::policy::decision`]
//! combines them with bridge.conf.

pub mod lines;

use std::path::Path;

use crate::policy::bridge_conf::includes::{ConfigError, Origin};
use crate::policy::bridge_conf::{BadSetting, LineError};
use crate::policy::files::{Files, OpenError};
use crate::report::escape::Bytes;
use lines::{Grant, Line, PortRule};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Abandoned persistent taps a user may leave before the oldest are
    /// removed (see leftovers).
    pub max_abandoned_taps: usize,
    /// `allow BRIDGE|all user=|group=` lines, in file order.
    pub grants: Vec<Grant>,
    /// `port` lines, in file order.
    pub ports: Vec<PortRule>,
}

impl Settings {
    /// Only the compiled-in limit: no grants, no port settings.
    pub fn with_limit(max_abandoned_taps: usize) -> Settings {
        Settings {
            max_abandoned_taps,
            grants: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Whether some line is for a group, so that the caller's groups
    /// must be asked of the kernel.
    pub fn names_groups(&self) -> bool {
        lines::names_groups(&self.grants, &self.ports)
    }

    /// Whether some line names a user or group by name, so that
    /// /etc/passwd and /etc/group must be read.
    pub fn names_accounts(&self) -> bool {
        lines::names_accounts(&self.grants, &self.ports)
    }
}

/// The largest accepted limit: a bridge has at most 1024 ports anyway.
const MAX_LIMIT: usize = 1024;

/// The most of the file that is read; more is refused.
const MAX_BYTES: u64 = 64 * 1024;

/// Reads the file if it exists (with the same trust rules as the ACL
/// files); compiled-in defaults otherwise.
pub fn load(files: &impl Files, path: &Path, defaults: Settings) -> Result<Settings, ConfigError> {
    let text = match files.read(path, MAX_BYTES) {
        Ok(text) => text,
        Err(OpenError::Missing) => return Ok(defaults),
        Err(e) => return Err(ConfigError::opening_file(path, e, MAX_BYTES)),
    };
    parse_in(path, &text.bytes, defaults).map_err(|(line, e)| {
        ConfigError::Syntax(
            Origin {
                file: path.to_path_buf(),
                line,
            },
            e,
        )
    })
}

/// Parses the file's text over `defaults`; errors carry the line number.
pub fn parse(text: &[u8], defaults: Settings) -> Result<Settings, (usize, LineError)> {
    parse_in(
        Path::new(crate::policy::compiled::SETTINGS_FILE),
        text,
        defaults,
    )
}

/// [`parse`], with `path` as the file the lines' origins name.
pub fn parse_in(
    path: &Path,
    text: &[u8],
    defaults: Settings,
) -> Result<Settings, (usize, LineError)> {
    let bad = LineError::BadSetting;
    let mut settings = defaults;
    for (number, line) in crate::policy::bridge_conf::lines(text) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let words: Vec<&[u8]> = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty())
            .collect();
        if line.len() > crate::policy::bridge_conf::MAX_LINE {
            return Err((number, LineError::TooLong(line.len())));
        }
        if line.contains(&0) {
            return Err((number, LineError::Nul));
        }
        let origin = Origin {
            file: path.to_path_buf(),
            line: number,
        };
        if let Some(at) = words.iter().skip(1).position(|w| w.starts_with(b"#")) {
            if !words[0].starts_with(b"#") {
                let comment = Bytes(words[at + 1..].join(&b' '));
                return Err((number, bad(BadSetting::TrailingComment(comment))));
            }
        }
        match words.as_slice() {
            [] => {}
            [first, ..] if first.starts_with(b"#") => {}
            [b"max-abandoned-taps", n] => {
                settings.max_abandoned_taps = std::str::from_utf8(n)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .filter(|&n| n <= MAX_LIMIT)
                    .ok_or_else(|| {
                        (
                            number,
                            bad(BadSetting::NotALimit(Bytes::from(*n), MAX_LIMIT)),
                        )
                    })?;
            }
            words => match lines::parse_words(words) {
                Some(Ok(Line::Grant(target, who))) => {
                    settings.grants.push(Grant {
                        origin,
                        target,
                        who,
                    });
                }
                Some(Ok(Line::Port(bridge, who, port))) => {
                    if let Some(first) = settings
                        .ports
                        .iter()
                        .find(|p| p.bridge == bridge && p.who == who)
                    {
                        let second = BadSetting::SecondPort {
                            bridge: Bytes(bridge),
                            who,
                            first: first.origin.line,
                        };
                        return Err((number, bad(second)));
                    }
                    settings.ports.push(PortRule {
                        origin,
                        bridge,
                        who,
                        settings: port,
                    });
                }
                Some(Err(e)) => return Err((number, e)),
                None => return Err((number, bad(BadSetting::Unknown(Bytes::from(line))))),
            },
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Settings = Settings {
        max_abandoned_taps: 4,
        grants: Vec::new(),
        ports: Vec::new(),
    };

    #[test]
    fn the_file_is_read_up_to_64_kib() {
        struct Asked(std::cell::Cell<u64>);
        impl Files for Asked {
            fn read(
                &self,
                _: &Path,
                limit: u64,
            ) -> Result<crate::policy::files::FileText, OpenError> {
                self.0.set(limit);
                Err(OpenError::Missing)
            }
        }
        let files = Asked(std::cell::Cell::new(0));
        let got = load(
            &files,
            Path::new("/etc/qemu/bridge-helper.conf"),
            DEFAULTS.clone(),
        );
        assert_eq!(got.ok(), Some(DEFAULTS), "a missing file is the defaults");
        assert_eq!(files.0.get(), 64 * 1024);
    }

    #[test]
    fn a_file_over_its_limit_says_its_own_limit() {
        struct Big;
        impl Files for Big {
            fn read(&self, _: &Path, _: u64) -> Result<crate::policy::files::FileText, OpenError> {
                Err(OpenError::TooBig)
            }
        }
        let path = Path::new("/etc/qemu/bridge-helper.conf");
        let e = load(&Big, path, DEFAULTS.clone()).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/qemu/bridge-helper.conf: over the 65536-byte limit for this file; fix: shorten it"
        );
    }

    #[test]
    fn only_group_lines_need_the_callers_groups() {
        let s = |text: &[u8]| parse(text, DEFAULTS.clone()).unwrap();
        assert!(!s(b"").names_groups());
        assert!(!s(b"allow br0 user=alice\nport br0 user=7 isolated\n").names_groups());
        assert!(s(b"allow br0 group=tutors\n").names_groups());
        assert!(s(b"port br0 group=tutors isolated\n").names_groups());
    }

    #[test]
    fn settings_override_defaults() {
        assert_eq!(parse(b"", DEFAULTS.clone()), Ok(DEFAULTS));
        assert_eq!(
            parse(
                b"# comment\n\n  max-abandoned-taps\t9\r\n",
                DEFAULTS.clone()
            ),
            Ok(Settings::with_limit(9))
        );
        assert_eq!(
            parse(b"max-abandoned-taps 0\n", DEFAULTS.clone()),
            Ok(Settings::with_limit(0))
        );
        // The largest accepted (1025 is refused below).
        assert_eq!(
            parse(b"max-abandoned-taps 1024\n", DEFAULTS.clone()),
            Ok(Settings::with_limit(MAX_LIMIT))
        );
    }

    #[test]
    fn anything_else_is_an_error_with_its_line() {
        for bad in [
            &b"max-abandoned-taps\n"[..],
            b"max-abandoned-taps -1",
            b"max-abandoned-taps 1025",
            b"max-abandoned-taps 4 5",
            b"allow br0",
            b"max-abandoned-taps x",
        ] {
            let text = [b"# ok\n", bad].concat();
            assert!(
                matches!(
                    parse(&text, DEFAULTS.clone()),
                    Err((2, LineError::BadSetting(_)))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rule_lines_keep_their_origins() {
        let text = b"max-abandoned-taps 2\nallow br-lab group=students\n# c\nport br-lab group=students isolated vlan=20\nport br-lab isolated\n";
        let s = parse_in(Path::new("/x.conf"), text, DEFAULTS.clone()).unwrap();
        assert_eq!(s.max_abandoned_taps, 2);
        assert_eq!(s.grants.len(), 1);
        assert_eq!(s.grants[0].origin.to_string(), "/x.conf:2");
        let lines: Vec<usize> = s.ports.iter().map(|p| p.origin.line).collect();
        assert_eq!(lines, vec![4, 5]);
        assert!(s.names_accounts());
        let s = parse(b"port br0 user=1000 isolated\n", DEFAULTS.clone()).unwrap();
        assert!(!s.names_accounts());
    }

    #[test]
    fn the_same_port_line_twice_is_an_error_at_the_second() {
        for text in [
            &b"port br0 user=alice isolated\nport br0 user=alice vlan=3\n"[..],
            b"port br0 isolated\n\nport br0 isolated\n",
            b"port br0 group=7 isolated\nport br0 group=7\n",
        ] {
            let e = parse(text, DEFAULTS.clone()).unwrap_err();
            assert!(e.0 >= 2, "{e:?}");
            assert!(e.1.to_string().contains("the first is line 1"), "{e:?}");
        }
        // Other users, other bridges: fine.
        assert!(parse(
            b"port br0 user=alice isolated\nport br0 user=bob isolated\nport br1 user=alice\n",
            DEFAULTS.clone()
        )
        .is_ok());
    }

    /// The exact lines, bytes of the file escaped where they are shown.
    #[test]
    fn refusals_quote_the_line_s_own_words() {
        for (text, line) in [
            (&b"max-abandoned-taps 9\x1b"[..], "'9\\x1b' is not a number from 0 to 1024"),
            (b"frobnicate 1", "unknown setting 'frobnicate 1'"),
            (
                b"allow br0 user=a # b\x01c",
                "a comment needs a line of its own (starting with #); move '# b\\x01c' to the line above",
            ),
            (
                b"port br0 user=al'ice\nport br0 user=al'ice vlan=3",
                "a second port line for bridge 'br0' and user='al\\'ice' (the first is line 1); keep one",
            ),
            (b"allow br0 uid=1", "'uid=1' is not user=NAME or group=NAME"),
            (b"port br0 vlan=1 vlan=2", "'vlan' is given twice"),
            (b"allow br0 user=", "'user=': empty name"),
        ] {
            let e = parse(text, DEFAULTS.clone()).unwrap_err();
            assert_eq!(e.1.to_string(), line, "{text:?}");
        }
    }

    #[test]
    fn hostile_lines() {
        for bad in [
            &b"port br0 vlan=4095"[..],
            b"port br0 vlan=0",
            b"port br0 vlan=18446744073709551617",
            b"allow br0 user=99999999999999999999999",
            b"port br0 isolated\0",
            b"allow br0 user=\x0balice",
        ] {
            let text = [b"# ok\n", bad].concat();
            assert!(
                matches!(parse(&text, DEFAULTS.clone()), Err((2, _))),
                "{bad:?}"
            );
        }
        let long = [b"port br0 ".to_vec(), b"isolated ".repeat(500)].concat();
        assert!(matches!(
            parse(&long, DEFAULTS.clone()),
            Err((1, LineError::TooLong(_)))
        ));
    }
}
