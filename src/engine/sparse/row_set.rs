//! Many rows as their non-zero pixels, gathered once and read many times.
//!
//! A [`RowSet`] stores rows one after another as compressed sparse rows:
//! the resident trainers keep the whole training set this way, values as
//! bytes, and the deep sparse path a batch's rows, values as f32. Each row
//! also records where its pixels cross [`PIXEL_SPLIT`], so the halves
//! trainer can take either part without searching.

use super::gather::{NonZeros, PixelValue};
use super::halves::PIXEL_SPLIT;
use crate::data::FEATURES;
use crate::engine::prefetch_lines;

/// Rows as their non-zero pixels, one after another (compressed sparse
/// rows): row `r`'s pixels are `index[start[r]..start[r + 1]]` and their
/// values the same range of `value`, in pixel order; the first `split[r]`
/// of them are below [`PIXEL_SPLIT`]. Values are pixel bytes (a quarter of
/// the memory of f32, so more of it stays in cache) or scaled f32.
#[derive(Default)]
pub(super) struct RowSet<V = u8> {
    start: Vec<u32>,
    index: Vec<u16>,
    value: Vec<V>,
    split: Vec<u16>,
}

impl<V: PixelValue> RowSet<V> {
    /// Rows `x` (`rows x 784` bytes), gathered in order by one thread.
    pub(super) fn gather(x: &[u8]) -> RowSet<V> {
        let rows = x.len() / FEATURES;
        let mut set = RowSet {
            start: Vec::with_capacity(rows + 1),
            // MNIST digits light about a fifth of their pixels.
            index: Vec::with_capacity(x.len() / 4),
            value: Vec::with_capacity(x.len() / 4),
            split: Vec::with_capacity(rows),
        };
        set.regather(x, &mut NonZeros::default());
        set
    }

    /// [`RowSet::gather`] into this set's own buffers, replacing what they
    /// held (`nz` is scratch): a set refilled block after block allocates
    /// only while its blocks grow.
    pub(super) fn regather(&mut self, x: &[u8], nz: &mut NonZeros) {
        self.start.clear();
        self.index.clear();
        self.value.clear();
        self.split.clear();
        self.start.push(0);
        for row in x.chunks_exact(FEATURES) {
            V::gather(nz, row);
            self.index.extend_from_slice(nz.index());
            self.value.extend_from_slice(V::gathered(nz));
            self.start.push(self.index.len() as u32);
            self.split.push(split_point(nz.index()) as u16);
        }
    }

    /// [`RowSet::gather`] on the rayon pool: the same result. Rows are
    /// counted first, so each block of rows gathers straight into its own
    /// part of the final arrays (one copy of the data, and the pages of the
    /// arrays first touched by the threads that fill them). `None` if the
    /// non-zeros overflow a `u32` offset.
    pub(super) fn gather_parallel(x: &[u8]) -> Option<RowSet<V>> {
        use rayon::prelude::*;
        const BLOCK_ROWS: usize = 512;
        let counts: Vec<u32> = x
            .par_chunks(FEATURES)
            .map(|row| row.iter().map(|&p| (p != 0) as u32).sum())
            .collect();
        let mut start = Vec::with_capacity(counts.len() + 1);
        start.push(0u32);
        let mut total = 0u32;
        for &n in &counts {
            total = total.checked_add(n)?;
            start.push(total);
        }
        let mut index = vec![0u16; total as usize];
        let mut value = vec![V::default(); total as usize];
        let mut split = vec![0u16; counts.len()];
        // Each block's share of the arrays, cut in order.
        let mut parts = Vec::with_capacity(counts.len().div_ceil(BLOCK_ROWS));
        let (mut index_left, mut value_left) = (&mut index[..], &mut value[..]);
        let blocks = x
            .chunks(BLOCK_ROWS * FEATURES)
            .zip(split.chunks_mut(BLOCK_ROWS));
        for (b, (rows, split)) in blocks.enumerate() {
            let first = b * BLOCK_ROWS;
            let len = (start[first + rows.len() / FEATURES] - start[first]) as usize;
            let (i, i_rest) = std::mem::take(&mut index_left).split_at_mut(len);
            let (v, v_rest) = std::mem::take(&mut value_left).split_at_mut(len);
            (index_left, value_left) = (i_rest, v_rest);
            parts.push((rows, i, v, split));
        }
        parts
            .into_par_iter()
            .for_each(|(rows, index, value, split)| {
                let mut nz = NonZeros::default();
                let mut at = 0;
                for (row, split) in rows.chunks_exact(FEATURES).zip(split) {
                    V::gather(&mut nz, row);
                    let n = nz.index().len();
                    index[at..at + n].copy_from_slice(nz.index());
                    value[at..at + n].copy_from_slice(V::gathered(&nz));
                    *split = split_point(nz.index()) as u16;
                    at += n;
                }
                assert_eq!(at, index.len(), "the count and the gather agree");
            });
        Some(RowSet {
            start,
            index,
            value,
            split,
        })
    }

    /// How many rows.
    pub(super) fn len(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    /// Start loading row `r` into the cache (a hint: no effect on results).
    #[inline(always)]
    pub(super) fn prefetch(&self, r: usize) {
        let (index, value, _) = self.row(r);
        prefetch_lines(index);
        prefetch_lines(value);
    }

    /// Row `r`'s non-zero pixels, their values, and how many of them lie
    /// below [`PIXEL_SPLIT`].
    #[inline(always)]
    pub(super) fn row(&self, r: usize) -> (&[u16], &[V], usize) {
        let span = self.start[r] as usize..self.start[r + 1] as usize;
        (
            &self.index[span.clone()],
            &self.value[span],
            self.split[r] as usize,
        )
    }
}

impl<V: PixelValue> RowSet<V> {
    /// Rows `batch` of `from`, in that order, their values in this set's
    /// form, replacing what this set held (a resident trainer's batch or
    /// shard).
    pub(super) fn select(&mut self, from: &RowSet<u8>, batch: &[usize]) {
        let table = crate::engine::pixel_table();
        self.start.clear();
        self.index.clear();
        self.value.clear();
        self.split.clear();
        self.start.push(0);
        for &r in batch {
            let (index, value, split) = from.row(r);
            self.index.extend_from_slice(index);
            self.value
                .extend(value.iter().map(|&v| V::from_byte(v, table)));
            self.start.push(self.index.len() as u32);
            self.split.push(split as u16);
        }
    }
}

/// How many of a row's (ascending) non-zero pixels lie below [`PIXEL_SPLIT`].
#[inline(always)]
fn split_point(index: &[u16]) -> usize {
    index.partition_point(|&i| (i as usize) < PIXEL_SPLIT)
}

/// How many rows ahead the resident trainers prefetch a batch's rows:
/// scattered over a set bigger than the L2 cache, they would otherwise miss
/// one after another. (The exact distance matters little.)
pub(super) const PREFETCH_AHEAD: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::random_batch;

    /// The parallel row set (counted, then gathered by blocks into place)
    /// equals the one-thread gather, across block edges and with blank
    /// rows, on pools of 1 and 2 threads.
    #[test]
    fn parallel_row_set_equals_the_serial_one() {
        let (mut x, _) = random_batch(4500, 8);
        x[FEATURES * 511..FEATURES * 513].fill(0);
        x[FEATURES * 2047..FEATURES * 2049].fill(0);
        x[FEATURES * 4499..].fill(0);
        let serial = RowSet::<u8>::gather(&x);
        assert_eq!(serial.len(), 4500);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let parallel = pool.install(|| RowSet::<u8>::gather_parallel(&x)).unwrap();
            assert_eq!(parallel.start, serial.start);
            assert_eq!(parallel.index, serial.index);
            assert_eq!(parallel.value, serial.value);
            assert_eq!(parallel.split, serial.split);
        }
        assert!(serial.row(2048).0.is_empty() && serial.row(4499).0.is_empty());
        assert!(!serial.row(2049).0.is_empty());
    }
}
