//! `train --early-stop N` on the built-in sample: it stops N epochs after
//! the lowest held-out loss, returns that epoch's weights bit for bit,
//! reports both, resumes from a checkpoint to the same end, and refuses
//! settings under which nothing would be watched.

use crate::common::{last_json, model_bits, run_in, stderr, stdout, unwrapped};
use crate::sweep::csv_rows;
use mnist_blas::train::checkpoint::Checkpoint;
use serde_json::Value;
use std::sync::OnceLock;

/// A run that overfits the sample within a few epochs (a constant rate, so
/// a shorter run takes the same steps).
const RUN: [&str; 12] = [
    "--hidden",
    "32",
    "--lr",
    "0.005",
    "--lr-schedule",
    "constant",
    "--epochs",
    "25",
    "--seed",
    "1",
    "--engine",
    "blas",
];
const PATIENCE: usize = 2;

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = RUN.to_vec();
    v.extend(extra);
    v
}

fn field(json: &Value, name: &str) -> Option<usize> {
    json[name].as_u64().map(|v| v as usize)
}

/// The early-stopped run, done once: its JSON line, model bits, the
/// held-out losses of its metrics file, and its summary screen.
struct Base {
    json: Value,
    bits: Vec<u32>,
    heldout_losses: Vec<String>,
    stdout: String,
    /// Epoch it stopped at, and the epoch whose weights it returned.
    at: usize,
    best: usize,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let patience = PATIENCE.to_string();
        let files = ["--model", "model.npz", "--metrics", "metrics.csv"];
        let mut a = args(&["--early-stop", &patience, "--json"]);
        a.extend(files);
        let o = run_in(dir.path(), &a);
        assert!(o.status.success(), "{}", stderr(&o));
        let json = last_json(&o);
        let at = field(&json, "early_stopped_at").expect("stops before epoch 25");
        let best = field(&json, "restored_step").expect("restores an earlier epoch");
        let heldout_losses = csv_rows(&dir.path().join("metrics.csv"))
            .into_iter()
            .map(|r| r["heldout_loss"].clone())
            .collect();
        Base {
            bits: model_bits(&dir.path().join("model.npz")),
            json,
            heldout_losses,
            stdout: stdout(&o),
            at,
            best,
        }
    })
}

#[test]
fn stops_after_patience_and_returns_the_best_epochs_weights() {
    let b = base();
    assert!(b.best > 1, "the held-out loss falls for a while first");
    assert_eq!(
        b.at,
        b.best + PATIENCE,
        "{PATIENCE} epochs without improvement"
    );
    assert_eq!(field(&b.json, "early_stop"), Some(PATIENCE));
    assert_eq!(b.heldout_losses.len(), b.at, "one record per epoch run");
    let losses: Vec<f64> = b
        .heldout_losses
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let lowest = losses[b.best - 1];
    assert!(
        losses
            .iter()
            .enumerate()
            .all(|(i, &l)| i == b.best - 1 || l > lowest),
        "epoch {} has the strictly lowest held-out loss: {losses:?}",
        b.best
    );
    let steps = field(&b.json, "steps").unwrap();
    assert_eq!(steps, b.at * 4800usize.div_ceil(32), "steps actually taken");

    // The same run cut at the best epoch: the same weights, and the final
    // scores in the report are of those weights.
    let dir = tempfile::tempdir().unwrap();
    let epochs = b.best.to_string();
    let mut short = args(&[
        "--json",
        "-q",
        "--model",
        "model.npz",
        "--metrics",
        "metrics.csv",
    ]);
    let at = short.iter().position(|a| *a == "25").unwrap();
    short[at] = &epochs;
    let o = run_in(dir.path(), &short);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(model_bits(&dir.path().join("model.npz")), b.bits);
    let json = last_json(&o);
    for name in [
        "heldout_loss",
        "heldout_accuracy",
        "heldout_correct",
        "train_loss",
        "train_accuracy",
    ] {
        assert_eq!(json[name], b.json[name], "{name}");
    }
    assert_eq!(
        b.json["heldout_loss"].as_f64().unwrap(),
        lowest,
        "the final held-out loss is the best epoch's"
    );
    for name in ["early_stop", "early_stopped_at", "restored_step"] {
        assert_eq!(json[name], Value::Null, "{name} without --early-stop");
    }
}

#[test]
fn the_summary_says_where_it_stopped_and_what_it_kept() {
    let b = base();
    let summary = unwrapped(&b.stdout);
    let line = summary
        .lines()
        .find(|l| l.starts_with("early stop:"))
        .unwrap_or_else(|| panic!("no early-stop line: {}", b.stdout));
    assert_eq!(
        line,
        format!(
            "early stop: no held-out improvement for {PATIENCE} epochs after epoch {best}, \
             stopped at epoch {at} of 25; restored epoch {best}'s weights",
            best = b.best,
            at = b.at
        )
    );
    assert!(
        summary.contains("25 epochs (stopped early) = "),
        "{}",
        b.stdout
    );
    let epoch_lines = b.stdout.lines().filter(|l| l.starts_with("epoch ")).count();
    assert_eq!(epoch_lines, b.at, "one log line per epoch run");
}

/// A checkpoint written between the best epoch and the stop, and one
/// written at the stop, both resume to the uninterrupted run's end.
#[test]
fn a_resumed_run_stops_at_the_same_epoch_with_the_same_bits() {
    let b = base();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let patience = PATIENCE.to_string();
    // Every best + 1 epochs: one checkpoint only, after epoch best + 1.
    let every = (b.best + 1).to_string();
    let run = |every: &str, extra: &[&str]| {
        let mut a = args(&["--early-stop", &patience, "--json", "-q"]);
        a.extend(["--checkpoint", "run.ckpt.npz", "--checkpoint-every", every]);
        a.extend(extra);
        let o = run_in(d, &a);
        assert!(o.status.success(), "{a:?}: {}", stderr(&o));
        last_json(&o)
    };
    let check = |json: &Value, model: &str, metrics: &str, what: &str| {
        assert_eq!(field(json, "early_stopped_at"), Some(b.at), "{what}");
        assert_eq!(field(json, "restored_step"), Some(b.best), "{what}");
        assert_eq!(json["heldout_loss"], b.json["heldout_loss"], "{what}");
        assert_eq!(model_bits(&d.join(model)), b.bits, "{what}: model bits");
        let losses: Vec<String> = csv_rows(&d.join(metrics))
            .into_iter()
            .map(|r| r["heldout_loss"].clone())
            .collect();
        assert_eq!(losses, b.heldout_losses, "{what}: records");
    };
    let completed = || {
        Checkpoint::load(&d.join("run.ckpt.npz"))
            .unwrap()
            .completed()
    };

    let json = run(
        &every,
        &["--model", "model.npz", "--metrics", "metrics.csv"],
    );
    check(&json, "model.npz", "metrics.csv", "writing checkpoints");
    assert_eq!(completed(), b.best + 1, "written after epoch best + 1");

    // Resumed with a checkpoint every epoch: the last is written at the stop.
    let resumed = [
        "--resume",
        "run.ckpt.npz",
        "--model",
        "r.npz",
        "--metrics",
        "r.csv",
    ];
    let json = run("1", &resumed);
    check(&json, "r.npz", "r.csv", "resumed mid-patience");
    assert_eq!(completed(), b.at, "checkpoints every epoch up to the stop");

    // Resumed from there, the run takes no step and ends the same.
    let again = [
        "--resume",
        "run.ckpt.npz",
        "--model",
        "s.npz",
        "--metrics",
        "s.csv",
    ];
    let json = run("1", &again);
    check(&json, "s.npz", "s.csv", "resumed at the stop");
    assert_eq!(completed(), b.at, "no step, no new checkpoint");
}

#[test]
fn settings_that_watch_nothing_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (vec!["--early-stop", "0"], "--early-stop 0"),
        (
            vec!["--early-stop", "3", "--heldout-eval", "end"],
            "add --heldout-eval records",
        ),
        (
            vec!["--preset", "notebook", "--early-stop", "3"],
            "(the notebook preset's)",
        ),
    ] {
        let o = run_in(dir.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: lacks {want:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // With held-out scoring at every record, the notebook preset may stop early.
    let o = run_in(
        dir.path(),
        &[
            "--preset",
            "notebook",
            "--early-stop",
            "3",
            "--heldout-eval",
            "records",
            "--iterations",
            "30",
            "--log-every",
            "10",
            "--json",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(field(&last_json(&o), "early_stop"), Some(3));
}

/// A sweep run with `--early-stop` is the train run: its row has the
/// patience, where it stopped and which epoch it kept.
#[test]
fn a_sweep_row_reports_early_stopping() {
    let b = base();
    let dir = tempfile::tempdir().unwrap();
    let patience = PATIENCE.to_string();
    let mut a = vec![
        "sweep",
        "--no-plot",
        "-q",
        "--lr",
        "0.005",
        "--hidden",
        "32",
    ];
    a.extend(["--epochs", "25", "--seed", "1", "--engine", "blas", "--"]);
    a.extend(["--lr-schedule", "constant", "--early-stop", &patience]);
    let o = run_in(dir.path(), &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&dir.path().join("sweep-results.csv"));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["status"], "ok", "{r:?}");
    assert_eq!(r["early_stop"], patience);
    assert_eq!(r["early_stopped_at"], b.at.to_string());
    assert_eq!(r["restored_step"], b.best.to_string());
    assert_eq!(r["heldout_loss"], b.json["heldout_loss"].to_string());
}
