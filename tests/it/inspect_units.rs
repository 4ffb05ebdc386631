//! `inspect` on a wide model: the unit table is trimmed to the largest
//! units unless asked for more, the picture draws at most 64 of them, and
//! the output says which units were shown and in what order.

use crate::common::{repo, run_in, text};
use std::path::Path;

/// The rows of the unit table: `(rank, unit, score)` per line after its
/// header.
fn unit_rows(out: &str) -> Vec<(usize, usize, f64)> {
    let table = out
        .split_once("\nrank  unit ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no unit table: {out}"));
    table
        .lines()
        .skip(1)
        .map_while(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 8 {
                return None;
            }
            Some((f[0].parse().ok()?, f[1].parse().ok()?, f[4].parse().ok()?))
        })
        .collect()
}

/// Train a 784-96-10 model (one quick epoch on the sample) into `dir/wide.npz`.
fn wide_model(dir: &Path) {
    let data = repo("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir,
        &[
            "--data",
            data.to_str().unwrap(),
            "--hidden",
            "96",
            "--epochs",
            "1",
            "--quiet",
            "--model",
            "wide.npz",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn inspect_lists_the_largest_units_and_says_how_many_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    wide_model(dir.path());
    let inspect = |extra: &[&str]| {
        let mut args = vec!["inspect", "--model", "wide.npz", "--out", "w.png"];
        args.extend(extra);
        let o = run_in(dir.path(), &args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };

    let out = inspect(&[]);
    assert!(out.contains("784-96-10"), "{out}");
    let rows = unit_rows(&out);
    assert_eq!(rows.len(), 20, "{out}");
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert!(
        rows.windows(2).all(|w| w[0].2 >= w[1].2),
        "not largest first: {out}"
    );
    assert!(
        out.contains("the table lists 20 of 96 units; --units N or --all-units for more"),
        "{out}"
    );
    assert!(
        out.contains("wrote w.png: input weights of 64 of 96 units, largest |w_in|*|w_out| first"),
        "{out}"
    );
    assert!(dir.path().join("w.png").is_file());

    let out = inspect(&["--units", "5"]);
    let five = unit_rows(&out);
    assert_eq!(five, rows[..5], "{out}");
    assert!(out.contains("the table lists 5 of 96 units"), "{out}");

    let out = inspect(&["--all-units"]);
    let all = unit_rows(&out);
    assert_eq!(all.len(), 96, "{out}");
    assert_eq!(all[..20], rows[..], "the same order");
    let mut units: Vec<usize> = all.iter().map(|r| r.1).collect();
    units.sort_unstable();
    assert_eq!(units, (0..96).collect::<Vec<_>>(), "every unit once");
    assert!(!out.contains("the table lists"), "{out}");

    // More than there are: every unit, no note.
    let out = inspect(&["--units", "500"]);
    assert_eq!(unit_rows(&out).len(), 96, "{out}");

    let o = run_in(
        dir.path(),
        &["inspect", "--model", "wide.npz", "--units", "0"],
    );
    assert!(!o.status.success());
    let o = run_in(
        dir.path(),
        &[
            "inspect",
            "--model",
            "wide.npz",
            "--units",
            "5",
            "--all-units",
        ],
    );
    assert!(!o.status.success(), "--units and --all-units conflict");
}

#[test]
fn inspect_help_examples_fit_80_columns() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["inspect", "--help"]);
    assert!(o.status.success());
    let help = text(&o.stdout);
    for flag in [
        "--model",
        "--data",
        "--out",
        "--units",
        "--all-units",
        "--quiet",
    ] {
        assert!(help.contains(flag), "{flag} missing: {help}");
    }
    // The examples and the text after them fit a terminal of 80 columns,
    // and the examples name models a user has.
    let (_, after) = help
        .split_once("Examples:\n")
        .unwrap_or_else(|| panic!("no examples: {help}"));
    let examples: Vec<&str> = after
        .lines()
        .filter(|l| l.trim_start().starts_with("mnist-blas inspect"))
        .collect();
    assert!(examples.len() >= 2, "{help}");
    // One reads the latest run's model; the others name a run folder.
    assert!(examples.iter().any(|e| !e.contains("--model")), "{help}");
    for e in examples.iter().filter(|e| e.contains("--model")) {
        assert!(e.contains("--model runs/"), "{e}");
    }
    for l in after.lines() {
        assert!(l.chars().count() <= 80, "over 80 columns: {l:?}");
    }
}
