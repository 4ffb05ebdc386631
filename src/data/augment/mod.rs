//! Distorted copies of training images, drawn afresh for each epoch:
//! random affine maps (shift, rotation, scale, shear) and elastic
//! distortions (Simard et al. 2003: a random displacement field smoothed by
//! a Gaussian of width `sigma`, scaled by `alpha`), resampled bilinearly.
//!
//! Each image's distortion is drawn from its own place in a seeded stream,
//! chosen by (seed, epoch, row), so an epoch's images are the same whatever
//! the number of threads that makes them and whichever epoch a run resumes
//! at.

use super::FEATURES;
use crate::rng::{SeededRng, Stream};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// Width and height of an image.
const SIDE: usize = 28;

/// How strongly to distort: each image draws its shift, angle, scale and
/// shear uniformly within these bounds, and an elastic field if `alpha > 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Largest shift, in pixels, along each axis.
    pub shift: f32,
    /// Largest rotation, in degrees, either way.
    pub rotate: f32,
    /// Largest relative change of size: the scale is in [1 - s, 1 + s].
    pub scale: f32,
    /// Largest horizontal shear, in degrees, either way.
    pub shear: f32,
    /// Elastic distortion's strength (pixels per unit of smoothed field); 0: none.
    pub elastic_alpha: f32,
    /// Elastic distortion's smoothness: the Gaussian's standard deviation, in pixels.
    pub elastic_sigma: f32,
}

impl Augment {
    /// No distortion at all (`--augment off`).
    pub const OFF: Augment = Augment {
        shift: 0.0,
        rotate: 0.0,
        scale: 0.0,
        shear: 0.0,
        elastic_alpha: 0.0,
        elastic_sigma: 0.0,
    };

    /// `--augment` alone: the `mlp99` recipe's distortions (docs/augment.md).
    pub const RECIPE: Augment = Augment {
        shift: 2.0,
        rotate: 10.0,
        scale: 0.1,
        shear: 10.0,
        elastic_alpha: 0.0,
        elastic_sigma: 0.0,
    };

    /// Whether it leaves every image unchanged.
    pub fn is_off(&self) -> bool {
        self.shift == 0.0
            && self.rotate == 0.0
            && self.scale == 0.0
            && self.shear == 0.0
            && self.elastic_alpha == 0.0
    }

    /// The distortion of training row `row` in epoch `epoch` of a run
    /// seeded `seed`.
    pub fn draw(&self, seed: u64, epoch: usize, row: usize) -> Warp {
        let mut rng = SeededRng::new(seed, Stream::Augment);
        rng.set_word_pos(word_pos(epoch, row));
        // Uniform in [-1, 1).
        let mut sym = || rng.uniform_f32() * 2.0 - 1.0;
        let shift = (sym() * self.shift, sym() * self.shift);
        let rotate = sym() * self.rotate;
        let scale = 1.0 + sym() * self.scale;
        let shear = sym() * self.shear;
        let field = (self.elastic_alpha > 0.0)
            .then(|| elastic_field(&mut rng, self.elastic_alpha, self.elastic_sigma));
        Warp {
            shift,
            rotate,
            scale,
            shear,
            field,
        }
    }

    /// `rows` (row-major images) distorted for `epoch`, into `out` (same
    /// length); row i of `rows` is training row `first + i`. In parallel.
    pub fn apply_rows(&self, seed: u64, epoch: usize, rows: &[u8], out: &mut [u8]) {
        assert_eq!(rows.len(), out.len());
        out.par_chunks_mut(FEATURES)
            .zip(rows.par_chunks(FEATURES))
            .enumerate()
            .for_each(|(i, (o, x))| self.draw(seed, epoch, i).apply(x, o));
    }
}

/// Each image's draws start at its own word of the stream: 2^12 words (the
/// elastic field needs 2 * 784) per row, 2^32 rows per epoch.
fn word_pos(epoch: usize, row: usize) -> u128 {
    (((epoch as u128) << 32) | row as u128) << 12
}

/// A displacement field (dx, dy per pixel, row-major): uniform noise in
/// [-1, 1) smoothed by a Gaussian of standard deviation `sigma` (zero
/// beyond the image), times `alpha`.
fn elastic_field(rng: &mut SeededRng, alpha: f32, sigma: f32) -> Box<[[f32; 2]; FEATURES]> {
    // Drawn pixel by pixel, dx then dy.
    let mut noise = [[0f32; FEATURES]; 2];
    let (dx, dy) = noise.split_at_mut(1);
    for (x, y) in dx[0].iter_mut().zip(dy[0].iter_mut()) {
        *x = rng.uniform_f32() * 2.0 - 1.0;
        *y = rng.uniform_f32() * 2.0 - 1.0;
    }
    let kernel = gaussian(sigma);
    let mut field = Box::new([[0f32; 2]; FEATURES]);
    for (axis, n) in noise.iter().enumerate() {
        let smooth = blur(n, &kernel);
        for (f, s) in field.iter_mut().zip(smooth) {
            f[axis] = alpha * s;
        }
    }
    field
}

/// A normalised Gaussian kernel out to 3 sigma (at least the centre).
fn gaussian(sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let radius = ((3.0 * sigma).ceil() as usize).min(SIDE - 1);
    let k: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// `img` convolved with `kernel` along rows, then columns (zero outside);
/// each pass a sum of shifted copies, so the inner loops run over
/// contiguous pixels.
fn blur(img: &[f32; FEATURES], kernel: &[f32]) -> [f32; FEATURES] {
    let r = kernel.len() / 2;
    let mut rows = [0f32; FEATURES];
    for y in 0..SIDE {
        let src = &img[y * SIDE..(y + 1) * SIDE];
        let dst = &mut rows[y * SIDE..(y + 1) * SIDE];
        for (j, &k) in kernel.iter().enumerate() {
            // dst[x] += k * src[x + j - r] where that is inside the row.
            let (from, to) = (j.saturating_sub(r), SIDE + j.min(r) - r);
            let at = from + r - j;
            for (d, s) in dst[at..at + to - from].iter_mut().zip(&src[from..to]) {
                *d += k * s;
            }
        }
    }
    let mut out = [0f32; FEATURES];
    for y in 0..SIDE {
        for (j, &k) in kernel.iter().enumerate() {
            let Some(yy) = (y + j).checked_sub(r).filter(|&yy| yy < SIDE) else {
                continue;
            };
            let (dst, src) = (y * SIDE, yy * SIDE);
            for x in 0..SIDE {
                out[dst + x] += k * rows[src + x];
            }
        }
    }
    out
}

/// One image's distortion: where each output pixel samples the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Warp {
    /// Pixels right and down that the content moves.
    pub shift: (f32, f32),
    /// Degrees, counter-clockwise as the image is seen.
    pub rotate: f32,
    /// Size factor: 2 doubles the digit.
    pub scale: f32,
    /// Horizontal shear in degrees: rows below the centre move right.
    pub shear: f32,
    /// Extra displacement of each output pixel's sampling point (dx, dy).
    pub field: Option<Box<[[f32; 2]; FEATURES]>>,
}

impl Warp {
    /// The identity (for tests and pictures).
    pub fn none() -> Warp {
        Warp {
            shift: (0.0, 0.0),
            rotate: 0.0,
            scale: 1.0,
            shear: 0.0,
            field: None,
        }
    }

    /// `img` (784 pixels) distorted into `out`: each output pixel is the
    /// bilinear interpolation of `img` at the point the inverse map sends
    /// it to (0 outside the image), rounded.
    pub fn apply(&self, img: &[u8], out: &mut [u8]) {
        assert!(img.len() == FEATURES && out.len() == FEATURES);
        let c = (SIDE as f32 - 1.0) / 2.0;
        // Forward: shear, then rotate and scale about the centre, then
        // shift. The inverse of the linear part, for sampling.
        let (sin, cos) = self.rotate.to_radians().sin_cos();
        let k = self.shear.to_radians().tan();
        // Image rows grow downwards, so a counter-clockwise turn as seen
        // is [[cos, sin], [-sin, cos]] in (x, y) pixel coordinates.
        let a = [[cos, sin], [-sin, cos]];
        let f = [
            [a[0][0] * self.scale, (a[0][0] * k + a[0][1]) * self.scale],
            [a[1][0] * self.scale, (a[1][0] * k + a[1][1]) * self.scale],
        ];
        let det = f[0][0] * f[1][1] - f[0][1] * f[1][0];
        let inv = [
            [f[1][1] / det, -f[0][1] / det],
            [-f[1][0] / det, f[0][0] / det],
        ];
        // The image in a zero border wide enough for every clamped sample.
        let mut pad = [0f32; PAD * PAD];
        for (y, row) in img.chunks_exact(SIDE).enumerate() {
            for (x, &v) in row.iter().enumerate() {
                pad[(y + 1) * PAD + x + 1] = v as f32;
            }
        }
        for y in 0..SIDE {
            for x in 0..SIDE {
                let p = y * SIDE + x;
                let (mut u, mut v) = (x as f32 - c - self.shift.0, y as f32 - c - self.shift.1);
                if let Some(field) = &self.field {
                    u += field[p][0];
                    v += field[p][1];
                }
                let sx = inv[0][0] * u + inv[0][1] * v + c;
                let sy = inv[1][0] * u + inv[1][1] * v + c;
                out[p] = bilinear(&pad, sx, sy);
            }
        }
    }
}

/// Side of the padded image: a row and column of zeros before the image,
/// at least two after.
const PAD: usize = SIDE + 4;

/// The padded image `pad` at image coordinates (x, y), interpolated from
/// the four nearest pixels (0 outside the image). Coordinates are clamped
/// to [-1, SIDE], where every neighbour outside the image reads a zero of
/// the border, so clamping changes no value; then truncation is `floor`
/// (no libm call).
fn bilinear(pad: &[f32; PAD * PAD], x: f32, y: f32) -> u8 {
    let x = x.clamp(-1.0, SIDE as f32) + 1.0;
    let y = y.clamp(-1.0, SIDE as f32) + 1.0;
    let (x0, y0) = (x as usize, y as usize);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let i = y0 * PAD + x0;
    let top = pad[i] * (1.0 - fx) + pad[i + 1] * fx;
    let bottom = pad[i + PAD] * (1.0 - fx) + pad[i + PAD + 1] * fx;
    let v = top * (1.0 - fy) + bottom * fy;
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// An `--augment` value that cannot be used, as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AugmentError(String);

const KEYS: &str =
    "shift=PIXELS, rotate=DEGREES, scale=FRACTION, shear=DEGREES, elastic=ALPHA/SIGMA";

impl FromStr for Augment {
    type Err = AugmentError;

    /// `recipe` (or empty: `--augment` alone), `off`, or `KEY=VALUE`
    /// items separated by `,` or `;` (unnamed keys are 0).
    fn from_str(s: &str) -> Result<Self, AugmentError> {
        let s = s.trim();
        match s {
            "" | "recipe" | "on" => return Ok(Augment::RECIPE),
            "off" | "none" => return Ok(Augment::OFF),
            _ => {}
        }
        let bad = |m: String| Err(AugmentError(m));
        let mut a = Augment::OFF;
        let number = |key: &str, v: &str, max: f32| -> Result<f32, AugmentError> {
            match v.trim().parse::<f32>() {
                Ok(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(x),
                _ => Err(AugmentError(format!(
                    "--augment {key}={v}: expected a number from 0 to {max}"
                ))),
            }
        };
        for item in s.split([',', ';']).filter(|i| !i.trim().is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return bad(format!(
                    "--augment: `{item}` is not KEY=VALUE; keys: {KEYS} (or `off`, or nothing for the recipe)"
                ));
            };
            match key.trim() {
                "shift" => a.shift = number("shift", value, 14.0)?,
                "rotate" => a.rotate = number("rotate", value, 180.0)?,
                "scale" => a.scale = number("scale", value, 0.9)?,
                "shear" => a.shear = number("shear", value, 60.0)?,
                "elastic" => {
                    let Some((alpha, sigma)) = value.split_once('/') else {
                        return bad(format!(
                            "--augment elastic={value}: expected ALPHA/SIGMA, e.g. elastic=34/4"
                        ));
                    };
                    a.elastic_alpha = number("elastic alpha", alpha, 1000.0)?;
                    a.elastic_sigma = number("elastic sigma", sigma, 20.0)?;
                    if a.elastic_alpha > 0.0 && a.elastic_sigma == 0.0 {
                        return bad(format!(
                            "--augment elastic={value}: sigma must be above 0 (unsmoothed noise is not a distortion)"
                        ));
                    }
                }
                other => return bad(format!("--augment: unknown key `{other}`; keys: {KEYS}")),
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Augment {
    /// The form [`FromStr`] reads back: `off`, or the keys that are not 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        let mut items = Vec::new();
        for (key, v) in [
            ("shift", self.shift),
            ("rotate", self.rotate),
            ("scale", self.scale),
            ("shear", self.shear),
        ] {
            if v != 0.0 {
                items.push(format!("{key}={v}"));
            }
        }
        if self.elastic_alpha != 0.0 {
            items.push(format!(
                "elastic={}/{}",
                self.elastic_alpha, self.elastic_sigma
            ));
        }
        f.write_str(&items.join(","))
    }
}

impl serde::Serialize for Augment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Augment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
