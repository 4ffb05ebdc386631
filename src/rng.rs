//! Seeded randomness whose stream never changes under us.
//!
//! `--seed 7` must mean the same run forever, so nothing here goes through
//! `rand`'s distributions (whose algorithms may change between releases):
//! ChaCha8's keystream is fixed by its spec, and the conversions to floats,
//! bounded integers and normals are written out below.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Independent streams of one seed, so that e.g. changing the number of
/// epochs does not change the train/held-out split or the initial weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Split = 1,
    Init = 2,
    Shuffle = 3,
    Sweep = 4,
    /// Training images' distortions (`--augment`).
    Augment = 5,
}

#[derive(Debug, Clone)]
pub struct SeededRng {
    inner: ChaCha8Rng,
}

impl SeededRng {
    pub fn new(seed: u64, stream: Stream) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let mut inner = ChaCha8Rng::from_seed(key);
        inner.set_stream(stream as u64);
        SeededRng { inner }
    }

    /// Position in the keystream, for checkpoints.
    pub fn word_pos(&self) -> u128 {
        self.inner.get_word_pos()
    }

    pub fn set_word_pos(&mut self, pos: u128) {
        self.inner.set_word_pos(pos)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1) with 24 random bits: every value is an exact f32.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by Box-Muller (one value per call; simple beats fast
    /// here, it only runs at initialisation).
    pub fn normal_f64(&mut self) -> f64 {
        // 1 - u keeps the argument of ln in (0, 1].
        let u1 = 1.0 - self.uniform_f64();
        let u2 = self.uniform_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` without modulo bias (rejection sampling).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX - n + 1) % n;
        loop {
            let v = self.next_u64();
            if v <= zone {
                return (v % n) as usize;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `0..n` in a random order.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a: Vec<u32> = (0..4)
            .map(|_| SeededRng::new(7, Stream::Init).next_u32())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut init = SeededRng::new(7, Stream::Init);
        let mut split = SeededRng::new(7, Stream::Split);
        assert_ne!(init.next_u64(), split.next_u64());
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = SeededRng::new(1, Stream::Shuffle);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = SeededRng::new(3, Stream::Split).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn word_pos_round_trips() {
        let mut a = SeededRng::new(5, Stream::Shuffle);
        a.next_u64();
        let pos = a.word_pos();
        let x = a.next_u64();
        let mut b = SeededRng::new(5, Stream::Shuffle);
        b.set_word_pos(pos);
        assert_eq!(b.next_u64(), x);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = SeededRng::new(11, Stream::Init);
        let xs: Vec<f64> = (0..20000).map(|_| rng.normal_f64()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
