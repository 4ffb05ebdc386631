//! Models with more than one hidden layer.
//!
//! FIXME(helper): the sparse first layer for deep models; until then the
//! dense engine's products.

use crate::engine::{BatchStats, Engine};
use crate::model::{Gradients, Mlp};
use ndarray::Array2;

pub(super) fn accumulate(m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
    crate::engine::blas::BlasEngine.accumulate(m, x, y, g)
}

pub(super) fn probabilities(m: &Mlp, x: &[u8]) -> Array2<f32> {
    crate::engine::blas::BlasEngine.probabilities(m, x)
}
