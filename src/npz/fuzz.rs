//! What the `.npz` loaders promise for *any* bytes, as checks that panic
//! when a promise is broken: the `npz` fuzz target calls
//! [`check_npz_bytes`], and `tests/fuzz_regressions.rs` replays every input
//! kept under `tests/fuzz_regressions/npz/` through it.
//!
//! The promises, for the bytes as a model file and as a checkpoint: never a
//! panic; an error is one short line that starts with the file name; a
//! model that loads has the right shapes, at most [`MAX_HIDDEN`] hidden
//! units and finite weights, and holds exactly what `ndarray-npy` (the
//! reader these files were read with before) reads from the same bytes.
//! Bounded memory is checked by the fuzzer's own limits (`-rss_limit_mb`,
//! `-malloc_limit_mb`).

use crate::data::{CLASSES, FEATURES};
use crate::model::{Mlp, MAX_HIDDEN, MAX_HIDDEN_LAYERS, MAX_PARAMS};
use crate::train::checkpoint::Checkpoint;
use ndarray::{Array2, Ix2, OwnedRepr};
use ndarray_npy::NpzReader;
use std::io::Cursor;
use std::path::Path;

/// The name inputs are given in messages.
pub const FUZZ_PATH: &str = "fuzz-input";

/// Longest error message accepted: the file name, an array name and a
/// shape (both cut short), and some words. A longer one means content from
/// the file leaked into it.
const MAX_MESSAGE_CHARS: usize = 400;

/// The bytes as a model file, then as a checkpoint.
pub fn check_npz_bytes(bytes: &[u8]) {
    let path = Path::new(FUZZ_PATH);
    match Mlp::read_npz(Cursor::new(bytes), path) {
        Ok(m) => {
            check_model(&m);
            check_same_as_ndarray_npy(bytes, &m);
        }
        Err(e) => check_error(&e.to_string()),
    }
    match Checkpoint::read(Cursor::new(bytes), path) {
        Ok(c) => check_model(c.model()),
        Err(e) => check_error(&e.to_string()),
    }
}

/// One line, naming the file, short.
pub fn check_error(msg: &str) {
    assert!(
        msg.starts_with(&format!("{FUZZ_PATH}: ")),
        "error does not name the file: {msg:?}"
    );
    assert!(
        !msg.contains(['\n', '\r']),
        "error is not one line: {msg:?}"
    );
    let chars = msg.chars().count();
    assert!(
        chars <= MAX_MESSAGE_CHARS,
        "error of {chars} characters: {:?}...",
        msg.chars().take(200).collect::<String>()
    );
}

fn check_model(m: &Mlp) {
    let widths = m.shape().widths();
    assert_eq!(widths.len(), m.layers.len() + 1);
    assert!(m.layers.len() >= 2 && m.layers.len() <= MAX_HIDDEN_LAYERS + 1);
    assert_eq!((widths[0], widths[widths.len() - 1]), (FEATURES, CLASSES));
    for (l, layer) in m.layers.iter().enumerate() {
        assert_eq!(layer.w.dim(), (widths[l + 1], widths[l]), "layer {l}");
        assert_eq!(layer.b.len(), widths[l + 1], "layer {l}");
    }
    for &h in &widths[1..widths.len() - 1] {
        assert!((1..=MAX_HIDDEN).contains(&h), "hidden width {h}");
    }
    assert!(m.len() <= MAX_PARAMS);
    assert!(m.is_finite());
}

/// A model this reader accepts is read the same by `ndarray-npy`: same
/// arrays, same values (float64 rounded to f32 the same way).
fn check_same_as_ndarray_npy(bytes: &[u8], m: &Mlp) {
    let mut npz = NpzReader::new(Cursor::new(bytes)).expect("ndarray-npy opens it too");
    let mut read = |name: &str| -> Array2<f32> {
        match npz.by_name::<OwnedRepr<f32>, Ix2>(name) {
            Ok(a) => a,
            Err(e32) => match npz.by_name::<OwnedRepr<f64>, Ix2>(name) {
                Ok(a) => a.mapv(|v| v as f32),
                Err(e64) => panic!("ndarray-npy cannot read '{name}': {e32} / {e64}"),
            },
        }
    };
    let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let arrays = m.layers.iter().enumerate().flat_map(|(i, l)| {
        [
            (format!("w{}", i + 1), l.w.as_slice(), l.w.dim()),
            (format!("b{}", i + 1), l.b.as_slice(), (l.b.len(), 1)),
        ]
    });
    for (name, ours, shape) in arrays {
        let name = name.as_str();
        let theirs = read(name);
        assert_eq!(theirs.dim(), shape, "'{name}' shape");
        let theirs = theirs.as_standard_layout();
        assert_eq!(
            bits(ours.expect("standard layout")),
            bits(theirs.as_slice().expect("standard layout")),
            "'{name}' values"
        );
    }
}
