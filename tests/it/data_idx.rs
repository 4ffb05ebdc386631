//! The MNIST IDX reader, on small synthetic files in a temp dir, and on the
//! real t10k files when they are present.

use std::io::Write;
use std::path::{Path, PathBuf};

use mnist_blas::data::idx::{labels_path_candidates, IMAGES_MAGIC, LABELS_MAGIC};
use mnist_blas::data::{self, DataError, Expect, FEATURES};

fn pixel(i: usize, p: usize) -> u8 {
    ((i * 37 + p * 11) % 256) as u8
}

fn images_bytes(magic: u32, n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [magic, n, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for i in 0..n as usize {
        out.extend((0..(rows * cols) as usize).map(|p| pixel(i, p)));
    }
    out
}

fn labels_bytes(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend((0..n as usize).map(|i| (i * 3 % 10) as u8));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    file
}

fn load_err(file: &Path, expect: Expect) -> DataError {
    match data::load(file, expect) {
        Ok(d) => panic!("expected an error, loaded {} rows", d.len()),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            e
        }
    }
}

#[test]
fn round_trip_plain_and_gz() {
    let dir = tempfile::tempdir().unwrap();
    // images plain + labels plain; images gz + labels gz; and the mixes.
    for (images_name, labels_name, gz_images, gz_labels) in [
        ("a-images-idx3-ubyte", "a-labels-idx1-ubyte", false, false),
        (
            "b-images-idx3-ubyte.gz",
            "b-labels-idx1-ubyte.gz",
            true,
            true,
        ),
        ("c-images-idx3-ubyte.gz", "c-labels-idx1-ubyte", true, false),
        ("d-images-idx3-ubyte", "d-labels-idx1-ubyte.gz", false, true),
        ("e-images.idx3-ubyte", "e-labels.idx1-ubyte", false, false),
    ] {
        let images = images_bytes(IMAGES_MAGIC, 7, 28, 28);
        let labels = labels_bytes(7);
        let images = if gz_images { gzip(&images) } else { images };
        let labels = if gz_labels { gzip(&labels) } else { labels };
        let file = write(dir.path(), images_name, &images);
        write(dir.path(), labels_name, &labels);

        let d = data::load(&file, Expect::Labeled).unwrap_or_else(|e| panic!("{images_name}: {e}"));
        assert_eq!(d.len(), 7);
        assert_eq!(d.labels, Some(vec![0, 3, 6, 9, 2, 5, 8]));
        for i in 0..7 {
            assert!(
                d.row(i).iter().enumerate().all(|(p, &v)| v == pixel(i, p)),
                "row {i}"
            );
        }
        assert_eq!(d.source, file);
    }
}

#[test]
fn missing_labels_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "x-images-idx3-ubyte.gz",
        &gzip(&images_bytes(IMAGES_MAGIC, 3, 28, 28)),
    );
    // Unlabeled is fine: predict on images alone.
    let d = data::load(&file, Expect::Unlabeled).unwrap();
    assert_eq!(d.len(), 3);
    assert!(d.labels.is_none());
    // Labeled says where it looked.
    let e = load_err(&file, Expect::Labeled);
    match &e {
        DataError::IdxMissingLabels { tried, .. } => {
            assert_eq!(
                tried,
                &vec![
                    dir.path().join("x-labels-idx1-ubyte.gz"),
                    dir.path().join("x-labels-idx1-ubyte")
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("x-labels-idx1-ubyte.gz"), "{e}");
}

#[test]
fn labels_candidates() {
    let c = labels_path_candidates(Path::new("d/train-images-idx3-ubyte"));
    assert_eq!(
        c,
        vec![
            PathBuf::from("d/train-labels-idx1-ubyte"),
            PathBuf::from("d/train-labels-idx1-ubyte.gz")
        ]
    );
    assert!(labels_path_candidates(Path::new("d/digits.bin")).is_empty());
}

#[test]
fn bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "m-images-idx3-ubyte",
        &images_bytes(0x0000_0804, 2, 28, 28),
    );
    let e = load_err(&file, Expect::Unlabeled);
    assert!(
        matches!(
            e,
            DataError::IdxBadMagic {
                found: 0x804,
                expected: 0x803,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .starts_with(&format!("{}: not an MNIST IDX images file", file.display())));

    let labels = write(dir.path(), "m-labels-idx1-ubyte", &labels_bytes(2));
    let e = load_err(&labels, Expect::Labeled);
    assert!(matches!(e, DataError::IdxLabelsGiven { .. }), "{e:?}");
}

#[test]
fn bad_magic_in_labels_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "l-images-idx3-ubyte",
        &images_bytes(IMAGES_MAGIC, 2, 28, 28),
    );
    let mut labels = labels_bytes(2);
    labels[3] = 0x03;
    let labels_file = write(dir.path(), "l-labels-idx1-ubyte", &labels);
    let e = load_err(&file, Expect::Labeled);
    assert!(
        matches!(
            e,
            DataError::IdxBadMagic {
                found: 0x803,
                expected: 0x801,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.path(), labels_file);
}

#[test]
fn wrong_dims() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "w-images-idx3-ubyte",
        &images_bytes(IMAGES_MAGIC, 2, 32, 32),
    );
    let e = load_err(&file, Expect::Unlabeled);
    assert!(
        matches!(
            e,
            DataError::IdxBadDims {
                rows: 32,
                cols: 32,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("32x32; only 28x28"), "{e}");
}

#[test]
fn truncated_images() {
    let dir = tempfile::tempdir().unwrap();
    let full = images_bytes(IMAGES_MAGIC, 5, 28, 28);
    let file = write(dir.path(), "t-images-idx3-ubyte", &full[..full.len() - 100]);
    let e = load_err(&file, Expect::Unlabeled);
    let expected = 16 + 5 * FEATURES as u64;
    match &e {
        DataError::IdxTruncated {
            count,
            expected: x,
            found,
            ..
        } => {
            assert_eq!((*count, *x, *found), (5, expected, expected - 100));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&format!(
        "should be {expected} bytes, but it is {} bytes",
        expected - 100
    )));

    // Truncated inside the header; and a gzipped truncated file.
    let file = write(dir.path(), "h-images-idx3-ubyte", &full[..10]);
    let e = load_err(&file, Expect::Unlabeled);
    assert!(
        matches!(
            e,
            DataError::IdxShortHeader {
                expected: 16,
                found: 10,
                ..
            }
        ),
        "{e:?}"
    );
    let file = write(
        dir.path(),
        "g-images-idx3-ubyte.gz",
        &gzip(&full[..full.len() - 1]),
    );
    let e = load_err(&file, Expect::Unlabeled);
    assert!(matches!(e, DataError::IdxTruncated { .. }), "{e:?}");
}

#[test]
fn trailing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = images_bytes(IMAGES_MAGIC, 2, 28, 28);
    bytes.extend_from_slice(b"xyz");
    let file = write(dir.path(), "z-images-idx3-ubyte", &bytes);
    let e = load_err(&file, Expect::Unlabeled);
    assert!(
        matches!(e, DataError::IdxTrailingBytes { found, expected, .. } if found == expected + 3),
        "{e:?}"
    );
}

#[test]
fn zero_images() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "0-images-idx3-ubyte",
        &images_bytes(IMAGES_MAGIC, 0, 28, 28),
    );
    assert!(matches!(
        load_err(&file, Expect::Unlabeled),
        DataError::HeaderOnly { .. }
    ));
}

#[test]
fn count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c-images-idx3-ubyte",
        &images_bytes(IMAGES_MAGIC, 6, 28, 28),
    );
    let labels = write(dir.path(), "c-labels-idx1-ubyte", &labels_bytes(5));
    let e = load_err(&file, Expect::Labeled);
    match &e {
        DataError::IdxCountMismatch {
            images,
            labels: l,
            images_count,
            labels_count,
        } => {
            assert_eq!(
                (images, l, *images_count, *labels_count),
                (&file, &labels, 6, 5)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "{}: 6 images, but {} has 5 labels",
            file.display(),
            labels.display()
        )
    );
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "r-images-idx3-ubyte",
        &images_bytes(IMAGES_MAGIC, 4, 28, 28),
    );
    let mut labels = labels_bytes(4);
    labels[8 + 2] = 10;
    write(dir.path(), "r-labels-idx1-ubyte", &labels);
    let e = load_err(&file, Expect::Labeled);
    assert!(
        matches!(
            e,
            DataError::IdxBadLabel {
                offset: 10,
                index: 2,
                found: 10,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty-images-idx3-ubyte", b"");
    assert!(matches!(
        load_err(&file, Expect::Unlabeled),
        DataError::EmptyFile { .. }
    ));
    let file = write(dir.path(), "empty.gz", &gzip(b""));
    assert!(matches!(
        load_err(&file, Expect::Unlabeled),
        DataError::EmptyFile { .. }
    ));
}

/// The real t10k set (10,000 images), when present.
#[test]
fn real_mnist_t10k() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/mnist-idx/t10k-images-idx3-ubyte.gz");
    if !file.exists() {
        println!("note: {} not found, skipping", file.display());
        return;
    }
    let d = data::load(&file, Expect::Labeled).unwrap();
    assert_eq!(d.len(), 10_000);
    let labels = d.labels.as_ref().unwrap();
    assert!(labels.iter().all(|&l| l < 10));
    assert_eq!(&labels[..5], &[7, 2, 1, 0, 4]); // the well-known first t10k labels
}
