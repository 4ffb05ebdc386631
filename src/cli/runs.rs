//! Run folders. Each `train` writes into a folder of its own, `runs/NAME/`
//! (`--out-dir DIR`, `--name NAME`; the name defaults to the start time),
//! never into a folder that exists (except the one `--resume` continues),
//! and once its model is written points `runs/latest` (a symlink, as
//! W&B's `wandb/latest-run`) at it. `eval`, `predict`, `inspect` and
//! `export` use `runs/latest/model.npz` when given no `--model`, and a
//! `--model` that is a run folder means that folder's `model.npz`.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where run folders go unless `--out-dir` says otherwise.
pub const DEFAULT_PARENT: &str = "runs";
/// The link to the last finished run, in the parent folder.
pub const LATEST: &str = "latest";
/// The model file in a run folder.
pub const MODEL: &str = "model.npz";
/// The settings file that marks a folder as a run folder.
pub const CONFIG: &str = "config.toml";

/// A run's own folder.
#[derive(Debug)]
pub struct RunFolder {
    pub path: PathBuf,
    parent: PathBuf,
    /// Made by this process (so removed again if the run fails before
    /// writing anything into it).
    made: bool,
}

impl RunFolder {
    /// Make `parent/name`, or `parent/START-TIME` (`_2`, `_3`, ... when two
    /// runs start in the same second). A `name` that exists is refused.
    pub fn create(parent: Option<&Path>, name: Option<&str>) -> Result<RunFolder> {
        let parent = parent.unwrap_or(Path::new(DEFAULT_PARENT)).to_path_buf();
        if let Some(name) = name {
            check_name(name)?;
        }
        match fs::metadata(&parent) {
            Ok(m) if !m.is_dir() => bail!(
                "{}: exists and is not a folder (--out-dir takes the folder that holds run folders)",
                parent.display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create the run folder's parent {}", parent.display()))?,
            Err(e) => return Err(e).with_context(|| format!("{}", parent.display())),
        }
        let stamp = start_time();
        for n in 1..1000 {
            let folder = match (name, n) {
                (Some(name), _) => name.to_string(),
                (None, 1) => stamp.clone(),
                (None, n) => format!("{stamp}_{n}"),
            };
            let path = parent.join(&folder);
            match fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(RunFolder {
                        path,
                        parent,
                        made: true,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && name.is_none() => continue,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
                    "{}: a run folder by that name exists; a run never writes into another's \
                     folder: choose another --name (or continue that run with --resume)",
                    path.display()
                ),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("{}: too many runs started this second", parent.display())
    }

    /// The existing run folder `path` (a resumed run's).
    pub fn existing(path: &Path) -> RunFolder {
        RunFolder {
            path: path.to_path_buf(),
            parent: folder_of(path),
            made: false,
        }
    }

    /// A file in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Remove the folder if this process made it and nothing is in it: the
    /// run failed before writing anything (unreadable data, say).
    pub fn discard_if_empty(&self) {
        if self.made {
            // Fails, as it should, on a folder that is not empty.
            let _ = fs::remove_dir(&self.path);
        }
    }

    /// Point `PARENT/latest` at this folder, replacing an older link made
    /// the same way; anything else by that name is left alone (returned
    /// as a warning).
    pub fn mark_latest(&self) -> Option<String> {
        let link = self.parent.join(LATEST);
        match fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Some(format!(
                    "{} is not a link; left alone (it would point at the last run)",
                    link.display()
                ))
            }
            _ => {}
        }
        let target = self.path.file_name().expect("a run folder has a name");
        let tmp = self
            .parent
            .join(format!(".{LATEST}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let made = std::os::unix::fs::symlink(target, &tmp).and_then(|()| fs::rename(&tmp, &link));
        match made {
            Ok(()) => None,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Some(format!(
                    "cannot point {} at this run: {}",
                    link.display(),
                    crate::output::describe(&e)
                ))
            }
        }
    }
}

/// The folder `path` is in (`.` for a bare name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether `dir` is a run folder (it holds a `config.toml`).
pub fn is_run_folder(dir: &Path) -> bool {
    dir.join(CONFIG).is_file()
}

/// `--model`'s default in `eval`, `predict`, `inspect` and `export`.
pub const LATEST_MODEL: &str = "runs/latest/model.npz";

/// The model file `--model` names: a run folder means its `model.npz`;
/// the default, the latest run's, is explained when there is none.
pub fn model_path(given: &Path) -> Result<PathBuf> {
    if given.is_dir() {
        let model = given.join(MODEL);
        if !model.exists() {
            bail!(
                "{}: a folder without a {MODEL} (--model takes a model file or a run folder)",
                given.display()
            );
        }
        return Ok(model);
    }
    if given == Path::new(LATEST_MODEL) && !given.exists() {
        bail!(
            "no --model given and no {LATEST_MODEL} yet: train a model first, or pass --model PATH"
        );
    }
    Ok(given.to_path_buf())
}

/// A run name is one plain path component.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name == LATEST
        || name.contains('/')
        || name.contains('\0')
    {
        bail!(
            "--name {name:?}: a run folder's name must be one plain name (not empty, `.`, `..`, \
             `{LATEST}`, nor containing `/`)"
        );
    }
    Ok(())
}

/// The local time as `2026-11-30_17-05-09`.
fn start_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return format!("run-{now}");
    }
    format!(
        "{:04}-{:02}-{:02}_{:02}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_never_reused_and_latest_follows() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("runs");
        let a = RunFolder::create(Some(&parent), None).unwrap();
        let b = RunFolder::create(Some(&parent), None).unwrap();
        assert_ne!(a.path, b.path);
        assert!(a.path.is_dir() && b.path.is_dir());
        let named = RunFolder::create(Some(&parent), Some("exp1")).unwrap();
        let again = RunFolder::create(Some(&parent), Some("exp1")).unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        assert!(RunFolder::create(Some(&parent), Some("../x")).is_err());
        assert_eq!(a.mark_latest(), None);
        assert_eq!(named.mark_latest(), None);
        let link = parent.join(LATEST);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("exp1"));
        // An empty folder this process made goes; one with a file stays.
        fs::write(named.file("x"), b"1").unwrap();
        named.discard_if_empty();
        b.discard_if_empty();
        assert!(named.path.exists() && !b.path.exists());
        // A user's own `latest` is never replaced.
        fs::remove_file(&link).unwrap();
        fs::write(&link, b"mine").unwrap();
        assert!(a.mark_latest().unwrap().contains("left alone"));
        assert_eq!(fs::read(&link).unwrap(), b"mine");
    }

    #[test]
    fn a_parent_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = RunFolder::create(Some(&file), None).unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }
}
