//! What the sparse engine's generic [`Engine`](crate::engine::Engine) calls
//! run on: each thread's copy of the model in the padded layouts, kept
//! between calls and reloaded only when the weights change, and the loops
//! over raw rows (training and probabilities) that gather each row's
//! non-zeros as they go.

use super::kernels::{accumulate_nonzeros, forward_row, LossSum};
use super::layout::{Scratch, Weights};
use crate::data::{CLASSES, FEATURES};
use crate::engine::{pixel_table, BatchStats};
use crate::model::Mlp;
use crate::simd::multiversion;
use std::cell::RefCell;

/// A thread's copy of the model in the padded layouts and its scratch, for
/// the engine's calls from the generic trainer. Reused across calls: a
/// training loop allocates nothing after its first step.
#[derive(Default)]
pub(super) struct Workspace {
    pub(super) w: Weights,
    pub(super) s: Scratch,
    /// The model the padded copies were made from: a full-batch step hands
    /// each thread the same weights for a dozen shards, so the copy is
    /// redone only when the weights really changed.
    loaded: Option<Mlp>,
}

impl Workspace {
    /// Copy `m` into the padded layouts (unless it is the model already there).
    pub(super) fn load_model(&mut self, m: &Mlp) {
        let h = m.hidden();
        if self.w.hidden != h || self.w.w1t.is_empty() {
            *self = Workspace {
                w: Weights::zeros(h),
                s: Scratch::new(h),
                loaded: None,
            };
        }
        if self.loaded.as_ref().is_some_and(|l| same_bits(l, m)) {
            return;
        }
        self.w.load(m);
        match &mut self.loaded {
            Some(l) => l.clone_from(m),
            None => self.loaded = Some(m.clone()),
        }
    }
}

/// Bit-for-bit equality of two models' weights (`==` would take -0 for +0).
fn same_bits(a: &Mlp, b: &Mlp) -> bool {
    a.params()
        .iter()
        .zip(b.params())
        .all(|(x, y)| same_slice_bits(x, y))
}

/// Bit-for-bit equality of two slices of weights.
pub(super) fn same_slice_bits(x: &[f32], y: &[f32]) -> bool {
    // XORs folded over blocks (which vectorises), leaving at the first
    // block that differs: after an update that is the first block.
    x.len() == y.len()
        && x.chunks(64).zip(y.chunks(64)).all(|(x, y)| {
            let diff = x
                .iter()
                .zip(y)
                .fold(0, |d, (p, q)| d | (p.to_bits() ^ q.to_bits()));
            diff == 0
        })
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Run `f` on this thread's [`Workspace`] with `m` loaded into it.
pub(super) fn with_model<R>(m: &Mlp, f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| {
        let ws = &mut *ws.borrow_mut();
        ws.load_model(m);
        f(ws)
    })
}

/// [`accumulate_nonzeros`] of one raw row (784 bytes).
#[inline(always)]
fn accumulate_row(
    ws: &mut Workspace,
    chunks: usize,
    row: &[u8],
    label: u8,
    stats: &mut BatchStats,
    loss: &mut LossSum,
) {
    let mut nz = std::mem::take(&mut ws.s.nz);
    nz.gather(row);
    let (index, value) = (nz.index(), nz.values());
    let row = (index, value);
    let table = pixel_table();
    accumulate_nonzeros(&ws.w, &mut ws.s, chunks, row, table, label, stats, loss);
    ws.s.nz = nz;
}

multiversion! {
    /// Forward and backward over every row of `x`, adding summed gradients
    /// into the workspace's padded gradient buffers.
    pub(super) fn accumulate_rows(ws: &mut Workspace, x: &[u8], y: &[u8]) -> BatchStats {
        let mut stats = BatchStats { rows: y.len(), ..Default::default() };
        // Plain loops, not closures: a closure handed to an iterator adapter
        // may be compiled outside this function, without its vector features.
        let chunks = ws.w.chunks;
        let mut loss = LossSum::new();
        for (row, &label) in x.chunks_exact(FEATURES).zip(y) {
            if chunks == 1 {
                accumulate_row(ws, 1, row, label, &mut stats, &mut loss);
            } else {
                accumulate_row(ws, chunks, row, label, &mut stats, &mut loss);
            }
        }
        stats.loss_sum = loss.finish();
        stats
    }
}

multiversion! {
    /// Class probabilities of every row of `x` into `out` (`rows x 10`).
    pub(super) fn probabilities_rows(ws: &mut Workspace, x: &[u8], out: &mut [f32]) {
        let table = pixel_table();
        let chunks = ws.w.chunks;
        let mut nz = std::mem::take(&mut ws.s.nz);
        for (row, o) in x.chunks_exact(FEATURES).zip(out.chunks_exact_mut(CLASSES)) {
            nz.gather(row);
            let (index, value) = (nz.index(), nz.values());
            let p = if chunks == 1 {
                forward_row(&ws.w, &mut ws.s, 1, index, value, table)
            } else {
                forward_row(&ws.w, &mut ws.s, chunks, index, value, table)
            };
            o.copy_from_slice(&p[..CLASSES]);
        }
        ws.s.nz = nz;
    }
}
