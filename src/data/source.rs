//! File reads with transparent gzip: whole-file ([`read_bytes`], for IDX
//! and in-memory use) or block by block ([`DataReader`], for CSV, so the
//! ~77 MB of decompressed Kaggle text is never held at once).
//!
//! Gzip is detected from the content, not the extension: a `.gz` that is
//! really plain text loads fine, and a `.csv` that is really gzip is
//! decompressed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
    plausible_isize([tail[0], tail[1], tail[2], tail[3]], bytes.len())
}

/// The ISIZE trailer value, if `compressed_len` bytes could expand to it.
fn plausible_isize(trailer: [u8; 4], compressed_len: usize) -> usize {
    let isize = u32::from_le_bytes(trailer) as usize;
    if isize <= compressed_len.saturating_mul(MAX_DEFLATE_RATIO) {
        isize
    } else {
        0
    }
}

/// Buffer between the file and the gzip decoder: large enough that system
/// calls are rare, small next to a block.
const FILE_BUFFER_BYTES: usize = 256 * 1024;

/// A data file opened for reading in blocks, gunzipped on the fly when its
/// content is gzip. Read errors name the file: [`DataError::Gzip`] for a
/// compressed file (truncation and corruption surface mid-stream, where the
/// decoder meets them), [`DataError::Io`] otherwise.
pub struct DataReader {
    /// `Send`, so the next block can be read on another thread while the
    /// last one parses.
    inner: Box<dyn Read + Send>,
    gzip: bool,
    path: PathBuf,
    size_hint: usize,
}

impl DataReader {
    pub fn open(path: &Path) -> Result<DataReader, DataError> {
        let io_error = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        let meta = file.metadata().map_err(io_error)?;
        let file_len = meta.len();
        // Read before any buffering, so seeking back to the start is enough;
        // pipes and devices cannot seek and have no useful length.
        let isize_hint = if meta.is_file() {
            gzip_trailer_hint(&mut file, file_len).map_err(io_error)?
        } else {
            0
        };
        let mut buffered = BufReader::with_capacity(FILE_BUFFER_BYTES, file);
        let gzip = is_gzip(buffered.fill_buf().map_err(io_error)?);
        let (inner, size_hint): (Box<dyn Read + Send>, usize) = if gzip {
            (Box::new(MultiGzDecoder::new(buffered)), isize_hint)
        } else {
            (Box::new(buffered), usize::try_from(file_len).unwrap_or(0))
        };
        Ok(DataReader {
            inner,
            gzip,
            path: path.to_path_buf(),
            size_hint,
        })
    }

    /// Content already in memory (gunzipped on the fly when it is gzip);
    /// for checking the block reader against whole-file parsing.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> DataReader {
        let gzip = is_gzip(&bytes);
        let size_hint = if gzip { size_hint(&bytes) } else { bytes.len() };
        let cursor = std::io::Cursor::new(bytes);
        let inner: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(cursor))
        } else {
            Box::new(cursor)
        };
        DataReader {
            inner,
            gzip,
            path: path.to_path_buf(),
            size_hint,
        }
    }

    /// Roughly how many bytes the (decompressed) content holds: the file
    /// size, or the gzip trailer's ISIZE when plausible; 0 if unknown. Only
    /// for reserving memory: it may be wrong (a multi-member gzip states only
    /// its last member's size).
    pub fn size_hint(&self) -> usize {
        self.size_hint
    }

    /// Appends up to `want` bytes to `buf`; returns whether the content
    /// ended (fewer than `want` bytes were left).
    pub fn read_block(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<bool, DataError> {
        buf.reserve(want);
        let got = (&mut self.inner)
            .take(want as u64)
            .read_to_end(buf)
            .map_err(|e| self.error(e))?;
        Ok(got < want)
    }

    /// Appends everything left to `buf`.
    pub fn read_rest(&mut self, buf: &mut Vec<u8>) -> Result<(), DataError> {
        let _ = buf.try_reserve_exact(self.size_hint.saturating_sub(buf.len()));
        self.inner
            .read_to_end(buf)
            .map_err(|e| self.error(e))
            .map(|_| ())
    }

    fn error(&self, e: std::io::Error) -> DataError {
        let path = self.path.clone();
        if self.gzip {
            DataError::Gzip {
                path,
                detail: gzip_detail(&e),
            }
        } else {
            DataError::Io { path, source: e }
        }
    }
}

/// What the last 4 bytes would say as a gzip ISIZE trailer (0 when not
/// plausible); leaves `file` at its start.
fn gzip_trailer_hint(file: &mut File, file_len: u64) -> std::io::Result<usize> {
    let mut tail = [0u8; 4];
    let hint = if file_len >= 4 {
        file.seek(SeekFrom::Start(file_len - 4))?;
        file.read_exact(&mut tail)?;
        plausible_isize(tail, usize::try_from(file_len).unwrap_or(usize::MAX))
    } else {
        0
    };
    file.seek(SeekFrom::Start(0))?;
    Ok(hint)
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
