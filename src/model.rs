//! The network: `784 -> H -> 10`, ReLU then softmax, and its file format.
//!
//! Weights are stored in the notebook's orientation (`w1` is `H x 784`,
//! outputs by inputs) so the `.npz` we write loads straight into the
//! notebook's `forward_prop(w1, w2, b1, b2, X)`.

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
}

/// A 784-H-10 multilayer perceptron with f32 parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// `H x 784`
    pub w1: Array2<f32>,
    /// `H`
    pub b1: Array1<f32>,
    /// `10 x H`
    pub w2: Array2<f32>,
    /// `10`
    pub b2: Array1<f32>,
}

/// Gradients (or any per-parameter quantity: optimizer moments) shaped like
/// an [`Mlp`].
pub type Gradients = Mlp;

impl Mlp {
    pub fn zeros(hidden: usize) -> Mlp {
        Mlp {
            w1: Array2::zeros((hidden, FEATURES)),
            b1: Array1::zeros(hidden),
            w2: Array2::zeros((CLASSES, hidden)),
            b2: Array1::zeros(CLASSES),
        }
    }

    /// Fresh weights drawn from `seed`'s init stream.
    pub fn init(hidden: usize, init: Init, seed: u64) -> Mlp {
        let mut rng = SeededRng::new(seed, Stream::Init);
        let mut m = Mlp::zeros(hidden);
        match init {
            Init::Uniform => {
                for p in m.params_mut() {
                    p.iter_mut().for_each(|v| *v = rng.uniform_f32() - 0.5);
                }
            }
            Init::He => {
                for (w, fan_in) in [(&mut m.w1, FEATURES), (&mut m.w2, hidden)] {
                    let std = (2.0 / fan_in as f64).sqrt();
                    w.iter_mut()
                        .for_each(|v| *v = (rng.normal_f64() * std) as f32);
                }
            }
        }
        m
    }

    pub fn hidden(&self) -> usize {
        self.b1.len()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The four parameter blocks as flat slices, in the order w1, b1, w2, b2.
    pub fn params(&self) -> [&[f32]; 4] {
        [
            self.w1.as_slice().expect("standard layout"),
            self.b1.as_slice().expect("standard layout"),
            self.w2.as_slice().expect("standard layout"),
            self.b2.as_slice().expect("standard layout"),
        ]
    }

    pub fn params_mut(&mut self) -> [&mut [f32]; 4] {
        [
            self.w1.as_slice_mut().expect("standard layout"),
            self.b1.as_slice_mut().expect("standard layout"),
            self.w2.as_slice_mut().expect("standard layout"),
            self.b2.as_slice_mut().expect("standard layout"),
        ]
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

    /// Save as `.npz` (float32 `w1` Hx784, `b1` Hx1, `w2` 10xH, `b2` 10x1:
    /// the notebook's names and shapes), under [`crate::output`]'s policy.
    pub fn save_npz(&self, path: &Path) -> Result<(), WriteError> {
        let h = self.hidden();
        let b1 = self
            .b1
            .clone()
            .into_shape_with_order((h, 1))
            .expect("h elements");
        let b2 = self
            .b2
            .clone()
            .into_shape_with_order((CLASSES, 1))
            .expect("10 elements");
        crate::output::write_npz(path, true, |npz| {
            let arrays: [(&str, &Array2<f32>); 4] =
                [("w1", &self.w1), ("b1", &b1), ("w2", &self.w2), ("b2", &b2)];
            for (name, a) in arrays {
                npz.add_array(name, a)?;
            }
            Ok(())
        })
    }

    /// Load a model written by [`Mlp::save_npz`] (or by numpy with the same
    /// names and shapes, float32 or float64, C or Fortran order). Shapes are
    /// checked against each other before any data is read; the hidden width
    /// is read from `w1` and may be at most [`MAX_HIDDEN`].
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
        let w1 = matrix_info(npz, path, "w1")?;
        let (h, cols) = (w1.shape[0], w1.shape[1]);
        if h == 0 || cols != FEATURES {
            return Err(ModelError::shape(
                path,
                "w1",
                format!("(H, {FEATURES})"),
                (h, cols),
            ));
        }
        if h > MAX_HIDDEN {
            return Err(ModelError::new(
                path,
                format!(
                    "array 'w1': {h} hidden units, more than the {MAX_HIDDEN} this program \
                     accepts (the limit of --hidden)"
                ),
            ));
        }
        let b1 = matrix_info(npz, path, "b1")?;
        let w2 = matrix_info(npz, path, "w2")?;
        let b2 = matrix_info(npz, path, "b2")?;
        for (info, expected) in [(&b1, (h, 1)), (&w2, (CLASSES, h)), (&b2, (CLASSES, 1))] {
            let found = (info.shape[0], info.shape[1]);
            if found != expected {
                return Err(ModelError::shape(
                    path,
                    &info.name,
                    format!("{expected:?}"),
                    found,
                ));
            }
        }
        let mut read = |info: &ArrayInfo| -> Result<Array2<f32>, ModelError> {
            let (rows, cols) = (info.shape[0], info.shape[1]);
            let a = npz
                .read_f32(info, rows * cols)
                .map_err(|e| ModelError::new(path, e.to_string()))?;
            Ok(a.into_dimensionality::<Ix2>().expect("2-D, checked"))
        };
        let (w1, b1, w2, b2) = (read(&w1)?, read(&b1)?, read(&w2)?, read(&b2)?);
        let m = Mlp {
            w1,
            b1: b1.into_shape_with_order(h).expect("h x 1"),
            w2,
            b2: b2.into_shape_with_order(CLASSES).expect("10 x 1"),
        };
        if !m.is_finite() {
            return Err(ModelError::new(
                path,
                "contains NaN or infinite weights".into(),
            ));
        }
        Ok(m)
    }
}

/// Most hidden units a model file may have: the same limit as `--hidden`'s
/// (a `w1` of 100,000 x 784 float32 is 314 MB).
pub const MAX_HIDDEN: usize = 100_000;

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
        let a = Mlp::init(10, Init::Uniform, 0);
        assert!(a
            .params()
            .iter()
            .all(|p| p.iter().all(|&v| (-0.5..0.5).contains(&v))));
        assert_eq!(a, Mlp::init(10, Init::Uniform, 0));
        assert_ne!(a, Mlp::init(10, Init::Uniform, 1));
    }

    #[test]
    fn he_init_has_the_right_scale() {
        let m = Mlp::init(64, Init::He, 3);
        let var = m.w1.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / m.w1.len() as f64;
        let expected = 2.0 / FEATURES as f64;
        assert!((var / expected - 1.0).abs() < 0.05, "{var} vs {expected}");
        assert!(m.b1.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn npz_round_trip_keeps_every_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npz");
        let m = Mlp::init(12, Init::He, 9);
        m.save_npz(&path).unwrap();
        assert_eq!(Mlp::load_npz(&path).unwrap(), m);
    }

    #[test]
    fn npz_with_wrong_shapes_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npz");
        let m = Mlp::init(10, Init::Uniform, 0);
        write_atomic(&path, |w| {
            let mut npz = NpzWriter::new(w);
            npz.add_array("w1", &m.w1).unwrap();
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
}
