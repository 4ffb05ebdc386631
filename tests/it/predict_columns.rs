//! `predict --probabilities` and `--top-k K`: the extra columns agree with
//! the label and with each other; without them the file stays Kaggle's two
//! columns; a bad K is refused before anything is written.

use crate::common::{repo, run_in, stderr, stdout};
use crate::testutil::random_dataset;
use mnist_blas::engine::EngineKind;
use mnist_blas::metrics::{evaluate, probabilities};
use mnist_blas::model::{Init, Layers, Mlp};
use std::path::Path;

const CLASSES: usize = 10;

fn test_csv() -> String {
    repo("data/sample/test-sample.csv.gz")
        .to_str()
        .unwrap()
        .to_string()
}

/// Train a small model `m.npz` in `dir` on the bundled sample.
fn train(dir: &Path) {
    let data = repo("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir,
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--layers",
            "16",
            "--epochs",
            "2",
            "--model",
            "m.npz",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `predict --model m.npz --data <test sample> --out OUT` plus `extra`, in `dir`.
fn predict(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let data = test_csv();
    let mut args = vec!["predict", "--model", "m.npz", "--data", &data, "--out", out];
    args.extend_from_slice(extra);
    run_in(dir, &args)
}

/// Index of the largest value, the first on ties.
fn argmax(v: &[f64]) -> usize {
    (1..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

#[test]
fn probabilities_and_top_k_columns_agree_with_the_label() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path());
    let o = predict(
        dir.path(),
        "probs.csv",
        &["--probabilities", "--top-k", "3"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(dir.path().join("probs.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "ImageId,Label,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9,top1,p_top1,top2,p_top2,top3,p_top3"
    );
    assert_eq!(lines.len(), 1 + 1000);
    let mut unsure = 0;
    for (i, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 2 + CLASSES + 2 * 3, "{line}");
        assert_eq!(f[0].parse::<usize>().unwrap(), i + 1, "{line}");
        let label: usize = f[1].parse().unwrap();
        let p: Vec<f64> = f[2..2 + CLASSES]
            .iter()
            .map(|s| {
                // Fixed precision: six decimals.
                assert_eq!(s.split_once('.').unwrap().1.len(), 6, "{line}");
                s.parse().unwrap()
            })
            .collect();
        assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)), "{line}");
        let sum: f64 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "row {} sums to {sum}", i + 1);
        // Printed to six decimals, two close probabilities may print
        // equal: the label is then one of the largest, and the lower one
        // unless the rounding merged them.
        assert_eq!(p[label], p[argmax(&p)], "{line}");
        unsure += (p[label] < 0.5) as usize;
        let top: Vec<(usize, f64)> = f[2 + CLASSES..]
            .chunks(2)
            .map(|c| (c[0].parse().unwrap(), c[1].parse().unwrap()))
            .collect();
        assert_eq!(top[0].0, label, "top1 is Label: {line}");
        for (r, &(class, prob)) in top.iter().enumerate() {
            assert_eq!(prob, p[class], "p_top{} is p{class}: {line}", r + 1);
        }
        // (Ties among the unrounded values go to the lower label: the unit
        // test of `ranked` holds that; printed values that round equal may
        // come in either order.)
        for pair in top.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "not descending: {line}");
            assert_ne!(pair[0].0, pair[1].0, "a class twice: {line}");
        }
        // No class outside the top 3 is more probable than the third.
        for (c, &v) in p.iter().enumerate() {
            if top.iter().all(|&(t, _)| t != c) {
                assert!(v <= top[2].1, "p{c} beats top3: {line}");
            }
        }
    }
    // A model trained for two epochs is unsure of some test digits, and
    // the summary counts exactly those.
    assert!(unsure > 0);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{unsure} of 1,000 predictions below 50% confidence\n"
        )),
        "{out}"
    );
}

#[test]
fn without_the_flags_the_submission_stays_two_columns_with_the_same_labels() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path());
    let o = predict(dir.path(), "sub.csv", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("see --probabilities"), "{out}");
    let sub = std::fs::read_to_string(dir.path().join("sub.csv")).unwrap();
    let lines: Vec<&str> = sub.lines().collect();
    assert_eq!(lines[0], "ImageId,Label");
    assert_eq!(lines.len(), 1 + 1000);
    for (i, line) in lines[1..].iter().enumerate() {
        let (id, label) = line.split_once(',').unwrap();
        assert_eq!(id, (i + 1).to_string());
        assert!(label.parse::<u8>().unwrap() < 10, "{line}");
    }

    // With --top-k 1 each row only gains top1 (equal to Label) and its
    // probability: the first two columns are byte for byte the submission.
    let o = predict(dir.path(), "wide.csv", &["--top-k", "1", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let wide = std::fs::read_to_string(dir.path().join("wide.csv")).unwrap();
    let wide: Vec<&str> = wide.lines().collect();
    assert_eq!(wide[0], "ImageId,Label,top1,p_top1");
    assert_eq!(wide.len(), lines.len());
    for (narrow, wide) in lines.iter().zip(&wide) {
        assert!(
            wide.starts_with(&format!("{narrow},")),
            "{narrow} vs {wide}"
        );
    }
}

#[test]
fn a_bad_top_k_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    Mlp::init(&Layers::one(10), Init::He, 1)
        .unwrap()
        .save_npz(&dir.path().join("m.npz"))
        .unwrap();
    std::fs::write(dir.path().join("kept.csv"), b"previous").unwrap();
    for k in ["0", "11", "-1", "three"] {
        for out in ["new.csv", "kept.csv"] {
            let o = predict(dir.path(), out, &["--top-k", k, "--probabilities"]);
            let err = stderr(&o);
            // A usage error, as clap reports every one: exit 2, one line
            // naming the flag, then clap's pointer to --help.
            assert_eq!(o.status.code(), Some(2), "--top-k {k}: {err}");
            let first = err.lines().next().unwrap_or("");
            assert!(
                first.starts_with("error: ")
                    && first.contains("--top-k")
                    && first.contains("from 1 to 10"),
                "--top-k {k}: {err}"
            );
            assert_eq!(
                err.lines().filter(|l| !l.trim().is_empty()).count(),
                2,
                "--top-k {k}: {err}"
            );
            assert_eq!(stdout(&o), "", "--top-k {k}");
        }
        assert!(!dir.path().join("new.csv").exists(), "--top-k {k}");
        assert_eq!(
            std::fs::read(dir.path().join("kept.csv")).unwrap(),
            b"previous"
        );
    }
}

/// The probabilities `predict` writes are the ones `evaluate` takes its
/// predictions from, for every engine and across chunks (2,500 rows is
/// more than two of `evaluate`'s chunks).
#[test]
fn probabilities_argmax_is_evaluates_prediction_on_every_engine() {
    let set = random_dataset(2500, 17);
    let model = Mlp::init(&Layers::one(32), Init::He, 3).unwrap();
    for kind in [EngineKind::Blas, EngineKind::Naive, EngineKind::Sparse] {
        let engine = kind.build();
        let probs = probabilities(engine.as_ref(), &model, &set);
        assert_eq!(probs.dim(), (2500, CLASSES), "{kind}");
        let predictions = evaluate(engine.as_ref(), &model, &set).predictions;
        for (r, row) in probs.rows().into_iter().enumerate() {
            let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            assert!(
                (row.iter().sum::<f64>() - 1.0).abs() < 1e-5,
                "{kind} row {r}"
            );
            assert_eq!(argmax(&row), predictions[r] as usize, "{kind} row {r}");
        }
    }
}
