//! onnxruntime runs what `mnist-blas export` writes: on the 1,000 rows of
//! the built-in test sample its probabilities are `predict
//! --probabilities`'s to 1e-5 (largest absolute difference), for the
//! default 784-10-10 model and a 784-64-32-10 one, both trained on the
//! built-in sample; and the onnxruntime snippet of docs/deploy.md runs as
//! printed and labels rows as `predict` does. Ignored by default (it
//! installs onnxruntime and numpy from PyPI into a venv):
//! `cargo test --release --features blas --test it -- --ignored onnx`, as
//! .ci/run does.

use crate::common::{repo, run_in, stderr, stdout, venv_with};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// Largest absolute difference allowed between the two runtimes.
const TOLERANCE: f64 = 1e-5;

/// Loads the ONNX file (argv 1), checks its input and output, runs it on
/// the CSV rows (argv 2) and prints: the number of rows, the largest
/// absolute difference from `predict --probabilities`'s file (argv 3), and
/// how many rows' most probable digit differs from its label.
const CHECK: &str = r#"
import sys
import numpy as np
import onnxruntime as ort

model, data, expected = sys.argv[1:]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(i,) = session.get_inputs()
(o,) = session.get_outputs()
assert (i.name, i.type, i.shape) == ("pixels", "tensor(float)", ["N", 784]), i
assert (o.name, o.type, o.shape) == ("probabilities", "tensor(float)", ["N", 10]), o
pixels = np.loadtxt(data, delimiter=",", skiprows=1, ndmin=2, dtype=np.float32) / 255
assert pixels.dtype == np.float32
(got,) = session.run(["probabilities"], {"pixels": pixels})
want = np.loadtxt(expected, delimiter=",", skiprows=1, ndmin=2, usecols=range(2, 12))
labels = np.loadtxt(expected, delimiter=",", skiprows=1, usecols=1, dtype=int)
assert got.shape == want.shape, (got.shape, want.shape)
print(got.shape[0], float(np.abs(got - want).max()), int((got.argmax(axis=1) != labels).sum()))
"#;

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run_in(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn python(py: &Path, dir: &Path, args: &[&str]) -> String {
    let o = Command::new(py)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "python {args:?}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The ```python block of docs/deploy.md's "ONNX" section.
fn docs_snippet() -> String {
    let doc = std::fs::read_to_string(repo("docs/deploy.md")).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("ONNX"))
        .expect("docs/deploy.md has a section `## ONNX`");
    let code = section
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the ONNX section has a ```python block")
        .0;
    code.to_string()
}

#[test]
#[ignore = "needs PyPI; run by .ci/run"]
fn onnxruntime_gives_predicts_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let py = venv_with(d, &["onnxruntime", "numpy"]);
    let versions = python(
        &py,
        d,
        &[
            "-c",
            "import onnxruntime, numpy; print(onnxruntime.__version__, numpy.__version__)",
        ],
    );
    println!("onnxruntime, numpy: {}", versions.trim());

    let sample = repo("data/sample/test-sample.csv.gz");
    let sample = sample.to_str().unwrap();
    for (name, layers) in [("default", None), ("deep", Some("64-32"))] {
        let (npz, onnx, probs) = (
            format!("{name}.npz"),
            format!("{name}.onnx"),
            format!("{name}-probs.csv"),
        );
        let mut train = vec!["train", "-q", "--model", &npz, "--metrics", "m.csv"];
        if let Some(l) = layers {
            train.extend(["--layers", l]);
        }
        ok(d, &train);
        ok(
            d,
            &[
                "predict",
                "-q",
                "--model",
                &npz,
                "--data",
                sample,
                "--out",
                &probs,
                "--probabilities",
            ],
        );
        ok(d, &["export", "-q", "--model", &npz, "--out", &onnx]);
        let out = python(&py, d, &["-c", CHECK, &onnx, sample, &probs]);
        let fields: Vec<&str> = out.split_whitespace().collect();
        let (rows, diff, relabelled): (usize, f64, usize) = (
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            fields[2].parse().unwrap(),
        );
        println!(
            "{name} model ({}): {rows} rows, max abs diff onnxruntime vs predict \
             {diff:.3e}, {relabelled} rows labelled differently",
            layers.unwrap_or("10")
        );
        assert_eq!(rows, 1000);
        assert!(diff <= TOLERANCE, "{name}: max abs diff {diff:e}");
    }

    // The docs' snippet, as printed, on the default model and 20 rows.
    let gz = std::fs::read(repo("data/sample/test-sample.csv.gz")).unwrap();
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut csv)
        .unwrap();
    let rows: Vec<&str> = csv.lines().take(21).collect();
    let docs = d.join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("test.csv"), rows.join("\n") + "\n").unwrap();
    std::fs::copy(d.join("default.onnx"), docs.join("model.onnx")).unwrap();
    let printed = python(&py, &docs, &["-c", &docs_snippet()]);
    let labels: Vec<usize> = printed
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split_whitespace()
        .map(|l| l.parse().unwrap())
        .collect();
    let predicted: Vec<usize> = std::fs::read_to_string(d.join("default-probs.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .take(20)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    println!("docs/deploy.md snippet printed: {}", printed.trim());
    assert_eq!(labels, predicted, "the snippet printed:\n{printed}");
}
