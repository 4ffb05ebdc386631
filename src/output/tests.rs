use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.npz");
    fs::write(&path, b"old").unwrap();
    let err = write_atomic(&path, |w| {
        w.write_all(b"half of the new")?;
        Err(io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: cannot write: disk on fire", path.display())
    );
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["model.npz"]);
}

#[test]
fn new_outputs_get_ordinary_permissions_not_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.npz");
    write_atomic(&path, |w| w.write_all(b"x")).unwrap();
    let plain = dir.path().join("plain");
    fs::write(&plain, b"x").unwrap();
    assert_eq!(mode(&path), mode(&plain));
}

#[test]
fn a_replaced_file_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    for m in [0o600, 0o640, 0o755] {
        let path = dir.path().join("out.csv");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
        write_atomic(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), m, "{m:o}");
    }
}

#[test]
fn a_replaced_file_keeps_its_owner_when_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root may give a file away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    fs::write(&path, b"old").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    write_atomic(&path, |w| w.write_all(b"new")).unwrap();
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
}

#[test]
fn successful_write_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    fs::write(&path, b"old").unwrap();
    write_atomic(&path, |w| w.write_all(b"new")).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["out.csv"]);
}

#[test]
fn a_hard_link_is_split_and_keeps_the_old_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.npz");
    let snapshot = dir.path().join("best.npz");
    fs::write(&path, b"old").unwrap();
    fs::hard_link(&path, &snapshot).unwrap();
    write_atomic(&path, |w| w.write_all(b"new")).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(fs::read(&snapshot).unwrap(), b"old");
}

#[test]
fn a_dangling_symlink_gets_its_target_created_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("out.csv");
    std::os::unix::fs::symlink("real.csv", &link).unwrap();
    write_atomic(&link, |w| w.write_all(b"new")).unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(dir.path().join("real.csv")).unwrap(), b"new");
}

#[test]
fn a_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("out");
    fs::create_dir(&sub).unwrap();
    let want = format!("{}: cannot write: is a directory", sub.display());
    let err = write_atomic(&sub, |w| w.write_all(b"x")).unwrap_err();
    assert_eq!(err.to_string(), want);
    assert_eq!(check_destination(&sub).unwrap_err().to_string(), want);
    assert!(sub.is_dir());
}

#[test]
fn a_symlink_loop_is_called_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let want = format!(
        "{}: cannot write: too many levels of symbolic links (a symlink loop)",
        a.display()
    );
    assert_eq!(check_destination(&a).unwrap_err().to_string(), want);
    let err = write_atomic(&a, |w| w.write_all(b"x")).unwrap_err();
    assert_eq!(err.to_string(), want);
    assert_eq!(names(dir.path()), ["a.csv", "b.csv"]);
}

#[test]
fn a_missing_directory_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/model.npz");
    let want = format!(
        "{}: cannot write: directory {} does not exist",
        path.display(),
        dir.path().join("no/such").display()
    );
    assert_eq!(check_destination(&path).unwrap_err().to_string(), want);
    let err = write_atomic(&path, |w| w.write_all(b"x")).unwrap_err();
    assert_eq!(err.to_string(), want);
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn a_read_only_file_is_refused_unless_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root may write any file");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.csv");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let want = format!("{}: cannot write: permission denied", path.display());
    assert_eq!(check_destination(&path).unwrap_err().to_string(), want);
    let err = write_atomic(&path, |w| w.write_all(b"x")).unwrap_err();
    assert_eq!(err.to_string(), want);
    assert_eq!(fs::read(&path).unwrap(), b"old");
}

#[test]
fn check_destination_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    check_destination(&dir.path().join("new.csv")).unwrap();
    let old = dir.path().join("old.csv");
    fs::write(&old, b"old").unwrap();
    check_destination(&old).unwrap();
    assert_eq!(names(dir.path()), ["old.csv"]);
    assert_eq!(fs::read(&old).unwrap(), b"old");
}

#[test]
fn standard_descriptors_are_recognised_by_name() {
    assert_eq!(standard_descriptor(Path::new("/dev/stdout")), Some(1));
    assert_eq!(standard_descriptor(Path::new("/dev/stderr")), Some(2));
    assert_eq!(standard_descriptor(Path::new("/dev/fd/7")), Some(7));
    assert_eq!(standard_descriptor(Path::new("/proc/self/fd/12")), Some(12));
    assert_eq!(standard_descriptor(Path::new("/dev/fd/")), None);
    assert_eq!(standard_descriptor(Path::new("/dev/fd/1x")), None);
    assert_eq!(standard_descriptor(Path::new("dev/stdout")), None);
}

#[test]
fn temp_names_match_exactly_our_pattern() {
    assert!(is_temp_name(b".model.npz.a1B2c3.tmp", b"model.npz"));
    assert!(!is_temp_name(b".model.npz.a1B2c.tmp", b"model.npz"));
    assert!(!is_temp_name(b".model.npz.a1B2c3.png", b"model.npz"));
    assert!(!is_temp_name(b".model.npz.a1-2c3.tmp", b"model.npz"));
    assert!(!is_temp_name(b".other.npz.a1B2c3.tmp", b"model.npz"));
    assert!(!is_temp_name(b"model.npz", b"model.npz"));
}

#[test]
fn leftovers_of_a_killed_write_are_removed_but_a_live_writers_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.npz");
    let dead = dir.path().join(".model.npz.Ab12Cd.tmp");
    fs::write(&dead, b"half").unwrap();
    // A writer in progress holds the lock on its temp file.
    let live = locked_temp(dir.path(), OsStr::new("model.npz")).unwrap();
    let other = dir.path().join(".other.npz.Ab12Cd.tmp");
    fs::write(&other, b"not ours").unwrap();
    write_atomic(&path, |w| w.write_all(b"new")).unwrap();
    assert!(!dead.exists());
    assert!(live.path().exists());
    assert!(other.exists());
    assert_eq!(fs::read(&path).unwrap(), b"new");
}

#[test]
fn plain_words_for_os_errors() {
    let e = |c| describe(&os_error(c));
    assert_eq!(e(libc::ENOSPC), "no space left on device");
    assert_eq!(e(libc::EROFS), "read-only file system");
    assert_eq!(e(libc::EACCES), "permission denied");
    // Anything else: the system's words, without "(os error N)".
    assert_eq!(e(libc::EXDEV), "invalid cross-device link");
}

fn distinct(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<(), String> {
    check_distinct(inputs, outputs).map_err(|e| e.to_string())
}

#[test]
fn an_output_that_is_an_input_is_refused_however_it_is_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.csv");
    fs::write(&data, b"1,2").unwrap();
    let dotted = dir.path().join(".").join("d.csv");
    let hard = dir.path().join("hard.csv");
    fs::hard_link(&data, &hard).unwrap();
    let soft = dir.path().join("soft.csv");
    std::os::unix::fs::symlink("d.csv", &soft).unwrap();
    for out in [&data, &dotted, &hard, &soft] {
        let err = distinct(&[&data], &[("--out", out)]).unwrap_err();
        assert_eq!(
            err,
            format!(
                "--out {}: is the input {}; refusing to overwrite an input",
                out.display(),
                data.display()
            )
        );
    }
    let fresh = dir.path().join("sub.csv");
    assert_eq!(distinct(&[&data], &[("--out", &fresh)]), Ok(()));
}

#[test]
fn two_outputs_to_one_file_are_refused_even_before_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("m.csv");
    let b = dir.path().join("sub/../m.csv");
    fs::create_dir(dir.path().join("sub")).unwrap();
    let err = distinct(&[], &[("--metrics", &a), ("--out", &b)]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "--metrics {} and --out {}: the same file; give each output its own path",
            a.display(),
            b.display()
        )
    );
    let c = dir.path().join("n.csv");
    assert_eq!(distinct(&[], &[("--metrics", &a), ("--out", &c)]), Ok(()));
}

#[test]
fn devices_and_standard_descriptors_may_repeat() {
    let null = Path::new("/dev/null");
    let out = Path::new("/dev/stdout");
    assert_eq!(
        distinct(
            &[null],
            &[
                ("--out", null),
                ("--model", null),
                ("--metrics", out),
                ("--plot", out)
            ]
        ),
        Ok(())
    );
}
