//! One sweep at a time per results file: an advisory `flock` on a lock
//! file beside the results (`.NAME.lock`), held for the sweep's life. The
//! kernel releases it when the process ends, however it ends, so a killed
//! sweep never blocks the next one. The holder writes its pid into the file
//! for the refusal message, and removes the file when it is done.

use super::SweepError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock on one results file; released (and its file removed) on drop.
#[derive(Debug)]
pub struct ResultsLock {
    file: File,
    path: PathBuf,
}

/// `DIR/NAME` -> `DIR/.NAME.lock`.
pub fn lock_path(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep-results".into());
    results.with_file_name(format!(".{name}.lock"))
}

impl ResultsLock {
    /// Take the lock of `results` without waiting; if another process holds
    /// it, [`SweepError::Locked`] names that process.
    pub fn acquire(results: &Path) -> Result<ResultsLock, SweepError> {
        let path = lock_path(results);
        // A holder removes the file as it finishes: a lock taken on a file
        // that is no longer at `path` guards nothing, so open again.
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                // Never write through a symlink planted at the lock's name.
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o644)
                .open(&path)
                .map_err(|e| {
                    SweepError::file(&path, format!("cannot open the sweep's lock: {e}"))
                })?;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(SweepError::Locked {
                        results: results.to_path_buf(),
                        pid: holder(file),
                    });
                }
                return Err(SweepError::file(&path, format!("cannot lock: {e}")));
            }
            if same_file(&file, &path) {
                let mut lock = ResultsLock { file, path };
                lock.write_pid();
                return Ok(lock);
            }
        }
    }

    /// Our pid into the file, for the message a second sweep prints.
    fn write_pid(&mut self) {
        // Best effort: the message falls back to "another sweep" without it.
        let _ = self.file.set_len(0);
        let _ = self
            .file
            .write_all(format!("{}\n", std::process::id()).as_bytes());
    }
}

impl Drop for ResultsLock {
    fn drop(&mut self) {
        // Removed while still locked: a sweep that opened it meanwhile finds
        // it gone from `path` once it gets the lock, and opens again.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid the holder wrote, if readable.
fn holder(mut file: File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
