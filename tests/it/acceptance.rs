//! Acceptance on the real Kaggle data in ../shared (the figures issue 2 asks
//! for). Ignored by default: `cargo test --release --features blas --test
//! acceptance -- --ignored` (as .ci/run does). Skips, saying so, when the data
//! is not there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn train_csv() -> Option<PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/digit-recognizer/train.csv.gz");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not there", p.display());
        None
    }
}

fn train_json(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mnist-blas"))
        .current_dir(dir.path())
        .args(args)
        .args(["--json", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
#[ignore = "needs ../shared and a release build; run by .ci/run"]
fn notebook_preset_lands_in_the_notebooks_range_and_is_reproducible() {
    let Some(data) = train_csv() else { return };
    let data = data.to_str().unwrap();
    let mut accs = Vec::new();
    for seed in 0..5 {
        let seed = seed.to_string();
        let j = train_json(&["--preset", "notebook", "--data", data, "--seed", &seed]);
        let acc = j["heldout_accuracy"].as_f64().unwrap();
        println!("notebook preset, seed {seed}: held-out accuracy {acc:.4}");
        // The numpy notebook over seeds 0-4 measured 80.0% to 85.4%.
        assert!((0.79..=0.87).contains(&acc), "seed {seed}: {acc}");
        accs.push(acc);
    }
    let again = train_json(&["--preset", "notebook", "--data", data, "--seed", "0"]);
    assert_eq!(
        again["heldout_accuracy"].as_f64().unwrap(),
        accs[0],
        "same seed, same figure"
    );
}

#[test]
#[ignore = "needs ../shared and a release build; run by .ci/run"]
fn default_training_reaches_92_percent_with_784_10_10() {
    let Some(data) = train_csv() else { return };
    for seed in ["0", "1", "2"] {
        let j = train_json(&["--data", data.to_str().unwrap(), "--seed", seed]);
        let acc = j["heldout_accuracy"].as_f64().unwrap();
        println!(
            "default, seed {seed}: held-out accuracy {acc:.4} in {:.2} s",
            j["seconds"]
        );
        assert_eq!(j["layers"], "10");
        assert!(acc >= 0.92, "seed {seed}: {acc}");
    }
}

#[test]
#[ignore = "needs ../shared and a release build; run by .ci/run"]
fn trains_on_mnist_idx_and_scores_the_t10k_set() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist-idx");
    if !dir.exists() {
        eprintln!("skipped: no {}", dir.display());
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_mnist-blas");
    let o = Command::new(bin)
        .current_dir(work.path())
        .args([
            "--data",
            dir.join("train-images-idx3-ubyte.gz").to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin)
        .current_dir(work.path())
        .args([
            "eval",
            "--data",
            dir.join("t10k-images-idx3-ubyte.gz").to_str().unwrap(),
            "--json",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(j["rows"], 10000);
    let acc = j["accuracy"].as_f64().unwrap();
    println!("trained on IDX train (60,000), t10k accuracy {acc:.4}");
    assert!(acc >= 0.92, "{acc}");
}
