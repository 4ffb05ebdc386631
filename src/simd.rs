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

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Avx512,
    Avx2,
    Baseline,
}

/// The widest vector extension this CPU supports (detected once).
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
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
    })
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
