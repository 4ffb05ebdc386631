//! An engine's resident mini-batch trainer against the generic path (the
//! engine's `accumulate` through `ShardBuffers`, then `Optimizer::step` on
//! the model), stepped together on the same rows: the sparse engine's
//! (tests/it/sparse.rs) and the blas engine's (below).

use crate::common::{bits, pool};
use crate::testutil::random_batch;
use mnist_blas::data::FEATURES;
use mnist_blas::engine::{BatchStats, Engine, EngineKind, ResidentStep, ResidentTrainer};
use mnist_blas::model::{Init, Layers, Mlp};
use mnist_blas::optim::{Optimizer, OptimizerKind};

/// The two paths, from the same start.
pub struct Lockstep {
    engine: Box<dyn Engine>,
    rows: usize,
    generic: (Mlp, Optimizer),
    opt: Optimizer,
    resident: Box<dyn ResidentTrainer>,
    shards: mnist_blas::train::shard::ShardBuffers,
    grads: Mlp,
    rng: mnist_blas::rng::SeededRng,
    /// The rows the resident trainer was told come next.
    upcoming: Option<Vec<usize>>,
}

/// Whether [`Lockstep::step`] tells the resident trainer the rows that
/// truly come next, or others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hints {
    True,
    False,
}

impl Lockstep {
    pub fn new(
        kind: EngineKind,
        (x, y): (&[u8], &[u8]),
        batch_size: usize,
        start: &Mlp,
        rule: OptimizerKind,
        seed: u64,
    ) -> Lockstep {
        let engine = kind.build();
        let layers = start.shape();
        let opt = Optimizer::new(rule, 0.01, 0.9, &layers);
        let resident = engine
            .resident(x, y, batch_size, start, &opt)
            .unwrap_or_else(|| panic!("the {kind:?} engine has a resident trainer for {layers}"));
        Lockstep {
            engine,
            rows: y.len(),
            generic: (start.clone(), opt.clone()),
            opt,
            resident,
            shards: Default::default(),
            grads: Mlp::zeros(&layers),
            rng: mnist_blas::rng::SeededRng::new(seed, mnist_blas::rng::Stream::Shuffle),
            upcoming: None,
        }
    }

    /// Step `step` on `batch` random rows of `x`, `y` on both paths, at a
    /// rate that falls from step to step as a schedule's does: the generic
    /// path's counts and the resident trainer's step. With `next`, the
    /// resident trainer is first told the next step's rows (`next` of
    /// them) as the training loop tells it; with `hints` false it is told
    /// other rows than the next step then takes.
    pub fn step(
        &mut self,
        (x, y): (&[u8], &[u8]),
        (batch, next): (usize, Option<usize>),
        step: usize,
        hints: Hints,
    ) -> (BatchStats, ResidentStep) {
        let mut order = self
            .upcoming
            .take()
            .unwrap_or_else(|| self.rng.permutation(self.rows));
        order.truncate(batch);
        if let Some(next) = next {
            let mut coming = self.rng.permutation(self.rows);
            coming.truncate(next);
            self.resident.upcoming(&coming);
            if hints == Hints::True {
                self.upcoming = Some(coming);
            }
        }
        self.step_on((x, y), &order, step)
    }

    /// Step `step` on every row in order, as full-batch training steps.
    pub fn step_on_every_row(
        &mut self,
        (x, y): (&[u8], &[u8]),
        step: usize,
    ) -> (BatchStats, ResidentStep) {
        let every: Vec<usize> = (0..self.rows).collect();
        self.step_on((x, y), &every, step)
    }

    fn step_on(
        &mut self,
        (x, y): (&[u8], &[u8]),
        idx: &[usize],
        step: usize,
    ) -> (BatchStats, ResidentStep) {
        let (mut xb, mut yb) = (Vec::new(), Vec::new());
        for &i in idx {
            xb.extend_from_slice(&x[i * FEATURES..(i + 1) * FEATURES]);
            yb.push(y[i]);
        }
        let lr = 0.01 / (1 + step) as f32;
        self.generic.1.lr = lr;
        self.opt.lr = lr;
        let (model, opt) = (&mut self.generic.0, &mut self.generic.1);
        let want = self.shards.mean_gradients(
            self.engine.as_ref(),
            model,
            &xb,
            &yb,
            None,
            &mut self.grads,
        );
        assert!(opt.step(model, &self.grads), "the generic path diverged");
        (want, self.resident.step(idx, &self.opt.next_rule()))
    }

    /// The resident trainer's model and optimizer written back, beside the
    /// generic path's.
    pub fn finish(mut self) -> ((Mlp, Optimizer), (Mlp, Optimizer)) {
        let mut model = Mlp::zeros(&self.generic.0.shape());
        assert!(self.resident.write_back(&mut model, &mut self.opt));
        ((model, self.opt), self.generic)
    }

    /// [`Lockstep::finish`], asserting that training moved the weights
    /// from `start` and that both paths hold the same weights and moments,
    /// bit for bit.
    pub fn finish_exactly(self, start: &Mlp, at: &str) {
        let ((model, opt), generic) = self.finish();
        assert_ne!(
            bits(&model),
            bits(start),
            "{at}: training moved the weights"
        );
        assert_eq!(bits(&model), bits(&generic.0), "{at}: weights");
        assert_eq!(bits(&opt.m), bits(&generic.1.m), "{at}: first moment");
        assert_eq!(bits(&opt.v), bits(&generic.1.v), "{at}: second moment");
    }
}

/// A step of both paths gave the same statistics, bit for bit.
pub fn assert_same_step(want: &BatchStats, got: &ResidentStep, at: &str) {
    assert!(got.finite, "{at}");
    assert_eq!(got.stats.rows, want.rows, "{at}");
    assert_eq!(got.stats.correct, want.correct, "{at}");
    assert_eq!(
        got.stats.loss_sum.to_bits(),
        want.loss_sum.to_bits(),
        "{at}"
    );
}

/// `kind`'s resident trainer against the generic path, for each
/// `(layers, batch size, batches)` case, each update rule, pools of 1 and 2
/// threads, and the next step's rows told truly or falsely: step by step
/// the same statistics, then the same weights and moments, bit for bit.
pub fn steps_match_the_generic_path_exactly(kind: EngineKind, cases: &[(&str, usize, &[usize])]) {
    let rows = 400;
    let (x, y) = random_batch(rows, 23);
    for threads in [1, 2] {
        let pool = pool(threads);
        for &(layers, batch_size, batches) in cases {
            for (rule, hints) in [
                (OptimizerKind::Adam, Hints::True),
                (OptimizerKind::Sgd, Hints::True),
                (OptimizerKind::Momentum, Hints::True),
                (OptimizerKind::Adam, Hints::False),
            ] {
                let layers = Layers::parse(layers).unwrap();
                let at =
                    format!("{kind:?}, threads {threads}, layers {layers}, {rule:?}, {hints:?}");
                pool.install(|| {
                    let start = Mlp::init(&layers, Init::He, 5).unwrap();
                    let mut both = Lockstep::new(kind, (&x, &y), batch_size, &start, rule, 4);
                    for (step, &batch) in batches.iter().enumerate() {
                        let next = batches.get(step + 1).copied();
                        let (want, got) = both.step((&x, &y), (batch, next), step, hints);
                        assert_same_step(&want, &got, &format!("{at}, step {step}"));
                    }
                    both.finish_exactly(&start, &at);
                });
            }
        }
    }
}

/// The blas engine's resident trainer (batches of one shard, the first
/// layer in pieces, each piece's gradient and update in one task) against
/// the generic path, exactly: one hidden layer in two and in three pieces,
/// a deep model of two pieces, with full and partial batches (a step whose
/// next rows are as many computes their first layer ahead; one followed by
/// fewer does not).
#[test]
fn blas_resident_steps_match_the_generic_path_exactly() {
    steps_match_the_generic_path_exactly(
        EngineKind::Blas,
        &[
            ("512", 128, &[128, 128, 128, 17, 128, 128][..]),
            ("700", 256, &[256, 256, 100, 256][..]),
            ("400-24", 64, &[64, 64, 9, 64, 64][..]),
        ],
    );
}

/// Where the blas engine keeps no resident trainer: a first layer of one
/// piece (its batches are cut into shards instead), and batches over one
/// shard.
#[test]
fn blas_has_a_resident_trainer_only_for_one_shard_in_pieces() {
    let (x, y) = random_batch(300, 3);
    let opt = |m: &Mlp| Optimizer::new(OptimizerKind::Adam, 0.01, 0.9, &m.shape());
    let has = |layers: &str, batch: usize| {
        let m = Mlp::init(&Layers::parse(layers).unwrap(), Init::He, 1).unwrap();
        EngineKind::Blas
            .build()
            .resident(&x, &y, batch, &m, &opt(&m))
            .is_some()
    };
    assert!(has("512", 128));
    assert!(has("512-64", 256));
    assert!(!has("256", 128));
    assert!(!has("256-128", 128));
    assert!(!has("512", 300));
}
