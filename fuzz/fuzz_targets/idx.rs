//! Any bytes as an IDX images file and as an IDX labels file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mnist_blas::data::fuzz::check_idx_bytes(data);
});
