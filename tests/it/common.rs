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
