//! Dense linear algebra on weight matrices: orthogonal initialisation and
//! singular-value summaries.
//!
//! - [`orthogonal`]: Saxe et al. (2014) orthogonal init, as PyTorch's
//!   `nn.init.orthogonal_` does it: the Q of a Gaussian matrix's QR, its
//!   columns' signs fixed so that Q is uniform (Haar) over orthogonal
//!   matrices, then scaled by a gain. Layers so initialised keep a signal's
//!   norm at the start of training.
//! - [`singular_values`] and what is read off them: [`effective_rank`],
//!   [`stable_rank`], [`condition_number`], to describe what a trained
//!   layer has become (e.g. how many directions it really uses).
//!
//! QR and SVD come from LAPACK through `ndarray-linalg`, which only the
//! `blas` build has (Debian's libopenblas ships LAPACK too). The default
//! pure-Rust build keeps the same API: those functions return
//! [`LinalgUnavailable`]. The summaries of given singular values are plain
//! Rust and work in both builds.

use ndarray::Array2;

/// Returned by the LAPACK-backed functions in a build without `blas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "needs LAPACK, which this build lacks: build with --features blas \
     (cargo run --release --features blas)"
)]
pub struct LinalgUnavailable;

/// Why [`singular_values`] gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    #[error(transparent)]
    Unavailable(#[from] LinalgUnavailable),
    /// LAPACK's SVD may loop to its iteration limit or return garbage on
    /// NaN or infinity, so such matrices are refused first.
    #[error("matrix entry ({row}, {col}) is {value}: singular values need finite entries")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("LAPACK's SVD of a {rows}x{cols} matrix failed: {message}")]
    Lapack {
        rows: usize,
        cols: usize,
        message: String,
    },
}

/// A `rows x cols` matrix with orthonormal rows (`rows <= cols`) or
/// orthonormal columns (`rows >= cols`), times `gain`.
///
/// A `max(rows, cols) x min(rows, cols)` matrix is filled row-major with
/// `normal()` (which must return standard normal draws, all finite), QR
/// factorised in f64, Q's columns multiplied by the signs of R's diagonal
/// (a zero counts as +), transposed when `rows < cols`, scaled by `gain`
/// and rounded to f32. The same draws give the same bits.
pub fn orthogonal(
    rows: usize,
    cols: usize,
    gain: f64,
    normal: impl FnMut() -> f64,
) -> Result<Array2<f32>, LinalgUnavailable> {
    #[cfg(feature = "blas")]
    {
        use ndarray_linalg::QR;
        let mut normal = normal;
        let (tall, wide) = (rows.max(cols), rows.min(cols));
        if wide == 0 {
            return Ok(Array2::zeros((rows, cols)));
        }
        let a = Array2::from_shape_simple_fn((tall, wide), &mut normal);
        // geqrf and orgqr only fail on arguments ndarray-linalg builds
        // itself from an owned, standard-layout, non-empty matrix.
        let (mut q, r) = a.qr().expect("LAPACK QR of an owned dense matrix");
        for (mut column, &d) in q.columns_mut().into_iter().zip(r.diag()) {
            if d < 0.0 {
                column.mapv_inplace(|x| -x);
            }
        }
        let q = if rows < cols { q.reversed_axes() } else { q };
        // Row-major whatever Q's layout: models index weights as flat
        // row-major slices.
        Ok(Array2::from_shape_fn((rows, cols), |ij| {
            (q[ij] * gain) as f32
        }))
    }
    #[cfg(not(feature = "blas"))]
    {
        let _ = (rows, cols, gain, normal);
        Err(LinalgUnavailable)
    }
}

/// The singular values of `w`, largest first (`min(rows, cols)` of them).
/// Computed in f64 by LAPACK's `gesvd`, without the singular vectors.
pub fn singular_values(w: &Array2<f32>) -> Result<Vec<f32>, LinalgError> {
    #[cfg(feature = "blas")]
    {
        use ndarray_linalg::SVD;
        if let Some(((row, col), &value)) = w.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(LinalgError::NonFinite { row, col, value });
        }
        let (rows, cols) = w.dim();
        if rows.min(cols) == 0 {
            return Ok(Vec::new());
        }
        let a = w.mapv(f64::from);
        let (_, sigma, _) = a.svd(false, false).map_err(|e| LinalgError::Lapack {
            rows,
            cols,
            message: e.to_string(),
        })?;
        Ok(sigma.iter().map(|&s| s as f32).collect())
    }
    #[cfg(not(feature = "blas"))]
    {
        let _ = w;
        Err(LinalgUnavailable.into())
    }
}

/// Effective rank (Roy & Vetterli 2007): `exp` of the Shannon entropy of
/// the singular values normalised to sum 1. Between 1 and the number of
/// non-zero values; equal to it when they are all equal.
///
/// 0 for an empty or all-zero list; NaN if a value is negative or not
/// finite (these are not singular values).
pub fn effective_rank(singular_values: &[f32]) -> f64 {
    let Some(total) = checked_sum(singular_values, |s| s) else {
        return f64::NAN;
    };
    if total == 0.0 {
        return 0.0;
    }
    let entropy: f64 = singular_values
        .iter()
        .map(|&s| f64::from(s) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// Stable rank: the squared Frobenius norm over the squared spectral norm,
/// `sum(s_i^2) / max(s_i)^2`; at most the rank, and unlike it not moved by
/// tiny singular values. 0 for an empty or all-zero list; NaN if a value
/// is negative or not finite.
pub fn stable_rank(singular_values: &[f32]) -> f64 {
    let Some(frobenius2) = checked_sum(singular_values, |s| s * s) else {
        return f64::NAN;
    };
    let largest = singular_values
        .iter()
        .fold(0.0f64, |m, &s| m.max(f64::from(s)));
    if largest == 0.0 {
        0.0
    } else {
        frobenius2 / (largest * largest)
    }
}

/// Condition number `max(s_i) / min(s_i)`: infinite when the smallest is
/// 0 and the largest is not, NaN for an empty or all-zero list or if a
/// value is negative or not finite.
pub fn condition_number(singular_values: &[f32]) -> f64 {
    if checked_sum(singular_values, |s| s).is_none() {
        return f64::NAN;
    }
    let (lo, hi) = singular_values
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
            (lo.min(f64::from(s)), hi.max(f64::from(s)))
        });
    if hi == 0.0 {
        f64::NAN
    } else {
        hi / lo
    }
}

/// `sum(f(s))` in f64, or `None` if some value is negative or not finite.
fn checked_sum(singular_values: &[f32], f: impl Fn(f64) -> f64) -> Option<f64> {
    singular_values
        .iter()
        .map(|&s| (s.is_finite() && s >= 0.0).then(|| f(f64::from(s))))
        .sum()
}

/// `Ok` when this build has LAPACK (the `blas` feature), else the one-line
/// reason, for refusing `--init orthogonal` before any work starts.
pub fn check_available() -> Result<(), LinalgUnavailable> {
    if cfg!(feature = "blas") {
        Ok(())
    } else {
        Err(LinalgUnavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_rank_of_equal_values_is_their_count() {
        assert!((effective_rank(&[1.0, 1.0, 1.0, 1.0]) - 4.0).abs() < 1e-12);
        assert!((effective_rank(&[0.5; 7]) - 7.0).abs() < 1e-12);
    }

    #[test]
    fn effective_rank_ignores_zeros_and_scale() {
        assert!((effective_rank(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        // p = (2/3, 1/3): exp(-(2/3 ln 2/3 + 1/3 ln 1/3)) = 3 / 2^(2/3).
        let expected = 3.0 / 2f64.powf(2.0 / 3.0);
        assert!((effective_rank(&[2.0, 1.0]) - expected).abs() < 1e-12);
        assert!((effective_rank(&[20.0, 10.0, 0.0]) - expected).abs() < 1e-12);
    }

    #[test]
    fn effective_rank_of_nothing_is_zero_and_of_non_values_nan() {
        assert_eq!(effective_rank(&[]), 0.0);
        assert_eq!(effective_rank(&[0.0, 0.0]), 0.0);
        assert!(effective_rank(&[1.0, -1.0]).is_nan());
        assert!(effective_rank(&[1.0, f32::NAN]).is_nan());
        assert!(effective_rank(&[1.0, f32::INFINITY]).is_nan());
    }

    #[test]
    fn stable_rank_and_condition_number() {
        assert!((stable_rank(&[3.0, 2.0, 1.0]) - 14.0 / 9.0).abs() < 1e-12);
        assert!((stable_rank(&[1.0; 5]) - 5.0).abs() < 1e-12);
        assert_eq!(stable_rank(&[]), 0.0);
        assert!(stable_rank(&[1.0, -2.0]).is_nan());
        assert!((condition_number(&[3.0, 2.0, 1.5]) - 2.0).abs() < 1e-12);
        assert_eq!(condition_number(&[3.0, 0.0]), f64::INFINITY);
        assert!(condition_number(&[]).is_nan());
        assert!(condition_number(&[0.0]).is_nan());
        assert!(condition_number(&[f32::NAN, 1.0]).is_nan());
    }

    #[cfg(not(feature = "blas"))]
    #[test]
    fn without_blas_lapack_functions_say_which_feature() {
        let err = orthogonal(3, 4, 1.0, || 0.5).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("LAPACK"), "{message}");
        assert!(message.contains("--features blas"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let err = singular_values(&Array2::eye(3)).unwrap_err();
        assert_eq!(err, LinalgError::Unavailable(LinalgUnavailable));
        assert_eq!(err.to_string(), message);
    }

    #[cfg(feature = "blas")]
    mod lapack {
        use super::super::*;
        use crate::rng::{SeededRng, Stream};
        use ndarray::{array, Axis};

        fn seeded(rows: usize, cols: usize, gain: f64, seed: u64) -> Array2<f32> {
            let mut rng = SeededRng::new(seed, Stream::Init);
            orthogonal(rows, cols, gain, || rng.normal_f64()).unwrap()
        }

        /// Largest |entry - identity| of W W^T (rows <= cols) or W^T W.
        fn orthonormality_error(w: &Array2<f32>) -> f32 {
            let gram = if w.nrows() <= w.ncols() {
                w.dot(&w.t())
            } else {
                w.t().dot(w)
            };
            gram.indexed_iter()
                .map(|((i, j), &g)| (g - if i == j { 1.0 } else { 0.0 }).abs())
                .fold(0.0, f32::max)
        }

        #[test]
        fn orthogonal_has_orthonormal_rows_or_columns() {
            for (rows, cols) in [(256, 784), (784, 256), (10, 10), (1, 5), (5, 1)] {
                let w = seeded(rows, cols, 1.0, 7);
                assert_eq!(w.dim(), (rows, cols));
                let err = orthonormality_error(&w);
                assert!(err < 1e-4, "{rows}x{cols}: |W W^T - I| = {err}");
            }
            // Square: both ways.
            let w = seeded(10, 10, 1.0, 7);
            let err = orthonormality_error(&w.t().to_owned());
            assert!(err < 1e-4, "10x10 transposed: {err}");
        }

        #[test]
        fn orthogonal_is_a_function_of_the_draws() {
            let a = seeded(64, 100, 1.0, 3);
            let b = seeded(64, 100, 1.0, 3);
            let bits = |w: &Array2<f32>| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b));
            assert_ne!(bits(&a), bits(&seeded(64, 100, 1.0, 4)));
        }

        #[test]
        fn gain_scales_every_row_norm() {
            let one = seeded(256, 784, 1.0, 11);
            let two = seeded(256, 784, 2.0, 11);
            // Doubling in f64 is exact, so the f32 bits double too.
            assert_eq!(two, one.mapv(|x| 2.0 * x));
            let half = seeded(256, 784, 0.5, 11);
            for row in half.axis_iter(Axis(0)) {
                let norm = row.dot(&row).sqrt();
                assert!((norm - 0.5).abs() < 1e-5, "row norm {norm}");
            }
        }

        /// With R's diagonal made positive, Q's first column is the first
        /// column of the Gaussian matrix, normalised: this pins the fill
        /// order, the sign fix and the transpose for wide matrices.
        #[test]
        fn orthogonal_fixes_signs_so_q_follows_the_draws() {
            for (rows, cols) in [(6, 3), (3, 6), (1, 1)] {
                let (tall, wide) = (rows.max(cols), rows.min(cols));
                let draws: Vec<f64> = (0..tall * wide)
                    .map(|i| ((i * 7919 % 13) as f64 - 6.5) / 3.0)
                    .collect();
                let mut it = draws.iter().copied();
                let w = orthogonal(rows, cols, 1.0, || it.next().unwrap()).unwrap();
                let first: Vec<f64> = (0..tall).map(|i| draws[i * wide]).collect();
                let norm = first.iter().map(|x| x * x).sum::<f64>().sqrt();
                let got = if rows >= cols { w.column(0) } else { w.row(0) };
                for (g, a) in got.iter().zip(&first) {
                    assert!(
                        (f64::from(*g) - a / norm).abs() < 1e-6,
                        "{rows}x{cols}: {got}"
                    );
                }
            }
            // A negative 1x1 draw stays negative (without the sign fix,
            // LAPACK's Q would be [1] and R [-2]).
            let w = orthogonal(1, 1, 3.0, || -2.0).unwrap();
            assert_eq!(w, array![[-3.0f32]]);
        }

        #[test]
        fn orthogonal_of_an_empty_shape_is_empty() {
            assert_eq!(seeded(0, 5, 1.0, 1).dim(), (0, 5));
            assert_eq!(seeded(5, 0, 1.0, 1).dim(), (5, 0));
        }

        #[test]
        fn singular_values_of_a_padded_diagonal() {
            let mut w = Array2::<f32>::zeros((5, 3));
            for (i, d) in [1.0, 3.0, 2.0].into_iter().enumerate() {
                w[[i, i]] = d;
            }
            for m in [w.clone(), w.t().to_owned()] {
                let s = singular_values(&m).unwrap();
                assert_eq!(s.len(), 3);
                for (got, want) in s.iter().zip([3.0, 2.0, 1.0]) {
                    assert!((got - want).abs() < 1e-6, "{s:?}");
                }
            }
        }

        #[test]
        fn singular_values_keep_the_frobenius_norm() {
            let mut rng = SeededRng::new(5, Stream::Init);
            let w = Array2::from_shape_simple_fn((50, 30), || rng.normal_f64() as f32);
            let s = singular_values(&w).unwrap();
            assert_eq!(s.len(), 30);
            assert!(s.windows(2).all(|p| p[0] >= p[1]), "not descending: {s:?}");
            let frobenius2: f64 = w.iter().map(|&x| f64::from(x).powi(2)).sum();
            let sum2: f64 = s.iter().map(|&x| f64::from(x).powi(2)).sum();
            assert!(
                ((sum2 - frobenius2) / frobenius2).abs() < 1e-4,
                "{sum2} vs {frobenius2}"
            );
        }

        #[test]
        fn an_orthogonal_matrix_has_all_singular_values_equal_to_the_gain() {
            let w = seeded(40, 100, 1.5, 9);
            let s = singular_values(&w).unwrap();
            assert_eq!(s.len(), 40);
            assert!(s.iter().all(|&x| (x - 1.5).abs() < 1e-4), "{s:?}");
            assert!((effective_rank(&s) - 40.0).abs() < 1e-3);
            assert!((stable_rank(&s) - 40.0).abs() < 1e-3);
        }

        #[test]
        fn singular_values_refuse_non_finite_entries() {
            let mut w = Array2::<f32>::eye(4);
            w[[2, 1]] = f32::NAN;
            let err = singular_values(&w).unwrap_err();
            assert!(
                matches!(err, LinalgError::NonFinite { row: 2, col: 1, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("(2, 1)"), "{err}");
            w[[2, 1]] = f32::NEG_INFINITY;
            assert!(matches!(
                singular_values(&w),
                Err(LinalgError::NonFinite { row: 2, col: 1, .. })
            ));
        }

        #[test]
        fn singular_values_of_an_empty_matrix_are_none() {
            assert_eq!(
                singular_values(&Array2::zeros((0, 4))).unwrap(),
                Vec::<f32>::new()
            );
        }
    }
}
