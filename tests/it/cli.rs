//! The binary end to end, as a user runs it.

use crate::common::{
    after_sample_warning, bin, last_json, model_bits, repo, run_folder, run_in, stderr, stdout,
    tree, BIN,
};
use std::process::Command;

#[test]
fn default_run_trains_on_the_builtin_sample_and_predict_writes_a_submission() {
    let dir = tempfile::tempdir().unwrap();
    // No data/train.csv here: the built-in sample of 6,000 real digits is used.
    let o = run_in(dir.path(), &["--epochs", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("built-in sample"), "{text}");
    assert!(text.contains("kaggle competitions download"), "{text}");
    let j = last_json(&o);
    assert_eq!(j["train_rows"], 4800);
    assert_eq!(j["heldout_rows"], 1200);
    for key in [
        "layers",
        "init",
        "optimizer",
        "lr",
        "epochs",
        "batch_size",
        "seed",
        "threads",
        "split",
        "engine",
        "seconds",
    ] {
        assert!(!j[key].is_null(), "JSON lacks {key}: {j}");
    }
    // 784-10-10 on 4,800 real digits for 3 epochs: well above 85% held out.
    let acc = j["heldout_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "held-out accuracy {acc}");
    // The run's files are in its own folder, and runs/latest points there.
    let folder = dir.path().join(run_folder(&o));
    assert_eq!(folder.parent(), Some(dir.path().join("runs").as_path()));
    assert_eq!(
        dir.path().join("runs/latest").canonicalize().unwrap(),
        folder.canonicalize().unwrap()
    );
    assert!(folder.join("model.npz").exists());
    assert!(!dir.path().join("model.npz").exists());
    let metrics = std::fs::read_to_string(folder.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 3, "{metrics}");
    assert!(metrics.starts_with("step,train_loss,train_accuracy,heldout_loss,heldout_accuracy"));

    let test = repo("data/sample/test-sample.csv.gz");
    let o = run_in(
        dir.path(),
        &[
            "predict",
            "--model",
            "runs/latest/model.npz",
            "--data",
            test.to_str().unwrap(),
            "--out",
            "sub.csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let sub = std::fs::read_to_string(dir.path().join("sub.csv")).unwrap();
    let lines: Vec<&str> = sub.lines().collect();
    assert_eq!(lines[0], "ImageId,Label");
    assert_eq!(lines.len(), 1 + 1000);
    for (i, line) in lines[1..].iter().enumerate() {
        let (id, label) = line.split_once(',').unwrap();
        assert_eq!(id.parse::<usize>().unwrap(), i + 1);
        assert!(label.parse::<u8>().unwrap() < 10);
    }

    // eval reads the latest run's model by default.
    let train = repo("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir.path(),
        &["eval", "--data", train.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j = last_json(&o);
    assert_eq!(j["rows"], 6000);
    let confusion: u64 = j["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 6000);
    assert!(stdout(&o).contains("precision"));
}

#[test]
fn notebook_preset_is_reproducible_and_prints_every_25_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--preset",
        "notebook",
        "--iterations",
        "51",
        "--json",
        "--model",
        "m.npz",
    ];
    let a = run_in(dir.path(), &args);
    assert!(a.status.success(), "{}", stderr(&a));
    let text = stdout(&a);
    for it in ["iteration    0:", "iteration   25:", "iteration   50:"] {
        assert!(text.contains(it), "missing {it}: {text}");
    }
    assert!(text.contains("Test set: "), "{text}");
    let ja = last_json(&a);
    assert_eq!(ja["split"], 0.2);
    assert_eq!(ja["train_rows"], 1200);
    assert_eq!(ja["schedule"], "full-batch");
    let model_a = std::fs::read(dir.path().join("m.npz")).unwrap();
    let b = run_in(dir.path(), &args);
    assert_eq!(last_json(&b)["heldout_accuracy"], ja["heldout_accuracy"]);
    assert_eq!(
        std::fs::read(dir.path().join("m.npz")).unwrap(),
        model_a,
        "same seed, different model"
    );
}

/// The notebook preset scores the held-out rows once, at the end, as the
/// notebook does; `--heldout-eval records` brings back the held-out curve,
/// and neither changes the model.
#[test]
fn heldout_eval_end_skips_the_curve_but_not_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let run = |when: Option<&str>, tag: &str| {
        let (model, metrics) = (format!("{tag}.npz"), format!("{tag}.csv"));
        let mut args = vec![
            "--preset",
            "notebook",
            "--iterations",
            "30",
            "--engine",
            "sparse",
            "--json",
            "--model",
            &model,
            "--metrics",
            &metrics,
        ];
        if let Some(w) = when {
            args.extend(["--heldout-eval", w]);
        }
        let o = run_in(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let csv = std::fs::read_to_string(dir.path().join(&metrics)).unwrap();
        let heldout: Vec<String> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(4).unwrap().to_string())
            .collect();
        // The weights, bit for bit (the files' metadata name the setting).
        let weights = model_bits(&dir.path().join(&model));
        (last_json(&o), heldout, weights)
    };
    let (end, end_curve, end_model) = run(None, "default");
    let (records, curve, model) = run(Some("records"), "records");
    assert_eq!(end_curve.len(), 3, "records at 0, 25 and 29");
    assert!(end_curve.iter().all(|v| v.is_empty()), "{end_curve:?}");
    assert!(curve.iter().all(|v| v.parse::<f64>().is_ok()), "{curve:?}");
    assert_eq!(end["heldout_accuracy"], records["heldout_accuracy"]);
    assert!(end_model == model, "--heldout-eval changed the weights");
}

#[test]
fn bad_csv_fails_with_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("label");
    for i in 0..784 {
        csv.push_str(&format!(",pixel{i}"));
    }
    csv.push('\n');
    for row in 0..3 {
        csv.push_str(&format!("{}", row % 10));
        for i in 0..784 {
            csv.push_str(if row == 2 && i == 5 { ",300" } else { ",0" });
        }
        csv.push('\n');
    }
    std::fs::write(dir.path().join("bad.csv"), csv).unwrap();
    let o = run_in(dir.path(), &["--data", "bad.csv"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.csv:4"), "{err}");
    assert!(err.contains("300"), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, no backtrace: {err}"
    );
    assert!(!dir.path().join("model.npz").exists());
}

#[test]
fn divergence_is_reported_and_the_old_model_survives() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.npz"), b"previous model").unwrap();
    let o = run_in(
        dir.path(),
        &["--optimizer", "sgd", "--lr", "1e30", "--epochs", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("diverged") && err.contains("smaller learning rate"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.npz")).unwrap(),
        b"previous model"
    );
}

#[test]
fn impossible_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--split", "1.5"], "--split"),
        (vec!["--hidden", "0"], "--hidden"),
        (vec!["--batch-size", "0"], "--batch-size"),
        (
            vec!["--batch-size", "32", "--iterations", "5"],
            "--iterations",
        ),
    ] {
        let o = run_in(dir.path(), &args);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_quietly_not_with_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    // One line per iteration: ~150 KB, more than a pipe buffer holds, so the
    // writer must meet the closed pipe. Read one line and close it, as
    // `| head -1` does.
    let mut child = bin()
        .current_dir(dir.path())
        .args([
            "--preset",
            "notebook",
            "--iterations",
            "1500",
            "--log-every",
            "1",
            "--model",
            "model.npz",
            "--metrics",
            "metrics.csv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("data:"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // `mnist-blas train ... | head -1`: printing stops, training does not.
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(
        dir.path().join("model.npz").exists(),
        "the model is written"
    );
    assert!(
        dir.path().join("metrics.csv").exists(),
        "the metrics are written"
    );
}

/// `RAYON_NUM_THREADS` is held to the limit `--threads` is held to.
#[test]
fn rayon_num_threads_is_held_to_the_thread_limit() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(dir.path())
        .args(["--epochs", "1"])
        .env("RAYON_NUM_THREADS", "2000")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("RAYON_NUM_THREADS 2000 is not sensible"),
        "{err}"
    );
    assert!(!dir.path().join("model.npz").exists());
    // A sensible value is used, and results do not depend on it.
    let o = bin()
        .current_dir(dir.path())
        .args(["--epochs", "1", "--json", "-q"])
        .env("RAYON_NUM_THREADS", "3")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(last_json(&o)["threads"], 3);
}

/// Under a small address-space limit (`ulimit -v`), the blas engine ends
/// with one clear line instead of spinning forever inside OpenBLAS's
/// buffer allocation; the sparse engine trains.
#[test]
fn a_small_memory_limit_is_refused_clearly_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let run = |engine: &str| {
        let mut child = Command::new("sh")
            .current_dir(dir.path())
            .args([
                "-c",
                &format!("ulimit -v 400000 && exec {BIN} --epochs 1 -q --engine {engine}"),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(120) {
                child.kill().unwrap();
                panic!("--engine {engine} under ulimit -v 400000 hangs");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    let o = run("sparse");
    assert!(o.status.success(), "{}", stderr(&o));
    let before = tree(dir.path());
    let o = run("blas");
    if cfg!(feature = "blas") {
        let err = after_sample_warning(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("ulimit -v") && err.contains("--engine sparse"),
            "{err}"
        );
        assert!(tree(dir.path()) == before, "the refused run wrote files");
    } else {
        assert!(o.status.success(), "{}", stderr(&o));
    }
}
