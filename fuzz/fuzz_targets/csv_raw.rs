//! Any bytes as a data file: gzip sniffing, CSV or IDX, labeled or not, and
//! the parallel CSV reader against the serial one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mnist_blas::data::fuzz::check_file_bytes(data);
});
