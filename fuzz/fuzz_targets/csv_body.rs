//! Fuzzed data rows under a valid Kaggle header, so the row parser (fast
//! path, quoted-field fallback, chunking) is reached on most inputs.
#![no_main]

use mnist_blas::data::fuzz::{check_csv_chunkings_agree, check_file_bytes, csv_around};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (csv, expect) = csv_around(data);
    check_csv_chunkings_agree(&csv, expect);
    check_file_bytes(&csv);
});
