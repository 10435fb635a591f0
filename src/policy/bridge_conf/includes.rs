//! Reading bridge.conf and its includes: the include walk, its limits and
//! the errors a configuration file can have.
//!
//! File access sits behind [`Files`] (the real one is
//! `system::trusted_files::SystemFiles`), so the include logic can be
//! tested and fuzzed without touching the file system.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::policy::accounts::Who;
use crate::policy::bridge_conf::{self, Directive, LineError, Rule};
use crate::policy::files::{Files, OpenError};
use crate::policy::untrusted::Untrusted;
use crate::report::escape::Escaped;

/// How deep includes may nest below the main file. QEMU has no limit and
/// recurses until it crashes on a cycle.
pub const MAX_DEPTH: usize = 8;
/// How many files one decision may read, so `include` fan-out cannot
/// turn into an exponential walk.
pub const MAX_FILES: usize = 64;
/// Bytes read across all files; real configurations are a few lines.
pub const MAX_BYTES: u64 = 1 << 20;

/// Where a rule was written, shown as `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            Escaped(self.file.as_os_str().as_bytes()),
            self.line
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Syntax(Origin, LineError),
    #[error(
        "{}: does not exist; create it, owned by root, to allow bridges (see bridge.conf(5))",
        shown(.0)
    )]
    Missing(PathBuf),
    #[error("{path}: not readable by the calling user; fix: chmod 0644 {path} (rules for one group go in an include only that group can read, see bridge.conf(5))", path = shown(.0))]
    Unreadable(PathBuf),
    #[error("{path}: {why}", path = shown(.0), why = .1)]
    Untrusted(PathBuf, Untrusted),
    #[error(
        "{}: over the {MAX_BYTES}-byte limit for all ACL files together; fix: shorten the files",
        shown(.0)
    )]
    TooBig(PathBuf),
    /// A file read on its own (bridge-helper.conf, /etc/passwd,
    /// /etc/group) over the limit its reader set.
    #[error("{path}: over the {limit}-byte limit for this file; fix: shorten it", path = shown(.0), limit = .1)]
    FileTooBig(PathBuf, u64),
    #[error("{path}: {why}", path = shown(.0), why = .1)]
    Io(PathBuf, io::Error),
    #[error("{at}: include of {path} forms a cycle; fix: remove one of the includes", at = .0, path = shown(.1))]
    Cycle(Origin, PathBuf),
    #[error("{0}: includes nest deeper than {MAX_DEPTH} levels; fix: include the files from fewer levels")]
    TooDeep(Origin),
    #[error("{0}: more than {MAX_FILES} files or {MAX_BYTES} bytes to read; fix: merge or shorten the files")]
    TooMuch(Origin),
    #[error("{0}: a second port line for this user on this bridge (the first is {1}); keep one")]
    DuplicatePort(Origin, Origin),
    #[error("{0} and {1}: port lines that both apply to this caller disagree; add a user= line for this user or make them agree")]
    PortConflict(Origin, Origin),
    /// A restriction for an account that cannot be told fails closed: it
    /// could be the caller's.
    #[error("{0}: {1} does not resolve in /etc/passwd or /etc/group, so this port line could be the caller's; fix the name, use a number, or remove the line")]
    UnresolvedPort(Origin, Who),
    /// Out of descriptors or memory: the environment's fault, not the file's.
    #[error("{path}: {why}", path = shown(.0), why = .1)]
    Resources(PathBuf, io::Error),
}

/// A path as written, escaped (paths read better without quotes).
fn shown(path: &Path) -> Escaped<'_> {
    Escaped(path.as_os_str().as_bytes())
}

impl ConfigError {
    /// The file at `path` (as written), read on its own with at most
    /// `limit` bytes, could not be used.
    pub fn opening_file(path: &Path, e: OpenError, limit: u64) -> ConfigError {
        match e {
            OpenError::TooBig => ConfigError::FileTooBig(path.to_path_buf(), limit),
            e => ConfigError::opening(path, e),
        }
    }

    /// The ACL file at `path` (as written) could not be used.
    pub fn opening(path: &Path, e: OpenError) -> ConfigError {
        let path = path.to_path_buf();
        match e {
            OpenError::Missing => ConfigError::Missing(path),
            OpenError::Unreadable => ConfigError::Unreadable(path),
            OpenError::Refused(why) => ConfigError::Untrusted(path, why),
            OpenError::TooBig => ConfigError::TooBig(path),
            OpenError::Io(e) => ConfigError::Io(path, e),
            OpenError::Resources(e) => ConfigError::Resources(path, e),
        }
    }
}

/// Loads the main file and everything it includes, in order.
pub fn load(files: &impl Files, main: &Path) -> Result<Vec<Rule<Origin>>, ConfigError> {
    let mut walk = Walk {
        files,
        rules: Vec::new(),
        stack: Vec::new(),
        opened: 0,
        budget: MAX_BYTES,
    };
    walk.file(main, None)?;
    Ok(walk.rules)
}

struct Walk<'f, F> {
    files: &'f F,
    rules: Vec<Rule<Origin>>,
    /// Files being read, outermost first.
    stack: Vec<(u64, u64)>,
    opened: usize,
    budget: u64,
}

impl<F: Files> Walk<'_, F> {
    fn file(&mut self, path: &Path, included_at: Option<&Origin>) -> Result<(), ConfigError> {
        if let Some(at) = included_at {
            if self.stack.len() > MAX_DEPTH {
                return Err(ConfigError::TooDeep(at.clone()));
            }
            if self.opened >= MAX_FILES {
                return Err(ConfigError::TooMuch(at.clone()));
            }
        }
        self.opened += 1;
        let text = match (self.files.read(path, self.budget), included_at) {
            (Ok(text), _) => text,
            // What QEMU skips; the walk only says so behind trusted
            // directories (see trust).
            (Err(OpenError::Missing | OpenError::Unreadable), Some(_)) => return Ok(()),
            (Err(e), _) => return Err(ConfigError::opening(path, e)),
        };
        if let Some(at) = included_at {
            if self.stack.contains(&text.id) {
                return Err(ConfigError::Cycle(at.clone(), path.to_path_buf()));
            }
        }
        self.budget = self.budget.saturating_sub(text.bytes.len() as u64);
        self.stack.push(text.id);
        for (number, line) in bridge_conf::lines(&text.bytes) {
            let origin = Origin {
                file: path.to_path_buf(),
                line: number,
            };
            match bridge_conf::parse_line(line) {
                Err(e) => return Err(ConfigError::Syntax(origin, e)),
                Ok(None) => {}
                Ok(Some(Directive::Allow(target))) => self.rules.push(Rule {
                    origin,
                    allow: true,
                    target,
                }),
                Ok(Some(Directive::Deny(target))) => self.rules.push(Rule {
                    origin,
                    allow: false,
                    target,
                }),
                Ok(Some(Directive::Include(inc))) => {
                    let inc = resolve(path, OsStr::from_bytes(&inc));
                    self.file(&inc, Some(&origin))?;
                }
            }
        }
        self.stack.pop();
        Ok(())
    }
}

/// A relative include is taken from the including file's directory; QEMU
/// takes it from the caller's working directory, which the caller controls.
fn resolve(including: &Path, inc: &OsStr) -> PathBuf {
    let inc = Path::new(inc);
    match including.parent() {
        Some(dir) if inc.is_relative() => dir.join(inc),
        _ => inc.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bridge_conf::{decide, Target, Verdict};
    use crate::policy::files::FileText;
    use std::collections::HashMap;

    /// An in-memory tree: path -> (inode, contents or an error kind).
    #[derive(Default)]
    struct Tree(HashMap<PathBuf, (u64, Result<&'static str, &'static str>)>);

    impl Tree {
        fn file(mut self, path: &str, text: &'static str) -> Self {
            let ino = self.0.len() as u64;
            self.0.insert(path.into(), (ino, Ok(text)));
            self
        }
        fn broken(mut self, path: &str, kind: &'static str) -> Self {
            self.0.insert(path.into(), (0, Err(kind)));
            self
        }
    }

    impl Files for Tree {
        fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
            match self.0.get(path) {
                None => Err(OpenError::Missing),
                Some((_, Err("eacces"))) => Err(OpenError::Unreadable),
                Some((_, Err(_))) => Err(OpenError::Refused(Untrusted::FileOwner {
                    at: path.to_path_buf(),
                    uid: 1000,
                })),
                Some((_, Ok(t))) if t.len() as u64 > limit => Err(OpenError::TooBig),
                Some((ino, Ok(t))) => Ok(FileText {
                    id: (1, *ino),
                    bytes: t.as_bytes().to_vec(),
                }),
            }
        }
    }

    fn verdict(tree: &Tree, bridge: &str) -> Result<&'static str, String> {
        let rules = load(tree, Path::new("/etc/qemu/bridge.conf")).map_err(|e| e.to_string())?;
        Ok(match decide(&rules, bridge.as_bytes()) {
            Verdict::Allowed(_) => "allowed",
            Verdict::Denied(_) => "denied",
            Verdict::NoAllow => "no-allow",
        })
    }

    #[test]
    fn includes_are_followed_in_place() {
        let t = Tree::default()
            .file(
                "/etc/qemu/bridge.conf",
                "allow br0\ninclude /etc/qemu/more.conf\n",
            )
            .file("/etc/qemu/more.conf", "deny br0\nallow br1\n");
        assert_eq!(verdict(&t, "br0"), Ok("denied"));
        assert_eq!(verdict(&t, "br1"), Ok("allowed"));
        assert_eq!(verdict(&t, "br2"), Ok("no-allow"));
        let rules = load(&t, Path::new("/etc/qemu/bridge.conf")).unwrap();
        assert_eq!(rules[1].origin.to_string(), "/etc/qemu/more.conf:1");
        assert_eq!(rules[2].target, Target::Bridge(b"br1".to_vec()));
    }

    #[test]
    fn missing_and_unreadable_includes_are_skipped() {
        let t = Tree::default()
            .file(
                "/etc/qemu/bridge.conf",
                "include /nope.conf\ninclude /etc/qemu/group.conf\nallow br0\n",
            )
            .broken("/etc/qemu/group.conf", "eacces");
        assert_eq!(verdict(&t, "br0"), Ok("allowed"));
    }

    #[test]
    fn main_file_must_exist_and_be_readable() {
        assert!(verdict(&Tree::default(), "br0")
            .unwrap_err()
            .contains("does not exist"));
        let t = Tree::default().broken("/etc/qemu/bridge.conf", "eacces");
        assert!(verdict(&t, "br0").unwrap_err().contains("not readable"));
    }

    #[test]
    fn an_error_in_any_include_refuses_everything() {
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", "allow all\ninclude inc.conf\n")
            .file("/etc/qemu/inc.conf", "deny br0\nbogus line\ndeny br1\n");
        assert_eq!(
            verdict(&t, "br2").unwrap_err(),
            "/etc/qemu/inc.conf:2: unknown command 'bogus' (expected allow, deny or include)"
        );
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", "allow all\ninclude inc.conf\n")
            .broken("/etc/qemu/inc.conf", "not root's");
        assert_eq!(
            verdict(&t, "br0").unwrap_err(),
            "/etc/qemu/inc.conf: owned by uid 1000, not root; fix: chown root /etc/qemu/inc.conf"
        );
    }

    #[test]
    fn relative_includes_resolve_beside_the_including_file() {
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", "include sub/a.conf\n")
            .file("/etc/qemu/sub/a.conf", "include b.conf\n")
            .file("/etc/qemu/sub/b.conf", "allow br0\n");
        assert_eq!(verdict(&t, "br0"), Ok("allowed"));
    }

    #[test]
    fn cycles_and_depth_are_errors() {
        let t = Tree::default().file("/etc/qemu/bridge.conf", "allow br0\ninclude bridge.conf\n");
        assert_eq!(
            verdict(&t, "br0").unwrap_err(),
            "/etc/qemu/bridge.conf:2: include of /etc/qemu/bridge.conf forms a cycle; fix: remove one of the includes"
        );
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", "include a\n")
            .file("/etc/qemu/a", "include bridge.conf\n");
        assert!(verdict(&t, "br0").unwrap_err().contains("forms a cycle"));

        // The boundary: MAX_DEPTH levels of include below the main file
        // are read (as QEMU reads them), one more is refused.
        let chain = |levels: usize| {
            let mut t = Tree::default().file("/etc/qemu/bridge.conf", "include 1\n");
            for i in 1..=levels {
                let text = if i == levels {
                    "allow br0\n".to_string()
                } else {
                    format!("include {}\n", i + 1)
                };
                t = t.file(&format!("/etc/qemu/{i}"), Box::leak(text.into_boxed_str()));
            }
            t
        };
        assert_eq!(verdict(&chain(MAX_DEPTH), "br0"), Ok("allowed"));
        assert_eq!(
            verdict(&chain(MAX_DEPTH + 1), "br0").unwrap_err(),
            "/etc/qemu/8:1: includes nest deeper than 8 levels; fix: include the files from fewer levels"
        );
    }

    #[test]
    fn a_diamond_is_not_a_cycle_but_fan_out_is_bounded() {
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", "include a\ninclude a\n")
            .file("/etc/qemu/a", "allow br0\n");
        assert_eq!(verdict(&t, "br0"), Ok("allowed"));
        let fan_a: &'static str = Box::leak("include a\n".repeat(10).into_boxed_str());
        let fan_b: &'static str = Box::leak("include b\n".repeat(10).into_boxed_str());
        let t = Tree::default()
            .file("/etc/qemu/bridge.conf", fan_a)
            .file("/etc/qemu/a", fan_b)
            .file("/etc/qemu/b", "allow br0\n");
        assert!(verdict(&t, "br0")
            .unwrap_err()
            .contains("more than 64 files"));
    }
}
