use super::header::{parse_header, Header, MAGIC};
use super::zip_builder::{zip, Entry, DEFLATED, STORED};
use super::*;
use ndarray::{Array1, Array2};
use ndarray_npy::NpzWriter;
use std::io::{Cursor, Write};

/// An entry holding `content` as it is (stored) or deflated, with honest
/// size and CRC.
fn entry(name: &str, method: u16, content: &[u8]) -> Entry {
    let data = match method {
        DEFLATED => deflate(content),
        _ => content.to_vec(),
    };
    Entry {
        name: name.to_string(),
        method,
        data,
        size: content.len() as u32,
        crc: crc32fast::hash(content),
    }
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An npy 1.0 file with header `dict` (padded as numpy pads it) and `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut v = MAGIC.to_vec();
    v.extend([1, 0]);
    v.extend((header.len() as u16).to_le_bytes());
    v.extend(header.as_bytes());
    v.extend(data);
    v
}

fn f32_npy(shape: &str, values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
        &data,
    )
}

fn open(bytes: Vec<u8>) -> Npz<Cursor<Vec<u8>>> {
    Npz::new(Cursor::new(bytes)).unwrap()
}

/// The error reading array `name` as f32 (header, then data).
fn f32_error(bytes: Vec<u8>, name: &str) -> String {
    let mut npz = open(bytes);
    let e = match npz.info(name) {
        Ok(info) => npz.read_f32(&info, usize::MAX).unwrap_err(),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(!msg.contains('\n') && msg.len() < 300, "{msg}");
    msg
}

#[test]
fn reads_what_ndarray_npy_writes_c_and_fortran_stored_and_deflated() {
    let c = Array2::from_shape_fn((3, 5), |(i, j)| (i * 10 + j) as f32 + 0.25);
    let f64_fortran =
        Array2::from_shape_vec((4, 3).f(), (0..12).map(|v| v as f64 / 3.0).collect()).unwrap();
    assert!(!f64_fortran.is_standard_layout());
    let bytes = Array1::from((0..=255u8).collect::<Vec<_>>());
    for compressed in [false, true] {
        let mut buf = Cursor::new(Vec::new());
        let mut w = if compressed {
            NpzWriter::new_compressed(&mut buf)
        } else {
            NpzWriter::new(&mut buf)
        };
        w.add_array("c", &c).unwrap();
        w.add_array("f", &f64_fortran).unwrap();
        w.add_array("u", &bytes).unwrap();
        w.finish().unwrap();
        let mut npz = open(buf.into_inner());
        let info = npz.info("c").unwrap();
        assert_eq!(
            (info.dtype.clone(), info.shape.clone()),
            (Dtype::F32 { big_endian: false }, vec![3, 5])
        );
        assert_eq!(npz.read_f32(&info, 15).unwrap(), c.clone().into_dyn());
        let info = npz.info("f").unwrap();
        assert!(
            info.fortran,
            "ndarray-npy writes a Fortran-order array as such"
        );
        let got = npz.read_f32(&info, 12).unwrap();
        assert!(got.is_standard_layout());
        assert_eq!(got, f64_fortran.mapv(|v| v as f32).into_dyn());
        let info = npz.info("u").unwrap();
        assert_eq!(npz.read_u8(&info, 256).unwrap(), bytes.clone().into_dyn());
    }
}

/// Files written by numpy itself (`np.savez_compressed`, float32, float64
/// and uint8 arrays) read the same as through ndarray-npy.
#[test]
fn reads_numpy_files_like_ndarray_npy() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/step_h10_b32.npz");
    let mut npz = Npz::open(&path).unwrap();
    let mut theirs = ndarray_npy::NpzReader::new(File::open(&path).unwrap()).unwrap();
    for name in ["w1", "b2"] {
        let info = npz.info(name).unwrap();
        assert_eq!(info.dtype, Dtype::F32 { big_endian: false });
        let a: Array2<f32> = theirs.by_name(name).unwrap();
        assert_eq!(npz.read_f32(&info, usize::MAX).unwrap(), a.into_dyn());
    }
    let info = npz.info("dw1").unwrap();
    assert_eq!(info.dtype, Dtype::F64 { big_endian: false });
    let a: Array2<f64> = theirs.by_name("dw1").unwrap();
    assert_eq!(
        npz.read_f32(&info, usize::MAX).unwrap(),
        a.mapv(|v| v as f32).into_dyn()
    );
    let info = npz.info("x").unwrap();
    let a: Array2<u8> = theirs.by_name("x").unwrap();
    assert_eq!(npz.read_u8(&info, usize::MAX).unwrap(), a.into_dyn());
    // A 0-D float64 (`lr`): one value, shape [].
    let info = npz.info("lr").unwrap();
    assert_eq!(info.shape, Vec::<usize>::new());
    assert_eq!(
        npz.read_f32(&info, 1).unwrap().into_raw_vec_and_offset().0,
        vec![0.1f32]
    );
}

#[test]
fn big_endian_values_are_swapped() {
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let file = npy(
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
        &data,
    );
    let mut npz = open(zip(&[entry("a.npy", STORED, &file)]));
    let info = npz.info("a").unwrap();
    assert_eq!(
        npz.read_f32(&info, 2).unwrap().into_raw_vec_and_offset().0,
        vec![1.5, -2.0]
    );
}

#[test]
fn header_parser_takes_what_numpy_writes() {
    let h = parse_header("{'descr': '<f8', 'fortran_order': True, 'shape': (3, 4), }").unwrap();
    assert_eq!(
        h,
        Header {
            dtype: Dtype::F64 { big_endian: false },
            fortran: true,
            shape: vec![3, 4]
        }
    );
    // Any key order, double quotes, no trailing comma, 1-tuples and 0-D.
    let h = parse_header(r#"{"shape": (7,), "fortran_order": False, "descr": "|u1"}"#).unwrap();
    assert_eq!((h.dtype, h.shape), (Dtype::U8, vec![7]));
    assert_eq!(
        parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': ()}")
            .unwrap()
            .shape,
        Vec::<usize>::new()
    );
    let h = parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3)}").unwrap();
    assert_eq!(h.dtype, Dtype::Other("int64".into()));
    let h =
        parse_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}").unwrap();
    assert_eq!(h.dtype, Dtype::Other("a structured dtype".into()));
}

#[test]
fn header_parser_refuses_what_ndarray_npy_refused() {
    for (text, expected) in [
        ("{'descr': '<f4', 'fortran_order': False}", "no 'shape'"),
        ("{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (5)}",
            "not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2)}",
            "tuple of sizes",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
            "tuple of sizes",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "unknown key 'x'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}",
            "leading zero",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
            "unexpected text",
        ),
        (
            "{'descr': '<f4', 'fortran_order': Nope, 'shape': (1,)}",
            "unexpected 'Nope'",
        ),
        ("{'descr': '<f4", "not closed"),
        ("['descr']", "not a dict"),
    ] {
        let e = parse_header(text).unwrap_err();
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn deep_nesting_is_refused_in_one_short_line() {
    let deep = format!("{{'descr': {}0{}}}", "[".repeat(2000), "]".repeat(2000));
    let e = parse_header(&deep).unwrap_err();
    assert_eq!(e, format!("nested deeper than {MAX_DEPTH} levels"));
    // Through a file: the header is within the size cap, the error short.
    let file = npy(&deep, &[]);
    let msg = f32_error(zip(&[entry("w1.npy", DEFLATED, &file)]), "w1");
    assert_eq!(
        msg,
        format!("array 'w1': npy header: nested deeper than {MAX_DEPTH} levels")
    );
}

#[test]
fn a_header_longer_than_numpy_reads_is_refused_unread() {
    let mut file = MAGIC.to_vec();
    file.extend([2, 0]);
    file.extend(((MAX_HEADER_BYTES + 1) as u32).to_le_bytes());
    file.extend(vec![b'['; MAX_HEADER_BYTES + 1]);
    let msg = f32_error(zip(&[entry("w1.npy", DEFLATED, &file)]), "w1");
    assert_eq!(
        msg,
        "array 'w1': npy header of 10001 bytes, longer than the 10000 accepted"
    );
}

#[test]
fn a_shape_larger_than_the_entry_is_refused_before_reading() {
    // (2^40, 784) float32: 3.4 PB declared in a 200-byte entry.
    let file = f32_npy("(1099511627776, 784)", &[0.0; 4]);
    let msg = f32_error(zip(&[entry("w1.npy", DEFLATED, &file)]), "w1");
    assert_eq!(
        msg,
        "array 'w1': its header declares float32 of shape [1099511627776, 784] (2-D) \
         (3448068464705536 bytes of data) but its zip entry holds 16 bytes after the header"
    );
    // A product beyond 64 bits.
    let file = f32_npy("(4294967296, 4294967296, 2)", &[]);
    let msg = f32_error(zip(&[entry("w1.npy", STORED, &file)]), "w1");
    assert!(msg.contains("(more than 2^64 bytes of data)"), "{msg}");
    // Shorter than declared is refused the same way.
    let file = f32_npy("(2, 3)", &[1.0; 5]);
    let msg = f32_error(zip(&[entry("w1.npy", STORED, &file)]), "w1");
    assert!(
        msg.contains("(24 bytes of data) but its zip entry holds 20 bytes"),
        "{msg}"
    );
}

#[test]
fn the_callers_cap_is_checked_before_reading() {
    let file = f32_npy("(2, 3)", &[1.0; 6]);
    let mut npz = open(zip(&[entry("w1.npy", STORED, &file)]));
    let info = npz.info("w1").unwrap();
    assert_eq!(
        npz.read_f32(&info, 5).unwrap_err().to_string(),
        "array 'w1': 6 values, more than the 5 accepted here"
    );
    assert_eq!(npz.read_f32(&info, 6).unwrap().len(), 6);
}

#[test]
fn unsupported_compression_is_named() {
    let file = f32_npy("(1,)", &[1.0]);
    for (method, name) in [
        (12, "bzip2 (method 12)"),
        (14, "LZMA (method 14)"),
        (77, "method 77"),
    ] {
        let mut e = entry("w1.npy", STORED, &file);
        e.method = method;
        let msg = f32_error(zip(&[e]), "w1");
        assert_eq!(
            msg,
            format!(
                "array 'w1': is compressed with {name}, which this program cannot read \
                 (numpy writes stored or deflated entries)"
            )
        );
    }
}

#[test]
fn a_declared_size_the_compressed_bytes_cannot_hold_is_refused() {
    let file = f32_npy("(1,)", &[1.0]);
    let mut e = entry("w1.npy", DEFLATED, &file);
    let compressed = e.data.len() as u32;
    e.size = compressed * 1032 + 1;
    let msg = f32_error(zip(&[e]), "w1");
    assert_eq!(
        msg,
        format!(
            "array 'w1': its zip entry claims {} bytes, more than its {compressed} compressed \
             bytes can hold",
            compressed * 1032 + 1
        )
    );
    // Stored: the size is the compressed size.
    let mut e = entry("w1.npy", STORED, &file);
    e.size += 1;
    assert!(f32_error(zip(&[e]), "w1").contains("more than its"));
}

#[test]
fn data_past_the_declared_size_is_refused_without_reading_it() {
    let file = f32_npy("(4,)", &[1.0; 4]);
    let mut long = file.clone();
    long.extend(vec![0u8; 1 << 20]);
    let mut e = entry("w1.npy", DEFLATED, &long);
    e.size = file.len() as u32;
    e.crc = crc32fast::hash(&file);
    assert_eq!(
        f32_error(zip(&[e]), "w1"),
        "array 'w1': its zip entry holds more data than its declared size"
    );
}

#[test]
fn a_stream_shorter_than_declared_or_a_bad_crc_is_refused() {
    let file = f32_npy("(4,)", &[1.0; 4]);
    // The deflate stream ends 4 bytes early; the size declared is the full
    // one. The zip reader checks the CRC-32 where the stream ends: with the
    // full data's CRC that check fails first, with the short data's it
    // passes and the data is found short.
    let short = &file[..file.len() - 4];
    let mut e = entry("w1.npy", DEFLATED, &file);
    e.data = deflate(short);
    assert_eq!(
        f32_error(zip(&[e]), "w1"),
        "array 'w1': its data does not match its CRC-32 (the file is corrupt)"
    );
    let mut e = entry("w1.npy", DEFLATED, &file);
    e.data = deflate(short);
    e.crc = crc32fast::hash(short);
    assert_eq!(
        f32_error(zip(&[e]), "w1"),
        "array 'w1': its zip entry ends before its declared size"
    );
    let mut e = entry("w1.npy", DEFLATED, &file);
    e.crc ^= 1;
    assert_eq!(
        f32_error(zip(&[e]), "w1"),
        "array 'w1': its data does not match its CRC-32 (the file is corrupt)"
    );
}

#[test]
fn a_missing_array_lists_the_names_escaped_and_cut() {
    let file = f32_npy("(1,)", &[1.0]);
    let long = format!("evil\nname{}", "x".repeat(100));
    let mut entries = vec![entry("b1.npy", STORED, &file), entry(&long, STORED, &file)];
    let many: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    entries.extend(many.iter().map(|n| entry(n, STORED, &file)));
    let msg = f32_error(zip(&entries), "w1");
    assert_eq!(
        msg,
        format!(
            "array 'w1' is missing (found: b1, evil\\nname{}..., a0, a1, a2, a3, a4, a5 \
             and 14 more)",
            "x".repeat(14)
        )
    );
    // Escapes count towards the cut.
    assert_eq!(
        show(&"\u{7f}".repeat(10)),
        format!("{}...", "\\u{7f}".repeat(4))
    );
}

#[test]
fn other_dtypes_are_described_from_the_header_unread() {
    for (descr, name) in [
        ("<i8", "int64"),
        ("|b1", "bool"),
        ("<u2", "uint16"),
        ("<c16", "complex128"),
        ("<U5", "str"),
        ("=f4", "float32 ('=f4')"),
        ("<u1", "uint8 ('<u1')"),
        ("zz", "dtype 'zz'"),
    ] {
        // No data at all: an unreadable type is never read.
        let file = npy(
            &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (4, 784)}}"),
            &[],
        );
        let mut npz = open(zip(&[entry("w1.npy", STORED, &file)]));
        let info = npz.info("w1").unwrap();
        assert_eq!(info.describe(), format!("{name} of shape [4, 784] (2-D)"));
        assert!(npz.read_f32(&info, usize::MAX).is_err());
    }
}

#[test]
fn long_shapes_are_abridged() {
    assert_eq!(show_shape(&[4, 784]), "[4, 784]");
    assert_eq!(
        show_shape(&[1; 5000]),
        "[1, 1, 1, 1, 1, 1, ... (5000 dimensions)]"
    );
}

#[test]
fn a_directory_or_a_fifo_is_refused_unopened() {
    let dir = tempfile::tempdir().unwrap();
    let e = Npz::open(dir.path()).err().unwrap();
    assert_eq!(e.to_string(), "is a directory, not an .npz file");
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = Npz::open(&fifo).err().unwrap();
    assert_eq!(
        e.to_string(),
        "is not a regular file (an .npz file is read by seeking)"
    );
    let looped = dir.path().join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let e = Npz::open(&looped).err().unwrap();
    assert_eq!(
        e.to_string(),
        "cannot open: a loop of symbolic links (or too many links to follow)"
    );
}
