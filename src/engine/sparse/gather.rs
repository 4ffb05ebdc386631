//! One row's non-zero pixels, the form every path of the sparse engine
//! computes on.
//!
//! [`NonZeros::gather`] collects a 784-byte row's non-zero pixels in index
//! order, with their values scaled to f32 or (for the row sets kept for many
//! passes) as bytes; [`PixelValue`] names the two forms. With AVX-512 VBMI2
//! the compress instructions take 32 pixels at a time ([`gather_vbmi2`]);
//! with AVX2, a table of byte shuffles packs 8 at a time ([`gather_avx2`]);
//! otherwise a branch-free scalar loop does the same ([`gather_scalar`]).
//! All give the same pairs, and every value is exactly the f32 `p / 255` of
//! [`pixel_table`] (the tests check every byte, with every gather the CPU
//! has).

use crate::data::FEATURES;
use crate::engine::pixel_table;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Level, PACK_SET_BITS};

/// Room for one row's non-zero pixels, plus slack for the vector gather,
/// which stores whole 32-lane blocks past the last non-zero.
const NZ_CAP: usize = FEATURES + 64;

/// One row's non-zero pixels: `index[..len]` and either `value[..len]`
/// (pixel / 255, converted once here rather than in each of the two
/// products; [`NonZeros::gather`]) or `bytes[..len]` (the pixels as they
/// are; [`NonZeros::gather_bytes`]). The buffers are sized on first use, so
/// `default()` costs nothing and the scratch can be moved out of its owner
/// and back freely.
#[derive(Default)]
pub(super) struct NonZeros {
    index: Vec<u16>,
    value: Vec<f32>,
    bytes: Vec<u8>,
    len: usize,
}

impl NonZeros {
    /// Collect the non-zero pixels of `row` (784 bytes), in index order,
    /// with their values scaled.
    #[inline(always)]
    pub(super) fn gather(&mut self, row: &[u8]) {
        self.fill::<true>(row);
    }

    /// [`NonZeros::gather`] with the pixel bytes instead of scaled values.
    #[inline(always)]
    pub(super) fn gather_bytes(&mut self, row: &[u8]) {
        self.fill::<false>(row);
    }

    /// The gathered pixels' indices, ascending.
    #[inline(always)]
    pub(super) fn index(&self) -> &[u16] {
        &self.index[..self.len]
    }

    /// Their values, scaled ([`NonZeros::gather`]).
    #[inline(always)]
    pub(super) fn values(&self) -> &[f32] {
        &self.value[..self.len]
    }

    #[inline(always)]
    fn fill<const SCALE: bool>(&mut self, row: &[u8]) {
        assert_eq!(row.len(), FEATURES);
        if self.index.len() != NZ_CAP {
            self.index = vec![0; NZ_CAP];
            self.value = vec![0.0; NZ_CAP];
            self.bytes = vec![0; NZ_CAP];
        }
        let index: &mut [u16; NZ_CAP] = (&mut self.index[..]).try_into().expect("sized above");
        let value: &mut [f32; NZ_CAP] = (&mut self.value[..]).try_into().expect("sized above");
        let bytes: &mut [u8; NZ_CAP] = (&mut self.bytes[..]).try_into().expect("sized above");
        #[cfg(target_arch = "x86_64")]
        match vector_gather() {
            // SAFETY: the features were detected; `row` is 784 bytes and the
            // buffers hold NZ_CAP >= 784 + 32 entries (checked inside).
            Some(Level::Avx512) => {
                self.len = unsafe { gather_vbmi2::<SCALE>(row, index, value, bytes) };
                return;
            }
            // SAFETY: as above, with 8 entries of slack (checked inside).
            Some(_) => {
                self.len = unsafe { gather_avx2::<SCALE>(row, index, value, bytes) };
                return;
            }
            None => {}
        }
        self.len = gather_scalar::<SCALE>(row, index, value, bytes);
    }
}

/// Branch-free scalar gather: writes every pixel, advances only past
/// non-zero ones (a data-dependent branch per pixel would mispredict often).
/// Values go to `value` scaled if `SCALE`, else to `bytes` as they are.
fn gather_scalar<const SCALE: bool>(
    row: &[u8],
    index: &mut [u16; NZ_CAP],
    value: &mut [f32; NZ_CAP],
    bytes: &mut [u8; NZ_CAP],
) -> usize {
    let table = pixel_table();
    let mut n = 0;
    for (i, &p) in row.iter().enumerate() {
        index[n] = i as u16;
        if SCALE {
            value[n] = table[p as usize];
        } else {
            bytes[n] = p;
        }
        n += (p != 0) as usize;
    }
    n
}

/// Which vector gather runs: [`gather_vbmi2`] (`Avx512`), [`gather_avx2`]
/// (`Avx2`) or neither, from what the CPU has and the level
/// [`crate::simd::level`] allows, so that capping the level (to measure
/// what a laptop runs) caps the gather too.
#[cfg(target_arch = "x86_64")]
fn vector_gather() -> Option<Level> {
    static WHICH: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
    *WHICH.get_or_init(|| {
        let (vbmi2, avx2) = cpu_gathers();
        match crate::simd::level() {
            Level::Avx512 if vbmi2 => Some(Level::Avx512),
            Level::Avx512 | Level::Avx2 if avx2 => Some(Level::Avx2),
            _ => None,
        }
    })
}

/// Whether this CPU has the features of [`gather_vbmi2`] and of
/// [`gather_avx2`], whatever level is allowed (the tests run both).
#[cfg(target_arch = "x86_64")]
fn cpu_gathers() -> (bool, bool) {
    use std::arch::is_x86_feature_detected as has;
    let vbmi2 = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vbmi2");
    (vbmi2 && has!("popcnt"), crate::simd::cpu_has_avx2_popcnt())
}

/// AVX2 gather, 16 pixels at a time: a mask of the non-zero bytes, skipped
/// when empty (the image's blank top and bottom rows); else for each half
/// of 8 pixels, [`PACK_SET_BITS`] gives the shuffle that packs the
/// non-zero pixels and their positions to the front, and 8 entries are
/// stored whole (the slack absorbs the rest). Same output as
/// [`gather_scalar`], about a third of its instructions (no compress
/// instruction before AVX-512).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn gather_avx2<const SCALE: bool>(
    row: &[u8],
    index: &mut [u16; NZ_CAP],
    value: &mut [f32; NZ_CAP],
    bytes: &mut [u8; NZ_CAP],
) -> usize {
    use std::arch::x86_64::*;
    const BLOCK: usize = 16;
    const _: () = assert!(FEATURES.is_multiple_of(BLOCK));
    let row: &[u8; FEATURES] = row.try_into().expect("a row is 784 pixels");
    let inv255 = _mm256_set1_pd(1.0 / 255.0);
    let mut n = 0;
    for start in (0..FEATURES).step_by(BLOCK) {
        // SAFETY: reads row[start..start + 16], inside the row.
        let pixels = unsafe { _mm_loadu_si128(row.as_ptr().add(start).cast()) };
        let zero = _mm_movemask_epi8(_mm_cmpeq_epi8(pixels, _mm_setzero_si128())) as u32;
        let nonzero = !zero & 0xFFFF;
        if nonzero == 0 {
            continue;
        }
        for (half, group) in [pixels, _mm_srli_si128::<8>(pixels)]
            .into_iter()
            .enumerate()
        {
            let mask = (nonzero >> (8 * half)) & 0xFF;
            let pack = _mm_cvtsi64_si128(PACK_SET_BITS[mask as usize] as i64);
            let at = _mm_add_epi16(
                _mm_cvtepu8_epi16(pack),
                _mm_set1_epi16((start + 8 * half) as i16),
            );
            let packed = _mm_shuffle_epi8(group, pack);
            assert!(n + 8 <= NZ_CAP);
            // SAFETY: n + 8 <= NZ_CAP entries, checked just above.
            unsafe { _mm_storeu_si128(index.as_mut_ptr().add(n).cast(), at) };
            if SCALE {
                // As in gather_vbmi2: pixel * (1/255) in f64, rounded once.
                for (q, four) in [packed, _mm_srli_si128::<4>(packed)]
                    .into_iter()
                    .enumerate()
                {
                    let four = _mm_cvtepu8_epi32(four);
                    let scaled = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(four), inv255));
                    // SAFETY: within the n + 8 entries checked above.
                    unsafe { _mm_storeu_ps(value.as_mut_ptr().add(n + 4 * q), scaled) };
                }
            } else {
                // SAFETY: within the n + 8 entries checked above.
                unsafe { _mm_storel_epi64(bytes.as_mut_ptr().add(n).cast(), packed) };
            }
            n += mask.count_ones() as usize;
        }
    }
    n
}

/// AVX-512 gather, 32 pixels at a time: a mask of the non-zero bytes, then
/// the VBMI2 compress instructions pack their indices and values to the
/// front of a register, which is stored whole (the slack absorbs the rest).
/// Same output as [`gather_scalar`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
fn gather_vbmi2<const SCALE: bool>(
    row: &[u8],
    index: &mut [u16; NZ_CAP],
    value: &mut [f32; NZ_CAP],
    bytes: &mut [u8; NZ_CAP],
) -> usize {
    use std::arch::x86_64::*;
    const BLOCK: usize = 32;
    let lanes: [u16; BLOCK] = std::array::from_fn(|i| i as u16);
    // SAFETY: `lanes` is 64 bytes.
    let lanes = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    let inv255 = _mm512_set1_pd(1.0 / 255.0);
    let mut n = 0;
    let mut start = 0;
    while start < FEATURES {
        let take = BLOCK.min(FEATURES - start);
        // SAFETY: both loads read only `row[start..start + take]`.
        let pixels = unsafe {
            let at = row.as_ptr().add(start);
            if take == BLOCK {
                _mm256_loadu_si256(at.cast())
            } else {
                _mm256_maskz_loadu_epi8((1u32 << take) - 1, at.cast())
            }
        };
        let nonzero = _mm256_test_epi8_mask(pixels, pixels);
        let idx = _mm512_add_epi16(lanes, _mm512_set1_epi16(start as i16));
        let idx = _mm512_maskz_compress_epi16(nonzero, idx);
        let val = _mm256_maskz_compress_epi8(nonzero, pixels);
        assert!(n + BLOCK <= NZ_CAP);
        // SAFETY: n + 32 <= NZ_CAP entries, checked just above.
        unsafe { _mm512_storeu_si512(index.as_mut_ptr().add(n).cast(), idx) };
        if SCALE {
            // Bytes to f32 as pixel * (1/255) in f64, rounded once to f32:
            // equal to the correctly rounded f32 division for every byte (the
            // unit test checks all 256) and much cheaper than a vector
            // division.
            let halves = [
                _mm256_castsi256_si128(val),
                _mm256_extracti128_si256::<1>(val),
            ];
            for (h, half) in halves.into_iter().enumerate() {
                for (q, eight) in [half, _mm_srli_si128::<8>(half)].into_iter().enumerate() {
                    let wide = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(eight));
                    let scaled = _mm512_cvtpd_ps(_mm512_mul_pd(wide, inv255));
                    // SAFETY: within the n + 32 entries checked above.
                    unsafe { _mm256_storeu_ps(value.as_mut_ptr().add(n + 16 * h + 8 * q), scaled) };
                }
            }
        } else {
            // SAFETY: within the n + 32 entries checked above.
            unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().add(n).cast(), val) };
        }
        n += nonzero.count_ones() as usize;
        start += BLOCK;
    }
    n
}

/// A non-zero pixel's value as a row stores it: already scaled to f32
/// (one row's scratch, [`NonZeros`]), or the raw byte (the row sets kept
/// for many passes, [`super::row_set::RowSet`], a quarter of the size),
/// scaled through the correctly rounded table [`pixel_table`] (the same f32
/// either way).
pub(super) trait PixelValue: Copy + Default + Send + Sync {
    fn scaled(self, table: &[f32; 256]) -> f32;
    /// A pixel byte in this form (`table` scales it to f32).
    fn from_byte(byte: u8, table: &[f32; 256]) -> Self;
    /// Gather `row`'s non-zero pixels into `nz`, values in this form.
    fn gather(nz: &mut NonZeros, row: &[u8]);
    /// The values [`PixelValue::gather`] left in `nz`.
    fn gathered(nz: &NonZeros) -> &[Self];
}

impl PixelValue for f32 {
    #[inline(always)]
    fn scaled(self, _: &[f32; 256]) -> f32 {
        self
    }
    #[inline(always)]
    fn from_byte(byte: u8, table: &[f32; 256]) -> f32 {
        table[usize::from(byte)]
    }
    #[inline(always)]
    fn gather(nz: &mut NonZeros, row: &[u8]) {
        nz.gather(row);
    }
    fn gathered(nz: &NonZeros) -> &[f32] {
        &nz.value[..nz.len]
    }
}

impl PixelValue for u8 {
    #[inline(always)]
    fn scaled(self, table: &[f32; 256]) -> f32 {
        table[self as usize]
    }
    #[inline(always)]
    fn from_byte(byte: u8, _: &[f32; 256]) -> u8 {
        byte
    }
    #[inline(always)]
    fn gather(nz: &mut NonZeros, row: &[u8]) {
        // The bytes as they are: no scaling to do, and a quarter of the
        // stores (the gathering is a large part of the trainer's one-off preparation).
        nz.gather_bytes(row);
    }
    fn gathered(nz: &NonZeros) -> &[u8] {
        &nz.bytes[..nz.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::random_batch;

    type Gather = fn(&[u8], &mut [u16; NZ_CAP], &mut [f32; NZ_CAP], &mut [u8; NZ_CAP]) -> usize;

    /// Every gather this CPU can run, named, scaled values (`true`) and
    /// bytes (`false`).
    fn gathers() -> Vec<(&'static str, Gather, Gather)> {
        let mut all: Vec<(&'static str, Gather, Gather)> =
            vec![("scalar", gather_scalar::<true>, gather_scalar::<false>)];
        #[cfg(target_arch = "x86_64")]
        {
            let (vbmi2, avx2) = cpu_gathers();
            if avx2 {
                // SAFETY (both): the features were just detected.
                all.push((
                    "avx2",
                    |r, i, v, b| unsafe { gather_avx2::<true>(r, i, v, b) },
                    |r, i, v, b| unsafe { gather_avx2::<false>(r, i, v, b) },
                ));
            }
            if vbmi2 {
                all.push((
                    "vbmi2",
                    |r, i, v, b| unsafe { gather_vbmi2::<true>(r, i, v, b) },
                    |r, i, v, b| unsafe { gather_vbmi2::<false>(r, i, v, b) },
                ));
            }
        }
        all
    }

    /// Every byte value, in every position of a 32-pixel block, converts to
    /// exactly `p / 255` (the vector gathers multiply in f64 instead), with
    /// every gather, and through [`NonZeros`].
    #[test]
    fn gather_converts_every_byte_exactly() {
        let (mut index, mut value) = (Box::new([0; NZ_CAP]), Box::new([0.0; NZ_CAP]));
        let mut bytes = Box::new([0; NZ_CAP]);
        for offset in [0, 5, 8, 15, 31] {
            let mut row = [0u8; FEATURES];
            for p in 1..=255u8 {
                row.fill(0);
                row[offset] = p;
                row[offset + 64] = p;
                for (name, scaled, _) in gathers() {
                    assert_eq!(
                        scaled(&row, &mut index, &mut value, &mut bytes),
                        2,
                        "{name}"
                    );
                    assert_eq!(index[..2], [offset as u16, offset as u16 + 64], "{name}");
                    for v in &value[..2] {
                        assert_eq!(
                            v.to_bits(),
                            (p as f32 / 255.0).to_bits(),
                            "{name}: pixel {p}"
                        );
                    }
                }
                let mut nz = NonZeros::default();
                nz.gather(&row);
                assert_eq!(nz.values(), &[p as f32 / 255.0; 2]);
            }
        }
    }

    /// Both gathers (whichever this CPU can run) give the same pairs, in
    /// index order, as the obvious filter: scaled values and bytes.
    #[test]
    fn gathers_agree_with_a_plain_filter() {
        let (mut x, _) = random_batch(50, 3);
        x[..FEATURES].fill(0);
        x[FEATURES..2 * FEATURES].fill(200);
        x[3 * FEATURES - 1] = 1;
        // And real digits: blank margins, dense strokes.
        let digits = crate::data::sample::train_sample().expect("the built-in sample");
        x.extend_from_slice(&digits.pixels[..40 * FEATURES]);
        for row in x.chunks_exact(FEATURES) {
            // Values compared as bits: both must be exactly pixel / 255.
            let expected: Vec<(u16, u32)> = row
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != 0)
                .map(|(i, &p)| (i as u16, (p as f32 / 255.0).to_bits()))
                .collect();
            let expected_bytes: Vec<(u16, u8)> = row
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != 0)
                .map(|(i, &p)| (i as u16, p))
                .collect();
            let (mut index, mut value) = (Box::new([0; NZ_CAP]), Box::new([0.0; NZ_CAP]));
            let mut bytes = Box::new([0; NZ_CAP]);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for (name, scaled, raw) in gathers() {
                let n = scaled(row, &mut index, &mut value, &mut bytes);
                let got: Vec<(u16, u32)> =
                    index[..n].iter().copied().zip(bits(&value[..n])).collect();
                assert_eq!(got, expected, "{name}");
                let n = raw(row, &mut index, &mut value, &mut bytes);
                let got: Vec<(u16, u8)> = index[..n]
                    .iter()
                    .copied()
                    .zip(bytes[..n].iter().copied())
                    .collect();
                assert_eq!(got, expected_bytes, "{name}");
            }
            // The gather the level allows, through NonZeros.
            let mut nz = NonZeros::default();
            nz.gather(row);
            let got: Vec<(u16, u32)> = nz.index[..nz.len]
                .iter()
                .copied()
                .zip(bits(&nz.value[..nz.len]))
                .collect();
            assert_eq!(got, expected);
            nz.gather_bytes(row);
            let got: Vec<(u16, u8)> = nz.index[..nz.len]
                .iter()
                .copied()
                .zip(nz.bytes[..nz.len].iter().copied())
                .collect();
            assert_eq!(got, expected_bytes);
        }
    }
}
