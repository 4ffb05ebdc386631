//! Evaluating a model on a dataset: predictions, loss, accuracy, confusion.

use crate::data::{Dataset, CLASSES, FEATURES};
use crate::engine::{argmax, BatchStats, Engine};
use crate::model::Mlp;
use ndarray::Array2;
use rayon::prelude::*;

/// Rows per parallel evaluation chunk.
const EVAL_ROWS: usize = 1024;

/// A model's results on a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Predicted class per row.
    pub predictions: Vec<u8>,
    /// Loss/accuracy counts (zero rows when the data has no labels).
    pub stats: BatchStats,
    /// `confusion[true][predicted]` (all zero without labels).
    pub confusion: [[usize; CLASSES]; CLASSES],
}

impl Evaluation {
    /// Per-class (precision, recall, F1), from the confusion matrix.
    pub fn per_class(&self) -> Vec<ClassReport> {
        (0..CLASSES)
            .map(|c| {
                let tp = self.confusion[c][c] as f64;
                let predicted: usize = (0..CLASSES).map(|t| self.confusion[t][c]).sum();
                let actual: usize = self.confusion[c].iter().sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if actual > 0 { tp / actual as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassReport {
                    class: c,
                    precision,
                    recall,
                    f1,
                    support: actual,
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassReport {
    pub class: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// The class probabilities of every row of `data`, `rows x CLASSES`,
/// computed in the same parallel chunks as [`evaluate`]: each row's arg-max
/// (the first on ties) is `evaluate`'s prediction for it.
pub fn probabilities(engine: &dyn Engine, model: &Mlp, data: &Dataset) -> Array2<f32> {
    let chunks: Vec<Array2<f32>> = data
        .pixels
        .par_chunks(EVAL_ROWS * FEATURES)
        .map(|x| engine.probabilities(model, x))
        .collect();
    let mut all = Vec::with_capacity(data.len() * CLASSES);
    for chunk in &chunks {
        all.extend(chunk.iter());
    }
    Array2::from_shape_vec((data.len(), CLASSES), all).expect("one row of probabilities per image")
}

/// Predict every row of `data` (in parallel chunks) and, when it has labels,
/// score the predictions.
pub fn evaluate(engine: &dyn Engine, model: &Mlp, data: &Dataset) -> Evaluation {
    let chunks: Vec<(Vec<u8>, f64)> = data
        .pixels
        .par_chunks(EVAL_ROWS * FEATURES)
        .enumerate()
        .map(|(c, x)| {
            let probs = engine.probabilities(model, x);
            let mut preds = Vec::with_capacity(probs.nrows());
            let mut loss = 0.0;
            for (r, row) in probs.rows().into_iter().enumerate() {
                let best = argmax(row.as_slice().expect("standard layout"));
                preds.push(best as u8);
                if let Some(labels) = &data.labels {
                    let y = labels[c * EVAL_ROWS + r] as usize;
                    loss -= (row[y].max(f32::MIN_POSITIVE) as f64).ln();
                }
            }
            (preds, loss)
        })
        .collect();
    let mut predictions = Vec::with_capacity(data.len());
    let mut stats = BatchStats::default();
    for (p, loss) in chunks {
        predictions.extend(p);
        stats.loss_sum += loss;
    }
    let mut confusion = [[0usize; CLASSES]; CLASSES];
    if let Some(labels) = &data.labels {
        for (&y, &p) in labels.iter().zip(&predictions) {
            confusion[y as usize][p as usize] += 1;
            stats.correct += (y == p) as usize;
        }
        stats.rows = labels.len();
    } else {
        stats.loss_sum = 0.0;
    }
    Evaluation {
        predictions,
        stats,
        confusion,
    }
}
