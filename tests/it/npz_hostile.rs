//! Hostile model and checkpoint files, generated here at test time: each is
//! given to the real binary (`predict`, `eval`, `inspect`, `export` with `--model`,
//! `train --resume`), which must refuse it with exit code 1 and one clear
//! line naming the file and the problem, and stay under 200 MB of memory
//! (the peak resident size of the child, from `wait4`'s rusage).
//!
//! The bombs are real: deflate streams of up to 3 GB of zeros, which a
//! reader that trusted them would decompress (the 2 GiB ones are 2 MB).

use crate::zip_builder::{zip, Entry, DEFLATED, STORED};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MAX_RSS_MB: u64 = 200;

// ------------------------------------------------------------- the child --

struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    max_rss_mb: u64,
}

/// Runs the binary in `dir` under GNU time, which forks it from its own
/// small process and reports its peak resident set (`%M`, KiB). (The test
/// process cannot ask `wait4` itself: a child spawned from it counts the
/// test process's own resident set, from before its exec, in its peak.)
fn run(dir: &Path, args: &[&str]) -> Outcome {
    let report = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("maxrss %M")
        .arg("-o")
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_mnist-blas"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("/usr/bin/time runs (Debian package `time`)");
    let mut text = String::new();
    std::fs::File::open(report.path())
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let signal = text
        .lines()
        .find_map(|l| l.strip_prefix("Command terminated by signal "))
        .and_then(|n| n.trim().parse().ok());
    let max_rss_kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("maxrss "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in GNU time's report: {text}"));
    Outcome {
        code: if signal.is_some() {
            None
        } else {
            o.status.code()
        },
        signal,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        max_rss_mb: max_rss_kb / 1024,
    }
}

/// Small data files for the commands that need one.
fn data_files(dir: &Path) {
    let header: Vec<String> = (0..784).map(|i| format!("pixel{i}")).collect();
    let row = vec!["0"; 784].join(",");
    std::fs::write(
        dir.join("test.csv"),
        format!("{}\n{row}\n{row}\n", header.join(",")),
    )
    .unwrap();
    std::fs::write(
        dir.join("train.csv"),
        format!("label,{}\n3,{row}\n7,{row}\n", header.join(",")),
    )
    .unwrap();
}

/// The commands that read `--model FILE`.
fn model_commands(file: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    vec![
        v(&[
            "predict", "--model", file, "--data", "test.csv", "--out", "s.csv",
        ]),
        v(&["eval", "--model", file, "--data", "train.csv"]),
        v(&["inspect", "--model", file, "--out", "w.png", "--quiet"]),
        v(&["export", "--model", file, "--out", "m.onnx", "--quiet"]),
    ]
}

/// `train --resume FILE` on the built-in sample.
fn resume_command(file: &str) -> Vec<String> {
    ["train", "--epochs", "1", "--quiet", "--resume", file]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Every command refuses `file` in `dir`: exit 1, one line naming the file
/// and containing `expect`, under [`MAX_RSS_MB`]. Returns the line and the
/// largest peak seen.
fn refused(dir: &Path, file: &str, commands: &[Vec<String>], expect: &str) -> (String, u64) {
    let mut line = String::new();
    let mut peak = 0;
    for args in commands {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run(dir, &args);
        let what = format!("{} on {file}", args[0]);
        assert_eq!(
            (o.code, o.signal),
            (Some(1), None),
            "{what}: exit; stderr: {}",
            o.stderr
        );
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "{what}: one line: {}",
            o.stderr
        );
        let first = o.stderr.trim_end();
        assert!(first.len() < 300, "{what}: a short line: {first}");
        assert!(
            first.starts_with(&format!("error: {file}: ")),
            "{what}: names the file: {first}"
        );
        assert!(first.contains(expect), "{what}: lacks {expect:?}: {first}");
        assert!(
            o.max_rss_mb < MAX_RSS_MB,
            "{what}: peak RSS {} MB: {first}",
            o.max_rss_mb
        );
        eprintln!("{what}: {} MB peak: {first}", o.max_rss_mb);
        line = first.to_string();
        peak = peak.max(o.max_rss_mb);
    }
    (line, peak)
}

// ------------------------------------------------------ building files --

/// A deflate stream of `prefix` then `zeros` zero bytes: the prefix in
/// stored blocks, the zeros in one dynamic-Huffman block where a 258-byte
/// copy costs 2 bits (deflate's best ratio, 1032:1, as zlib reaches).
fn deflate_with_zeros(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let mut w = Bits::default();
    for chunk in prefix.chunks(65_535) {
        w.put(0, 1); // not final
        w.put(0, 2); // stored
        w.align();
        w.put(chunk.len() as u32, 16);
        w.put(!(chunk.len() as u32) & 0xffff, 16);
        w.out.extend(chunk);
    }
    w.put(1, 1); // final
    w.put(2, 2); // dynamic Huffman
    w.put(286 - 257, 5); // HLIT: literal/length codes 0..=285
    w.put(2 - 1, 5); // HDIST: distance codes 0 and 1
    w.put(18 - 4, 4); // HCLEN: code-length codes up to "1" in the order below
                      // Code-length code lengths, in deflate's order 16 17 18 0 8 7 9 6 10 5
                      // 11 4 12 3 13 2 14 1: symbol 18 gets 1 bit, symbols 1 and 2 get 2.
    for len in [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
        w.put(len, 3);
    }
    // Canonical codes: 18 -> 0, 1 -> 10, 2 -> 11.
    let (cl1, cl2, cl18) = ((0b10, 2), (0b11, 2), (0b0, 1));
    let zeros_run = |w: &mut Bits, n: u32| {
        w.huff(cl18);
        w.put(n - 11, 7);
    };
    // Literal/length lengths: 0 -> 2, 1..=255 -> 0, 256 -> 2, 257..=284 -> 0,
    // 285 -> 1; distance lengths: 0 -> 1, 1 -> 1.
    w.huff(cl2);
    zeros_run(&mut w, 138);
    zeros_run(&mut w, 117);
    w.huff(cl2);
    zeros_run(&mut w, 28);
    for _ in 0..3 {
        w.huff(cl1);
    }
    // Canonical codes: 285 -> 0, literal 0 -> 10, end -> 11; distance 0 -> 0.
    let (lit0, end, len258, dist1) = ((0b10, 2), (0b11, 2), (0b0, 1), (0b0, 1));
    let mut left = zeros;
    if left > 0 {
        w.huff(lit0);
        left -= 1;
    }
    while left >= 258 {
        w.huff(len258);
        w.huff(dist1);
        left -= 258;
    }
    for _ in 0..left {
        w.huff(lit0);
    }
    w.huff(end);
    w.align();
    w.out
}

/// deflate's bit order: fields least significant bit first, Huffman codes
/// most significant bit first.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, bits: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn huff(&mut self, (code, len): (u32, u32)) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.put(0, 8 - self.n);
        }
    }
}

/// CRC-32 of `prefix` then `zeros` zero bytes.
fn crc_with_zeros(prefix: &[u8], zeros: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finalize()
}

fn stored(name: &str, content: &[u8]) -> Entry {
    Entry {
        name: name.into(),
        method: STORED,
        data: content.to_vec(),
        size: content.len() as u32,
        crc: crc32fast::hash(content),
    }
}

/// `prefix` and `zeros` zero bytes, deflated, with honest size and CRC.
fn deflated(name: &str, prefix: &[u8], zeros: u64) -> Entry {
    let size = prefix.len() as u64 + zeros;
    Entry {
        name: name.into(),
        method: DEFLATED,
        data: deflate_with_zeros(prefix, zeros),
        size: u32::try_from(size).expect("under 4 GiB: no zip64 needed"),
        crc: crc_with_zeros(prefix, zeros),
    }
}

/// An npy 1.0 preamble and header (padded as numpy pads it), no data.
fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((header.len() as u16).to_le_bytes());
    v.extend(header.as_bytes());
    v
}

/// A float32 array of zeros in C order.
fn f32_zeros(rows: usize, cols: usize) -> Vec<u8> {
    let mut v = npy_header("<f4", &format!("({rows}, {cols})"));
    v.resize(v.len() + rows * cols * 4, 0);
    v
}

/// The four arrays of a valid model with `h` hidden units, all zero.
fn model_entries(h: usize) -> Vec<Entry> {
    vec![
        stored("w1.npy", &f32_zeros(h, 784)),
        stored("b1.npy", &f32_zeros(h, 1)),
        stored("w2.npy", &f32_zeros(10, h)),
        stored("b2.npy", &f32_zeros(10, 1)),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const GIB: u64 = 1 << 30;

// ----------------------------------------------------------------- tests --

/// The bomb generator makes what it says: deflate readers agree, and the
/// 2 GiB stream is about 2 MB.
#[test]
fn the_zero_bomb_is_a_valid_deflate_stream() {
    for (prefix, zeros) in [
        (&b"abc"[..], 0u64),
        (b"abc", 1),
        (b"npy header", 258 * 7 + 3),
        (&[7u8; 70_000][..], 100_000),
    ] {
        let stream = deflate_with_zeros(prefix, zeros);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        let mut expected = prefix.to_vec();
        expected.resize(prefix.len() + zeros as usize, 0);
        assert_eq!(out, expected);
    }
    let size = deflate_with_zeros(b"", 2 * GIB).len();
    assert!((2_000_000..2_200_000).contains(&size), "{size}");
}

/// Issue 18 item 5: a valid `w1`, then 2 GiB of deflated zeros in the next
/// array's entry, declared as its size.
#[test]
fn a_bomb_in_another_entry_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let h = 4;
    let mut entries = model_entries(h);
    entries[1] = deflated("b1.npy", &f32_zeros(h, 1), 2 * GIB);
    let bytes = zip(&entries);
    assert!(bytes.len() < 2_300_000, "{}", bytes.len());
    write(dir.path(), "bomb.npz", &bytes);
    refused(
        dir.path(),
        "bomb.npz",
        &model_commands("bomb.npz"),
        &format!(
            "array 'b1': its header declares float32 of shape [4, 1] (2-D) (16 bytes of data) \
             but its zip entry holds {} bytes after the header",
            2 * GIB + 16
        ),
    );
}

/// A bomb in an entry no one reads costs nothing: the model loads.
#[test]
fn a_bomb_in_an_unread_entry_is_never_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let mut entries = model_entries(4);
    entries.push(deflated("junk.npy", b"", 2 * GIB));
    write(dir.path(), "m.npz", &zip(&entries));
    for args in model_commands("m.npz") {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run(dir.path(), &args);
        assert_eq!(o.code, Some(0), "{}: {}", args[0], o.stderr);
        assert!(
            o.max_rss_mb < MAX_RSS_MB,
            "{}: {} MB",
            args[0],
            o.max_rss_mb
        );
    }
}

/// Issue 18 item 5: `w1`'s own entry goes on for 2 GiB past the size it
/// declares (and the npy header agrees with the declared size).
#[test]
fn a_bomb_past_the_declared_size_is_refused_after_the_declared_bytes() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let h = 4;
    let w1 = f32_zeros(h, 784);
    let mut entries = model_entries(h);
    entries[0] = Entry {
        size: w1.len() as u32,
        crc: crc32fast::hash(&w1),
        ..deflated("w1.npy", &w1, 2 * GIB)
    };
    write(dir.path(), "past.npz", &zip(&entries));
    refused(
        dir.path(),
        "past.npz",
        &model_commands("past.npz"),
        "array 'w1': its zip entry holds more data than its declared size",
    );
}

/// Issue 18 item 5: `w1` declared (1000000, 784), and its entry really
/// holds that many zeros (3.1 GB, deflated). Refused by the hidden-width
/// cap before any data is read.
#[test]
fn a_huge_but_consistent_w1_is_refused_by_the_hidden_cap() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    for (h, name) in [(1_000_000usize, "million.npz"), (200_000, "h200k.npz")] {
        let header = npy_header("<f4", &format!("({h}, 784)"));
        let mut entries = model_entries(4);
        entries[0] = deflated("w1.npy", &header, h as u64 * 784 * 4);
        write(dir.path(), name, &zip(&entries));
        refused(
            dir.path(),
            name,
            &model_commands(name),
            &format!(
                "array 'w1': {h} hidden units, more than the 100000 this program accepts \
                 (the limit of --hidden and --layers)"
            ),
        );
    }
}

/// Issue 18 item 6: a 1.4 KB file declaring (2^40, 784) used to abort the
/// process (allocation failure, exit 134).
#[test]
fn a_shape_the_entry_cannot_hold_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let mut w1 = npy_header("<f4", "(1099511627776, 784)");
    w1.extend([0u8; 1024]);
    let mut entries = model_entries(4);
    entries[0] = stored("w1.npy", &w1);
    write(dir.path(), "huge.npz", &zip(&entries));
    refused(
        dir.path(),
        "huge.npz",
        &model_commands("huge.npz"),
        "array 'w1': its header declares float32 of shape [1099511627776, 784] (2-D) \
         (3448068464705536 bytes of data) but its zip entry holds 1024 bytes after the header",
    );
}

/// Issue 18 item 14: bzip2 and LZMA entries used to read as "missing".
#[test]
fn bzip2_and_lzma_entries_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    for (method, name, file) in [(12u16, "bzip2", "bz.npz"), (14, "LZMA", "lzma.npz")] {
        let mut entries = model_entries(4);
        entries[0].method = method;
        write(dir.path(), file, &zip(&entries));
        refused(
            dir.path(),
            file,
            &model_commands(file),
            &format!("array 'w1': is compressed with {name} (method {method}), which this program cannot read"),
        );
    }
}

/// Issue 18 item 14: a deeply nested header used to give an 87 KB message.
#[test]
fn a_nested_header_gives_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let nested = |depth: usize, version: u8| {
        let mut header = format!(
            "{{'descr': {}'<f4'{}, 'fortran_order': False, 'shape': (4, 784), }}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        if version == 1 {
            while !(10 + header.len()).is_multiple_of(64) {
                header.insert(header.len() - 1, ' ');
            }
        }
        let mut v = b"\x93NUMPY".to_vec();
        v.extend([version, 0]);
        if version == 1 {
            v.extend((header.len() as u16).to_le_bytes());
        } else {
            v.extend((header.len() as u32).to_le_bytes());
        }
        v.extend(header.as_bytes());
        v
    };
    let deep = nested(43_000, 2);
    for (file, w1, expect) in [
        (
            "deep.npz",
            deep.clone(),
            format!(
                "array 'w1': npy header of {} bytes, longer than the 10000 accepted",
                deep.len() - 12
            ),
        ),
        (
            "nested.npz",
            nested(2_000, 1),
            "array 'w1': npy header: nested deeper than 16 levels".to_string(),
        ),
    ] {
        let mut entries = model_entries(4);
        entries[0] = stored("w1.npy", &w1);
        write(dir.path(), file, &zip(&entries));
        let (line, _) = refused(dir.path(), file, &model_commands(file), &expect);
        assert!(line.ends_with(&expect), "{line}");
    }
}

/// Issue 18 item 14: a directory as --model used to say "zip file error:
/// i/o error", a symlink loop "no such file".
#[test]
fn a_directory_and_a_symlink_loop_are_named() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::os::unix::fs::symlink("loop.npz", dir.path().join("loop.npz")).unwrap();
    for (file, expect) in [
        ("models", "is a directory, not an .npz file"),
        (
            "loop.npz",
            "cannot open: a loop of symbolic links (or too many links to follow)",
        ),
    ] {
        let mut commands = model_commands(file);
        commands.push(resume_command(file));
        for args in commands {
            // `eval`, `predict`, `inspect` and `export` take a run folder
            // too: a folder without a model is named as such.
            let expect = if args[0] != "train" && file == "models" {
                "a folder without a model.npz (--model takes a model file or a run folder)"
            } else {
                expect
            };
            refused(dir.path(), file, &[args], expect);
        }
    }
}

/// The same bounds hold for a checkpoint's `state` array (`train --resume`).
#[test]
fn hostile_checkpoint_state_is_refused_in_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let state = |shape: &str| npy_header("|u1", shape);
    let cases: Vec<(&str, Entry, String)> = vec![
        (
            "huge.ckpt.npz",
            stored("state.npy", &state("(1099511627776,)")),
            "array 'state': its header declares uint8 of shape [1099511627776] (1-D) \
             (1099511627776 bytes of data) but its zip entry holds 0 bytes after the header"
                .into(),
        ),
        (
            "bomb.ckpt.npz",
            Entry {
                size: state("(0,)").len() as u32,
                crc: crc32fast::hash(&state("(0,)")),
                ..deflated("state.npy", &state("(0,)"), 2 * GIB)
            },
            "array 'state': its zip entry holds more data than its declared size".into(),
        ),
        (
            "big.ckpt.npz",
            deflated("state.npy", &state("(2147483648,)"), 2 * GIB),
            "array 'state': 2147483648 values, more than the 67108864 accepted here".into(),
        ),
        (
            "bz.ckpt.npz",
            Entry {
                method: 12,
                ..stored("state.npy", &state("(0,)"))
            },
            "array 'state': is compressed with bzip2 (method 12)".into(),
        ),
    ];
    for (file, entry, expect) in cases {
        let mut entries = model_entries(4);
        entries.push(entry);
        write(dir.path(), file, &zip(&entries));
        refused(dir.path(), file, &[resume_command(file)], &expect);
    }
}

/// The measurement is real: loading a valid 20,000-unit model (w1 is
/// 62.7 MB of float32) shows in the peak.
#[test]
fn the_rss_measurement_sees_a_loaded_model() {
    let dir = tempfile::tempdir().unwrap();
    data_files(dir.path());
    let h = 20_000;
    let entries = vec![
        deflated(
            "w1.npy",
            &npy_header("<f4", &format!("({h}, 784)")),
            h as u64 * 784 * 4,
        ),
        stored("b1.npy", &f32_zeros(h, 1)),
        stored("w2.npy", &f32_zeros(10, h)),
        stored("b2.npy", &f32_zeros(10, 1)),
    ];
    write(dir.path(), "big.npz", &zip(&entries));
    let o = run(
        dir.path(),
        &[
            "predict", "--model", "big.npz", "--data", "test.csv", "--out", "s.csv",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        (62..MAX_RSS_MB).contains(&o.max_rss_mb),
        "peak {} MB",
        o.max_rss_mb
    );
    eprintln!("valid H={h} model: {} MB peak", o.max_rss_mb);
}
