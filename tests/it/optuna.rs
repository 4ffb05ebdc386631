//! `scripts/optuna_search.py` on the real binary: an Optuna study on the
//! built-in sample completes trials, prunes some (SIGTERM to `train`), and
//! its best command line, run alone, gives the same held-out accuracy bit for
//! bit. Ignored by default (it installs Optuna from PyPI into a venv):
//! `cargo test --release --features blas --test it -- --ignored optuna`, as
//! .ci/run does.

use std::process::Command;

use crate::common::{repo, stdout, succeeded as run, venv_with, BIN};

#[test]
#[ignore = "needs PyPI; run by .ci/run"]
fn optuna_study_prunes_and_its_best_command_reproduces_its_value() {
    let tmp = tempfile::tempdir().unwrap();
    let python = venv_with(tmp.path(), &["optuna"]);
    let storage = format!("sqlite:///{}", tmp.path().join("optuna.db").display());
    let out_dir = tmp.path().join("runs");
    let o = run(Command::new(&python)
        .arg(repo("scripts/optuna_search.py"))
        .args(["--trials", "10", "--epochs", "6", "--sampler-seed", "0"])
        .args(["--study-name", "test", "--storage", &storage, "--bin", BIN])
        .arg("--out-dir")
        .arg(&out_dir)
        .current_dir(tmp.path()));
    let out = stdout(&o);
    println!("{out}");
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a final line")).unwrap();
    assert_eq!(summary["trials"], 10, "{summary}");
    assert!(summary["complete"].as_u64().unwrap() >= 3, "{summary}");
    assert!(summary["pruned"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    // The best trial, re-run alone, lands on the same bits.
    let args: Vec<&str> = summary["best_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        summary["best_command"].as_str().unwrap(),
        format!("{BIN} {}", args.join(" ")),
        "the printed command is the re-run one"
    );
    let lone = tmp.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    let o = run(Command::new(BIN)
        .args(&args)
        .args(["--json", "-q", "--model", "m.npz", "--metrics", "m.csv"])
        .current_dir(&lone));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(
        report["heldout_accuracy"].as_f64().unwrap(),
        summary["best_value"].as_f64().unwrap(),
        "{summary}\n{report}"
    );
}
