//! How a run is cut into steps, and the learning rate at each step.

/// How the data is cut into steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "schedule", rename_all = "kebab-case")]
pub enum Schedule {
    /// Every step sees the whole training set (the notebook).
    FullBatch { iterations: usize },
    /// Shuffled mini-batches, reshuffled every epoch; the last batch of an
    /// epoch may be short.
    MiniBatch { epochs: usize, batch_size: usize },
}

impl Schedule {
    /// What a run counts: iterations (full batch) or epochs.
    pub fn units(self) -> usize {
        match self {
            Schedule::FullBatch { iterations } => iterations,
            Schedule::MiniBatch { epochs, .. } => epochs,
        }
    }

    /// The name of one unit: "iteration" or "epoch".
    pub fn unit(self) -> &'static str {
        match self {
            Schedule::FullBatch { .. } => "iteration",
            Schedule::MiniBatch { .. } => "epoch",
        }
    }
}

/// Learning-rate schedule over the whole run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate at every step (the notebook).
    Constant,
    /// Linear warm-up over the first 10% of steps, then cosine decay to 0.
    /// With only 10 hidden units, full-size Adam steps at the start can kill
    /// ReLU units for good (seed 3 lost 3 of 10 and ended at 91.5%); the
    /// warm-up keeps them alive, the decay lets the weights settle.
    Cosine,
}

/// Fraction of the steps spent warming up under [`LrSchedule::Cosine`].
pub const WARMUP_FRACTION: f64 = 0.1;

impl LrSchedule {
    /// The rate for step `step` (0-based) of `total`.
    pub fn rate(self, lr: f32, step: usize, total: usize) -> f32 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let total = total.max(1);
                let t = step as f64 / total as f64;
                let warm_steps = (WARMUP_FRACTION * total as f64).ceil().max(1.0);
                let warm = ((step + 1) as f64 / warm_steps).min(1.0);
                (warm * lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_peaks_and_decays_to_zero() {
        let s = LrSchedule::Cosine;
        let total = 1000;
        assert!((s.rate(1.0, 0, total) - 0.01).abs() < 1e-3, "starts small");
        let peak = (0..total)
            .map(|i| s.rate(1.0, i, total))
            .fold(0.0f32, f32::max);
        assert!(peak > 0.95 && peak <= 1.0, "{peak}");
        assert!(
            s.rate(1.0, 50, total) < s.rate(1.0, 99, total),
            "rises during warm-up"
        );
        assert!(
            s.rate(1.0, 500, total) > s.rate(1.0, 900, total),
            "decays after"
        );
        assert!(s.rate(1.0, total - 1, total) < 1e-4, "ends near zero");
        assert_eq!(LrSchedule::Constant.rate(0.1, 7, 10), 0.1);
    }
}
