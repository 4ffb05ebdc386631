//! The blas engine's resident trainer, for batches of one shard whose first
//! layer is cut into pieces ([`BLAS_PIECES`], from 384 units): the training
//! rows, the model and the optimizer's moments stay here from step to step.
//!
//! A step has one parallel phase, one task per piece of the first layer:
//! the piece's gradient `dz1^T x` into a buffer of its own, its update (and
//! its biases') while that buffer is in L2, then the next step's forward
//! product for the piece, when [`ResidentTrainer::upcoming`] told the next
//! rows. Against the generic path (`accumulate` through `ShardBuffers`,
//! then [`Optimizer::step`]), a step no longer zeroes `w1`'s gradient,
//! scales it in a pass of its own or reads it back from memory, and wakes
//! the pool's threads once instead of five times: on this VM a pool thread
//! asleep between phases took long enough to wake that the other core sat
//! waiting for it. So the pool's threads spin through the short serial
//! parts instead ([`crate::engine::awake`]).
//!
//! Every product, sum and update is the generic path's, in the same order,
//! so the weights and moments are the same bits, on any thread count
//! (tests/it/lockstep.rs holds them to it).

use super::{first_layer, first_layer_piece, Above, BLAS_PIECES};
use crate::data::FEATURES;
use crate::engine::awake::{beside_awake, Running};
use crate::engine::{cut_at, prefetch_lines, ResidentStep, ResidentTrainer};
use crate::model::{Dense, Gradients, Mlp};
use crate::optim::{apply_rule_to_sums, split_run as split, Optimizer, Rule};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::ops::Range;

pub(super) struct BlasTrainer {
    /// Every training row's pixels (`rows x 784`), and the labels.
    pixels: Vec<u8>,
    labels: Vec<u8>,
    model: Mlp,
    /// The optimizer's moments, as [`Optimizer`] keeps them (no layers for
    /// a rule that keeps none).
    m: Mlp,
    v: Mlp,
    /// The first layer's pieces of hidden units, and each one's gradient
    /// buffer (`units x 784`).
    bounds: Vec<Range<usize>>,
    dw1: Vec<Array2<f32>>,
    /// One step's rows as f32 and their labels; everything above the first
    /// layer's product; the gradients of `b1` and the layers above (the
    /// first layer's weight gradient is in `dw1` instead).
    x: Array2<f32>,
    y: Vec<u8>,
    above: Above,
    g: Gradients,
    /// The next step's rows, when [`ResidentTrainer::upcoming`] told them,
    /// and their f32 copy.
    next: Vec<usize>,
    x_next: Array2<f32>,
    /// The rows, in `x`, whose first layer `above` already holds (computed
    /// with the weights as they are now).
    forwarded: Vec<usize>,
}

impl BlasTrainer {
    pub(super) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> BlasTrainer {
        assert_eq!(
            x.len(),
            y.len() * FEATURES,
            "rows and labels differ in length"
        );
        let bounds = BLAS_PIECES.bounds(model.hidden());
        let dw1 = bounds
            .iter()
            .map(|b| Array2::zeros((b.len(), FEATURES)))
            .collect();
        BlasTrainer {
            pixels: x.to_vec(),
            labels: y.to_vec(),
            model: model.clone(),
            m: opt.m.clone(),
            v: opt.v.clone(),
            bounds,
            dw1,
            x: Array2::zeros((0, FEATURES)),
            y: Vec::new(),
            above: Above::default(),
            g: Mlp::zeros(&model.shape()),
            next: Vec::new(),
            x_next: Array2::zeros((0, FEATURES)),
            forwarded: Vec::new(),
        }
    }
}

impl ResidentTrainer for BlasTrainer {
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep {
        let BlasTrainer {
            pixels,
            labels,
            model,
            m,
            v,
            bounds,
            dw1,
            x,
            y,
            above,
            g,
            next,
            x_next,
            forwarded,
        } = self;
        let rows = batch.len();
        if forwarded[..] != *batch {
            gather_f32(pixels, batch, x);
            above.prepare(rows, model);
            first_layer(model, x, above.a1_mut());
        }
        forwarded.clear();
        y.clear();
        y.extend(batch.iter().map(|&r| labels[r]));
        let next = (next.len() == rows).then_some(&next[..]);

        // The layers above, forward, backward and their update (as
        // `Optimizer::step` updates them), and the next rows gathered, side
        // by side.
        let inv = 1.0 / rows as f32;
        let (stats, above_finite) = beside_awake(
            || {
                above.forward(model);
                for layer in &mut g.layers {
                    layer.b.fill(0.0);
                }
                for layer in &mut g.layers[1..] {
                    layer.w.fill(0.0);
                }
                let stats = above.backward(model, y, g);
                above.add_b1_gradient(&mut g.layers[0].b);
                let finite = update_layers(rule, (rest(model), rest(m), rest(v), rest(g)), inv);
                (stats, finite)
            },
            || {
                if let Some(next) = next {
                    gather_f32(pixels, next, x_next);
                }
            },
        );

        // Each piece of the first layer.
        let (w_first, m_first) = (model.layers.first_mut(), m.layers.first_mut());
        let (v_first, g_first) = (v.layers.first_mut(), g.layers.first_mut());
        let (dz1, a1) = above.dz1_and_a1_mut();
        let a1: Vec<Option<ArrayViewMut2<f32>>> = match next {
            Some(_) => cut_at(a1.view_mut(), starts(bounds), |a, at| {
                a.split_at(Axis(1), at)
            })
            .into_iter()
            .map(Some)
            .collect(),
            None => bounds.iter().map(|_| None).collect(),
        };
        let tasks = (pieces_of(w_first, bounds).into_iter())
            .zip(pieces_of(m_first, bounds))
            .zip(pieces_of(v_first, bounds))
            .zip(pieces_of(g_first, bounds))
            .zip(dw1.iter_mut().zip(bounds.iter()).zip(a1))
            .map(|((((w, m), v), g), ((dw, units), a1))| Piece {
                w,
                m,
                v,
                g_b: g.1,
                dw,
                units: units.clone(),
                a1,
            })
            .collect::<Vec<_>>();
        let (rows_now, rows_next) = (&*x, next.map(|_| &*x_next));
        let running = Running::new(tasks.len());
        let first = tasks
            .into_par_iter()
            .map(|p| running.task(|| p.run(rule, inv, (rows_now, dz1), rows_next)))
            .reduce(|| true, |a, b| a & b);
        if let Some(rows) = next {
            std::mem::swap(x, x_next);
            forwarded.extend_from_slice(rows);
        }
        self.next.clear();
        ResidentStep {
            stats,
            finite: first & above_finite,
        }
    }

    fn upcoming(&mut self, batch: &[usize]) {
        self.next.clear();
        self.next.extend_from_slice(batch);
    }

    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool {
        model.clone_from(&self.model);
        optimizer.m.clone_from(&self.m);
        optimizer.v.clone_from(&self.v);
        // Each step reported its own update.
        true
    }
}

/// One piece of the first layer's hidden units in a step's parallel phase:
/// its weights and biases `(w, b)`, their moments (empty for a rule that
/// keeps none), its biases' summed gradient, its gradient buffer, and its
/// run of `a1`'s columns when the next rows are known.
struct Piece<'a> {
    w: (&'a mut [f32], &'a mut [f32]),
    m: (&'a mut [f32], &'a mut [f32]),
    v: (&'a mut [f32], &'a mut [f32]),
    g_b: &'a mut [f32],
    dw: &'a mut Array2<f32>,
    units: Range<usize>,
    a1: Option<ArrayViewMut2<'a, f32>>,
}

impl Piece<'_> {
    /// The piece's gradient, its update, then (with `x_next`) the next
    /// rows' forward product; whether the updated weights are all finite.
    fn run(
        self,
        rule: &Rule,
        inv: f32,
        (x, dz1): (&Array2<f32>, &Array2<f32>),
        x_next: Option<&Array2<f32>>,
    ) -> bool {
        let Piece {
            w,
            m,
            v,
            g_b,
            dw,
            units,
            a1,
        } = self;
        let dz = dz1.slice(s![.., units]);
        general_mat_mul(1.0, &dz.t(), x, 0.0, dw);
        let g_w = dw.as_slice_mut().expect("standard layout");
        let finite = apply_rule_to_sums(rule, (&mut *w.0, m.0, v.0, g_w), inv)
            & apply_rule_to_sums(rule, (&mut *w.1, m.1, v.1, g_b), inv);
        if let (Some(mut a), Some(x)) = (a1, x_next) {
            for mut row in a.rows_mut() {
                row.as_slice_mut().expect("contiguous").copy_from_slice(w.1);
            }
            let units = w.1.len();
            let w = ndarray::ArrayView2::from_shape((units, FEATURES), &*w.0).expect("units x 784");
            first_layer_piece(x, w, a);
        }
        finite
    }
}

/// Where each piece starts, in units.
fn starts(bounds: &[Range<usize>]) -> impl DoubleEndedIterator<Item = usize> + '_ {
    bounds.iter().map(|b| b.start)
}

/// The layers of `a` above the first (none for a moment the rule does not
/// keep).
fn rest(a: &mut Mlp) -> &mut [Dense] {
    a.layers.get_mut(1..).unwrap_or_default()
}

/// A layer's weights and biases flat (empty for `None`).
fn flat(layer: Option<&mut Dense>) -> (&mut [f32], &mut [f32]) {
    match layer {
        Some(l) => (
            l.w.as_slice_mut().expect("standard layout"),
            l.b.as_slice_mut().expect("contiguous"),
        ),
        None => (&mut [], &mut []),
    }
}

/// The first layer's weights and biases cut into the pieces' runs (`units x
/// 784` and `units`); empty runs for `None`.
fn pieces_of<'a>(
    layer: Option<&'a mut Dense>,
    bounds: &[Range<usize>],
) -> Vec<(&'a mut [f32], &'a mut [f32])> {
    let (w, b) = flat(layer);
    let w = cut_at(w, bounds.iter().map(|b| b.start * FEATURES), split);
    let b = cut_at(b, starts(bounds), split);
    w.into_iter().zip(b).collect()
}

/// [`apply_rule_to_sums`] on every weight and bias of `w` (moments `m`, `v`, empty for
/// a rule that keeps none; summed gradients `g`).
fn update_layers(
    rule: &Rule,
    (w, m, v, g): (&mut [Dense], &mut [Dense], &mut [Dense], &mut [Dense]),
    inv: f32,
) -> bool {
    let mut finite = true;
    for (k, (layer, grads)) in w.iter_mut().zip(g).enumerate() {
        let (mw, mb) = flat(m.get_mut(k));
        let (vw, vb) = flat(v.get_mut(k));
        let (w, b) = flat(Some(layer));
        let (gw, gb) = flat(Some(grads));
        finite &= apply_rule_to_sums(rule, (w, mw, vw, gw), inv);
        finite &= apply_rule_to_sums(rule, (b, mb, vb, gb), inv);
    }
    finite
}

/// Rows `batch` of `pixels` as `pixels / 255`, into `x` (resized to
/// `batch.len() x 784`), each as [`super::to_f32`] converts it; the rows
/// [`GATHER_AHEAD`] on hinted into cache first, as they are scattered over
/// the whole training set.
fn gather_f32(pixels: &[u8], batch: &[usize], x: &mut Array2<f32>) {
    if x.nrows() != batch.len() {
        *x = Array2::zeros((batch.len(), FEATURES));
    }
    let row = |r: usize| &pixels[r * FEATURES..(r + 1) * FEATURES];
    for &r in batch.iter().take(GATHER_AHEAD) {
        prefetch_lines(row(r));
    }
    let out = x.as_slice_mut().expect("standard layout");
    for (k, (&r, o)) in batch.iter().zip(out.chunks_exact_mut(FEATURES)).enumerate() {
        if let Some(&ahead) = batch.get(k + GATHER_AHEAD) {
            prefetch_lines(row(ahead));
        }
        crate::simd::pixels_to_f32(row(r), o);
    }
}

/// How many rows ahead [`gather_f32`] prefetches.
const GATHER_AHEAD: usize = 8;
