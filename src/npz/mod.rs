//! Reading `.npz` files (numpy's zip of `.npy` arrays) with every size
//! bounded by what the file can hold.
//!
//! A model or checkpoint file comes from anywhere, so nothing it declares is
//! trusted before it is checked:
//! - an npy header is at most [`MAX_HEADER_BYTES`] long (numpy's own reading
//!   limit) and nests at most [`MAX_DEPTH`] levels;
//! - an entry's declared size must fit in its compressed bytes (deflate
//!   gives at most [`DEFLATE_MAX_RATIO`] bytes per byte), and those bytes
//!   must lie inside the file;
//! - the header's shape times its item size must be exactly the entry's
//!   size, and the caller's cap on the number of values is checked, before
//!   anything is allocated for the data;
//! - the data is read through [`Read::take`] with exactly the declared
//!   length, into memory that grows as bytes actually arrive (a size that
//!   lies costs only what is really there), then one probe byte makes sure
//!   the entry ends there and lets the zip reader check the CRC-32.
//!
//! Accepted, as `ndarray-npy` (which wrote and read these files before)
//! accepts them: npy versions 1.0, 2.0 and 3.0; C or Fortran order;
//! float32 `<f4`/`>f4`, float64 `<f8`/`>f8`, uint8 `|u1`/`u1`/`B`; zip
//! entries stored or deflated, named `NAME` or `NAME.npy`.
//!
//! Every error is one short line: names and descriptors from the file are
//! escaped and cut, shapes with many dimensions are abridged.

pub mod fuzz;
mod header;

use header::{read_header, Lit};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use zip::{CompressionMethod, ZipArchive};

/// Longest npy header accepted: numpy's default `max_header_size` (a 2-D
/// array's header is about 120 bytes).
pub(crate) const MAX_HEADER_BYTES: usize = 10_000;

/// Deepest nesting of brackets in an npy header (a plain header has 2).
pub(crate) const MAX_DEPTH: usize = 16;

/// Most bytes one deflated byte can become: a 258-byte match coded in 2
/// bits (1-bit length code, 1-bit distance code).
pub(crate) const DEFLATE_MAX_RATIO: u64 = 1032;

/// Values are decoded through a buffer of this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Longest text taken from the file (a name, a descriptor) shown in a message.
const SHOWN_CHARS: usize = 24;

/// Names listed when an array is missing.
const SHOWN_NAMES: usize = 8;

/// Why an `.npz` (or one array in it) cannot be read. The path is added by
/// the caller (a model or a checkpoint error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NpzError {
    #[error("cannot open: {0}")]
    Open(String),
    /// A directory, a FIFO, a device: not something an `.npz` can be.
    #[error("{0}")]
    NotAFile(String),
    /// Not a zip archive (the zip reader's reason).
    #[error("not a valid .npz file: {0}")]
    NotZip(String),
    #[error("array '{name}' is missing (found: {found})")]
    Missing { name: String, found: String },
    #[error("array '{name}': {problem}")]
    Array { name: String, problem: String },
}

/// An element type as the npy header gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32 {
        big_endian: bool,
    },
    F64 {
        big_endian: bool,
    },
    U8,
    /// Anything else, by numpy's name (`int64`) or its descriptor.
    Other(String),
}

impl Dtype {
    /// Bytes per value, for the types this reader can read.
    fn item_size(&self) -> Option<u64> {
        match self {
            Dtype::F32 { .. } => Some(4),
            Dtype::F64 { .. } => Some(8),
            Dtype::U8 => Some(1),
            Dtype::Other(_) => None,
        }
    }

    fn from_descr(descr: &Lit) -> Dtype {
        let s = match descr {
            Lit::Str(s) => s.as_str(),
            Lit::List(_) => return Dtype::Other("a structured dtype".into()),
            _ => return Dtype::Other("a dtype that is not a string".into()),
        };
        match s {
            "<f4" => Dtype::F32 { big_endian: false },
            ">f4" => Dtype::F32 { big_endian: true },
            "<f8" => Dtype::F64 { big_endian: false },
            ">f8" => Dtype::F64 { big_endian: true },
            "|u1" | "u1" | "B" => Dtype::U8,
            other => Dtype::Other(numpy_name(other)),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dtype::F32 { .. } => f.write_str("float32"),
            Dtype::F64 { .. } => f.write_str("float64"),
            Dtype::U8 => f.write_str("uint8"),
            Dtype::Other(name) => f.write_str(name),
        }
    }
}

/// numpy's name for a simple descriptor (`<i8` -> `int64`), else the
/// descriptor itself, cut and quoted.
fn numpy_name(descr: &str) -> String {
    let body = descr.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = body.chars();
    let kind = chars.next();
    let bits = chars
        .as_str()
        .parse::<u32>()
        .ok()
        .filter(|&n| (1..=64).contains(&n))
        .map(|n| n * 8);
    let name = match (kind, bits) {
        (Some('f'), Some(b @ (16 | 32 | 64 | 96 | 128))) => format!("float{b}"),
        (Some('i'), Some(b @ (8 | 16 | 32 | 64))) => format!("int{b}"),
        (Some('u'), Some(b @ (8 | 16 | 32 | 64))) => format!("uint{b}"),
        (Some('c'), Some(b @ (64 | 128 | 192 | 256))) => format!("complex{b}"),
        (Some('b'), Some(8)) => "bool".into(),
        (Some('U'), _) => "str".into(),
        (Some('S'), _) => "bytes".into(),
        (Some('O'), _) => "object".into(),
        _ => return format!("dtype '{}'", show(descr)),
    };
    // An accepted type written another way (`=f4`, `<u1`): say which way.
    if ["float32", "float64", "uint8"].contains(&name.as_str()) {
        return format!("{name} ('{}')", show(descr));
    }
    name
}

/// What the npy header of one array declares, and where its data is.
#[derive(Debug, Clone)]
pub(crate) struct ArrayInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub fortran: bool,
    index: usize,
    /// Bytes before the data in the entry: magic, version, length, header.
    data_offset: u64,
    /// Number of values (checked: shape times item size is the entry's data).
    len: usize,
}

impl ArrayInfo {
    /// `float32 of shape [4, 784] (2-D)`.
    pub fn describe(&self) -> String {
        format!(
            "{} of shape {} ({}-D)",
            self.dtype,
            show_shape(&self.shape),
            self.shape.len()
        )
    }

    fn error(&self, problem: String) -> NpzError {
        NpzError::Array {
            name: self.name.clone(),
            problem,
        }
    }
}

/// An open `.npz`.
pub(crate) struct Npz<R> {
    zip: ZipArchive<R>,
    file_len: u64,
}

impl Npz<File> {
    /// Opens `path`, refusing what cannot be an `.npz` (a directory, a FIFO,
    /// a device) without reading from it.
    pub fn open(path: &Path) -> Result<Npz<File>, NpzError> {
        let not_regular = |m: &std::fs::Metadata| {
            if m.is_dir() {
                Some("is a directory, not an .npz file")
            } else if !m.is_file() {
                Some("is not a regular file (an .npz file is read by seeking)")
            } else {
                None
            }
        };
        let meta = std::fs::metadata(path).map_err(open_error)?;
        if let Some(why) = not_regular(&meta) {
            return Err(NpzError::NotAFile(why.into()));
        }
        // Non-blocking, and checked again once open, in case the path was
        // replaced by a FIFO in between (opening one would wait for a writer).
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        if let Some(why) = not_regular(&meta) {
            return Err(NpzError::NotAFile(why.into()));
        }
        Npz::new(file)
    }
}

fn open_error(e: io::Error) -> NpzError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return NpzError::Open("a loop of symbolic links (or too many links to follow)".into());
    }
    NpzError::Open(e.to_string())
}

impl<R: Read + Seek> Npz<R> {
    /// Reads the zip's central directory (names, sizes), no array data.
    pub fn new(mut reader: R) -> Result<Npz<R>, NpzError> {
        let file_len = reader
            .seek(SeekFrom::End(0))
            .and_then(|n| reader.rewind().map(|()| n))
            .map_err(|e| NpzError::Open(e.to_string()))?;
        let zip = ZipArchive::new(reader).map_err(|e| NpzError::NotZip(zip_problem(e)))?;
        Ok(Npz { zip, file_len })
    }

    /// The entry holding array `name`: `name`, else `name.npy` (numpy's rule).
    fn index(&self, name: &str) -> Option<usize> {
        self.zip
            .index_for_name(name)
            .or_else(|| self.zip.index_for_name(&format!("{name}.npy")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index(name).is_some()
    }

    /// The arrays' names for a message: `.npy` dropped, escaped, cut, and at
    /// most [`SHOWN_NAMES`] of them.
    fn names_shown(&self) -> String {
        let names: Vec<String> = self
            .zip
            .file_names()
            .take(SHOWN_NAMES)
            .map(|n| show(n.strip_suffix(".npy").unwrap_or(n)))
            .collect();
        let more = self.zip.len().saturating_sub(SHOWN_NAMES);
        if more > 0 {
            format!("{} and {more} more", names.join(", "))
        } else {
            names.join(", ")
        }
    }

    /// The header of array `name`, checked against its zip entry: read
    /// without allocating for (or decompressing) the data.
    pub fn info(&mut self, name: &str) -> Result<ArrayInfo, NpzError> {
        let error = |problem: String| NpzError::Array {
            name: name.to_string(),
            problem,
        };
        let Some(index) = self.index(name) else {
            return Err(NpzError::Missing {
                name: name.to_string(),
                found: self.names_shown(),
            });
        };
        // The raw entry gives the metadata without starting a decompressor,
        // so a method this build cannot decompress is still named.
        let (method, size, compressed, encrypted, data_start) = {
            let raw = self
                .zip
                .by_index_raw(index)
                .map_err(|e| error(format!("cannot read its zip entry: {}", zip_problem(e))))?;
            (
                raw.compression(),
                raw.size(),
                raw.compressed_size(),
                raw.encrypted(),
                raw.data_start(),
            )
        };
        if encrypted {
            return Err(error("is encrypted".into()));
        }
        let most = match method {
            CompressionMethod::Stored => compressed,
            CompressionMethod::Deflated => compressed.saturating_mul(DEFLATE_MAX_RATIO),
            other => {
                return Err(error(format!(
                    "is compressed with {}, which this program cannot read (numpy writes \
                     stored or deflated entries)",
                    method_name(other)
                )))
            }
        };
        if data_start
            .checked_add(compressed)
            .is_none_or(|end| end > self.file_len)
        {
            return Err(error(format!(
                "its zip entry claims {compressed} compressed bytes, past the end of the file"
            )));
        }
        if size > most {
            return Err(error(format!(
                "its zip entry claims {size} bytes, more than its {compressed} compressed bytes \
                 can hold"
            )));
        }
        let mut entry = self
            .zip
            .by_index(index)
            .map_err(|e| error(format!("cannot read its zip entry: {}", zip_problem(e))))?;
        let (data_offset, header) = read_header(&mut entry, size).map_err(error)?;
        let mut info = ArrayInfo {
            name: name.to_string(),
            dtype: header.dtype,
            shape: header.shape,
            fortran: header.fortran,
            index,
            data_offset,
            len: 0,
        };
        if let Some(item) = info.dtype.item_size() {
            let values = info
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            let data_len = values.and_then(|n| n.checked_mul(item));
            let held = size - data_offset;
            match (values, data_len) {
                (Some(values), Some(data_len)) if data_len == held => {
                    info.len = usize::try_from(values).map_err(|_| error("too large".into()))?;
                }
                _ => {
                    let declared = data_len.map_or("more than 2^64".into(), |n| n.to_string());
                    return Err(error(format!(
                        "its header declares {} ({declared} bytes of data) but its zip entry \
                         holds {held} bytes after the header",
                        info.describe()
                    )));
                }
            }
        }
        Ok(info)
    }

    /// The values of a float32 or float64 array (float64 rounded to f32),
    /// in C order; refused if there are more than `max_values`.
    pub fn read_f32(
        &mut self,
        info: &ArrayInfo,
        max_values: usize,
    ) -> Result<ArrayD<f32>, NpzError> {
        match info.dtype {
            Dtype::F32 { big_endian } => self.read(info, max_values, move |b: [u8; 4]| {
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            }),
            Dtype::F64 { big_endian } => self.read(info, max_values, move |b: [u8; 8]| {
                (if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            }),
            _ => Err(info.error(format!(
                "expected float32 or float64, found {}",
                info.describe()
            ))),
        }
    }

    /// The bytes of a uint8 array, in C order; refused if there are more
    /// than `max_values`.
    pub fn read_u8(&mut self, info: &ArrayInfo, max_values: usize) -> Result<ArrayD<u8>, NpzError> {
        match info.dtype {
            Dtype::U8 => self.read(info, max_values, |b: [u8; 1]| b[0]),
            _ => Err(info.error(format!("expected uint8, found {}", info.describe()))),
        }
    }

    fn read<T: Clone, const W: usize>(
        &mut self,
        info: &ArrayInfo,
        max_values: usize,
        decode: impl Fn([u8; W]) -> T,
    ) -> Result<ArrayD<T>, NpzError> {
        if info.len > max_values {
            return Err(info.error(format!(
                "{} values, more than the {max_values} accepted here",
                info.len
            )));
        }
        let mut entry = self
            .zip
            .by_index(info.index)
            .map_err(|e| info.error(format!("cannot read its zip entry: {}", zip_problem(e))))?;
        let io_error = |e: io::Error| {
            info.error(if e.kind() == io::ErrorKind::UnexpectedEof {
                "its zip entry ends before its declared size".into()
            } else {
                read_problem(e)
            })
        };
        // Past the header (read once already by `info`).
        let skipped = io::copy(&mut (&mut entry).take(info.data_offset), &mut io::sink())
            .map_err(io_error)?;
        if skipped != info.data_offset {
            return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
        }
        let data_len = info.len as u64 * W as u64;
        let values =
            read_values(&mut (&mut entry).take(data_len), info.len, decode).map_err(io_error)?;
        // The entry must end here: one more byte means a stream longer than
        // declared; end of stream makes the zip reader check the CRC-32.
        match entry.read(&mut [0u8]) {
            Ok(0) => {}
            Ok(_) => {
                return Err(
                    info.error("its zip entry holds more data than its declared size".into())
                )
            }
            Err(e) => return Err(io_error(e)),
        }
        let shape = IxDyn(&info.shape).set_f(info.fortran);
        let array = ArrayD::from_shape_vec(shape, values)
            .map_err(|e| info.error(format!("bad shape: {e}")))?;
        Ok(if info.fortran {
            array.as_standard_layout().into_owned()
        } else {
            array
        })
    }
}

/// `n` values of `W` bytes each from `r`. Memory grows with the bytes
/// actually read (doubling, capped at `n`), never ahead of them.
fn read_values<T, const W: usize>(
    r: &mut impl Read,
    n: usize,
    decode: impl Fn([u8; W]) -> T,
) -> io::Result<Vec<T>> {
    let mut out: Vec<T> = Vec::new();
    let mut buf = vec![0u8; CHUNK_BYTES - CHUNK_BYTES % W];
    while out.len() < n {
        let k = (n - out.len()).min(buf.len() / W);
        r.read_exact(&mut buf[..k * W])?;
        let needed = out.len() + k;
        if out.capacity() < needed {
            let cap = needed.max(2 * out.len()).min(n);
            out.reserve_exact(cap - out.len());
        }
        out.extend(buf[..k * W].chunks_exact(W).map(|c| {
            let mut b = [0u8; W];
            b.copy_from_slice(c);
            decode(b)
        }));
    }
    Ok(out)
}

/// Why a zip entry's bytes could not be read, in one line.
fn read_problem(e: io::Error) -> String {
    // The zip reader's CRC-32 check, made where the entry's stream ends.
    if e.kind() == io::ErrorKind::InvalidData && e.to_string() == "Invalid checksum" {
        return "its data does not match its CRC-32 (the file is corrupt)".into();
    }
    format!("cannot decompress: {}", cut(&e.to_string()))
}

/// A zip reader error in one line (its own text for an I/O error is only
/// "i/o error").
fn zip_problem(e: zip::result::ZipError) -> String {
    match e {
        zip::result::ZipError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the file ends inside a zip record".into()
        }
        zip::result::ZipError::Io(e) => format!("i/o error: {}", cut(&e.to_string())),
        e => cut(&e.to_string()),
    }
}

/// A zip compression method by name.
fn method_name(m: CompressionMethod) -> String {
    let known = [
        (CompressionMethod::BZIP2, "bzip2"),
        (CompressionMethod::LZMA, "LZMA"),
        (CompressionMethod::XZ, "xz"),
        (CompressionMethod::ZSTD, "Zstandard"),
        (CompressionMethod::DEFLATE64, "Deflate64"),
        (CompressionMethod::PPMD, "PPMd"),
        (CompressionMethod::SHRINK, "Shrink"),
        (CompressionMethod::IMPLODE, "Implode"),
        (CompressionMethod::AES, "AES"),
    ];
    match known.iter().find(|(k, _)| *k == m) {
        Some((_, name)) => format!("{name} (method {})", code(m)),
        None => format!("method {}", code(m)),
    }
}

/// The method's number in the zip format.
fn code(m: CompressionMethod) -> String {
    #[allow(deprecated)]
    match m {
        CompressionMethod::Unsupported(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A message from a library (zip, io) cut to one short line.
fn cut(s: &str) -> String {
    const MAX: usize = 160;
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > MAX {
        format!("{}...", line.chars().take(MAX).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `[4, 784]`; with many dimensions the first few and a count.
pub(crate) fn show_shape(shape: &[usize]) -> String {
    const SHOWN: usize = 6;
    if shape.len() <= SHOWN {
        return format!("{shape:?}");
    }
    let head: Vec<String> = shape[..SHOWN].iter().map(|d| d.to_string()).collect();
    format!("[{}, ... ({} dimensions)]", head.join(", "), shape.len())
}

/// `s` escaped (no control characters reach a message) and cut to
/// [`SHOWN_CHARS`] characters, escapes included.
pub(crate) fn show(s: &str) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in s.chars() {
        let escaped = c.escape_debug();
        if shown + escaped.len() > SHOWN_CHARS {
            out.push_str("...");
            break;
        }
        shown += escaped.len();
        out.extend(escaped);
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod zip_builder;
