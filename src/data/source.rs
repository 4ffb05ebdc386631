//! Whole-file reads with transparent gzip.
//!
//! The data files are small enough (tens of MB) to hold in memory, and having
//! the whole buffer lets the CSV reader split it into chunks for rayon. Gzip
//! is detected from the content, not the extension: a `.gz` that is really
//! plain text loads fine, and a `.csv` that is really gzip is decompressed.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The two bytes every gzip member starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data by more than about 1032:1, so a gzip trailer
/// claiming more than this is not trusted as a capacity hint.
const MAX_DEFLATE_RATIO: usize = 1032;

/// Reads `path` whole, gunzipping it when the content is gzip.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    maybe_gunzip(raw, path)
}

/// Returns `bytes` decompressed if they start with the gzip magic, else as is.
/// `path` is only used in error messages.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if is_gzip(&bytes) {
        gunzip(&bytes, path)
    } else {
        Ok(bytes)
    }
}

/// Whether `bytes` starts with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses all gzip members in `bytes` (some tools write several).
/// Truncation, corruption and CRC mismatches become [`DataError::Gzip`].
pub fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    // Only a hint: a corrupt trailer must not abort on a failed allocation.
    let _ = out.try_reserve_exact(size_hint(bytes));
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip {
            path: path.to_path_buf(),
            detail: gzip_detail(&e),
        })?;
    Ok(out)
}

/// The uncompressed size from the gzip trailer (ISIZE, size mod 2^32), if it
/// is plausible; reserving it up front avoids repeated regrowth of a ~77 MB
/// buffer. A lie only costs a reallocation (or an unused reservation),
/// never correctness.
fn size_hint(bytes: &[u8]) -> usize {
    let Some(tail) = bytes.len().checked_sub(4).and_then(|at| bytes.get(at..)) else {
        return 0;
    };
    let isize = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    if isize <= bytes.len().saturating_mul(MAX_DEFLATE_RATIO) {
        isize
    } else {
        0
    }
}

/// flate2 reports truncation as a bare "unexpected end of file"; say what it
/// means for the user.
fn gzip_detail(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        format!("stream ends early, the file is probably truncated ({e})")
    } else {
        e.to_string()
    }
}
