//! The network: dense layers `784 -> h1 -> ... -> hk -> 10`, ReLU between
//! them and softmax at the end, and its file format.
//!
//! Weights are stored in the notebook's orientation (`wi` is outputs by
//! inputs, `bi` outputs x 1) under the names `w1, b1, ..., wL, bL`, so a
//! two-layer file loads straight into the notebook's
//! `forward_prop(w1, w2, b1, b2, X)` and a deeper one into the five-line
//! numpy loop in the README. [`Mlp::to_onnx`] and [`Mlp::to_safetensors`]
//! give the same weights in those formats (`mnist-blas export`).

use crate::data::{CLASSES, FEATURES};
use crate::npz::{ArrayInfo, Dtype, Npz};
use crate::output::WriteError;
use crate::rng::{SeededRng, Stream};
use ndarray::{Array1, Array2, Ix2};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

mod layers;
pub mod onnx;
mod safetensors;

pub use layers::{Layers, MAX_HIDDEN, MAX_HIDDEN_LAYERS, MAX_PARAMS};

/// How the weights start.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The notebook's: every weight and bias uniform in [-0.5, 0.5).
    Uniform,
    /// He et al. (2015): weights normal with std sqrt(2 / fan_in), biases 0.
    /// The right scale for ReLU; trains faster and more reliably.
    He,
    /// Saxe et al. (2014): each weight matrix a random orthogonal one (QR of
    /// a Gaussian matrix, through LAPACK), scaled by sqrt(2) for ReLU;
    /// biases 0. Needs the `blas` build.
    Orthogonal,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::Uniform => "uniform",
            Init::He => "he",
            Init::Orthogonal => "orthogonal",
        }
    }
}

/// One dense layer: `z = w a + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// `outputs x inputs`
    pub w: Array2<f32>,
    /// `outputs`
    pub b: Array1<f32>,
}

impl Dense {
    pub fn zeros(inputs: usize, outputs: usize) -> Dense {
        Dense {
            w: Array2::zeros((outputs, inputs)),
            b: Array1::zeros(outputs),
        }
    }

    pub fn inputs(&self) -> usize {
        self.w.ncols()
    }

    pub fn outputs(&self) -> usize {
        self.w.nrows()
    }
}

/// A multilayer perceptron with f32 parameters: [`Dense`] layers, ReLU after
/// each but the last, softmax after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// First (784 inputs) to last (10 outputs).
    pub layers: Vec<Dense>,
}

/// Gradients (or any per-parameter quantity: optimizer moments) shaped like
/// an [`Mlp`].
pub type Gradients = Mlp;

impl Mlp {
    pub fn zeros(layers: &Layers) -> Mlp {
        let widths = layers.widths();
        Mlp {
            layers: widths
                .windows(2)
                .map(|p| Dense::zeros(p[0], p[1]))
                .collect(),
        }
    }

    /// A model with no parameters: the moments of an optimizer that keeps
    /// none.
    pub fn empty() -> Mlp {
        Mlp { layers: Vec::new() }
    }

    /// Fresh weights drawn from `seed`'s init stream.
    pub fn init(
        layers: &Layers,
        init: Init,
        seed: u64,
    ) -> Result<Mlp, crate::linalg::LinalgUnavailable> {
        let mut rng = SeededRng::new(seed, Stream::Init);
        let mut m = Mlp::zeros(layers);
        match init {
            Init::Uniform => {
                for p in m.params_mut() {
                    p.iter_mut().for_each(|v| *v = rng.uniform_f32() - 0.5);
                }
            }
            Init::He => {
                for layer in &mut m.layers {
                    let std = (2.0 / layer.inputs() as f64).sqrt();
                    layer
                        .w
                        .iter_mut()
                        .for_each(|v| *v = (rng.normal_f64() * std) as f32);
                }
            }
            Init::Orthogonal => {
                for layer in &mut m.layers {
                    let (rows, cols) = layer.w.dim();
                    layer.w =
                        crate::linalg::orthogonal(rows, cols, 2f64.sqrt(), || rng.normal_f64())?;
                }
            }
        }
        Ok(m)
    }

    /// The hidden widths.
    pub fn shape(&self) -> Layers {
        Layers {
            hidden: self.layers[..self.layers.len() - 1]
                .iter()
                .map(Dense::outputs)
                .collect(),
        }
    }

    /// Whether `other` has the same layers, of the same sizes.
    pub fn same_shape(&self, other: &Mlp) -> bool {
        self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| a.w.dim() == b.w.dim())
    }

    /// The first layer (784 inputs).
    pub fn first(&self) -> &Dense {
        &self.layers[0]
    }

    /// How each first-layer unit reaches the 10 classes: `wL ... w2`
    /// (`10 x h1`), the later layers' product with their ReLUs left out.
    /// For one hidden layer that is `w2` itself; deeper, a linear view of
    /// which digits a unit pushes towards.
    pub fn class_votes(&self) -> Array2<f32> {
        let mut votes = self.layers[1].w.clone();
        for layer in &self.layers[2..] {
            votes = layer.w.dot(&votes);
        }
        votes
    }

    /// Width of the first hidden layer.
    pub fn hidden(&self) -> usize {
        self.layers[0].outputs()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameter blocks as flat slices, in the order w1, b1, w2, b2, ...
    pub fn params(&self) -> Vec<&[f32]> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    l.w.as_slice().expect("standard layout"),
                    l.b.as_slice().expect("standard layout"),
                ]
            })
            .collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    l.w.as_slice_mut().expect("standard layout"),
                    l.b.as_slice_mut().expect("standard layout"),
                ]
            })
            .collect()
    }

    pub fn fill(&mut self, value: f32) {
        for p in self.params_mut() {
            p.fill(value);
        }
    }

    pub fn scale(&mut self, k: f32) {
        for p in self.params_mut() {
            p.iter_mut().for_each(|v| *v *= k);
        }
    }

    /// True when every parameter is a finite number.
    pub fn is_finite(&self) -> bool {
        self.params().iter().all(|p| crate::simd::all_finite(p))
    }

    /// Save as `.npz`: float32 `wi` (outputs by inputs) and `bi` (outputs
    /// by 1) for each layer i, the notebook's names and shapes, under
    /// [`crate::output`]'s policy.
    pub fn save_npz(&self, path: &Path) -> Result<(), WriteError> {
        crate::output::write_npz(path, true, |npz| self.add_to_npz(npz))
    }

    /// [`Mlp::save_npz`] plus an array `meta`: `meta_json` as UTF-8 bytes
    /// (uint8), which numpy loads only when asked:
    /// `json.loads(bytes(np.load("model.npz")["meta"]))`.
    pub fn save_npz_with_meta(&self, path: &Path, meta_json: &str) -> Result<(), WriteError> {
        crate::output::write_npz(path, true, |npz| {
            self.add_to_npz(npz)?;
            npz.add_array(META, &ndarray::Array1::from(meta_json.as_bytes().to_vec()))
        })
    }

    /// The `meta` array [`Mlp::save_npz_with_meta`] wrote, if the file has
    /// one and it is text (at most 1 MiB read).
    pub fn read_meta(path: &Path) -> Option<String> {
        let mut npz = Npz::open(path).ok()?;
        if !npz.contains(META) {
            return None;
        }
        let info = npz.info(META).ok()?;
        let bytes = npz.read_u8(&info, 1 << 20).ok()?;
        String::from_utf8(bytes.iter().copied().collect()).ok()
    }

    /// Add `w1, b1, ..., wL, bL` as [`Mlp::save_npz`] writes them (a
    /// checkpoint holds the same arrays).
    pub(crate) fn add_to_npz<W: std::io::Write + Seek>(
        &self,
        npz: &mut ndarray_npy::NpzWriter<W>,
    ) -> Result<(), ndarray_npy::WriteNpzError> {
        for (i, layer) in self.layers.iter().enumerate() {
            let b = layer
                .b
                .view()
                .into_shape_with_order((layer.outputs(), 1))
                .expect("outputs elements");
            npz.add_array(format!("w{}", i + 1), &layer.w)?;
            npz.add_array(format!("b{}", i + 1), &b)?;
        }
        Ok(())
    }

    /// Load a model written by [`Mlp::save_npz`] (or by numpy with the same
    /// names and shapes, float32 or float64, C or Fortran order). Every
    /// shape is checked against its neighbours, and the whole against
    /// [`MAX_PARAMS`], before any data is read.
    pub fn load_npz(path: &Path) -> Result<Mlp, ModelError> {
        let mut npz = Npz::open(path).map_err(|e| ModelError::new(path, e.to_string()))?;
        Mlp::from_npz(&mut npz, path)
    }

    /// [`Mlp::load_npz`] from any reader; `path` names it in messages.
    pub(crate) fn read_npz<R: Read + Seek>(reader: R, path: &Path) -> Result<Mlp, ModelError> {
        let mut npz = Npz::new(reader).map_err(|e| ModelError::new(path, e.to_string()))?;
        Mlp::from_npz(&mut npz, path)
    }

    /// The model arrays of an open `.npz` (a model file or a checkpoint);
    /// `path` names it in messages.
    pub(crate) fn from_npz<R: Read + Seek>(
        npz: &mut Npz<R>,
        path: &Path,
    ) -> Result<Mlp, ModelError> {
        let infos = layer_infos(npz, path)?;
        let mut layers = Vec::with_capacity(infos.len());
        for (w, b) in &infos {
            let mut read = |info: &ArrayInfo| -> Result<Array2<f32>, ModelError> {
                let (rows, cols) = (info.shape[0], info.shape[1]);
                let a = npz
                    .read_f32(info, rows * cols)
                    .map_err(|e| ModelError::new(path, e.to_string()))?;
                Ok(a.into_dimensionality::<Ix2>().expect("2-D, checked"))
            };
            let (w, b) = (read(w)?, read(b)?);
            let outputs = w.nrows();
            layers.push(Dense {
                w,
                b: b.into_shape_with_order(outputs).expect("outputs x 1"),
            });
        }
        let m = Mlp { layers };
        if !m.is_finite() {
            return Err(ModelError::new(
                path,
                "contains NaN or infinite weights".into(),
            ));
        }
        Ok(m)
    }
}

/// The name of a model file's metadata array (JSON text as uint8).
pub const META: &str = "meta";

/// The headers of `w1, b1, ..., wL, bL`, checked against each other: `w1`
/// has 784 columns, each `wi` as many columns as `w(i-1)` has rows, `bi`
/// is `rows(wi) x 1`, and the last layer has 10 rows. L is the number of
/// `wi` present from `w1` on.
fn layer_infos<R: Read + Seek>(
    npz: &mut Npz<R>,
    path: &Path,
) -> Result<Vec<(ArrayInfo, ArrayInfo)>, ModelError> {
    // How many layers: w1, w2, ... up to the first name missing.
    let mut depth = 0;
    while npz.contains(&format!("w{}", depth + 1)) {
        depth += 1;
        if depth > MAX_HIDDEN_LAYERS + 1 {
            return Err(ModelError::new(
                path,
                format!(
                    "more than {} layers (w1 ... w{}), more than this program accepts",
                    MAX_HIDDEN_LAYERS + 1,
                    depth
                ),
            ));
        }
    }
    // The error of a missing 'w1' (naming what the file holds), else of a
    // `w1` that does not take the 784 pixels.
    let w1 = matrix_info(npz, path, "w1")?;
    if w1.shape[1] != FEATURES {
        return Err(ModelError::shape(
            path,
            "w1",
            format!("(H, {FEATURES})"),
            (w1.shape[0], w1.shape[1]),
        ));
    }
    if depth == 1 {
        // A model needs a hidden layer: the error of the missing 'w2'.
        matrix_info(npz, path, "w2")?;
    }
    let mut infos = Vec::with_capacity(depth);
    let mut inputs = FEATURES;
    let mut params = 0usize;
    for i in 1..=depth {
        let (wn, bn) = (format!("w{i}"), format!("b{i}"));
        let w = matrix_info(npz, path, &wn)?;
        let (rows, cols) = (w.shape[0], w.shape[1]);
        let last = i == depth;
        let expected_rows = if last {
            "10".to_string()
        } else {
            "H".to_string()
        };
        let rows_ok = if last {
            rows == CLASSES
        } else {
            (1..=MAX_HIDDEN).contains(&rows)
        };
        if cols != inputs || !rows_ok {
            if !last && rows > MAX_HIDDEN && cols == inputs {
                return Err(ModelError::new(
                    path,
                    format!(
                        "array '{wn}': {rows} hidden units, more than the {MAX_HIDDEN} this \
                         program accepts (the limit of --hidden and --layers)"
                    ),
                ));
            }
            return Err(ModelError::shape(
                path,
                &wn,
                format!("({expected_rows}, {inputs})"),
                (rows, cols),
            ));
        }
        params = params.saturating_add(rows.saturating_mul(cols + 1));
        if params > MAX_PARAMS {
            return Err(ModelError::new(
                path,
                format!("more than the {MAX_PARAMS} parameters this program accepts"),
            ));
        }
        let b = matrix_info(npz, path, &bn)?;
        let found = (b.shape[0], b.shape[1]);
        if found != (rows, 1) {
            return Err(ModelError::shape(
                path,
                &bn,
                format!("{:?}", (rows, 1)),
                found,
            ));
        }
        infos.push((w, b));
        inputs = rows;
    }
    Ok(infos)
}

/// The header of one model array, which must be a 2-D float32 or float64
/// array (numpy's default is float64).
fn matrix_info<R: Read + Seek>(
    npz: &mut Npz<R>,
    path: &Path,
    name: &str,
) -> Result<ArrayInfo, ModelError> {
    let info = npz
        .info(name)
        .map_err(|e| ModelError::new(path, e.to_string()))?;
    let float = matches!(info.dtype, Dtype::F32 { .. } | Dtype::F64 { .. });
    if !float || info.shape.len() != 2 {
        return Err(ModelError::new(
            path,
            format!(
                "array '{name}': expected a 2-D float32 or float64 array, found {}",
                info.describe()
            ),
        ));
    }
    Ok(info)
}

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ModelError {
    pub path: PathBuf,
    pub problem: String,
}

impl ModelError {
    fn new(path: &Path, problem: String) -> Self {
        ModelError {
            path: path.to_path_buf(),
            problem,
        }
    }

    fn shape(path: &Path, name: &str, expected: String, found: (usize, usize)) -> Self {
        ModelError::new(
            path,
            format!("array '{name}': expected shape {expected}, found {found:?}"),
        )
    }
}

#[cfg(test)]
mod tests;
