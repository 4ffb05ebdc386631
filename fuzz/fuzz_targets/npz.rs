//! Any bytes as a model file and as a checkpoint file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mnist_blas::npz::fuzz::check_npz_bytes(data);
});
