//! A model of three hidden layers written by `mnist-blas train` loads in
//! numpy, and docs/deploy.md's numpy forward pass labels every row as
//! `mnist-blas predict` does (and gives the f64 oracle's probabilities).
//!
//! Needs a `python3` that can import numpy (`.ci/run` installs Debian's
//! `python3-numpy`); without one the test says so and passes.

use crate::common::{repo, run_in, stderr};
use crate::testutil::{max_rel_diff, tolerance};
use mnist_blas::data::FEATURES;
use mnist_blas::engine::naive;
use mnist_blas::model::{Layers, Mlp};
use std::io::Read;
use std::process::Command;

/// Rows of the built-in test sample that are labelled.
const ROWS: usize = 300;

/// The first `python3` (on PATH, then the system's) that imports numpy.
fn python_with_numpy() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// docs/deploy.md's numpy forward pass: the ```python block that loads
/// `model.npz`.
fn readme_forward_pass() -> String {
    let readme = std::fs::read_to_string(repo("docs/deploy.md")).unwrap();
    readme
        .split("```python\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(code, _)| code))
        .find(|code| code.contains("np.load(\"model.npz\")"))
        .expect("docs/deploy.md has a ```python block loading model.npz")
        .to_string()
}

/// The header and first `rows` rows of the built-in test sample (pixels
/// only, no labels), as plain CSV text.
fn sample_rows(rows: usize) -> String {
    let gz = std::fs::read(repo("data/sample/test-sample.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<&str> = text.lines().take(1 + rows).collect();
    assert_eq!(lines.len(), 1 + rows, "the sample has {rows} rows");
    lines.join("\n") + "\n"
}

fn pixels(csv: &str) -> Vec<u8> {
    csv.lines()
        .skip(1)
        .flat_map(|line| line.split(',').map(|v| v.parse::<u8>().unwrap()))
        .collect()
}

#[test]
fn numpy_runs_a_deep_model_as_predict_does() {
    let Some(python) = python_with_numpy() else {
        // CI installs numpy (.ci/run): there a missing numpy is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no python3 has numpy: .ci/run installs python3-numpy"
        );
        eprintln!(
            "SKIPPED numpy_runs_a_deep_model_as_predict_does: no python3 with numpy \
             (apt-get install python3-numpy)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run_in(
        d,
        &[
            "train",
            "--layers",
            "32-16-8",
            "--epochs",
            "1",
            "--seed",
            "2",
            "--quiet",
            "--model",
            "model.npz",
            "--metrics",
            "metrics.csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let model = Mlp::load_npz(&d.join("model.npz")).unwrap();
    assert_eq!(model.shape(), Layers::parse("32-16-8").unwrap());

    let csv = sample_rows(ROWS);
    std::fs::write(d.join("rows.csv"), &csv).unwrap();
    let o = run_in(
        d,
        &[
            "predict",
            "--model",
            "model.npz",
            "--data",
            "rows.csv",
            "--out",
            "sub.csv",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let sub = std::fs::read_to_string(d.join("sub.csv")).unwrap();
    let predicted: Vec<usize> = sub
        .lines()
        .skip(1)
        .map(|line| line.split_once(',').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(predicted.len(), ROWS);

    let script = format!(
        "import numpy as np\n\
         x = np.loadtxt('rows.csv', delimiter=',', skiprows=1, ndmin=2)\n\
         {}\n\
         print(L)\n\
         for row in p:\n    print(' '.join(repr(float(v)) for v in row))\n",
        readme_forward_pass()
    );
    let o = Command::new(python)
        .current_dir(d)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}\n{script}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("4"), "numpy counts 4 dense layers");
    let probs: Vec<Vec<f64>> = lines
        .map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(probs.len(), ROWS);

    let x = pixels(&csv);
    let rows: Vec<&[u8]> = x.chunks(FEATURES).collect();
    for (r, (p, &label)) in probs.iter().zip(&predicted).enumerate() {
        assert_eq!(p.len(), 10);
        assert_eq!(naive::argmax(p), label, "row {r}: numpy {p:?}");
        // numpy and the oracle both compute in f64: only summation order
        // differs.
        let oracle = naive::forward_row(&model, rows[r]).probs;
        let d = max_rel_diff(p.iter().copied(), oracle);
        assert!(d < tolerance::F64_VS_F64, "row {r}: numpy vs oracle {d}");
    }
    // A trained model: not one label everywhere.
    let mut seen = predicted.clone();
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 5, "labels {seen:?}");
}
