//! What the two resident trainers share: their state in the padded layouts
//! (the rows gathered once, the model and the optimizer's moments loaded in,
//! and stored back out exactly), and the optimizer's update applied there,
//! on the same per-weight functions as
//! [`Optimizer::step`](crate::optim::Optimizer::step).

use super::layout::{add, Chunk, Scratch, Weights, LANES, ZERO};
use super::row_set::RowSet;
use crate::data::FEATURES;
use crate::model::Mlp;
use crate::optim::{adam, momentum, sgd};
use crate::optim::{Optimizer, Rule};
use crate::simd::multiversion;

/// The rows as a [`RowSet`], and the model and the optimizer's moments in
/// the padded layout. `None` if the rows' non-zeros overflow the row set.
pub(super) fn padded_state(
    x: &[u8],
    y: &[u8],
    model: &Mlp,
    opt: &Optimizer,
) -> Option<(RowSet, Weights, Weights, Weights)> {
    assert_eq!(
        x.len(),
        y.len() * FEATURES,
        "rows and labels differ in length"
    );
    let h = model.hidden();
    let rows = RowSet::gather_parallel(x)?;
    let mut w = Weights::zeros(h);
    w.load(model);
    // An optimizer without a moment keeps it empty (no layers).
    let moment = |saved: &Mlp| {
        let mut padded = Weights::zeros(h);
        if !saved.layers.is_empty() {
            padded.load(saved);
        }
        padded
    };
    Some((rows, w, moment(&opt.m), moment(&opt.v)))
}

/// [`padded_state`]'s inverse: the model and moments back, exactly.
pub(super) fn store_state(
    w: &Weights,
    m: &Weights,
    v: &Weights,
    model: &mut Mlp,
    opt: &mut Optimizer,
) {
    w.store(model);
    for (padded, moment) in [(m, &mut opt.m), (v, &mut opt.v)] {
        if !moment.layers.is_empty() {
            padded.store(moment);
        }
    }
}

/// [`update_block`] on the blocks other than `w1`, then `w2`'s mirror.
pub(super) fn update_small(
    rule: &Rule,
    w: &mut Weights,
    m: &mut Weights,
    v: &mut Weights,
    g: &mut Scratch,
    scale: f32,
) -> bool {
    let finite = [
        update_block(rule, &mut w.b1, &mut m.b1, &mut v.b1, &mut g.g_b1, scale),
        update_block(
            rule,
            &mut w.w2t,
            &mut m.w2t,
            &mut v.w2t,
            &mut g.g_w2t,
            scale,
        ),
        update_block(
            rule,
            std::slice::from_mut(&mut w.b2),
            std::slice::from_mut(&mut m.b2),
            std::slice::from_mut(&mut v.b2),
            std::slice::from_mut(&mut g.g_b2),
            scale,
        ),
    ];
    w.mirror_w2();
    finite.iter().all(|&f| f)
}

multiversion! {
    /// The update `rule` on one block of chunks, with `g` the block's
    /// summed gradient (cleared here); whether the updated weights are all
    /// finite.
    ///
    /// The mean is `(0 + g) * scale`, exactly the generic path's: it adds
    /// each shard's sum to a zeroed buffer, so it computes `(0 + s0) + s1 ...`
    /// where the resident trainers compute `0 + ((s0 + s1) + ...)` (their
    /// shards' sums folded first).
    /// The two differ only when `s0` is -0, and then only in the sign of a
    /// zero partial sum, which the final `0 +` erases.
    pub(super) fn update_block(rule: &Rule, w: &mut [Chunk], m: &mut [Chunk], v: &mut [Chunk], g: &mut [Chunk], scale: f32) -> bool {
        let len = w.len();
        let (m, v, g) = (&mut m[..len], &mut v[..len], &mut g[..len]);
        // `w * 0` is NaN exactly where `w` is infinite or NaN.
        let mut poison = ZERO;
        // One loop per rule, so that no loop has a branch inside.
        match *rule {
            Rule::Sgd { lr } => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        sgd(lr, &mut w[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
            Rule::Momentum { lr, mu } => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        momentum(lr, mu, &mut w[i][l], &mut m[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
            Rule::Adam(ref k) => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        adam(k, &mut w[i][l], &mut m[i][l], &mut v[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
        }
        poison.iter().all(|p| *p == 0.0)
    }
}

/// `(0 + sum) * scale`, leaving `sum` zero for the next step.
#[inline(always)]
fn mean_gradient(sum: &mut Chunk, scale: f32) -> Chunk {
    let mut g = add(&ZERO, sum);
    *sum = ZERO;
    for l in 0..LANES {
        g[l] *= scale;
    }
    g
}
