//! The file interface policy reads its files through: what a read returns
//! and why it may fail. `system::trusted_files` implements it (the walk
//! that decides which files may speak for the administrator); the tests
//! and fuzz targets implement it in memory.

use std::io;
use std::path::Path;

use crate::policy::untrusted::Untrusted;

pub trait Files {
    /// Reads at most `limit` bytes; more is an error.
    fn read(&self, path: &Path, limit: u64) -> Result<FileText, OpenError>;
}

pub struct FileText {
    /// (device, inode): what a cycle is detected by.
    pub id: (u64, u64),
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
pub enum OpenError {
    /// ENOENT/ENOTDIR behind trusted directories: an include of it is
    /// skipped, as QEMU does.
    Missing,
    /// EACCES behind trusted directories: an include of it is skipped,
    /// which is what makes a `root:GROUP 0640` include apply to members of
    /// GROUP only.
    Unreadable,
    /// Something on the way is not one we may trust.
    Refused(Untrusted),
    /// More than the reader's limit (set by whoever reads, not the walk).
    TooBig,
    /// The process ran out of descriptors or memory: not the file's fault.
    Resources(io::Error),
    Io(io::Error),
}
