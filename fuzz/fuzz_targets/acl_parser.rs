//! The ACL language, end to end, on arbitrary bytes: line splitting, line
//! parsing, include resolution over an in-memory tree, and the decision.
//!
//! The input is one or more files separated by the two bytes 0xff 0xfe:
//! the first is /etc/qemu/bridge.conf, file i is /etc/qemu/i (so
//! `include 1` or `include /etc/qemu/1` reaches it). /etc/qemu/eacces is
//! unreadable, /etc/qemu/refused is refused, /etc/qemu/self has the main
//! file's inode (a cycle under another name).
#![no_main]

use std::path::{Path, PathBuf};

use bridge_helper::policy::bridge_conf::{self, Directive, Target, Verdict};
use bridge_helper::policy::bridge_conf::includes;
use bridge_helper::policy::files::{FileText, Files, OpenError};
use bridge_helper::policy::ifname;
use bridge_helper::policy::untrusted::Untrusted;
use libfuzzer_sys::fuzz_target;

const MAIN: &str = "/etc/qemu/bridge.conf";

struct Tree<'a> {
    files: Vec<&'a [u8]>,
}

impl Files for Tree<'_> {
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
        let index = if path == Path::new(MAIN) || path == Path::new("/etc/qemu/self") {
            0
        } else if path == Path::new("/etc/qemu/eacces") {
            return Err(OpenError::Unreadable);
        } else if path == Path::new("/etc/qemu/refused") {
            return Err(OpenError::Refused(Untrusted::NotRegular));
        } else {
            match path
                .strip_prefix("/etc/qemu")
                .ok()
                .and_then(|p| p.to_str())
                .and_then(|p| p.parse::<usize>().ok())
            {
                Some(i) if i < self.files.len() => i,
                _ => return Err(OpenError::Missing),
            }
        };
        let bytes = self.files[index];
        if bytes.len() as u64 > limit {
            return Err(OpenError::TooBig);
        }
        Ok(FileText {
            id: (1, index as u64),
            bytes: bytes.to_vec(),
        })
    }
}

fn split_files(data: &[u8]) -> Vec<&[u8]> {
    let mut files = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xff, 0xfe]) {
        files.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    files.push(rest);
    files
}

fuzz_target!(|data: &[u8]| {
    let files = split_files(data);
    // Every line of every file on its own.
    for file in &files {
        for (number, line) in bridge_conf::lines(file) {
            assert!(number >= 1);
            assert!(!line.contains(&b'\n'));
            match bridge_conf::parse_line(line) {
                Ok(Some(Directive::Allow(Target::Bridge(n))))
                | Ok(Some(Directive::Deny(Target::Bridge(n)))) => {
                    // A rule names only what the kernel would keep as is.
                    assert!(ifname::validate(&n).is_ok(), "{n:?}");
                    assert!(n.len() <= ifname::MAX_LEN);
                }
                Ok(Some(Directive::Include(p))) => assert!(!p.is_empty()),
                Ok(_) => {}
                Err(_) => {}
            }
            if bridge_conf::parse_line(line).is_ok() {
                assert!(line.len() <= bridge_conf::MAX_LINE && !line.contains(&0));
            }
        }
    }
    // The whole tree, as the helper reads it.
    let tree = Tree { files };
    let Ok(rules) = includes::load(&tree, Path::new(MAIN)) else {
        return;
    };
    let mut names: Vec<Vec<u8>> = vec![b"br0".to_vec(), b"0123456789abcdef".to_vec()];
    for rule in &rules {
        if let Target::Bridge(n) = &rule.target {
            names.push(n.clone());
            // The 16-byte extension of a named bridge (CVE-2019-13164).
            let mut long = n.clone();
            long.resize(16, b'x');
            names.push(long);
        }
    }
    for name in &names {
        let denied = rules.iter().any(|r| {
            !r.allow && (r.target == Target::All || r.target == Target::Bridge(name.clone()))
        });
        let allowed = rules.iter().any(|r| {
            r.allow && (r.target == Target::All || r.target == Target::Bridge(name.clone()))
        });
        match bridge_conf::decide(&rules, name) {
            Verdict::Denied(o) => {
                assert!(denied);
                let _: &PathBuf = &o.file;
            }
            Verdict::Allowed(_) => assert!(allowed && !denied),
            Verdict::NoAllow => assert!(!allowed && !denied),
        }
        // Only `allow all` can match a name the kernel would truncate; the
        // argument parser refuses such names before the ACL is read.
        if name.len() > ifname::MAX_LEN {
            assert!(!rules
                .iter()
                .any(|r| r.target == Target::Bridge(name.clone())));
        }
    }
});
