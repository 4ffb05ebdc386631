//! The npy header: the magic, the version, the length, and the Python
//! dict literal (`{'descr': '<f4', 'fortran_order': False, 'shape': (10,
//! 784), }`) read by a small parser that bounds its length and nesting, so
//! a hostile header costs nothing and is named in one short line.

use super::{read_problem, show, Dtype, MAX_DEPTH, MAX_HEADER_BYTES};
use std::io::{self, Read};

/// What an npy header declares.
#[derive(Debug, PartialEq)]
pub(super) struct Header {
    pub(super) dtype: Dtype,
    pub(super) fortran: bool,
    pub(super) shape: Vec<usize>,
}

pub(super) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Reads the npy preamble and header from an entry of `entry_size` bytes;
/// returns the data's offset in the entry and the header.
pub(super) fn read_header(r: &mut impl Read, entry_size: u64) -> Result<(u64, Header), String> {
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            "its zip entry ends inside the npy header".to_string()
        } else {
            read_problem(e)
        }
    };
    let mut r = r.take(entry_size);
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(eof)?;
    if &pre[..6] != MAGIC {
        return Err("not an npy array (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = (pre[6], pre[7]);
    let (len, prefix) = match (major, minor) {
        (1, 0) => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(eof)?;
            (u64::from(u16::from_le_bytes(b)), 10)
        }
        (2, 0) | (3, 0) => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(eof)?;
            (u64::from(u32::from_le_bytes(b)), 12)
        }
        _ => {
            return Err(format!(
                "npy format version {major}.{minor} is not supported"
            ))
        }
    };
    if len > MAX_HEADER_BYTES as u64 {
        return Err(format!(
            "npy header of {len} bytes, longer than the {MAX_HEADER_BYTES} accepted"
        ));
    }
    if prefix + len > entry_size {
        return Err("its zip entry ends inside the npy header".into());
    }
    let mut text = vec![0u8; len as usize];
    r.read_exact(&mut text).map_err(eof)?;
    let Some((b'\n', text)) = text.split_last() else {
        return Err("npy header does not end with a newline".into());
    };
    let text = match major {
        1 | 2 if !text.is_ascii() => {
            return Err(format!(
                "npy {major}.0 header is not ASCII (only version 3.0 allows UTF-8)"
            ))
        }
        _ => std::str::from_utf8(text).map_err(|_| "npy header is not UTF-8".to_string())?,
    };
    let header = parse_header(text).map_err(|e| format!("npy header: {e}"))?;
    Ok((prefix + len, header))
}

/// A Python literal, as far as npy headers use them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Str(String),
    Bool(bool),
    None,
    /// `None` when negative or beyond u64.
    Int(Option<u64>),
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` into a
/// [`Header`]; other keys, missing keys and wrong types are errors.
pub(super) fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.skip_space();
    if p.pos != p.s.len() {
        return Err(format!("unexpected text at byte {}", p.pos));
    }
    let Lit::Dict(entries) = value else {
        return Err("not a dict".into());
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        match (&key, value) {
            (Lit::Str(k), v) if k == "descr" => descr = Some(Dtype::from_descr(&v)),
            (Lit::Str(k), Lit::Bool(b)) if k == "fortran_order" => fortran = Some(b),
            (Lit::Str(k), _) if k == "fortran_order" => {
                return Err("'fortran_order' is not True or False".into())
            }
            (Lit::Str(k), Lit::Tuple(dims)) if k == "shape" => {
                let dims: Option<Vec<usize>> = dims
                    .iter()
                    .map(|d| match d {
                        Lit::Int(Some(n)) => usize::try_from(*n).ok(),
                        _ => None,
                    })
                    .collect();
                shape = Some(dims.ok_or("'shape' is not a tuple of sizes")?);
            }
            (Lit::Str(k), _) if k == "shape" => return Err("'shape' is not a tuple".into()),
            (Lit::Str(k), _) => return Err(format!("unknown key '{}'", show(k))),
            _ => return Err("a key that is not a string".into()),
        }
    }
    Ok(Header {
        dtype: descr.ok_or("no 'descr'")?,
        fortran: fortran.ok_or("no 'fortran_order'")?,
        shape: shape.ok_or("no 'shape'")?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn expected(&self, what: &str) -> String {
        match self.peek() {
            Some(c) => format!(
                "expected {what} at byte {}, found '{}'",
                self.pos,
                (c as char).escape_default()
            ),
            None => format!("expected {what}, found the end"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        self.skip_space();
        match self.peek() {
            Some(open @ (b'{' | b'(' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
                self.pos += 1;
                self.container(open, depth + 1)
            }
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'0'..=b'9' | b'-') => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    word => Err(format!(
                        "unexpected '{}' at byte {start}",
                        show(&String::from_utf8_lossy(word))
                    )),
                }
            }
            _ => Err(self.expected("a value")),
        }
    }

    /// After the opening bracket: a dict, a list, a tuple, or a value in
    /// parentheses (`(5)` is 5, `(5,)` a tuple).
    fn container(&mut self, open: u8, depth: usize) -> Result<Lit, String> {
        let close = match open {
            b'{' => b'}',
            b'(' => b')',
            _ => b']',
        };
        let mut items = Vec::new();
        let mut pairs = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.peek() == Some(close) {
                self.pos += 1;
                break;
            }
            let item = self.value(depth)?;
            if open == b'{' {
                self.skip_space();
                if self.peek() != Some(b':') {
                    return Err(self.expected("':'"));
                }
                self.pos += 1;
                pairs.push((item, self.value(depth)?));
            } else {
                items.push(item);
            }
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    trailing_comma = false;
                    break;
                }
                _ => return Err(self.expected(&format!("',' or '{}'", close as char))),
            }
        }
        Ok(match open {
            b'{' => Lit::Dict(pairs),
            b'[' => Lit::List(items),
            _ if items.len() == 1 && !trailing_comma => items.pop().expect("one item"),
            _ => Lit::Tuple(items),
        })
    }

    fn string(&mut self, quote: u8) -> Result<Lit, String> {
        let start = self.pos;
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(format!("string at byte {start} is not closed")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(Lit::Str(String::from_utf8_lossy(&bytes).into_owned()));
                }
                Some(b'\\') => {
                    // Escapes are kept as written: only exact descriptors
                    // are accepted, and they have none.
                    bytes.push(b'\\');
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        bytes.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) => {
                    bytes.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// A decimal integer, as Python writes one (no leading zeros).
    fn int(&mut self) -> Result<Lit, String> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() {
            return Err(self.expected("a digit"));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(format!("integer with a leading zero at byte {start}"));
        }
        let n = std::str::from_utf8(digits)
            .expect("ASCII digits")
            .parse::<u64>()
            .ok();
        Ok(Lit::Int(if negative && n != Some(0) { None } else { n }))
    }
}
