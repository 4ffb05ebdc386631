//! Engines: the arithmetic of one forward/backward pass, behind one small
//! interface so the trainer does not care which one runs.
//!
//! - [`blas::BlasEngine`]: f32 matrix products through ndarray (OpenBLAS with
//!   the `blas` feature, matrixmultiply without). The fast path.
//! - [`naive::NaiveEngine`]: plain loops in f64, written to be read. The
//!   oracle that tests hold the fast path to.
//! - [`sparse::SparseEngine`]: f32 over each image's non-zero pixels only;
//!   for mini-batch training it also offers a [`ResidentTrainer`], which
//!   keeps the model in its own layout from step to step.

mod awake;
pub mod blas;
pub mod choice;
pub mod naive;
pub mod sparse;

use crate::model::{Gradients, Layers, Mlp};
use crate::optim::{Optimizer, Rule};
use ndarray::Array2;

/// Rows per shard, the unit of work every engine and trainer shares: a batch
/// is cut into shards of this many rows (the cut depends only on the batch
/// size, never on the thread count) and their gradients are summed in shard
/// order. Big enough that each product is worth a thread and per-shard
/// overhead is small, small enough that a shard's f32 rows (256 x 784 x 4 B
/// = 784 KiB) stay in L2 between the forward and backward products.
pub const SHARD_ROWS: usize = 256;

/// Smallest half a batch is cut into: below it, the products of a half are
/// too small for two cores to beat one.
const MIN_HALF: usize = 64;

/// Rows per shard for a batch of `rows`: [`SHARD_ROWS`], except that a
/// batch of `2 * MIN_HALF` to `SHARD_ROWS` rows is cut into two halves, so
/// that both cores of a laptop work on a batch of 128 (the cut still
/// depends on the batch size alone).
pub fn shard_rows(rows: usize) -> usize {
    if (2 * MIN_HALF..=SHARD_ROWS).contains(&rows) {
        rows.div_ceil(2)
    } else {
        SHARD_ROWS
    }
}

/// Hidden units per piece, about, when an engine cuts a wide first layer's
/// products into pieces of hidden units ([`Pieces`]): a piece of the sparse
/// engine's transposed weights (784 x 256 f32, 784 KiB) then stays in L2
/// while every row of a shard passes over it.
pub const PIECE_UNITS: usize = 256;

/// How an engine cuts a first hidden layer into pieces of hidden units, run
/// in parallel: one piece below `two_from` units, else `hidden /
/// PIECE_UNITS` rounded to the nearest, at least 2. A function of the shape
/// alone, so the bits are the same on any thread count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pieces {
    /// The narrowest first layer cut into two pieces.
    pub two_from: usize,
}

/// The blas engine's pieces: from 384 units, where a piece's products
/// (128 rows x 784 x 192 units at least) are still worth a core.
pub const BLAS_PIECES: Pieces = Pieces { two_from: 384 };

impl Pieces {
    /// How many pieces a first hidden layer of `hidden` units is cut into.
    pub fn count(self, hidden: usize) -> usize {
        if hidden < self.two_from {
            1
        } else {
            ((hidden + PIECE_UNITS / 2) / PIECE_UNITS).max(2)
        }
    }

    /// The hidden units of each piece: nearly equal runs, each starting at
    /// a multiple of 16 (the sparse engine's lanes).
    pub fn bounds(self, hidden: usize) -> Vec<std::ops::Range<usize>> {
        let n = self.count(hidden);
        let start = |k: usize| {
            if k == n {
                hidden
            } else {
                hidden * k / n / 16 * 16
            }
        };
        (0..n).map(|k| start(k)..start(k + 1)).collect()
    }

    /// Rows per shard: a whole batch of up to [`SHARD_ROWS`] rows when the
    /// layer is cut in two pieces or more (the pieces keep the cores busy,
    /// and each piece's products run over all the rows), else
    /// [`shard_rows`].
    pub fn shard_rows(self, rows: usize, hidden: usize) -> usize {
        if self.count(hidden) > 1 {
            SHARD_ROWS
        } else {
            shard_rows(rows)
        }
    }
}

/// `whole` cut at `starts` (ascending, the first 0), into one part per
/// start in the same order: `split(x, at)` returns `x` before and from
/// `at`. How the engines hand each piece of hidden units ([`Pieces`])
/// its own part of an array.
pub(crate) fn cut_at<T>(
    mut whole: T,
    starts: impl DoubleEndedIterator<Item = usize>,
    split: impl Fn(T, usize) -> (T, T),
) -> Vec<T> {
    let mut parts = Vec::new();
    for at in starts.rev() {
        let (rest, part) = split(whole, at);
        parts.push(part);
        whole = rest;
    }
    parts.reverse();
    parts
}

/// `f` with one of this thread's scratch values from `stack`, made on
/// first use. A thread that waits inside a parallel section (rayon runs
/// other work while it waits) may start another call that needs scratch:
/// that call takes a second value rather than finding the first borrowed.
pub(crate) fn with_scratch<T: Default, R>(
    stack: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut scratch = stack.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    let out = f(&mut scratch);
    stack.with(|s| s.borrow_mut().push(scratch));
    out
}

/// Loss and accuracy counts of one pass over some rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Sum over rows of the cross-entropy loss.
    pub loss_sum: f64,
    /// Rows whose arg-max prediction equals the label.
    pub correct: usize,
    pub rows: usize,
}

impl BatchStats {
    pub fn merge(&mut self, other: BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.rows += other.rows;
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.rows.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.rows.max(1) as f64
    }
}

/// One forward/backward implementation.
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Forward and backward over rows `x` (`rows x 784` pixels) with labels
    /// `y`: ADD the summed (not averaged) gradients of the cross-entropy loss
    /// into `grads`, and return the loss and accuracy counts (computed with
    /// the weights before any update).
    ///
    /// Sums rather than means so that shards of a batch can be added up and
    /// divided once by the batch size.
    fn accumulate(&self, model: &Mlp, x: &[u8], y: &[u8], grads: &mut Gradients) -> BatchStats;

    /// Class probabilities, `rows x 10`.
    fn probabilities(&self, model: &Mlp, x: &[u8]) -> Array2<f32>;

    /// Rows per shard for a batch of `rows` on a model of shape `layers`:
    /// [`shard_rows`], unless the engine keeps the cores busy inside one
    /// shard for that shape. A function of the batch size and the shape
    /// alone, never of the thread count.
    fn shard_rows(&self, rows: usize, _layers: &Layers) -> usize {
        shard_rows(rows)
    }

    /// Convert rows `x` once into the form this engine computes from
    /// fastest, for many [`Engine::accumulate_prepared`] calls on the same
    /// rows (full-batch training passes over one batch hundreds of times).
    /// `None` when the engine has nothing to gain for a model of shape
    /// `layers`: callers then pass the rows raw.
    fn prepare(&self, _x: &[u8], _layers: &Layers) -> Option<PreparedRows> {
        None
    }

    /// [`Engine::accumulate`] over rows this engine prepared: the same
    /// result, bit for bit.
    fn accumulate_prepared(
        &self,
        _model: &Mlp,
        _rows: &PreparedRows,
        _y: &[u8],
        _grads: &mut Gradients,
    ) -> BatchStats {
        unreachable!("the {} engine prepares no rows", self.kind())
    }

    /// A mini-batch trainer over rows `x` (labels `y`), for batches of at
    /// most `batch_size` rows, that keeps the model,
    /// the optimizer's state and the rows in this engine's own layout from
    /// step to step, starting from `model` and `optimizer`. `None` when the
    /// engine has none: the trainer then calls [`Engine::accumulate`] and
    /// [`Optimizer::step`] on the model itself.
    fn resident(
        &self,
        _x: &[u8],
        _y: &[u8],
        _batch_size: usize,
        _model: &Mlp,
        _optimizer: &Optimizer,
    ) -> Option<Box<dyn ResidentTrainer>> {
        None
    }
}

/// See [`Engine::resident`]. At batch 32 a step is a few microseconds of
/// arithmetic, and converting the weights and gradients between the model's
/// layout and the engine's each step cost as much again.
pub trait ResidentTrainer {
    /// One optimizer step on the rows numbered `batch`: mean gradients over
    /// them, then `rule` (from [`Optimizer::next_rule`]). The statistics are
    /// computed with the weights before the update. The update itself may
    /// be applied as late as the next call or [`ResidentTrainer::write_back`].
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep;

    /// The rows of the step after the next [`ResidentTrainer::step`] call,
    /// when known: a hint to start loading them, with no effect on results.
    fn upcoming(&mut self, _batch: &[usize]) {}

    /// Apply any update still pending, and write the weights and the
    /// optimizer's moments back into `model` and `optimizer`, exactly.
    /// Whether every update so far left the weights finite.
    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool;
}

/// What one [`ResidentTrainer::step`] reports.
#[derive(Debug, Clone, Copy)]
pub struct ResidentStep {
    pub stats: BatchStats,
    /// Whether every update applied so far left the weights finite.
    pub finite: bool,
}

/// Rows an engine has converted ahead of time (see [`Engine::prepare`]).
pub enum PreparedRows {
    /// Non-zero pixels by row and by pixel.
    Sparse(sparse::SparseRows),
}

impl PreparedRows {
    pub fn rows(&self) -> usize {
        match self {
            PreparedRows::Sparse(s) => s.rows(),
        }
    }
}

/// Which engine to run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The fastest for the network's shape and the data, by a fixed rule
    /// (no timing: the same run always gets the same engine).
    Auto,
    /// f32 matrix products (OpenBLAS when built with `--features blas`).
    Blas,
    /// Plain f64 loops: slow, simple, the reference.
    Naive,
    /// f32 over each image's non-zero pixels only (~5x fewer multiply-adds).
    Sparse,
}

impl EngineKind {
    /// The engine; `Auto` must have been resolved by [`choice::choose`].
    pub fn build(self) -> Box<dyn Engine> {
        match self {
            EngineKind::Auto => unreachable!("--engine auto is resolved before a run starts"),
            EngineKind::Blas => Box::new(blas::BlasEngine),
            EngineKind::Naive => Box::new(naive::NaiveEngine),
            EngineKind::Sparse => Box::new(sparse::SparseEngine),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Blas => "blas",
            EngineKind::Naive => "naive",
            EngineKind::Sparse => "sparse",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `pixel / 255` for every byte value, computed once: exact (one correctly
/// rounded division each) and a table look-up instead of a division per pixel.
pub(crate) fn pixel_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| i as f32 / 255.0))
}

/// Index of the largest value, the first on ties (as numpy's `argmax`).
/// Written with selects rather than a branch per element: which element
/// wins is data, and a mispredicted branch per row cost more than the rest
/// of the comparison.
#[inline]
pub(crate) fn argmax(v: &[f32]) -> usize {
    let (mut best, mut best_value) = (0, v[0]);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let better = x > best_value;
        best = if better { i } else { best };
        best_value = if better { x } else { best_value };
    }
    best
}

/// What the linear-algebra backend is, for the run summary.
pub fn backend_description() -> String {
    if cfg!(feature = "blas") {
        format!("OpenBLAS ({})", crate::threads::openblas_config())
    } else {
        "ndarray/matrixmultiply (pure Rust; build with --features blas for OpenBLAS)".to_string()
    }
}

/// Hint the cache lines of `data` into L1.
#[inline(always)]
pub(crate) fn prefetch_lines<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let start = data.as_ptr().cast::<i8>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults, and the address is inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
