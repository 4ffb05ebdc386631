//! `mnist-blas sweep`: grid expansion, random search, resumption, failed
//! runs, equality with lone `train` runs, emitted commands and --collect.
//! The binary runs in a temporary directory, so it trains on the built-in
//! sample (4,800 train / 1,200 held-out rows); one short epoch per run.

use crate::common::{run_in, BIN};
use mnist_blas::model::Mlp;
use mnist_blas::sweep::grid::{expand_grid, sample_random, Axis};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The JSON lines of a `.jsonl` file, by key.
pub(crate) fn json_lines(path: &Path) -> HashMap<String, Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

pub(crate) fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn axis(flag: &str, items: &[&str]) -> Axis {
    let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    Axis::parse(flag, &items).unwrap()
}

#[test]
fn grid_expansion_is_the_full_product_last_axis_fastest() {
    let axes = [
        axis("lr", &["0.05", "0.1", "0.2"]),
        axis("batch-size", &["32", "128"]),
        axis("optimizer", &["sgd", "adam"]),
        axis("seed", &["1", "2", "3"]),
    ];
    let grid = expand_grid(&axes).unwrap();
    assert_eq!(grid.len(), 3 * 2 * 2 * 3);
    let text = |c: &Vec<(String, String)>| {
        c.iter()
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(text(&grid[0]), "lr=0.05 batch-size=32 optimizer=sgd seed=1");
    assert_eq!(text(&grid[1]), "lr=0.05 batch-size=32 optimizer=sgd seed=2");
    assert_eq!(
        text(&grid[35]),
        "lr=0.2 batch-size=128 optimizer=adam seed=3"
    );
    let mut all: Vec<String> = grid.iter().map(text).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 36, "every combination once");
    assert_eq!(expand_grid(&[]).unwrap().len(), 1, "no axes: the defaults");
}

#[test]
fn the_cli_grid_has_one_key_per_distinct_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&run_in(
        dir.path(),
        &[
            "sweep",
            "--dry-run",
            "--lr",
            "0.05,0.1,0.2,0.1",
            "--batch-size",
            "32,128",
            "--optimizer",
            "sgd,adam",
            "--seed",
            "1,2,3",
        ],
    ));
    let keys: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // lr 0.1 given twice: its runs are the same runs, planned once.
    assert_eq!(keys.len(), 36, "{out}");
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 36);
    assert!(
        out.contains("--optimizer=adam --lr=0.2 --batch-size=128 --seed=3"),
        "{out}"
    );
}

#[test]
fn random_search_is_reproducible_in_range_and_crosses_seeds() {
    let axes = [
        axis("lr", &["1e-4:0.3"]),
        axis("hidden", &["10:64"]),
        axis("optimizer", &["sgd", "adam"]),
        axis("seed", &["1", "2", "3"]),
    ];
    let a = sample_random(&axes, 8, 42);
    assert_eq!(
        a,
        sample_random(&axes, 8, 42),
        "same sweep seed, same draws"
    );
    assert_ne!(a, sample_random(&axes, 8, 43));
    assert_eq!(a.len(), 8 * 3, "each sample with every seed");
    for chunk in a.chunks(3) {
        let seeds: Vec<&str> = chunk
            .iter()
            .map(|c| c.iter().find(|(f, _)| f == "seed").unwrap().1.as_str())
            .collect();
        assert_eq!(seeds, ["1", "2", "3"]);
        assert_eq!(
            chunk[0][..3],
            chunk[2][..3],
            "same configuration across seeds"
        );
        let lr: f64 = chunk[0][0].1.parse().unwrap();
        let h: u64 = chunk[0][1].1.parse().unwrap();
        assert!(
            (1e-4..=0.3).contains(&lr) && (10..=64).contains(&h),
            "{lr} {h}"
        );
    }
}

#[test]
fn bad_sweep_input_is_one_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (vec!["--optimizer", "sgd,nesterov"], "nesterov"),
        (vec!["--lr", "0.1,fast"], "fast"),
        (vec!["--lr", "1e-3:0.1"], "--samples"),
        (vec!["--lr=-0.1"], "--lr must be a positive number"),
        (vec!["--lr", "0.1", "--", "--model", "x.npz"], "--model"),
    ] {
        let mut full = vec!["sweep", "--epochs", "1"];
        full.extend(&args);
        let o = run_in(dir.path(), &full);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn resuming_skips_the_runs_already_in_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "sweep",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--optimizer",
        "sgd",
        "--no-plot",
    ];
    let sweep = |lrs: &str| {
        let mut a = base.to_vec();
        a.extend(["--lr", lrs]);
        ok(&run_in(dir.path(), &a))
    };
    let first = sweep("0.05,0.1");
    assert!(first.contains("0 already in"), "{first}");
    let results = dir.path().join("sweep-results.csv");
    let before = std::fs::read_to_string(&results).unwrap();
    assert_eq!(csv_rows(&results).len(), 2);

    let second = sweep("0.05,0.1,0.2");
    assert!(
        second.contains("2 already in sweep-results.csv (skipped), 1 to run"),
        "{second}"
    );
    let after = std::fs::read_to_string(&results).unwrap();
    assert!(
        after.starts_with(&before),
        "finished rows are kept as they were"
    );
    let rows = csv_rows(&results);
    assert_eq!(rows.len(), 3);
    let lrs: Vec<&str> = rows.iter().map(|r| r["lr"].as_str()).collect();
    assert_eq!(lrs.iter().filter(|l| **l == "0.2").count(), 1);

    // Everything done: nothing runs, the summary still covers all three.
    let third = sweep("0.05,0.1,0.2");
    assert!(
        third.contains("3 already in sweep-results.csv (skipped), 0 to run"),
        "{third}"
    );
    assert!(third.contains("3 runs in this sweep: 3 ok"), "{third}");
    assert_eq!(csv_rows(&results).len(), 3);
    assert_eq!(json_lines(&dir.path().join("sweep-results.jsonl")).len(), 3);
}

#[test]
fn a_failing_run_is_recorded_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&run_in(
        dir.path(),
        &[
            "sweep",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30,0.1",
            "--jobs",
            "1",
        ],
    ));
    assert!(out.contains("1 ok, 1 failed"), "{out}");
    let rows = csv_rows(&dir.path().join("sweep-results.csv"));
    assert_eq!(rows.len(), 2);
    let lr = |r: &HashMap<String, String>| r["lr"].parse::<f64>().unwrap();
    let failed = rows.iter().find(|r| lr(r) > 1.0).unwrap();
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].contains("diverged"), "{failed:?}");
    assert_eq!(failed["heldout_accuracy"], "");
    // The run after the failure ran (one worker: strictly after it).
    let good = rows.iter().find(|r| lr(r) == 0.1).unwrap();
    assert_eq!(good["status"], "ok");
    assert!(good["heldout_accuracy"].parse::<f64>().unwrap() > 0.5);
    let lines = json_lines(&dir.path().join("sweep-results.jsonl"));
    assert_eq!(lines[&failed["key"]]["status"], "failed");
    // The plot is drawn, failed runs left out.
    let png = std::fs::read(dir.path().join("sweep-results.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// Flags of the runs compared with `train`: both schedules' shard paths
/// (64 rows: one shard; 512: two shards reduced in order), three optimizers.
const EQUAL_RUNS: [&[&str]; 3] = [
    &[
        "--lr",
        "0.1",
        "--optimizer",
        "sgd",
        "--batch-size",
        "64",
        "--seed",
        "3",
    ],
    &[
        "--lr",
        "0.003",
        "--optimizer",
        "adam",
        "--batch-size",
        "512",
        "--seed",
        "5",
        "--hidden",
        "16",
    ],
    &[
        "--lr",
        "0.05",
        "--optimizer",
        "momentum",
        "--batch-size",
        "full",
        "--iterations",
        "20",
        "--init",
        "uniform",
    ],
];

#[test]
fn sweep_runs_equal_lone_train_runs_in_results_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One sweep per configuration shape (a grid cannot mix --iterations with
    // mini-batches), all into one results file, models saved.
    for flags in EQUAL_RUNS {
        let mut a = vec![
            "sweep",
            "--epochs",
            "2",
            "--save-models",
            "models",
            "--no-plot",
            "-q",
        ];
        if flags.contains(&"--iterations") {
            a.retain(|f| *f != "--epochs" && *f != "2");
        }
        a.extend(flags);
        ok(&run_in(d, &a));
    }
    let sweep_lines = json_lines(&d.join("sweep-results.jsonl"));
    assert_eq!(sweep_lines.len(), 3);
    for (i, flags) in EQUAL_RUNS.iter().enumerate() {
        let model = format!("train-{i}.npz");
        let mut a = vec!["train", "--json", "-q", "--threads", "2", "--model", &model];
        a.extend(["--metrics", "train-metrics.csv"]);
        if !flags.contains(&"--iterations") {
            a.extend(["--epochs", "2"]);
        }
        a.extend(*flags);
        let out = ok(&run_in(d, &a));
        let lone: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let (key, swept) = sweep_lines
            .iter()
            .find(|(_, v)| v["lr"] == lone["lr"])
            .unwrap_or_else(|| panic!("no sweep run with lr {}", lone["lr"]));
        // Two keys are a lone train's only: its run folder (none here:
        // --model and --metrics are given) and the training time before a
        // --resume (none).
        assert_eq!(lone["run_folder"], Value::Null);
        assert_eq!(lone["earlier_train_seconds"], 0.0);
        for (name, value) in lone.as_object().unwrap() {
            if ["run_folder", "earlier_train_seconds"].contains(&name.as_str()) {
                continue;
            }
            assert!(swept.get(name).is_some(), "sweep JSON lacks `{name}`");
            let timing_or_path = name.ends_with("seconds")
                || name == "samples_per_second"
                || ["command", "threads", "model", "metrics", "plot"].contains(&name.as_str());
            if !timing_or_path {
                assert_eq!(&swept[name], value, "{name} of run {key} ({flags:?})");
            }
        }
        let a = Mlp::load_npz(&d.join(&model)).unwrap();
        let b = Mlp::load_npz(&d.join("models").join(format!("run-{key}.npz"))).unwrap();
        assert!(a == b, "weights differ for {flags:?}");
    }
}

#[test]
fn emitted_commands_run_and_collect_into_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grid = [
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1,1e30",
        "--seed",
        "1,2",
    ];
    let mut emit = vec![
        "sweep",
        "--emit-commands",
        "--out-dir",
        "runs",
        "--bin",
        BIN,
    ];
    emit.extend(grid);
    let commands = ok(&run_in(d, &emit));
    let lines: Vec<&str> = commands.lines().collect();
    assert_eq!(lines.len(), 4, "{commands}");
    for l in &lines {
        assert!(
            l.contains(" train ") && l.contains("--json") && l.contains("> runs/run-"),
            "{l}"
        );
    }
    // Nothing collected yet: all four pending.
    let none = ok(&run_in(
        d,
        &[
            "sweep",
            "--collect",
            "runs",
            "--results",
            "c.csv",
            "--no-plot",
        ],
    ));
    assert!(none.contains("4 not finished yet"), "{none}");
    // Run three of the four, as GNU parallel would, through a shell.
    for l in &lines[..3] {
        let s = Command::new("sh")
            .arg("-c")
            .arg(l)
            .current_dir(d)
            .status()
            .unwrap();
        let diverges = l.contains("1e30");
        assert_eq!(s.success(), !diverges, "{l}");
    }
    let out = ok(&run_in(
        d,
        &["sweep", "--collect", "runs", "--results", "c.csv"],
    ));
    assert!(
        out.contains("collected 3 new runs") && out.contains("1 not finished"),
        "{out}"
    );
    ok(&run_in(
        d,
        &[
            "sweep",
            "--collect",
            "runs",
            "--results",
            "c.csv",
            "--no-plot",
        ],
    ));
    let collected = csv_rows(&d.join("c.csv"));
    assert_eq!(collected.len(), 3, "collecting twice adds nothing");
    assert!(d.join("c.png").exists());

    // The same grid run by the sweep itself gives the same rows.
    let mut local = vec!["sweep", "--no-plot", "-q"];
    local.extend(grid);
    ok(&run_in(d, &local));
    let swept = csv_rows(&d.join("sweep-results.csv"));
    for c in &collected {
        let s = swept
            .iter()
            .find(|s| s["key"] == c["key"])
            .expect("same keys");
        for col in [
            "status",
            "lr",
            "seed",
            "train_rows",
            "heldout_accuracy",
            "heldout_loss",
            "train_accuracy",
            "best_epoch",
        ] {
            assert_eq!(s[col], c[col], "{col} of {}", c["key"]);
        }
        if c["status"] == "failed" {
            assert!(c["error"].contains("diverged"), "{c:?}");
        }
    }
}
