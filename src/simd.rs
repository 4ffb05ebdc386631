//! Runtime choice of vector width for the engines' hand-written loops.
//!
//! The crate is built for the baseline x86-64 target (SSE2), so that one
//! binary runs everywhere. The few loops that dominate a run are written as
//! plain Rust over fixed-size chunks and compiled three times: for AVX-512,
//! for AVX2 and for the baseline; the widest the CPU has is picked once at
//! run time.
//!
//! Every version performs the same IEEE operations in the same order (a
//! multiply and an add, never a fused multiply-add, which Rust does not emit
//! on its own), so the results are bit-identical whichever version runs: the
//! choice changes speed, never numbers.
//!
//! `MNIST_BLAS_SIMD=avx512|avx2|baseline` caps the level (and the OpenBLAS
//! kernel, see [`crate::threads::select_openblas_kernel`]), so one machine
//! can measure what a laptop without AVX-512, or an old CPU, would run.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Baseline,
    Avx2,
    Avx512,
}

impl Level {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Baseline => "baseline",
        }
    }
}

/// The environment variable that caps the level.
pub(crate) const SIMD_ENV: &str = "MNIST_BLAS_SIMD";

/// The widest vector extension this CPU supports.
pub(crate) fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The level asked for with [`SIMD_ENV`], if set: an unknown value or one
/// this CPU lacks is an error naming the variable.
pub(crate) fn requested() -> Result<Option<Level>, String> {
    let Ok(value) = std::env::var(SIMD_ENV) else {
        return Ok(None);
    };
    let level = match value.trim().to_ascii_lowercase().as_str() {
        "" => return Ok(None),
        "avx512" => Level::Avx512,
        "avx2" => Level::Avx2,
        "baseline" | "scalar" | "sse2" => Level::Baseline,
        other => {
            return Err(format!(
                "{SIMD_ENV}={other}: expected avx512, avx2 or baseline"
            ))
        }
    };
    if level > detected() {
        return Err(format!(
            "{SIMD_ENV}={}: this CPU has at most {}",
            level.name(),
            detected().name()
        ));
    }
    Ok(Some(level))
}

/// The level the loops run at: the detected one, capped by [`SIMD_ENV`]
/// (an invalid value is ignored here; the CLI refuses it first).
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| requested().ok().flatten().unwrap_or_else(detected))
}

/// Defines `$vis fn $name($args) -> $ret` that runs `$body` compiled
/// for the best [`Level`]. `$body` must be safe code; the `unsafe` only
/// covers calling a `target_feature` function, which is sound because the
/// feature was detected first.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            // The inner functions repeat the outer signature, whose lints
            // (and allowances) are the outer function's.
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,avx")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,avx")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            match $crate::simd::level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `level()` detected these features on this CPU.
                $crate::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// Whether this CPU has AVX2 and popcnt, whatever level is allowed: what
/// the loops that pack bytes with [`PACK_SET_BITS`] need (their tests run
/// them whenever the CPU can).
pub(crate) fn cpu_has_avx2_popcnt() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx2") && has!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// For each byte `m`, the positions of its set bits, ascending, packed into
/// the low bytes of a word (the rest zero): the `pshufb` control that moves
/// the selected bytes of an 8-byte group to the front, in order (the sparse
/// engine's AVX2 gather of non-zero pixels, the CSV reader's AVX2 fields).
pub(crate) const PACK_SET_BITS: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut word, mut n, mut bit) = (0u64, 0, 0);
        while bit < 8 {
            if m & (1 << bit) != 0 {
                word |= (bit as u64) << (8 * n);
                n += 1;
            }
            bit += 1;
        }
        table[m] = word;
        m += 1;
    }
    table
};

multiversion! {
    /// `out[i] = pixels[i] / 255` in f32: the same correctly rounded value as
    /// [`super::pixel_table`], but vectorised.
    pub(crate) fn pixels_to_f32(pixels: &[u8], out: &mut [f32]) {
        assert_eq!(pixels.len(), out.len());
        for (o, &p) in out.iter_mut().zip(pixels) {
            *o = p as f32 / 255.0;
        }
    }
}

multiversion! {
    /// Whether every value is finite. A fold without an early exit, which
    /// vectorises: the trainer asks after every step, and weights are
    /// almost always fine.
    pub(crate) fn all_finite(values: &[f32]) -> bool {
        values.iter().fold(true, |ok, v| ok & v.is_finite())
    }
}

multiversion! {
    /// `out = (0 + sources[0] + sources[1] + ...) * k` element by element,
    /// the sources added in order; with no sources, `out *= k`. Each source
    /// is at least `out.len()` long.
    pub(crate) fn sum_scaled(out: &mut [f32], sources: &[&[f32]], k: f32) {
        if !sources.is_empty() {
            out.fill(0.0);
        }
        for s in sources {
            out.iter_mut().zip(*s).for_each(|(o, &v)| *o += v);
        }
        out.iter_mut().for_each(|o| *o *= k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_matches_the_table_exactly() {
        let pixels: Vec<u8> = (0..=255).collect();
        let mut out = vec![0.0; 256];
        pixels_to_f32(&pixels, &mut out);
        let table = crate::engine::pixel_table();
        for (i, (&a, &b)) in out.iter().zip(table.iter()).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "pixel {i}");
        }
    }
}
