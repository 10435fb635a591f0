//! The ACL and settings files as a check reads them: what each read found,
//! and every syntax error, not only the first.

use std::cell::RefCell;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::lines::Report;
use crate::policy::bridge_conf;
use crate::policy::bridge_conf::includes::Origin;
use crate::policy::files::{FileText, Files, OpenError};
use crate::report::escape::Escaped;

/// [`Files`] that remembers what each read found, for the report.
pub(super) struct Recording<'f, F> {
    inner: &'f F,
    /// The text of each file read, for every syntax error in it.
    texts: RefCell<Vec<(PathBuf, Vec<u8>)>>,
    /// A missing file is no fault (the settings file).
    pub(super) optional: bool,
    seen: RefCell<Vec<(PathBuf, String)>>,
}

impl<'f, F: Files> Recording<'f, F> {
    pub(super) fn new(inner: &'f F) -> Self {
        Recording {
            inner,
            texts: RefCell::new(Vec::new()),
            optional: false,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Every syntax error in the ACL files read, not only the first one,
    /// at which a run stops.
    pub(super) fn syntax_errors(&self, out: &mut Report) {
        for (path, text) in self.texts.borrow().iter() {
            for (line, bytes) in bridge_conf::lines(text) {
                if let Err(e) = bridge_conf::parse_line(bytes) {
                    let origin = Origin {
                        file: path.clone(),
                        line,
                    };
                    out.line(format!("syntax error: {origin}: {e}"));
                }
            }
        }
    }

    pub(super) fn report(&self, out: &mut Report) {
        for (path, what) in self.seen.borrow().iter() {
            out.line(format!(
                "file {}: {what}",
                Escaped(path.as_os_str().as_bytes())
            ));
        }
    }
}

impl<F: Files> Files for Recording<'_, F> {
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError> {
        let result = self.inner.read(path, limit);
        let what = match &result {
            Ok(text) => {
                self.texts
                    .borrow_mut()
                    .push((path.to_path_buf(), text.bytes.clone()));
                "trusted, read".to_string()
            }
            Err(OpenError::Missing) if self.optional => {
                "does not exist (optional: compiled-in defaults apply)".into()
            }
            Err(OpenError::Missing) => "does not exist".into(),
            Err(OpenError::Unreadable) => "not readable by this user".into(),
            Err(OpenError::Refused(why)) => format!("not trusted: {why}"),
            Err(OpenError::TooBig) => "too big".into(),
            Err(OpenError::Io(e) | OpenError::Resources(e)) => e.to_string(),
        };
        self.seen.borrow_mut().push((path.to_path_buf(), what));
        result
    }
}
