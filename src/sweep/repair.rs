//! Before a sweep appends (holding the [lock](super::lock)): make the three
//! result files agree, whatever a crash, a kill or a full disk left.
//!
//! - A partial last line (no final newline, or a last line that does not
//!   parse: a CSV row with too few fields, a JSON line that is not a run's
//!   object) is dropped: the file is cut back to its last whole line.
//! - JSON lines and curve rows at the end of their files whose run has no
//!   row in the results CSV are dropped: the sweep stopped between writing
//!   them and the run's row (the row is written last and marks the run
//!   done), so the run is not done and runs again.
//! - A run whose CSV row has no JSON line (a file written by an older
//!   version, which wrote the row first, or a JSON line dropped above) gets
//!   its JSON line rebuilt from the row: the row holds every value the line
//!   holds, so nothing is trained twice.
//!
//! Only regular files are read or cut: a device or a pipe given as a
//! results path is written to and never read back. Each change is reported
//! as one line for the sweep to print as a warning.

use super::results::{append_text, read_results, ResultPaths};
use super::SweepError;
use crate::text::plural;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

/// Repair the files of `paths`; one line per change made.
pub fn repair(paths: &ResultPaths) -> Result<Vec<String>, SweepError> {
    let mut notes = Vec::new();
    for csv_path in [&paths.results, &paths.curves] {
        if let Some(bytes) = regular_bytes(csv_path)? {
            let lines = csv_lines(&bytes);
            drop_partial_last(csv_path, &bytes, &lines, &mut notes)?;
        }
    }
    if let Some(bytes) = regular_bytes(&paths.json_lines)? {
        let lines = json_lines(&bytes);
        drop_partial_last(&paths.json_lines, &bytes, &lines, &mut notes)?;
    }
    let rows = read_results(&paths.results)?;
    let done: HashSet<String> = rows.iter().map(|r| r.key()).collect();
    let name = paths.results.display();
    for (path, parse) in [
        (&paths.json_lines, json_lines as fn(&[u8]) -> Vec<Line>),
        (&paths.curves, csv_lines),
    ] {
        let Some(bytes) = regular_bytes(path)? else {
            continue;
        };
        let lines = parse(&bytes);
        if let Some(keep) = unrecorded_tail(&lines, &done) {
            let n = lines.iter().filter(|l| l.start >= keep).count();
            cut(path, keep)?;
            notes.push(format!(
                "{}: dropped {} of runs with no row in {name} (stopped before their row was written; they run again)",
                path.display(),
                plural(n, "line")
            ));
        }
    }
    rebuild_json_lines(paths, &rows, &mut notes)?;
    Ok(notes)
}

/// One line of a results file: where it starts, the key it
/// belongs to and whether it is whole (newline-terminated, parseable).
#[derive(Debug)]
struct Line {
    start: usize,
    key: Option<String>,
    whole: bool,
}

/// The file's bytes if it is a regular file (`None` if it does not exist
/// or is not a regular file).
fn regular_bytes(path: &Path) -> Result<Option<Vec<u8>>, SweepError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::read(path)
            .map(Some)
            .map_err(|e| SweepError::file(path, format!("cannot read: {e}"))),
        _ => Ok(None),
    }
}

fn cut(path: &Path, len: usize) -> Result<(), SweepError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len as u64))
        .map_err(|e| SweepError::file(path, format!("cannot drop a partial line: {e}")))
}

/// The records of a CSV file (the header first), each whole if it ends
/// with a newline and has the header's field count.
fn csv_lines(bytes: &[u8]) -> Vec<Line> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::new();
    let mut fields = None;
    let mut start = 0;
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let end = reader.position().byte() as usize;
        let width = *fields.get_or_insert(record.len());
        out.push(Line {
            start,
            key: record
                .get(0)
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            // (With CRLF, the reader stops after the `\r`.)
            whole: end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') && record.len() == width,
        });
        start = end;
    }
    if bytes[start..].iter().any(|b| !b.is_ascii_whitespace()) {
        // What the CSV reader could not read as a record (an open quote).
        out.push(Line {
            start,
            key: None,
            whole: false,
        });
    }
    out
}

/// The lines of a JSON-lines file, each whole if it ends with a newline
/// and is an object with a string `key`.
fn json_lines(bytes: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map(|i| start + i + 1);
        let text = &bytes[start..end.unwrap_or(bytes.len())];
        let key = serde_json::from_slice::<Value>(text)
            .ok()
            .and_then(|v| v.get("key")?.as_str().map(str::to_string));
        out.push(Line {
            start,
            whole: end.is_some() && key.is_some(),
            key,
        });
        start = end.unwrap_or(bytes.len());
    }
    out
}

/// Cut a file's last line if it is not whole.
fn drop_partial_last(
    path: &Path,
    bytes: &[u8],
    lines: &[Line],
    notes: &mut Vec<String>,
) -> Result<(), SweepError> {
    let Some(last) = lines.last().filter(|l| !l.whole) else {
        return Ok(());
    };
    cut(path, last.start)?;
    let tail = String::from_utf8_lossy(&bytes[last.start..]);
    let shown: String = tail.trim_end().chars().take(40).collect();
    let why = if bytes.ends_with(b"\n") {
        "it does not parse"
    } else {
        "no final newline"
    };
    notes.push(format!(
        "{}: dropped a partial last line ({why}, {}: `{shown}...`)",
        path.display(),
        plural(bytes.len() - last.start, "byte")
    ));
    Ok(())
}

/// Where the trailing lines of runs not in `done` start, if there are any.
/// (A CSV header cut with them is written again by the next append.)
fn unrecorded_tail(lines: &[Line], done: &HashSet<String>) -> Option<usize> {
    let mut keep = None;
    for line in lines.iter().rev() {
        match &line.key {
            Some(k) if !done.contains(k) => keep = Some(line.start),
            _ => break,
        }
    }
    keep
}

/// Append the JSON line of every CSV row that has none.
fn rebuild_json_lines(
    paths: &ResultPaths,
    rows: &[super::results::RunResult],
    notes: &mut Vec<String>,
) -> Result<(), SweepError> {
    let path = &paths.json_lines;
    let exists = std::fs::metadata(path).is_ok();
    let Some(bytes) = regular_bytes(path)?.or_else(|| (!exists).then(Vec::new)) else {
        return Ok(());
    };
    let have: HashSet<String> = json_lines(&bytes)
        .into_iter()
        .filter_map(|l| l.key)
        .collect();
    let missing: String = rows
        .iter()
        .filter(|r| !have.contains(&r.key()))
        .map(|r| format!("{}\n", r.json_line()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    append_text(path, &missing)?;
    notes.push(format!(
        "{}: {} of {} had no JSON line; rebuilt from their rows",
        path.display(),
        plural(missing.lines().count(), "run"),
        paths.results.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(lines: &[Line]) -> Vec<(usize, Option<&str>, bool)> {
        lines
            .iter()
            .map(|l| (l.start, l.key.as_deref(), l.whole))
            .collect()
    }

    #[test]
    fn csv_rows_are_whole_with_their_newline_and_every_field() {
        // A quoted newline inside a field is part of its row.
        let text = b"key,error\r\na,\"two\nlines\"\nb,x\nc";
        let lines = csv_lines(text);
        assert_eq!(
            summary(&lines),
            [
                (0, Some("key"), true),
                (10, Some("a"), true),
                (25, Some("b"), true),
                (29, Some("c"), false),
            ]
        );
        // A row with too few fields is not whole; trailing blank lines are
        // no line at all.
        let lines = csv_lines(b"key,error\na\n\n");
        assert_eq!(
            summary(&lines),
            [(0, Some("key"), true), (10, Some("a"), false)]
        );
        // An open quote swallows the rest of the file.
        let lines = csv_lines(b"key,error\na,\"cut");
        assert!(!lines.last().unwrap().whole);
    }

    #[test]
    fn json_lines_are_whole_with_their_newline_and_a_key() {
        let text = b"{\"key\":\"a\"}\n{\"key\":1}\n{\"key\":\"b\"}";
        let lines = json_lines(text);
        assert_eq!(
            summary(&lines),
            [
                (0, Some("a"), true),
                (12, None, false),
                (22, Some("b"), false)
            ]
        );
    }

    #[test]
    fn only_the_trailing_lines_of_unrecorded_runs_are_cut() {
        let lines =
            json_lines(b"{\"key\":\"x\"}\n{\"key\":\"a\"}\n{\"key\":\"y\"}\n{\"key\":\"z\"}\n");
        let done: HashSet<String> = ["a".to_string()].into();
        assert_eq!(unrecorded_tail(&lines, &done), Some(24));
        let all: HashSet<String> = ["a", "y", "z"].map(String::from).into();
        assert_eq!(unrecorded_tail(&lines, &all), None);
    }
}
