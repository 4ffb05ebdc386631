//! Update rules: plain SGD (the notebook's gradient descent), SGD with
//! momentum, and Adam with optional decoupled weight decay (AdamW).

use crate::model::{Gradients, Layers, Mlp};
use crate::simd::multiversion;
use rayon::prelude::*;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `w -= lr * g` (full-batch: the notebook's gradient descent).
    Sgd,
    /// Heavy-ball momentum: `v = mu v + g; w -= lr v`.
    Momentum,
    /// Adam (Kingma & Ba), bias-corrected, beta1 0.9, beta2 0.999, eps 1e-8;
    /// AdamW (Loshchilov & Hutter) with `--weight-decay`.
    Adam,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
        }
    }
}

/// An optimizer and its state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (AdamW): each step first multiplies every
    /// parameter by `1 - lr * weight_decay`, as PyTorch's `AdamW` does.
    pub weight_decay: f32,
    /// Steps taken (Adam's bias correction needs it).
    pub t: u64,
    /// First moment (momentum's velocity, Adam's m).
    pub m: Gradients,
    /// Second moment (Adam's v).
    pub v: Gradients,
}

impl Optimizer {
    /// An optimizer for a network of shape `layers`, with zero moments
    /// (empty ones for those `kind` does not keep).
    pub fn new(kind: OptimizerKind, lr: f32, momentum: f32, layers: &Layers) -> Self {
        let moment = |keeps: bool| {
            if keeps {
                Mlp::zeros(layers)
            } else {
                Mlp::empty()
            }
        };
        Optimizer {
            kind,
            lr,
            momentum,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            t: 0,
            m: moment(kind != OptimizerKind::Sgd),
            v: moment(kind == OptimizerKind::Adam),
        }
    }

    /// Count one step and return its update rule, with the scalars every
    /// weight of this step shares. [`Optimizer::step`] applies it to a
    /// model; a resident trainer (`engine::ResidentTrainer`) applies it to
    /// the weights in its own layout, through the same per-weight functions.
    pub fn next_rule(&mut self) -> Rule {
        self.t += 1;
        let lr = self.lr;
        match self.kind {
            OptimizerKind::Sgd => Rule::Sgd { lr },
            OptimizerKind::Momentum => Rule::Momentum {
                lr,
                mu: self.momentum,
            },
            OptimizerKind::Adam => {
                // Bias corrections in f64: 1 - beta^t loses digits in f32.
                // Folded into two scalars (as PyTorch does), so that each
                // weight costs one square root and one division:
                // lr * (m / c1) / (sqrt(v / c2) + eps)
                //   = (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps).
                let (b1, b2) = (self.beta1, self.beta2);
                let c1 = 1.0 - (b1 as f64).powi(self.t as i32);
                let c2 = 1.0 - (b2 as f64).powi(self.t as i32);
                Rule::Adam(AdamConsts {
                    // Exactly 1 without decay, so plain Adam's bits are
                    // unchanged by the multiplication.
                    keep: 1.0 - lr * self.weight_decay,
                    step: (lr as f64 / c1) as f32,
                    b1,
                    b2,
                    eps: self.eps,
                    inv_sqrt_c2: (1.0 / c2.sqrt()) as f32,
                })
            }
        }
    }

    /// Apply one update with mean gradients `g`; whether every parameter
    /// is still finite after it.
    ///
    /// The update is element by element, so it is cut into pieces of
    /// [`PIECE`] parameters that rayon's threads take in any order: the
    /// same arithmetic per element on any thread count, so the same bits.
    /// A wide model's update reads and writes four arrays of millions of
    /// floats each step; on one core it was a fifth of a 784-2048-10 step.
    pub fn step(&mut self, model: &mut Mlp, g: &Gradients) -> bool {
        let rule = self.next_rule();
        let mut moments = (
            self.m.params_mut().into_iter(),
            self.v.params_mut().into_iter(),
        );
        let mut pieces = Vec::new();
        for (w, g) in model.params_mut().into_iter().zip(g.params()) {
            // Rules without a moment have empty moment arrays.
            let m = moments.0.next().unwrap_or_default();
            let v = moments.1.next().unwrap_or_default();
            Piece::cut(Piece { w, m, v, g }, &mut pieces);
        }
        pieces
            .into_par_iter()
            .map(|p| p.apply(&rule))
            .reduce(|| true, |a, b| a & b)
    }
}

/// `rule` on one block of weights `w` with moments `m`, `v` (empty for a
/// rule that keeps none) and mean gradients `g`, as [`Optimizer::step`]
/// applies it; whether the updated weights are all finite.
pub(crate) fn apply_rule(
    rule: &Rule,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
) -> bool {
    Piece { w, m, v, g }.apply(rule)
}

/// `rule` on weights `w` (moments `m`, `v`, empty for a rule that keeps
/// none) with summed gradients `g`: the mean `g * inv` (in place), then the
/// update, in runs of [`PIECE`] as [`Optimizer::step`] cuts them; whether
/// the updated weights are all finite. The resident trainers' update of
/// what they keep in the model's layout.
pub(crate) fn apply_rule_to_sums(
    rule: &Rule,
    (w, m, v, g): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
    inv: f32,
) -> bool {
    let mut finite = true;
    let (mut w, mut m, mut v, mut g) = (w, m, v, g);
    while !w.is_empty() {
        let at = PIECE.min(w.len());
        let (wk, w_rest) = w.split_at_mut(at);
        let (mk, m_rest) = split_run(m, at);
        let (vk, v_rest) = split_run(v, at);
        let (gk, g_rest) = g.split_at_mut(at);
        crate::simd::sum_scaled(gk, &[], inv);
        finite &= apply_rule(rule, wk, mk, vk, gk);
        (w, m, v, g) = (w_rest, m_rest, v_rest, g_rest);
    }
    finite
}

/// `s` before and from `at`; an empty run (a moment the rule does not
/// keep) stays empty on both sides.
pub(crate) fn split_run(s: &mut [f32], at: usize) -> (&mut [f32], &mut [f32]) {
    if s.is_empty() {
        (Default::default(), s)
    } else {
        s.split_at_mut(at)
    }
}

/// Parameters per piece of an update ([`Optimizer::step`]) and of the
/// shards' reduction (`train::shard`): a 784-10-10 model is one piece,
/// done on the calling thread; a piece's four arrays (512 KiB) stay in L2
/// for the finiteness check after the update.
pub(crate) const PIECE: usize = 1 << 15;

/// Matching runs of the weights, the moments (empty for rules that keep
/// none) and the gradients.
struct Piece<'a> {
    w: &'a mut [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    g: &'a [f32],
}

impl<'a> Piece<'a> {
    /// `p` cut into pieces of at most [`PIECE`] parameters, onto `out`.
    fn cut(mut p: Piece<'a>, out: &mut Vec<Piece<'a>>) {
        while p.w.len() > PIECE {
            let split = |s: &'a mut [f32]| s.split_at_mut(PIECE.min(s.len()));
            let (w, w_rest) = split(p.w);
            let (m, m_rest) = split(p.m);
            let (v, v_rest) = split(p.v);
            let (g, g_rest) = p.g.split_at(PIECE);
            out.push(Piece { w, m, v, g });
            p = Piece {
                w: w_rest,
                m: m_rest,
                v: v_rest,
                g: g_rest,
            };
        }
        out.push(p);
    }

    /// The rule on this piece; whether its weights are all finite after.
    fn apply(self, rule: &Rule) -> bool {
        let Piece { w, m, v, g } = self;
        match *rule {
            Rule::Sgd { lr } => w.iter_mut().zip(g).for_each(|(w, &g)| sgd(lr, w, g)),
            Rule::Momentum { lr, mu } => {
                for ((w, v), &g) in w.iter_mut().zip(m.iter_mut()).zip(g) {
                    momentum(lr, mu, w, v, g);
                }
            }
            Rule::Adam(consts) => adam_update(&consts, w, m, v, g),
        }
        crate::simd::all_finite(w)
    }
}

/// One step's update rule and its scalars ([`Optimizer::next_rule`]).
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    Sgd { lr: f32 },
    Momentum { lr: f32, mu: f32 },
    Adam(AdamConsts),
}

/// One Adam step's scalars.
#[derive(Debug, Clone, Copy)]
pub struct AdamConsts {
    /// `1 - lr * weight_decay`: AdamW's decoupled decay.
    keep: f32,
    /// `lr / (1 - beta1^t)`.
    step: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    inv_sqrt_c2: f32,
}

/// SGD on one weight.
#[inline(always)]
pub fn sgd(lr: f32, w: &mut f32, g: f32) {
    *w -= lr * g;
}

/// Heavy-ball momentum on one weight with velocity `v`.
#[inline(always)]
pub fn momentum(lr: f32, mu: f32, w: &mut f32, v: &mut f32, g: f32) {
    *v = mu * *v + g;
    *w -= lr * *v;
}

/// Adam on one weight with moments `m` and `v`.
#[inline(always)]
pub fn adam(k: &AdamConsts, w: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
    *w *= k.keep;
    *m = k.b1 * *m + (1.0 - k.b1) * g;
    *v = k.b2 * *v + (1.0 - k.b2) * g * g;
    *w -= k.step * *m / (v.sqrt() * k.inv_sqrt_c2 + k.eps);
}

multiversion! {
    /// Adam on one parameter block. A plain indexed loop the compiler
    /// vectorises (the division and square root included), compiled for the
    /// widest vectors the CPU has: the same IEEE operations in the same
    /// order at every width, so the same bits. At batch 32 the update of
    /// the 7,960 weights cost as much as the forward and backward passes.
    fn adam_update(k: &AdamConsts, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let n = w.len();
        let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
        for i in 0..n {
            adam(k, &mut w[i], &mut m[i], &mut v[i], g[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Init;

    #[test]
    fn sgd_moves_against_the_gradient() {
        let shape = Layers::parse("3-4").unwrap();
        let mut m = Mlp::init(&shape, Init::Uniform, 0).unwrap();
        let before = m.clone();
        let mut g = Mlp::zeros(&shape);
        g.fill(1.0);
        Optimizer::new(OptimizerKind::Sgd, 0.5, 0.0, &shape).step(&mut m, &g);
        for (b, a) in before.params().iter().zip(m.params()) {
            assert!(b.iter().zip(a).all(|(b, a)| (b - a - 0.5).abs() < 1e-6));
        }
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        // With zero state, Adam's first bias-corrected step is lr * g/|g|.
        let shape = Layers::parse("2-3").unwrap();
        let mut m = Mlp::zeros(&shape);
        let mut g = Mlp::zeros(&shape);
        g.fill(-3.0);
        Optimizer::new(OptimizerKind::Adam, 0.01, 0.0, &shape).step(&mut m, &g);
        assert!(m
            .params()
            .iter()
            .all(|p| p.iter().all(|&w| (w - 0.01).abs() < 1e-6)));
    }

    #[test]
    fn momentum_accumulates_velocity() {
        let shape = Layers::one(2);
        let mut m = Mlp::zeros(&shape);
        let mut g = Mlp::zeros(&shape);
        g.fill(1.0);
        let mut opt = Optimizer::new(OptimizerKind::Momentum, 0.1, 0.9, &shape);
        opt.step(&mut m, &g);
        opt.step(&mut m, &g);
        // -0.1 * 1 - 0.1 * 1.9
        let b2 = m.layers[1].b[0];
        assert!((b2 + 0.29).abs() < 1e-6, "{b2}");
    }

    #[test]
    fn adamw_decays_every_parameter_then_steps() {
        // With zero gradients Adam's step is 0, so only the decay moves the
        // weights: w * (1 - lr * wd) each step, as PyTorch's AdamW.
        let shape = Layers::one(3);
        let mut m = Mlp::init(&shape, Init::Uniform, 4).unwrap();
        let start = m.clone();
        let g = Mlp::zeros(&shape);
        let mut opt = Optimizer::new(OptimizerKind::Adam, 0.1, 0.0, &shape);
        opt.weight_decay = 0.5;
        opt.step(&mut m, &g);
        opt.step(&mut m, &g);
        for (a, b) in start.params().iter().zip(m.params()) {
            for (&a, &b) in a.iter().zip(b) {
                assert!((a * 0.95 * 0.95 - b).abs() < 1e-6, "{a} -> {b}");
            }
        }
        // Without decay the same steps leave the weights exactly as they were.
        let mut plain = start.clone();
        let mut opt = Optimizer::new(OptimizerKind::Adam, 0.1, 0.0, &shape);
        opt.step(&mut plain, &g);
        assert_eq!(plain, start);
    }
}
