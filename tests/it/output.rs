//! Where the binary's outputs go (src/output.rs's policy), end to end: a
//! symlink stays a link, a FIFO's reader gets the bytes, a device is
//! written in place and never replaced, errors are one line naming the
//! user's path.
//!
//! Nothing here writes to /dev/null or /dev/full by name: each test points
//! a symlink in its own temp dir at the device, so a regression replaces
//! that link, never the device.

use crate::common::{repo, run_in, text};
use mnist_blas::model::{Init, Layers, Mlp};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

fn test_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/test-sample.csv.gz")
}

/// A temp dir holding a small model `m.npz`.
fn with_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Mlp::init(&Layers::one(10), Init::He, 1)
        .unwrap()
        .save_npz(&dir.path().join("m.npz"))
        .unwrap();
    dir
}

/// `predict --model m.npz --data <sample> --out OUT --quiet` in `dir`.
fn predict(dir: &Path, out: &str) -> Output {
    let data = test_csv();
    run_in(
        dir,
        &[
            "predict",
            "--model",
            "m.npz",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out,
            "--quiet",
        ],
    )
}

/// The submission's shape: a header and 1,000 numbered rows.
fn assert_submission(csv: &str) {
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.first(), Some(&"ImageId,Label"), "{csv:.200}");
    assert_eq!(lines.len(), 1 + 1000);
    assert!(lines[1].starts_with("1,"), "{}", lines[1]);
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .unwrap()
        .file_type()
        .is_symlink()
}

fn assert_char_device(p: &str) {
    let m = std::fs::symlink_metadata(p).unwrap();
    assert!(m.file_type().is_char_device(), "{p} is no longer a device");
}

/// The one line of stderr.
fn one_line(o: &Output) -> String {
    assert!(!o.status.success(), "should fail");
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains(".tmp"), "names a temp file: {err}");
    err.trim_end().to_string()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn predict_out_dev_stdout_prints_the_submission() {
    let dir = with_model();
    // Through a link in the test's own folder, so that a regression that
    // renamed over its destination would replace the link, never the
    // machine's /dev/stdout.
    std::os::unix::fs::symlink("/dev/stdout", dir.path().join("stdout")).unwrap();
    let o = predict(dir.path(), "stdout");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_submission(&text(&o.stdout));
}

#[test]
fn predict_through_a_symlink_updates_the_target_and_keeps_the_link_and_its_mode() {
    let dir = with_model();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let target = dir.path().join("real/sub.csv");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("sub.csv");
    std::os::unix::fs::symlink("real/sub.csv", &link).unwrap();

    let o = predict(dir.path(), "sub.csv");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(is_symlink(&link), "the link was replaced");
    assert_submission(&std::fs::read_to_string(&target).unwrap());
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert_eq!(names(&dir.path().join("real")), ["sub.csv"]);
}

#[test]
fn predict_into_a_fifo_feeds_its_reader() {
    let dir = with_model();
    let fifo = dir.path().join("sub.fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // The reader opens first, without blocking, and reads after the run:
    // a writer that never opened the FIFO then fails this test instead of
    // hanging it. The submission (under 10 KB) fits the pipe's buffer.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let o = predict(dir.path(), "sub.fifo");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_submission(&got);
    let m = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(m.file_type().is_fifo(), "the FIFO was replaced");
}

#[test]
fn predict_to_dev_null_through_a_symlink_leaves_link_and_device_alone() {
    let dir = with_model();
    let link = dir.path().join("null.csv");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let o = predict(dir.path(), "null.csv");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(is_symlink(&link), "the link was replaced");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/null"));
    assert_char_device("/dev/null");
    assert_eq!(names(dir.path()), ["m.npz", "null.csv"]);
}

#[test]
fn a_full_device_is_one_line_naming_the_path() {
    let dir = with_model();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("full.csv")).unwrap();
    let o = predict(dir.path(), "full.csv");
    assert_eq!(
        one_line(&o),
        "error: full.csv: cannot write: no space left on device"
    );
    assert!(is_symlink(&dir.path().join("full.csv")));
    assert_char_device("/dev/full");
}

#[test]
fn a_model_written_to_a_full_device_fails_in_one_line_without_zip_noise() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("full.npz")).unwrap();
    let data = repo("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir.path(),
        &[
            "--epochs",
            "1",
            "--model",
            "full.npz",
            "--quiet",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let err = one_line(&o);
    assert_eq!(
        err,
        "error: full.npz: cannot write: no space left on device"
    );
    assert!(is_symlink(&dir.path().join("full.npz")));
    assert_char_device("/dev/full");
}

#[test]
fn a_missing_directory_is_one_line_naming_the_path() {
    let dir = with_model();
    let o = predict(dir.path(), "no/such/sub.csv");
    assert_eq!(
        one_line(&o),
        "error: no/such/sub.csv: cannot write: directory no/such does not exist"
    );
    assert_eq!(names(dir.path()), ["m.npz"]);
}

#[test]
fn a_read_only_directory_is_one_line_naming_the_path() {
    let dir = with_model();
    // Root ignores permissions; /proc takes no new files even from root.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root {
        "/proc/mnist-blas-sub.csv".to_string()
    } else {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        "ro/sub.csv".to_string()
    };
    let o = predict(dir.path(), &out);
    let err = one_line(&o);
    assert!(
        err.starts_with(&format!("error: {out}: cannot write: ")),
        "{err}"
    );
    if !root {
        assert_eq!(
            err,
            "error: ro/sub.csv: cannot write: permission denied (cannot create a file in ro)"
        );
        assert!(names(&dir.path().join("ro")).is_empty());
    }
}

#[test]
fn the_next_write_removes_a_killed_writes_temp_file() {
    let dir = with_model();
    let leftover = dir.path().join(".sub.csv.Xy12Zw.tmp");
    std::fs::write(&leftover, b"half a submission").unwrap();
    let o = predict(dir.path(), "sub.csv");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(names(dir.path()), ["m.npz", "sub.csv"]);
}

#[test]
fn a_picture_goes_to_stdout_and_a_bad_picture_path_is_refused_first() {
    let dir = with_model();
    let args = ["inspect", "--model", "m.npz", "--quiet", "--out"];
    std::os::unix::fs::symlink("/dev/stdout", dir.path().join("stdout")).unwrap();
    let o = run_in(dir.path(), &[&args[..], &["stdout"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        dir.path().join("stdout").is_symlink(),
        "the link stays a link"
    );

    let o = run_in(dir.path(), &[&args[..], &["no/such/w.png"]].concat());
    assert_eq!(
        one_line(&o),
        "error: no/such/w.png: cannot write: directory no/such does not exist"
    );
}
