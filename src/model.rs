//! The network: dense layers `784 -> h1 -> ... -> hk -> 10`, ReLU between
//! them and softmax at the end, and its file format.
//!
//! Weights are stored in the notebook's orientation (`wi` is outputs by
//! inputs, `bi` outputs x 1) under the names `w1, b1, ..., wL, bL`, so a
//! two-layer file loads straight into the notebook's
//! `forward_prop(w1, w2, b1, b2, X)` and a deeper one into the five-line
//! numpy loop in the README.

use crate::data::{CLASSES, FEATURES};
use crate::npz::{ArrayInfo, Dtype, Npz};
use crate::output::WriteError;
use crate::rng::{SeededRng, Stream};
use ndarray::{Array1, Array2, Ix2};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

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

/// The hidden widths of a network: `[10]` is the notebook's 784-10-10.
///
/// Spelt on the command line as the widths joined by `-` (`256-128`), so it
/// cannot clash with a sweep's comma lists and `lo:hi` ranges; shown in
/// full, inputs and classes included, as `784-256-128-10`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Layers {
    hidden: Vec<usize>,
}

/// Most hidden units a layer may have (a `w1` of 100,000 x 784 float32 is
/// 314 MB).
pub const MAX_HIDDEN: usize = 100_000;
/// Most hidden layers a network may have.
pub const MAX_HIDDEN_LAYERS: usize = 16;
/// Most parameters a network may have (400 MB of float32): a model file or
/// a `--layers` flag asking for more is refused before anything is
/// allocated.
pub const MAX_PARAMS: usize = 100_000_000;

impl Layers {
    /// One hidden layer of `h` units.
    pub fn one(h: usize) -> Layers {
        Layers { hidden: vec![h] }
    }

    /// Hidden widths, checked against the limits above.
    pub fn new(hidden: Vec<usize>) -> Result<Layers, String> {
        if hidden.is_empty() {
            return Err("no hidden layer (give at least one width, e.g. 128)".into());
        }
        if hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(format!(
                "{} hidden layers, more than the {MAX_HIDDEN_LAYERS} this program accepts",
                hidden.len()
            ));
        }
        if let Some(&h) = hidden.iter().find(|&&h| h == 0 || h > MAX_HIDDEN) {
            return Err(format!(
                "a layer of {h} units: each width must be 1 to {MAX_HIDDEN}"
            ));
        }
        let layers = Layers { hidden };
        if layers.params() > MAX_PARAMS {
            return Err(format!(
                "{} has {} parameters, more than the {MAX_PARAMS} this program accepts",
                layers,
                layers.params()
            ));
        }
        Ok(layers)
    }

    /// `256-128` (or `128`): hidden widths joined by `-`.
    pub fn parse(s: &str) -> Result<Layers, String> {
        let s = s.trim();
        let s = s
            .strip_prefix("784-")
            .and_then(|rest| rest.strip_suffix("-10"))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(s);
        let hidden = s
            .split('-')
            .map(|w| {
                w.trim().parse::<usize>().map_err(|_| {
                    format!(
                        "'{s}': expected hidden widths joined by '-', e.g. 256-128 \
                         (784 inputs and 10 classes are implied)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Layers::new(hidden)
    }

    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// Every width, inputs and classes included: `[784, h1, ..., 10]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.hidden.len() + 2);
        w.push(FEATURES);
        w.extend_from_slice(&self.hidden);
        w.push(CLASSES);
        w
    }

    /// Dense layers (weight matrices): hidden layers + 1.
    pub fn depth(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Weights and biases in all.
    pub fn params(&self) -> usize {
        self.widths().windows(2).map(|p| p[1] * (p[0] + 1)).sum()
    }

    /// The hidden widths as the flag spells them: `256-128`.
    pub fn flag(&self) -> String {
        let w: Vec<String> = self.hidden.iter().map(|h| h.to_string()).collect();
        w.join("-")
    }
}

/// `784-256-128-10`.
impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{FEATURES}-{}-{CLASSES}", self.flag())
    }
}

impl std::str::FromStr for Layers {
    type Err = String;
    fn from_str(s: &str) -> Result<Layers, String> {
        Layers::parse(s)
    }
}

impl TryFrom<String> for Layers {
    type Error = String;
    fn try_from(s: String) -> Result<Layers, String> {
        Layers::parse(&s)
    }
}

impl From<Layers> for String {
    fn from(l: Layers) -> String {
        l.flag()
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

    /// `self += other`, element by element.
    pub fn add_assign(&mut self, other: &Mlp) {
        for (a, b) in self.params_mut().into_iter().zip(other.params()) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
    }

    pub fn scale(&mut self, k: f32) {
        for p in self.params_mut() {
            p.iter_mut().for_each(|v| *v *= k);
        }
    }

    /// True when every parameter is a finite number.
    pub fn is_finite(&self) -> bool {
        // A fold without an early exit, which the compiler vectorises: the
        // trainer asks after every step, and weights are almost always fine.
        self.params()
            .iter()
            .all(|p| p.iter().fold(true, |ok, v| ok & v.is_finite()))
    }

    /// Save as `.npz`: float32 `wi` (outputs by inputs) and `bi` (outputs
    /// by 1) for each layer i, the notebook's names and shapes, under
    /// [`crate::output`]'s policy.
    pub fn save_npz(&self, path: &Path) -> Result<(), WriteError> {
        crate::output::write_npz(path, true, |npz| self.add_to_npz(npz))
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
mod tests {
    use super::*;
    use crate::output::write_atomic;
    use ndarray_npy::NpzWriter;

    #[test]
    fn uniform_init_is_in_range_and_seeded() {
        let a = Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap();
        assert!(a
            .params()
            .iter()
            .all(|p| p.iter().all(|&v| (-0.5..0.5).contains(&v))));
        assert_eq!(a, Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap());
        assert_ne!(a, Mlp::init(&Layers::one(10), Init::Uniform, 1).unwrap());
    }

    #[test]
    fn he_init_has_the_right_scale() {
        let m = Mlp::init(&Layers::one(64), Init::He, 3).unwrap();
        let w1 = &m.layers[0].w;
        let var = w1.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w1.len() as f64;
        let expected = 2.0 / FEATURES as f64;
        assert!((var / expected - 1.0).abs() < 0.05, "{var} vs {expected}");
        assert!(m.layers[0].b.iter().all(|&v| v == 0.0));
    }

    #[cfg(feature = "blas")]
    #[test]
    fn orthogonal_init_gives_row_major_orthogonal_layers() {
        let m = Mlp::init(&Layers::parse("64-32").unwrap(), Init::Orthogonal, 5).unwrap();
        for layer in &m.layers {
            assert!(layer.w.is_standard_layout());
            assert!(layer.b.iter().all(|&b| b == 0.0));
            // Wide layers have orthogonal rows, tall ones orthogonal columns,
            // each of norm sqrt(2) (the ReLU gain).
            let w = &layer.w;
            let gram = if w.nrows() <= w.ncols() {
                w.dot(&w.t())
            } else {
                w.t().dot(w)
            };
            for ((i, j), &v) in gram.indexed_iter() {
                let want = if i == j { 2.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-4, "({i}, {j}) = {v}");
            }
        }
        assert_eq!(m.params().len(), 6);
    }

    #[test]
    fn npz_round_trip_keeps_every_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npz");
        let m = Mlp::init(&Layers::parse("12-7-5").unwrap(), Init::He, 9).unwrap();
        m.save_npz(&path).unwrap();
        assert_eq!(Mlp::load_npz(&path).unwrap(), m);
    }

    #[test]
    fn npz_with_wrong_shapes_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npz");
        let m = Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap();
        write_atomic(&path, |w| {
            let mut npz = NpzWriter::new(w);
            npz.add_array("w1", &m.layers[0].w).unwrap();
            npz.add_array("b1", &Array2::<f32>::zeros((10, 1))).unwrap();
            npz.add_array("w2", &Array2::<f32>::zeros((10, 11)))
                .unwrap();
            npz.add_array("b2", &Array2::<f32>::zeros((10, 1))).unwrap();
            npz.finish().unwrap();
            Ok(())
        })
        .unwrap();
        let err = Mlp::load_npz(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.npz") && err.contains("'w2'") && err.contains("(10, 11)"),
            "{err}"
        );
    }

    #[test]
    fn garbage_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.npz");
        std::fs::write(&path, b"this is not a zip").unwrap();
        let err = Mlp::load_npz(&path).unwrap_err().to_string();
        assert!(
            err.contains("junk.npz") && err.contains("not a valid .npz"),
            "{err}"
        );
    }

    #[test]
    fn layers_parse_accepts_hidden_widths_or_the_full_shape() {
        let l = Layers::parse("256-128").unwrap();
        assert_eq!(l.hidden(), &[256, 128]);
        assert_eq!(l.widths(), vec![784, 256, 128, 10]);
        assert_eq!(l.depth(), 3);
        assert_eq!(l.to_string(), "784-256-128-10");
        assert_eq!(l.flag(), "256-128");
        // The full shape, inputs and classes included, means the same.
        assert_eq!(Layers::parse("784-256-128-10").unwrap(), l);
        assert_eq!(Layers::parse("10").unwrap(), Layers::one(10));
        assert_eq!(Layers::parse("10").unwrap().to_string(), "784-10-10");
        // Every width counted: 784*256 + 256 + 256*128 + 128 + 128*10 + 10.
        assert_eq!(l.params(), 235_146);
        let sixteen = vec!["1"; MAX_HIDDEN_LAYERS].join("-");
        assert_eq!(Layers::parse(&sixteen).unwrap().depth(), 17);
    }

    #[test]
    fn layers_parse_refuses_bad_specs_saying_why() {
        let refused = |s: &str| Layers::parse(s).unwrap_err();
        let e = refused("0");
        assert!(e.contains("0 units") && e.contains("1 to 100000"), "{e}");
        let e = refused("256-0");
        assert!(e.contains("0 units"), "{e}");
        for bad in ["a-b", "256,128", "", "256-", "-256", "1.5"] {
            let e = refused(bad);
            assert!(
                e.contains("expected hidden widths joined by '-'") && e.contains("256-128"),
                "{bad:?}: {e}"
            );
        }
        let seventeen = vec!["4"; MAX_HIDDEN_LAYERS + 1].join("-");
        let e = refused(&seventeen);
        assert!(
            e.contains("17 hidden layers") && e.contains("16 this program accepts"),
            "{e}"
        );
        // Each width allowed, the total not: 78.5 M + 100 M parameters.
        let e = refused("100000-1000");
        assert!(
            e.contains("784-100000-1000-10")
                && e.contains("parameters")
                && e.contains(&MAX_PARAMS.to_string()),
            "{e}"
        );
        let e = refused("100001");
        assert!(e.contains("100001 units"), "{e}");
        // One error line each.
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn three_hidden_layers_round_trip_bit_for_bit_under_the_notebooks_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.npz");
        // Uniform: biases are not zero, so they are really compared.
        let layers = Layers::parse("32-16-8").unwrap();
        let m = Mlp::init(&layers, Init::Uniform, 11).unwrap();
        m.save_npz(&path).unwrap();
        let back = Mlp::load_npz(&path).unwrap();
        assert_eq!(back.shape(), layers);
        let bits = |m: &Mlp| -> Vec<u32> {
            m.params()
                .iter()
                .flat_map(|p| p.iter().map(|v| v.to_bits()))
                .collect()
        };
        assert_eq!(bits(&back), bits(&m));

        // wi outputs x inputs, bi outputs x 1, float32, nothing else.
        let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut names = npz.names().unwrap();
        names.sort();
        assert_eq!(names, ["b1", "b2", "b3", "b4", "w1", "w2", "w3", "w4"]);
        let widths = layers.widths();
        for i in 1..=4 {
            let w: Array2<f32> = npz.by_name(&format!("w{i}")).unwrap();
            let b: Array2<f32> = npz.by_name(&format!("b{i}")).unwrap();
            assert_eq!(w.dim(), (widths[i], widths[i - 1]), "w{i}");
            assert_eq!(b.dim(), (widths[i], 1), "b{i}");
            assert_eq!(w, m.layers[i - 1].w);
        }
    }

    /// A model file of the arrays `arrays` (name, rows, columns; zeros).
    fn write_arrays(path: &Path, arrays: &[(&str, usize, usize)]) {
        write_atomic(path, |w| {
            let mut npz = NpzWriter::new(w);
            for &(name, rows, cols) in arrays {
                npz.add_array(name, &Array2::<f32>::zeros((rows, cols)))
                    .unwrap();
            }
            npz.finish().unwrap();
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn deep_files_whose_layers_do_not_chain_are_refused_by_array() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |name: &str, arrays: &[(&str, usize, usize)]| -> String {
            let path = dir.path().join(name);
            write_arrays(&path, arrays);
            let e = Mlp::load_npz(&path).unwrap_err().to_string();
            assert!(e.starts_with(&path.display().to_string()), "{e}");
            assert!(!e.contains('\n'), "{e}");
            e
        };
        // The good file first, so the ones below fail for their one fault.
        let good = [
            ("w1", 16, 784),
            ("b1", 16, 1),
            ("w2", 8, 16),
            ("b2", 8, 1),
            ("w3", 10, 8),
            ("b3", 10, 1),
        ];
        let path = dir.path().join("good.npz");
        write_arrays(&path, &good);
        assert_eq!(
            Mlp::load_npz(&path).unwrap().shape(),
            Layers::parse("16-8").unwrap()
        );

        let mut arrays = good;
        arrays[2] = ("w2", 8, 15);
        let e = refused("w2.npz", &arrays);
        assert!(
            e.contains("array 'w2'") && e.contains("(H, 16)") && e.contains("(8, 15)"),
            "{e}"
        );

        let mut arrays = good;
        arrays[4] = ("w3", 9, 8);
        arrays[5] = ("b3", 9, 1);
        let e = refused("w3.npz", &arrays);
        assert!(
            e.contains("array 'w3'") && e.contains("(10, 8)") && e.contains("(9, 8)"),
            "{e}"
        );

        let e = refused("b3.npz", &good[..5]);
        assert!(e.contains("array 'b3' is missing"), "{e}");

        let mut arrays = good;
        arrays[3] = ("b2", 8, 2);
        let e = refused("b2.npz", &arrays);
        assert!(e.contains("array 'b2'") && e.contains("(8, 2)"), "{e}");
    }
}
