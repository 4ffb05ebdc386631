//! Helpers every module shares: the binary under test, running it in a
//! folder, and reading what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `mnist-blas` binary this test run built.
pub const BIN: &str = env!("CARGO_BIN_EXE_mnist-blas");

pub fn bin() -> Command {
    Command::new(BIN)
}

/// A file of the repository (the sample, fixtures).
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Run the binary in `dir` with `args`, to completion.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Columns the summary screen's values start at: its continuation lines
/// (a value too long for 80 columns) start with this many spaces.
pub const SUMMARY_VALUE_COLUMN: usize = 12;

/// `out` with each continuation line of the summary screen joined back to
/// the line it continues, with a space: every value on one line.
pub fn unwrapped(out: &str) -> String {
    let indent = " ".repeat(SUMMARY_VALUE_COLUMN);
    let mut joined = String::new();
    for line in out.lines() {
        match line.strip_prefix(&indent) {
            Some(rest) if !joined.is_empty() && !rest.starts_with(' ') => {
                joined.pop();
                joined.push(' ');
                joined.push_str(rest);
            }
            _ => joined.push_str(line),
        }
        joined.push('\n');
    }
    joined
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The JSON object on the last line of stdout.
pub fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// The line `train -q` prints on stderr when it trains on the built-in
/// sample (no `--data`, no `data/train.csv`).
pub const SAMPLE_WARNING: &str = "warning: no --data and no data/train.csv: \
     training on the sample of real digits built into the binary";

/// stderr of a `train -q` on the built-in sample after its first line,
/// which must be [`SAMPLE_WARNING`].
pub fn after_sample_warning(o: &Output) -> String {
    let err = stderr(o);
    match err.split_once('\n') {
        Some((first, rest)) if first == SAMPLE_WARNING => rest.to_string(),
        _ => panic!("stderr does not start with `{SAMPLE_WARNING}`: {err}"),
    }
}

/// The run folder a `train --json` wrote into, as its last line names it
/// (relative to the folder it ran in unless `--out-dir` was absolute).
pub fn run_folder(o: &Output) -> PathBuf {
    let j = last_json(o);
    let folder = j["run_folder"]
        .as_str()
        .unwrap_or_else(|| panic!("no run folder in {j}"));
    PathBuf::from(folder)
}

/// What a path in a folder is: a subfolder, a file's bytes, or a
/// symbolic link's target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    Folder,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything under `dir` (links not followed), by path relative to
/// `dir`, sorted: two equal trees hold the same files with the same bytes.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Entry)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Entry)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                out.push((rel, Entry::Link(std::fs::read_link(&path).unwrap())));
            } else if kind.is_dir() {
                out.push((rel, Entry::Folder));
                walk(root, &path, out);
            } else {
                out.push((rel, Entry::File(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `tree(dir)` without an empty `runs` folder: the parent a failed `train`
/// made for its run folder may stay, but never a run folder in it.
pub fn tree_but_empty_runs(dir: &Path) -> Vec<(PathBuf, Entry)> {
    let mut t = tree(dir);
    t.retain(|(p, e)| !(p == Path::new("runs") && *e == Entry::Folder));
    t
}

/// A rayon pool of `threads` threads, for running a test body on it.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Every parameter as raw bits, so -0.0 vs 0.0 or NaN payloads would count.
pub fn bits(m: &mnist_blas::model::Mlp) -> Vec<u32> {
    m.params()
        .iter()
        .flat_map(|p| p.iter().map(|v| v.to_bits()))
        .collect()
}

/// Every parameter of a saved model as raw bits.
pub fn model_bits(path: &Path) -> Vec<u32> {
    bits(&mnist_blas::model::Mlp::load_npz(path).unwrap())
}

/// Run `cmd`, which must succeed; its output.
pub fn succeeded(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("the command runs");
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

/// A Python venv made in `dir/venv` with `packages` pip-installed from
/// PyPI; its python. pip runs without its cache (the default one is in
/// the home folder: tests write only in their temp folder).
pub fn venv_with(dir: &Path, packages: &[&str]) -> PathBuf {
    let venv = dir.join("venv");
    succeeded(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    let python = venv.join("bin/python");
    succeeded(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(["--no-cache-dir", "--timeout", "60", "--retries", "3"])
            .args(packages),
    );
    python
}
