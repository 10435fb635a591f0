//! /etc/qemu/bridge-helper.conf: settings of this helper alone, in a file
//! QEMU's helper never reads, so bridge.conf stays valid for both.
//!
//! Optional. One setting per line, `#` comments and blank lines allowed:
//!
//! ```text
//! max-abandoned-taps 4
//! ```

use std::path::Path;

use crate::policy::acl::LineError;
use crate::policy::acl_files::{ConfigError, Files, OpenError, Origin};
use crate::report::escape::{quote, Escaped};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Abandoned persistent taps a user may leave before the oldest are
    /// removed (see leftovers).
    pub max_abandoned_taps: usize,
}

/// The largest accepted limit: a bridge has at most 1024 ports anyway.
const MAX_LIMIT: usize = 1024;

/// Reads the file if it exists (with the same trust rules as the ACL
/// files); compiled-in defaults otherwise.
pub fn load(files: &impl Files, path: &Path, defaults: Settings) -> Result<Settings, ConfigError> {
    let shown = || Escaped(path.as_os_str().as_encoded_bytes()).to_string();
    let text = match files.read(path, 64 * 1024) {
        Ok(text) => text,
        Err(OpenError::Missing) => return Ok(defaults),
        Err(e) => return Err(ConfigError::opening(shown(), e)),
    };
    parse(&text.bytes, defaults).map_err(|(line, e)| {
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
    let mut settings = defaults;
    for (number, line) in crate::policy::acl::lines(text) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let words: Vec<&[u8]> = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [] => {}
            [first, ..] if first.starts_with(b"#") => {}
            [b"max-abandoned-taps", n] => {
                settings.max_abandoned_taps = std::str::from_utf8(n)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .filter(|&n| n <= MAX_LIMIT)
                    .ok_or((
                        number,
                        LineError::BadSetting(format!(
                            "{} is not a number from 0 to {MAX_LIMIT}",
                            quote(n)
                        )),
                    ))?;
            }
            _ => {
                return Err((
                    number,
                    LineError::BadSetting(format!("unknown setting {}", quote(line))),
                ))
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Settings = Settings {
        max_abandoned_taps: 4,
    };

    #[test]
    fn settings_override_defaults() {
        assert_eq!(parse(b"", DEFAULTS), Ok(DEFAULTS));
        assert_eq!(
            parse(b"# comment\n\n  max-abandoned-taps\t9\r\n", DEFAULTS),
            Ok(Settings {
                max_abandoned_taps: 9
            })
        );
        assert_eq!(
            parse(b"max-abandoned-taps 0\n", DEFAULTS),
            Ok(Settings {
                max_abandoned_taps: 0
            })
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
                matches!(parse(&text, DEFAULTS), Err((2, LineError::BadSetting(_)))),
                "{bad:?}"
            );
        }
    }
}
