//! Every file the tool writes goes through one policy, [`write_atomic`]:
//!
//! - A regular file, or a path where nothing exists yet, is replaced
//!   atomically: the content goes to a temporary file `.NAME.XXXXXX.tmp` in
//!   the same directory, is flushed and synced, renamed over the path, and
//!   the directory is synced. A reader (or a crash) sees the old file or the
//!   new one, never a mix. An existing file keeps its permission mode (and
//!   its owner, when the process may give files away, i.e. as root). A file
//!   that is not writable (`chmod a-w`) is refused, as a shell's `>` would.
//! - A hard-linked file is replaced like any other: its other names keep the
//!   old content. The alternative, writing into the shared inode, would
//!   update every name but could leave all of them half written; and a hard
//!   link is most often a cheap snapshot (`ln model.npz best.npz`, `cp -al`)
//!   that an overwrite must not destroy.
//! - A symbolic link is followed to its final target, which is replaced as
//!   above; the link stays a link. A dangling link gets its target created.
//! - Anything else that exists (a character or block device such as
//!   `/dev/null`, a FIFO, a socket, a terminal) is opened and written in
//!   place, never renamed over; its errors (`/dev/full`'s "no space left")
//!   are reported.
//! - `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N` mean
//!   the descriptor the process already has, as in a shell redirection:
//!   the output goes where the descriptor goes (a pipe, a terminal, a file
//!   opened for appending) without reopening it.
//!
//! A write that was killed leaves its temporary file behind. Each writer
//! holds an exclusive `flock` on its temporary file until the rename, so the
//! next write to the same path removes every `.NAME.XXXXXX.tmp` beside it
//! that nobody holds: the leftovers of dead writers, never a live one's.
//!
//! Errors name the user's path, never the temporary file, and say the cause
//! once in plain words: `model.npz: cannot write: no space left on device`.
//!
//! Before any long work starts, [`check_destination`] tries the same steps
//! without writing (the directory exists and takes a new file, the path is
//! not a directory or a symlink loop), and [`check_distinct`] refuses an
//! output that is one of the inputs or another output.
//!
//! Unix only (permissions, `flock`, device nodes).

use ndarray_npy::{NpzWriter, WriteNpzError};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Cursor, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An output file that could not be written (or, from
/// [`check_destination`], would not be).
///
/// Its `Display` is the whole story on one line: the user's path and the
/// cause in plain words. The cause is therefore not also returned by
/// [`std::error::Error::source`], so an error chain printed with `{:#}`
/// says it once.
#[derive(Debug)]
pub struct WriteError {
    /// The path the user gave (not a symlink's target, not a temp file).
    pub path: PathBuf,
    /// What went wrong.
    pub source: io::Error,
}

impl WriteError {
    fn new(path: &Path, source: io::Error) -> WriteError {
        WriteError {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The cause in plain words, without the path: "no space left on
    /// device", "read-only file system", "directory out does not exist".
    pub fn reason(&self) -> String {
        describe(&self.source)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: cannot write: {}",
            self.path.display(),
            self.reason()
        )
    }
}

impl std::error::Error for WriteError {}

/// An operating-system error in plain words, without Rust's "(os error N)".
pub fn describe(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let words = match code {
        libc::ENOSPC => "no space left on device",
        libc::EDQUOT => "disk quota exceeded",
        libc::EROFS => "read-only file system",
        libc::EACCES | libc::EPERM => "permission denied",
        libc::ENOENT => "no such file or directory",
        libc::EISDIR => "is a directory",
        libc::ENOTDIR => "a part of the path is not a directory",
        libc::ELOOP => "too many levels of symbolic links (a symlink loop)",
        libc::ENAMETOOLONG => "file name too long",
        libc::EFBIG => "file too large",
        libc::EIO => "input/output error",
        libc::EBADF => "not an open file descriptor",
        libc::ENXIO => "no such device or address",
        _ => {
            let text = e.to_string();
            let text = match text.rfind(" (os error ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            };
        }
    };
    words.to_string()
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Write `path` under the module's policy: `fill` writes the content into
/// a buffered file; a regular file is replaced only if `fill` and every
/// step after it succeed.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
{
    let wrap = |e| WriteError::new(path, e);
    match destination(path).map_err(wrap)? {
        Destination::Descriptor(fd) => write_descriptor(fd, fill),
        Destination::InPlace => write_in_place(path, fill),
        Destination::Replace { target, existing } => replace(&target, existing.as_ref(), fill),
    }
    .map_err(wrap)
}

/// Write an `.npz` built in memory (so that writing it can fail only in
/// [`write_atomic`], with its errors, and never in a zip writer's `Drop`;
/// and so that a FIFO or `/dev/stdout`, which cannot seek, can take it).
/// `add` adds the arrays; `compressed` deflates them.
pub(crate) fn write_npz<F>(path: &Path, compressed: bool, add: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut NpzWriter<Cursor<Vec<u8>>>) -> Result<(), WriteNpzError>,
{
    let memory = Cursor::new(Vec::new());
    let mut npz = if compressed {
        NpzWriter::new_compressed(memory)
    } else {
        NpzWriter::new(memory)
    };
    let bytes = add(&mut npz)
        .and_then(|()| npz.finish())
        .map_err(|e| {
            WriteError::new(
                path,
                io::Error::other(format!("cannot encode the arrays: {e}")),
            )
        })?
        .into_inner();
    write_atomic(path, |w| w.write_all(&bytes))
}

/// Open `path` for a file written as a run goes (metrics, one row per
/// epoch), under the module's policy: a regular file (or a new one) is
/// replaced at once by a new empty file, so the old one is gone whole and
/// `tail -f` follows the new rows; a device, FIFO or standard descriptor is
/// written in place. The caller writes and flushes as it goes.
pub fn open_live(path: &Path) -> Result<File, WriteError> {
    let wrap = |e| WriteError::new(path, e);
    let file = match destination(path).map_err(wrap)? {
        Destination::Descriptor(fd) => {
            if fd == 1 {
                io::stdout().flush().map_err(wrap)?;
            }
            // SAFETY: as in `write_descriptor`: a fresh descriptor we own.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup == -1 {
                return Err(wrap(io::Error::last_os_error()));
            }
            // SAFETY: `dup` is a fresh descriptor nothing else owns.
            unsafe { File::from_raw_fd(dup) }
        }
        Destination::InPlace => OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .map_err(wrap)?,
        Destination::Replace { target, existing } => {
            let (dir, name) = dir_and_name(&target);
            remove_stale_temps(&dir, name);
            if existing.is_some() {
                check_writable(&target).map_err(wrap)?;
            }
            let tmp = locked_temp(&dir, name).map_err(wrap)?;
            if let Some(m) = &existing {
                keep_owner_and_mode(tmp.as_file(), m).map_err(wrap)?;
            }
            tmp.persist(&target).map_err(|e| wrap(e.error))?
        }
    };
    Ok(file)
}

/// Check, before any work, that [`write_atomic`] could write `path`: the
/// path is not a directory or a symlink loop, its directory exists and
/// takes a new file (one is created and removed), an existing file or
/// device is writable, a standard descriptor is open for writing.
pub fn check_destination(path: &Path) -> Result<(), WriteError> {
    let wrap = |e| WriteError::new(path, e);
    match destination(path).map_err(wrap)? {
        Destination::Descriptor(fd) => {
            // SAFETY: F_GETFL only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags == -1 || flags & libc::O_ACCMODE == libc::O_RDONLY {
                return Err(wrap(os_error(libc::EBADF)));
            }
        }
        Destination::InPlace => check_writable(path).map_err(wrap)?,
        Destination::Replace { target, existing } => {
            if existing.is_some() {
                check_writable(&target).map_err(wrap)?;
            }
            let (dir, name) = dir_and_name(&target);
            drop(locked_temp(&dir, name).map_err(wrap)?);
        }
    }
    Ok(())
}

/// Where a write to the user's path goes.
enum Destination {
    /// A descriptor the process already has (`/dev/stdout`, `/dev/fd/3`).
    Descriptor(RawFd),
    /// An existing device, FIFO or socket: opened and written in place.
    InPlace,
    /// A regular file (or nothing yet) at `target`, the user's path with
    /// symlinks followed: replaced atomically.
    Replace {
        target: PathBuf,
        existing: Option<Metadata>,
    },
}

fn destination(path: &Path) -> io::Result<Destination> {
    if let Some(fd) = standard_descriptor(path) {
        return Ok(Destination::Descriptor(fd));
    }
    if path.as_os_str().as_bytes().ends_with(b"/") {
        return Err(os_error(libc::EISDIR));
    }
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(os_error(libc::EISDIR)),
        Ok(m) if m.is_file() => {
            let linked = fs::symlink_metadata(path)?.file_type().is_symlink();
            let target = if linked {
                fs::canonicalize(path)?
            } else {
                path.to_path_buf()
            };
            Ok(Destination::Replace {
                target,
                existing: Some(m),
            })
        }
        Ok(_) => Ok(Destination::InPlace),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Destination::Replace {
            target: dangling_target(path)?,
            existing: None,
        }),
        Err(e) => Err(e),
    }
}

/// The descriptor a name like `/dev/stdout` or `/proc/self/fd/3` means.
fn standard_descriptor(path: &Path) -> Option<RawFd> {
    let bytes = path.as_os_str().as_bytes();
    match bytes {
        b"/dev/stdin" => return Some(0),
        b"/dev/stdout" => return Some(1),
        b"/dev/stderr" => return Some(2),
        _ => {}
    }
    let number = bytes
        .strip_prefix(b"/dev/fd/")
        .or_else(|| bytes.strip_prefix(b"/proc/self/fd/"))?;
    if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// Where a path that does not exist will be created: the path itself, or
/// the final target of a chain of dangling symlinks.
fn dangling_target(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    // Linux's own limit on symlinks followed in one lookup.
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let next = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) => dir.join(next),
                    None => next,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(os_error(libc::ELOOP))
}

/// `path`'s directory (`.` for a bare name) and file name.
fn dir_and_name(path: &Path) -> (PathBuf, &OsStr) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (dir, path.file_name().unwrap_or_default())
}

/// `access(W_OK)`: false for a file the user made read-only (root may
/// write anything).
fn check_writable(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn write_descriptor<F>(fd: RawFd, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
{
    if fd == 1 {
        // What the program printed before goes first.
        io::stdout().flush()?;
    }
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor, owned by `file`
    // below and closed when it drops; the original stays open.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nothing else owns.
    let mut file = unsafe { File::from_raw_fd(dup) };
    let mut w = BufWriter::new(&mut file);
    fill(&mut w)?;
    w.flush()
}

fn write_in_place<F>(path: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
{
    // No `create`: the node exists; if it vanished, say so rather than
    // leave a regular file where a device was. No controlling terminal
    // is acquired by writing to one.
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    {
        let mut w = BufWriter::new(&mut file);
        fill(&mut w)?;
        w.flush()?;
    }
    sync_if_it_can(&file)
}

/// `sync_all` for a file written in place: a block device keeps data;
/// pipes, terminals and /dev/null cannot sync, which is no failure.
pub(crate) fn sync_if_it_can(file: &File) -> io::Result<()> {
    match file.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        other => other,
    }
}

fn replace<F>(target: &Path, existing: Option<&Metadata>, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
{
    let (dir, name) = dir_and_name(target);
    remove_stale_temps(&dir, name);
    if existing.is_some() {
        check_writable(target)?;
    }
    let mut tmp = locked_temp(&dir, name)?;
    if let Some(m) = existing {
        keep_owner_and_mode(tmp.as_file(), m)?;
    }
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    // The lock stays held through the rename (the file is only closed
    // when the returned handle drops).
    let _file = tmp.persist(target).map_err(|e| e.error)?;
    // Make the rename itself durable. The file is already in place: a
    // directory that cannot be synced is not a failure to write it.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Give the new file the replaced file's owner (when allowed) and mode.
fn keep_owner_and_mode(file: &File, old: &Metadata) -> io::Result<()> {
    let new = file.metadata()?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        // Only root may give a file away; anyone else keeps their own.
        let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
    }
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
}

/// Characters in the random part of a temp file's name.
const TEMP_RANDOM: usize = 6;
const TEMP_SUFFIX: &str = ".tmp";

/// A new temp file `.NAME.XXXXXX.tmp` in `dir` (so a rename onto the
/// target never crosses file systems), with the mode a plain
/// `File::create` would give (tempfile's own default is 0600), locked so
/// that [`remove_stale_temps`] leaves it alone.
fn locked_temp(dir: &Path, name: &OsStr) -> io::Result<tempfile::NamedTempFile> {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    for _ in 0..8 {
        // `make_in` rather than `tempfile_in`: the latter's errors name
        // the temp file, which the user never asked for.
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM)
            .make_in(dir, |p| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o666)
                    .open(p)
            })
            .map_err(|e| explain_create(e, dir))?;
        match try_lock(tmp.as_file()) {
            // Locked, or a file system without locks (nothing to protect).
            Ok(true) | Err(_) => {}
            // Another writer is removing it as a leftover: take a new name.
            Ok(false) => continue,
        }
        // A cleaner that locked and removed it first leaves us an orphan.
        if is_same_file(tmp.path(), tmp.as_file()) {
            return Ok(tmp);
        }
    }
    Err(io::Error::other(format!(
        "cannot create a temporary file in {}",
        dir.display()
    )))
}

/// Say which directory a failed create was in, when that is the news.
fn explain_create(e: io::Error, dir: &Path) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) if !dir.exists() => io::Error::new(
            io::ErrorKind::NotFound,
            format!("directory {} does not exist", dir.display()),
        ),
        Some(libc::ENOENT) => io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot create a file in {}", dir.display()),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "permission denied (cannot create a file in {})",
                dir.display()
            ),
        ),
        _ => e,
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when someone else holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on an open descriptor has no memory preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn is_same_file(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// True for `.NAME.XXXXXX.tmp`, the names [`locked_temp`] gives.
fn is_temp_name(file: &[u8], name: &[u8]) -> bool {
    let Some(rest) = file
        .strip_prefix(b".")
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix(b"."))
        .and_then(|r| r.strip_suffix(TEMP_SUFFIX.as_bytes()))
    else {
        return false;
    };
    rest.len() == TEMP_RANDOM && rest.iter().all(u8::is_ascii_alphanumeric)
}

/// Remove the temp files of writes to `dir/name` that were killed: every
/// `.NAME.XXXXXX.tmp` whose lock nobody holds. Best effort.
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_temp_name(entry.file_name().as_bytes(), name.as_bytes()) {
            continue;
        }
        let path = entry.path();
        let regular = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if !regular {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if try_lock(&file).unwrap_or(false) && is_same_file(&path, &file) {
            let _ = fs::remove_file(&path);
        }
    }
}

/// An output that is one of the inputs, or two outputs that are one file.
#[derive(Debug, thiserror::Error)]
pub enum SameFileError {
    #[error(
        "{flag} {}: is the input {}; refusing to overwrite an input",
        output.display(),
        input.display()
    )]
    Input {
        flag: String,
        output: PathBuf,
        input: PathBuf,
    },
    #[error(
        "{flag} {} and {other_flag} {}: the same file; give each output its own path",
        output.display(),
        other.display()
    )]
    Outputs {
        flag: String,
        output: PathBuf,
        other_flag: String,
        other: PathBuf,
    },
}

/// Refuse an output (`(flag, path)`) that is one of `inputs` or the same
/// file as another output. Files are compared by device and inode when
/// they exist (so a hard link or a symlink to an input is caught) and by
/// their absolute path with symlinks resolved when they do not (`./d.csv`
/// and `d.csv`). Devices, FIFOs, sockets and the standard descriptors
/// (`/dev/null`, `/dev/stdout`) may be named any number of times.
pub fn check_distinct(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<(), SameFileError> {
    let inputs: Vec<(&Path, Identity)> = inputs.iter().map(|p| (*p, identity(p))).collect();
    let outputs: Vec<(&str, &Path, Identity)> = outputs
        .iter()
        .map(|(flag, p)| (*flag, *p, identity(p)))
        .collect();
    for (i, (flag, out, id)) in outputs.iter().enumerate() {
        if let Some((input, _)) = inputs.iter().find(|(_, other)| id.same(other)) {
            return Err(SameFileError::Input {
                flag: flag.to_string(),
                output: out.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
        if let Some((other_flag, other, _)) = outputs[..i].iter().find(|(_, _, o)| id.same(o)) {
            return Err(SameFileError::Outputs {
                flag: other_flag.to_string(),
                output: other.to_path_buf(),
                other_flag: flag.to_string(),
                other: out.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// What a path names, for [`check_distinct`].
enum Identity {
    /// A device, FIFO, socket or standard descriptor: may repeat.
    Special,
    /// An existing file or directory.
    Node(u64, u64),
    /// Nothing yet: the absolute path it would be created at.
    Absent(PathBuf),
}

impl Identity {
    fn same(&self, other: &Identity) -> bool {
        match (self, other) {
            (Identity::Node(d, i), Identity::Node(e, j)) => (d, i) == (e, j),
            (Identity::Absent(a), Identity::Absent(b)) => a == b,
            _ => false,
        }
    }
}

fn identity(path: &Path) -> Identity {
    if standard_descriptor(path).is_some() {
        return Identity::Special;
    }
    match fs::metadata(path) {
        Ok(m) if m.is_file() || m.is_dir() => Identity::Node(m.dev(), m.ino()),
        Ok(_) => Identity::Special,
        Err(_) => {
            let target = dangling_target(path).unwrap_or_else(|_| path.to_path_buf());
            let (dir, name) = dir_and_name(&target);
            let dir = fs::canonicalize(&dir)
                .or_else(|_| std::path::absolute(&dir))
                .unwrap_or(dir);
            Identity::Absent(dir.join(name))
        }
    }
}

#[cfg(test)]
mod tests;
