//! The end-of-sweep report: the best runs as a table, and mean ± std of
//! held-out accuracy over seeds for each configuration run with several.

use super::results::RunResult;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Hyperparameter columns that take more than one value among `rows`.
pub fn swept_params(rows: &[RunResult]) -> Vec<String> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    first
        .params()
        .map(|(name, _)| name.clone())
        .filter(|name| {
            let v0 = first.text(name);
            rows.iter().any(|r| r.text(name) != v0)
        })
        .collect()
}

/// Ok runs, best held-out accuracy first (ties: lower held-out loss, then
/// key); runs without held-out rows (`--split 1`) after them, best train
/// accuracy first.
pub fn ranked(rows: &[RunResult]) -> Vec<&RunResult> {
    let mut ok: Vec<&RunResult> = rows.iter().filter(|r| r.is_ok()).collect();
    let num = |r: &RunResult, name: &str, none: f64| r.num(name).unwrap_or(none);
    let acc = |r: &RunResult| num(r, "heldout_accuracy", f64::NEG_INFINITY);
    let loss = |r: &RunResult| num(r, "heldout_loss", f64::INFINITY);
    let train = |r: &RunResult| num(r, "train_accuracy", f64::NEG_INFINITY);
    ok.sort_by(|a, b| {
        acc(b)
            .total_cmp(&acc(a))
            .then(loss(a).total_cmp(&loss(b)))
            .then(train(b).total_cmp(&train(a)))
            .then(a.key().cmp(&b.key()))
    });
    ok
}

/// A plain-text table: columns padded to their widest cell.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|j| {
            rows.iter()
                .map(|r| r[j].chars().count())
                .chain([header[j].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).unwrap();
    }
    out
}

/// The `n` best runs: swept hyperparameters, accuracies, losses, best epoch, time.
pub fn top_table(rows: &[RunResult], swept: &[String], n: usize) -> String {
    let mut header: Vec<String> = vec!["#".into(), "key".into()];
    header.extend(swept.iter().cloned());
    header.extend(
        [
            "heldout_acc",
            "heldout_loss",
            "train_acc",
            "best_epoch",
            "seconds",
        ]
        .map(String::from),
    );
    let fmt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    let body: Vec<Vec<String>> = ranked(rows)
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, r)| {
            let mut cells = vec![(i + 1).to_string(), r.key()];
            cells.extend(swept.iter().map(|p| r.text(p)));
            cells.extend([
                fmt(r.num("heldout_accuracy"), 4),
                fmt(r.num("heldout_loss"), 4),
                fmt(r.num("train_accuracy"), 4),
                r.text("best_epoch"),
                fmt(r.num("seconds"), 1),
            ]);
            cells
        })
        .collect();
    table(&header, &body)
}

/// Held-out accuracy over the seeds of one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedGroup {
    /// The configuration without its seed, as `name=value` of swept columns.
    pub label: String,
    pub runs: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a single run.
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// Ok runs grouped by every hyperparameter but the seed, best mean first.
pub fn seed_groups(rows: &[RunResult], swept: &[String]) -> Vec<SeedGroup> {
    let mut groups: BTreeMap<String, (String, Vec<f64>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.is_ok()) {
        let Some(acc) = r.num("heldout_accuracy") else {
            continue;
        };
        let id: Vec<String> = r
            .params()
            .filter(|(n, _)| n != "seed")
            .map(|(n, _)| format!("{n}={}", r.text(n)))
            .collect();
        // Name the swept columns; with only seeds swept, the main settings.
        let mut names: Vec<&str> = swept
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "seed")
            .collect();
        if names.is_empty() {
            names = vec![
                "layers",
                "optimizer",
                "lr",
                "batch_size",
                "epochs",
                "iterations",
            ];
        }
        let label: Vec<String> = names
            .iter()
            .filter(|n| !r.text(n).is_empty())
            .map(|n| format!("{n}={}", r.text(n)))
            .collect();
        groups
            .entry(id.join(" "))
            .or_insert_with(|| (label.join(" "), Vec::new()))
            .1
            .push(acc);
    }
    let mut out: Vec<SeedGroup> = groups
        .into_values()
        .map(|(label, accs)| {
            let n = accs.len() as f64;
            let mean = accs.iter().sum::<f64>() / n;
            let var = if accs.len() > 1 {
                accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            SeedGroup {
                label: if label.is_empty() {
                    "(all)".into()
                } else {
                    label
                },
                runs: accs.len(),
                mean,
                std: var.sqrt(),
                min: accs.iter().cloned().fold(f64::INFINITY, f64::min),
                max: accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect();
    out.sort_by(|a, b| b.mean.total_cmp(&a.mean));
    out
}

pub fn seed_table(groups: &[SeedGroup]) -> String {
    let header: Vec<String> = [
        "configuration",
        "seeds",
        "heldout_acc mean ± std",
        "min",
        "max",
    ]
    .map(String::from)
    .to_vec();
    let body: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.label.clone(),
                g.runs.to_string(),
                format!("{:.4} ± {:.4}", g.mean, g.std),
                format!("{:.4}", g.min),
                format!("{:.4}", g.max),
            ]
        })
        .collect();
    table(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn row(key: &str, heldout: Value, train: f64) -> RunResult {
        RunResult {
            columns: vec![
                ("key".into(), json!(key)),
                ("status".into(), json!("ok")),
                ("heldout_accuracy".into(), heldout),
                ("train_accuracy".into(), json!(train)),
            ],
        }
    }

    #[test]
    fn runs_without_held_out_rows_rank_after_the_others_by_train_accuracy() {
        let rows = [
            row("a", Value::Null, 0.90),
            row("b", json!(0.80), 0.85),
            row("c", Value::Null, 0.95),
            row("d", json!(0.82), 0.81),
        ];
        let keys: Vec<String> = ranked(&rows).iter().map(|r| r.key()).collect();
        assert_eq!(keys, ["d", "b", "c", "a"]);
    }
}
