//! The original MNIST IDX format (LeCun et al.): big-endian headers, then
//! raw bytes. Images: magic `0x00000803`, dims `n, 28, 28`, then `n * 784`
//! pixels. Labels: magic `0x00000801`, dim `n`, then `n` label bytes.
//!
//! The distribution ships images and labels as separate files, so
//! [`load_idx`] is given the images and finds the labels beside them.

use std::path::{Path, PathBuf};

use super::{source, DataError, Dataset, Expect, CLASSES, FEATURES};

/// Magic number of an IDX file of `u8` values with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of `u8` values with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Image side length: only 28x28 MNIST images are supported.
pub const SIDE: u32 = 28;

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Whether `bytes` (already gunzipped) look like any IDX file. IDX magic
/// numbers start with two zero bytes, which no CSV text does, so a file
/// that starts so is reported as an IDX file with a bad magic rather than
/// as a CSV with a bad header.
pub fn is_idx(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0, 0])
}

/// Parses an IDX images file: the `n * 784` pixel bytes, row-major.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let magic = be_u32(bytes, 0);
    if magic == Some(LABELS_MAGIC) {
        return Err(DataError::IdxLabelsGiven {
            path: path.to_path_buf(),
        });
    }
    check_magic(magic, IMAGES_MAGIC, "images", IMAGES_HEADER, bytes, path)?;
    let (Some(count), Some(rows), Some(cols)) =
        (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12))
    else {
        return Err(truncated_header(path, "images", IMAGES_HEADER, bytes.len()));
    };
    if (rows, cols) != (SIDE, SIDE) {
        return Err(DataError::IdxBadDims {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    let body = checked_body(bytes, IMAGES_HEADER, count, FEATURES as u64, "images", path)?;
    Ok(body.to_vec())
}

/// Parses an IDX labels file: `n` labels, each checked to be 0-9.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    check_magic(
        be_u32(bytes, 0),
        LABELS_MAGIC,
        "labels",
        LABELS_HEADER,
        bytes,
        path,
    )?;
    let Some(count) = be_u32(bytes, 4) else {
        return Err(truncated_header(path, "labels", LABELS_HEADER, bytes.len()));
    };
    let body = checked_body(bytes, LABELS_HEADER, count, 1, "labels", path)?;
    if let Some(index) = body.iter().position(|&l| usize::from(l) >= CLASSES) {
        return Err(DataError::IdxBadLabel {
            path: path.to_path_buf(),
            offset: (LABELS_HEADER + index) as u64,
            index: index as u64,
            found: body[index],
        });
    }
    Ok(body.to_vec())
}

/// Builds a dataset from IDX images already in memory, reading the labels
/// file beside `path` if there is one. Without one, the result is unlabeled,
/// which is an error only when `expect` is [`Expect::Labeled`].
pub fn load_idx(images: &[u8], path: &Path, expect: Expect) -> Result<Dataset, DataError> {
    let pixels = parse_images(images, path)?;
    let candidates = labels_path_candidates(path);
    let labels = match candidates.iter().find(|p| p.is_file()) {
        Some(labels_path) => Some(read_matching_labels(labels_path, path, &pixels)?),
        None if expect == Expect::Labeled => {
            return Err(DataError::IdxMissingLabels {
                path: path.to_path_buf(),
                tried: candidates,
            })
        }
        None => None,
    };
    Ok(Dataset {
        pixels,
        labels,
        source: path.to_path_buf(),
    })
}

/// Reads the labels file and checks it has one label per image.
fn read_matching_labels(
    labels_path: &Path,
    images_path: &Path,
    pixels: &[u8],
) -> Result<Vec<u8>, DataError> {
    let labels = parse_labels(&source::read_bytes(labels_path)?, labels_path)?;
    let images = pixels.len() / FEATURES;
    if labels.len() != images {
        return Err(DataError::IdxCountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            images_count: images as u64,
            labels_count: labels.len() as u64,
        });
    }
    Ok(labels)
}

/// Where the labels for an images file would be: the file name with
/// `images-idx3` (or `images.idx3`, as some mirrors name it) replaced by
/// `labels-idx1` (`labels.idx1`), as is, then with `.gz` added or removed,
/// since mirrors differ in which files they compress. Empty if the name has
/// no `images` part to replace.
pub fn labels_path_candidates(images: &Path) -> Vec<PathBuf> {
    let Some(name) = images.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let replaced = [
        ("images-idx3", "labels-idx1"),
        ("images.idx3", "labels.idx1"),
    ]
    .iter()
    .find(|(from, _)| name.contains(from))
    .map(|(from, to)| name.replacen(from, to, 1));
    let Some(labels) = replaced else {
        return Vec::new();
    };
    let other = match labels.strip_suffix(".gz") {
        Some(plain) => plain.to_string(),
        None => format!("{labels}.gz"),
    };
    vec![images.with_file_name(labels), images.with_file_name(other)]
}

/// Big-endian `u32` at `at`, if the file is long enough.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_magic(
    magic: Option<u32>,
    expected: u32,
    what: &'static str,
    header: usize,
    bytes: &[u8],
    path: &Path,
) -> Result<(), DataError> {
    match magic {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(DataError::IdxBadMagic {
            path: path.to_path_buf(),
            what,
            found,
            expected,
        }),
        None if bytes.is_empty() => Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        }),
        None => Err(truncated_header(path, what, header, bytes.len())),
    }
}

/// A file too short to hold even its header.
fn truncated_header(path: &Path, what: &'static str, header: usize, found: usize) -> DataError {
    DataError::IdxShortHeader {
        path: path.to_path_buf(),
        what,
        expected: header as u64,
        found: found as u64,
    }
}

/// The records after the header, checked to be exactly `count` records of
/// `record_len` bytes: shorter is truncation, longer is trailing data.
fn checked_body<'a>(
    bytes: &'a [u8],
    header: usize,
    count: u32,
    record_len: u64,
    what: &'static str,
    path: &Path,
) -> Result<&'a [u8], DataError> {
    let count = u64::from(count);
    let expected = header as u64 + count * record_len;
    let found = bytes.len() as u64;
    if found < expected {
        return Err(DataError::IdxTruncated {
            path: path.to_path_buf(),
            what,
            count,
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::IdxTrailingBytes {
            path: path.to_path_buf(),
            what,
            count,
            expected,
            found,
        });
    }
    if count == 0 {
        return Err(DataError::HeaderOnly {
            path: path.to_path_buf(),
        });
    }
    Ok(&bytes[header..])
}
