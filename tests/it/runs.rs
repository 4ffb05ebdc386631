//! Run folders, replayable settings and live metrics (issue 17): each
//! `train` keeps its own folder, `runs/latest` follows the last one,
//! `--config` and `--resume` alone replay a run, `metrics.csv` grows as
//! epochs end.

use crate::common::{bin, last_json, model_bits, run_in, stderr, stdout};
use mnist_blas::model::Mlp;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

fn folders(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    v.sort();
    v
}

#[test]
fn each_run_keeps_its_folder_and_latest_follows_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = run_in(d, &["train", "--epochs", "1", "--json"]);
    ok(&first);
    let j = last_json(&first);
    let folder = PathBuf::from(j["run_folder"].as_str().unwrap());
    assert!(stdout(&first).contains(&format!("run folder: {}", folder.display())));
    for f in ["model.npz", "metrics.csv", "config.toml", "report.json"] {
        assert!(d.join(&folder).join(f).is_file(), "{f} missing");
    }
    assert_eq!(j["model"], format!("{}/model.npz", folder.display()));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join(&folder).join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["heldout_accuracy"], j["heldout_accuracy"]);
    let first_model = std::fs::read(d.join(&folder).join("model.npz")).unwrap();

    // The notebook preset next: its own folder; the first model untouched.
    let second = run_in(
        d,
        &[
            "train",
            "--preset",
            "notebook",
            "--iterations",
            "5",
            "--name",
            "nb",
            "--json",
        ],
    );
    ok(&second);
    assert_eq!(folders(d).len(), 2, "{:?}", folders(d));
    assert_eq!(
        std::fs::read(d.join(&folder).join("model.npz")).unwrap(),
        first_model
    );
    assert_eq!(
        std::fs::read_link(d.join("runs/latest")).unwrap(),
        Path::new("nb")
    );

    // eval without --model scores the latest run's model and says which.
    let e = run_in(
        d,
        &[
            "eval",
            "--data",
            crate::common::repo("data/sample/train-sample.csv.gz")
                .to_str()
                .unwrap(),
        ],
    );
    ok(&e);
    assert!(
        stdout(&e).contains("runs/latest/model.npz"),
        "{}",
        stdout(&e)
    );

    // A name in use is refused, and nothing of the old run changes.
    let again = run_in(d, &["train", "--epochs", "1", "--name", "nb"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("runs/nb") && stderr(&again).contains("--name"),
        "{}",
        stderr(&again)
    );
    assert_eq!(folders(d).len(), 2);
}

#[test]
fn model_and_metrics_given_make_no_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--model",
            "m.npz",
            "--metrics",
            "m.csv",
        ],
    );
    ok(&o);
    assert!(dir.path().join("m.npz").is_file() && dir.path().join("m.csv").is_file());
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn a_failed_run_leaves_no_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "label,pixel0\n3,x\n").unwrap();
    let o = run_in(dir.path(), &["train", "--data", "bad.csv"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.csv"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_config_replays_the_run_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = [
        "train",
        "--layers",
        "24-12",
        "--epochs",
        "2",
        "--batch_size=64",
        "--lr",
        "0.003",
        "--seed",
        "7",
        "--name",
        "a",
        "--json",
        "-q",
    ];
    let a = run_in(d, &args);
    ok(&a);
    assert_eq!(last_json(&a)["batch_size"], 64);
    let config = std::fs::read_to_string(d.join("runs/a/config.toml")).unwrap();
    assert!(
        config.contains("layers = \"24-12\"") && config.contains("batch_size = 64"),
        "{config}"
    );

    // Replayed: the same weights, bit for bit.
    let b = run_in(
        d,
        &[
            "train",
            "--config",
            "runs/a/config.toml",
            "--name",
            "b",
            "-q",
        ],
    );
    ok(&b);
    assert!(model_bits(&d.join("runs/a/model.npz")) == model_bits(&d.join("runs/b/model.npz")));

    // --print-config is the file the run wrote; a flag beside --config wins.
    let p = run_in(
        d,
        &["train", "--config", "runs/a/config.toml", "--print-config"],
    );
    ok(&p);
    assert_eq!(stdout(&p).trim_end(), config.trim_end());
    let c = run_in(
        d,
        &[
            "train",
            "--config",
            "runs/a/config.toml",
            "--hidden",
            "8",
            "--epochs",
            "1",
            "--name",
            "c",
            "--json",
            "-q",
        ],
    );
    ok(&c);
    let j = last_json(&c);
    assert_eq!(
        (j["layers"].as_str(), j["epochs"].as_u64()),
        (Some("8"), Some(1))
    );
    assert_eq!(
        (j["batch_size"].as_u64(), j["seed"].as_u64()),
        (Some(64), Some(7))
    );

    // The model file carries its settings, for numpy to read when asked.
    let meta = Mlp::read_meta(&d.join("runs/a/model.npz")).expect("a meta array");
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["shape"], "784-24-12-10");
    assert_eq!(
        meta["report"]["lr"].as_f64().map(|v| (v * 1e6).round()),
        Some(3000.0)
    );
}

#[test]
fn a_bad_config_is_named_with_its_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("typo.toml"), "lr = 0.1\nbatchsize = 3\n").unwrap();
    std::fs::write(d.join("value.toml"), "lr = 0.1\noptimizer = \"adamw\"\n").unwrap();
    for (file, says) in [("typo.toml", "batchsize"), ("value.toml", "adamw")] {
        let o = run_in(d, &["train", "--config", file]);
        assert_eq!(o.status.code(), Some(1), "{file}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(file) && err.contains(says), "{err}");
    }
    assert!(!d.join("runs").exists());
}

#[test]
fn silent_mistakes_are_said_and_negative_numbers_are_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run_in(d, &["train", "--epochs", "1", "--momentum", "0.5", "-q"]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("warning: --momentum has no effect with --optimizer adam"),
        "{err}"
    );
    assert!(err.contains("warning: no --data"), "{err}");
    let o = run_in(d, &["train", "--lr", "-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--lr must be a positive number, found -1"),
        "{}",
        stderr(&o)
    );
}

/// `--resume CKPT` alone continues with the checkpoint's settings, in its
/// folder, and ends where a run never stopped ends.
#[test]
fn resume_alone_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = [
        "train",
        "--hidden",
        "48",
        "--epochs",
        "40",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "-q",
    ];
    let full = run_in(d, &[&run[..], &["--name", "full"]].concat());
    ok(&full);

    let mut child = bin()
        .current_dir(d)
        .args(run)
        .args(["--name", "cut", "--checkpoint-every", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = d.join("runs/cut/checkpoint.npz");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a checkpoint"
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(!d.join("runs/cut/model.npz").exists());

    let resumed = run_in(
        d,
        &["train", "--resume", "runs/cut/checkpoint.npz", "--json"],
    );
    ok(&resumed);
    let out = crate::common::unwrapped(&stdout(&resumed));
    assert!(out.contains("resuming from"), "{out}");
    // The time line adds up: this process's parts, and what came before.
    let j = last_json(&resumed);
    let f = |k: &str| j[k].as_f64().unwrap();
    assert!(f("earlier_train_seconds") > 0.0, "{j}");
    assert!(
        f("load_seconds") + f("train_seconds") + f("eval_seconds") <= f("seconds") + 1e-6,
        "{j}"
    );
    assert!(out.contains("s of training before the resume"), "{out}");
    assert!(
        model_bits(&d.join("runs/cut/model.npz")) == model_bits(&d.join("runs/full/model.npz"))
    );
    // The metrics hold every epoch once, the resumed part included.
    let metrics = std::fs::read_to_string(d.join("runs/cut/metrics.csv")).unwrap();
    let steps: Vec<&str> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let expected: Vec<String> = (1..=40).map(|e| e.to_string()).collect();
    assert_eq!(steps, expected);
    assert_eq!(folders(d), ["cut", "full"]);
}

/// `tail -f metrics.csv` sees rows as epochs end: the file is read while
/// the run is still going.
#[test]
fn metrics_grow_while_the_run_goes_and_json_epochs_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut child = bin()
        .current_dir(d)
        .args([
            "train",
            "--epochs",
            "500",
            "--hidden",
            "32",
            "--name",
            "live",
            "--json-epochs",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["event"].as_str(), first["unit"].as_str()),
        (Some("record"), Some("epoch"))
    );
    assert_eq!(first["step"], 1);
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["step"], 2);
    let metrics = std::fs::read_to_string(d.join("runs/live/metrics.csv")).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "read while the run goes on"
    );
    let rows: Vec<&str> = metrics.lines().collect();
    assert!(rows.len() >= 3, "{metrics}");
    assert!(rows[0].starts_with("step,train_loss"));
    assert!(
        rows[1].starts_with("1,") && rows[2].starts_with("2,"),
        "{metrics}"
    );
    let held = first["heldout_accuracy"].as_f64().unwrap();
    assert_eq!(
        rows[1].split(',').nth(4).unwrap().parse::<f64>().unwrap(),
        held
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
