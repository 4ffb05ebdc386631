//! Parsing a real Kaggle train.csv slice: on one thread
//! (`parse_csv_serial`) and on the rayon pool (`parse_csv`, what `load`
//! uses). Throughput is input bytes per second.
//!
//! The slice is the header and the first 10,000 rows of
//! `../shared/.../train.csv.gz` (about 18 MB decompressed), or the whole
//! repository sample when `../shared` is absent. Decompression is not timed.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_blas::data::csv::{parse_csv, parse_csv_serial};
use mnist_blas::data::Expect;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const ROWS: usize = 10_000;

fn csv(c: &mut Criterion) {
    let (all, what) = common::train_csv_bytes();
    let bytes = common::first_lines(&all, ROWS);
    drop(all);
    let rows = parse_csv_serial(&bytes, Path::new(&what), Expect::Labeled)
        .expect("a valid train.csv")
        .len();
    eprintln!(
        "csv bench: {rows} rows, {:.1} MB of {what}; rayon threads {}",
        bytes.len() as f64 / 1e6,
        rayon::current_num_threads()
    );
    let mut g = c.benchmark_group("csv_parse");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes.len() as u64));
    let path = Path::new(&what);
    g.bench_with_input(BenchmarkId::new("serial", rows), &bytes, |b, bytes| {
        b.iter(|| black_box(parse_csv_serial(bytes, path, Expect::Labeled).unwrap()))
    });
    g.bench_with_input(BenchmarkId::new("rayon", rows), &bytes, |b, bytes| {
        b.iter(|| black_box(parse_csv(bytes, path, Expect::Labeled).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, csv);
criterion_main!(benches);
