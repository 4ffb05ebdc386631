//! The fast path's vector part: whole 32-byte blocks of plain
//! `digits,digits,` fields read at once with AVX2, where the line parser
//! would read them one byte at a time.
//!
//! A block is taken only when every field it holds up to its last comma is
//! valid (1-3 digits, at most 255); anything else (a fourth digit, a quote,
//! a space, an empty field, a value over 255) stops the blocks there, and
//! [`super::line`]'s byte loop goes on from that field, so it alone finds
//! and reports the fault, exactly as without this path. The blocks only
//! ever skip ahead over fields the byte loop would have accepted with the
//! same values.
//!
//! `MNIST_BLAS_SIMD=baseline` turns it off, as it does the engines' vector
//! loops.

use crate::simd::{cpu_has_avx2_popcnt, Level};

/// Whether [`blocks`] can run here: AVX2 (and popcnt) on this CPU, and the
/// SIMD level not capped below AVX2.
pub(super) fn vector_fields() -> bool {
    static WHICH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WHICH.get_or_init(|| crate::simd::level() >= Level::Avx2 && cpu_has_avx2_popcnt())
}

/// Bytes per block.
const BLOCK: usize = 32;

/// Pixels a block may write past the fields it reads: its values are
/// stored 8 at a time, the last store starting at most 12 fields in (no two
/// commas are adjacent in a block that is taken, so 24 bytes hold at most
/// 12 fields).
const SLACK: usize = 20;

/// From `pos`, the start of pixel field `k` (`line[pos - 1]` is the comma
/// before it, so `pos >= 2`), reads whole blocks of valid fields into `px`
/// and returns where the byte loop goes on: the first field not read, and
/// its index. Returns `(pos, k)` unchanged when no block can be taken.
///
/// The caller checks [`vector_fields`] first.
#[inline]
pub(super) fn blocks(line: &[u8], pos: usize, px: &mut [u8], k: usize) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        debug_assert!(cpu_has_avx2_popcnt());
        // SAFETY: the caller checked `vector_fields`, which detected AVX2
        // and popcnt on this CPU.
        unsafe { blocks_avx2(line, pos, px, k) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    (pos, k)
}

/// [`blocks`] with AVX2. Per block, from three loads at `pos`, `pos - 1`
/// and `pos - 2` (each byte beside the one or two before it):
///
/// - masks of the digits and commas, which must cover every byte up to the
///   block's last comma, with no two commas side by side (an empty field),
///   the block not starting with one, and no four digits in a row;
/// - each byte's value as the last digit of a field: the digit, plus ten
///   times the byte before it if that is a digit, plus a hundred times the
///   byte before that if both are digits; a hundreds digit over 2, or 2
///   with more than 55 after it, is over 255;
/// - the values where the next byte is a comma, packed to the front 8 bytes
///   at a time by [`PACK_SET_BITS`](crate::simd::PACK_SET_BITS) shuffles
///   and stored whole (the next store, or the byte loop, overwrites the
///   rest).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn blocks_avx2(line: &[u8], mut pos: usize, px: &mut [u8], mut k: usize) -> (usize, usize) {
    use crate::simd::PACK_SET_BITS;
    use std::arch::x86_64::*;
    let zero = _mm256_set1_epi8(b'0' as i8);
    let nine = _mm256_set1_epi8(9);
    let comma = _mm256_set1_epi8(b',' as i8);
    let two = _mm256_set1_epi8(2);
    let fifty_five = _mm256_set1_epi8(55);
    let two_hundred = _mm256_set1_epi8(200u8 as i8);
    #[rustfmt::skip]
    let hundreds = _mm256_setr_epi8(
        0, 100, 200u8 as i8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 100, 200u8 as i8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    );
    // Each byte less '0' and, where it is a digit, that digit (else 0),
    // with the mask of digits.
    let digits = |bytes: __m256i| {
        let d = _mm256_sub_epi8(bytes, zero);
        let is_digit = _mm256_cmpeq_epi8(_mm256_min_epu8(d, nine), d);
        (_mm256_and_si256(d, is_digit), is_digit)
    };
    while pos >= 2 && pos + BLOCK <= line.len() && k + SLACK <= px.len() {
        let window = &line[pos - 2..pos + BLOCK];
        // SAFETY: `window` is BLOCK + 2 bytes, so each 32-byte unaligned
        // load, at offsets 0, 1 and 2, stays inside it.
        let (b2, b1, b0) = unsafe {
            let p = window.as_ptr();
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(1).cast()),
                _mm256_loadu_si256(p.add(2).cast()),
            )
        };
        let (m0, is_digit0) = digits(b0);
        let digit_bits = _mm256_movemask_epi8(is_digit0) as u32;
        let comma_bits = _mm256_movemask_epi8(_mm256_cmpeq_epi8(b0, comma)) as u32;
        if comma_bits == 0 {
            break;
        }
        // Bytes 0 to the last comma, whose fields all end in this block.
        let whole = u32::MAX >> comma_bits.leading_zeros();
        let runs_of_four = digit_bits & (digit_bits >> 1) & (digit_bits >> 2) & (digit_bits >> 3);
        if (digit_bits | comma_bits) & whole != whole
            || comma_bits & 1 != 0
            || comma_bits & (comma_bits >> 1) != 0
            || runs_of_four & whole != 0
        {
            break;
        }
        let (m1, is_digit1) = digits(b1);
        let (m2, _) = digits(b2);
        let m2 = _mm256_and_si256(m2, is_digit1);
        // m1 * 10 as (m1 << 3) + (m1 << 1): m1 <= 9, so no bit crosses into
        // the next byte of the 16-bit lanes.
        let tens = _mm256_add_epi8(_mm256_slli_epi16::<3>(m1), _mm256_slli_epi16::<1>(m1));
        let below_100 = _mm256_add_epi8(m0, tens);
        let h = _mm256_shuffle_epi8(hundreds, m2);
        let value = _mm256_add_epi8(below_100, h);
        let over_255 = _mm256_or_si256(
            _mm256_cmpgt_epi8(m2, two),
            _mm256_and_si256(
                _mm256_cmpeq_epi8(h, two_hundred),
                _mm256_cmpgt_epi8(below_100, fifty_five),
            ),
        );
        // Bit i: byte i is a field's last digit (byte i + 1 its comma).
        let ends = comma_bits >> 1;
        if _mm256_movemask_epi8(over_255) as u32 & ends != 0 {
            break;
        }
        let halves = [
            _mm256_castsi256_si128(value),
            _mm256_extracti128_si256::<1>(value),
        ];
        let out = &mut px[k..k + SLACK];
        let mut n = 0;
        for group in 0..4 {
            let bits = (ends >> (8 * group)) & 0xFF;
            // Groups 1 and 3 are the upper 8 bytes of their half.
            let from = if group % 2 == 1 {
                0x0808_0808_0808_0808
            } else {
                0
            };
            let order = _mm_cvtsi64_si128((PACK_SET_BITS[bits as usize] + from) as i64);
            let packed = _mm_shuffle_epi8(halves[group / 2], order);
            // SAFETY: n <= 12 (see SLACK), so bytes n..n + 8 lie in `out`.
            unsafe { _mm_storel_epi64(out.as_mut_ptr().add(n).cast(), packed) };
            n += bits.count_ones() as usize;
        }
        k += n;
        pos += (32 - comma_bits.leading_zeros()) as usize;
    }
    (pos, k)
}
