//! The shape of a network: its hidden widths, how `--layers` spells them,
//! and the limits a shape (or a model file) must keep to.

use crate::data::{CLASSES, FEATURES};

/// The hidden widths of a network: `[10]` is the notebook's 784-10-10.
///
/// Spelt on the command line as the widths joined by `-` (`256-128`), so it
/// cannot clash with a sweep's comma lists and `lo:hi` ranges; shown in
/// full, inputs and classes included, as `784-256-128-10`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Layers {
    pub(super) hidden: Vec<usize>,
}

/// Most hidden units a layer may have (a `w1` of 100,000 x 784 float32 is
/// 314 MB).
pub const MAX_HIDDEN: usize = 100_000;
/// Most hidden layers a network may have.
pub const MAX_HIDDEN_LAYERS: usize = 16;
/// Most parameters a network may have (400 MB of float32): a model file or
/// a `--layers` flag asking for more is refused before anything is
/// allocated.
pub const MAX_PARAMS: usize = 100_000_000;

impl Layers {
    /// One hidden layer of `h` units.
    pub fn one(h: usize) -> Layers {
        Layers { hidden: vec![h] }
    }

    /// Hidden widths, checked against the limits above.
    pub fn new(hidden: Vec<usize>) -> Result<Layers, String> {
        if hidden.is_empty() {
            return Err("no hidden layer (give at least one width, e.g. 128)".into());
        }
        if hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(format!(
                "{} hidden layers, more than the {MAX_HIDDEN_LAYERS} this program accepts",
                hidden.len()
            ));
        }
        if let Some(&h) = hidden.iter().find(|&&h| h == 0 || h > MAX_HIDDEN) {
            return Err(format!(
                "a layer of {h} units: each width must be 1 to {MAX_HIDDEN}"
            ));
        }
        let layers = Layers { hidden };
        if layers.params() > MAX_PARAMS {
            return Err(format!(
                "{} has {} parameters, more than the {MAX_PARAMS} this program accepts",
                layers,
                layers.params()
            ));
        }
        Ok(layers)
    }

    /// `256-128` (or `128`): hidden widths joined by `-`.
    pub fn parse(s: &str) -> Result<Layers, String> {
        let s = s.trim();
        let s = s
            .strip_prefix("784-")
            .and_then(|rest| rest.strip_suffix("-10"))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(s);
        let hidden = s
            .split('-')
            .map(|w| {
                w.trim().parse::<usize>().map_err(|_| {
                    format!(
                        "'{s}': expected hidden widths joined by '-', e.g. 256-128 \
                         (784 inputs and 10 classes are implied)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Layers::new(hidden)
    }

    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// Every width, inputs and classes included: `[784, h1, ..., 10]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.hidden.len() + 2);
        w.push(FEATURES);
        w.extend_from_slice(&self.hidden);
        w.push(CLASSES);
        w
    }

    /// Dense layers (weight matrices): hidden layers + 1.
    pub fn depth(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Weights and biases in all.
    pub fn params(&self) -> usize {
        self.widths().windows(2).map(|p| p[1] * (p[0] + 1)).sum()
    }

    /// The hidden widths as the flag spells them: `256-128`.
    pub fn flag(&self) -> String {
        let w: Vec<String> = self.hidden.iter().map(|h| h.to_string()).collect();
        w.join("-")
    }
}

/// `784-256-128-10`.
impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{FEATURES}-{}-{CLASSES}", self.flag())
    }
}

impl std::str::FromStr for Layers {
    type Err = String;
    fn from_str(s: &str) -> Result<Layers, String> {
        Layers::parse(s)
    }
}

impl TryFrom<String> for Layers {
    type Error = String;
    fn try_from(s: String) -> Result<Layers, String> {
        Layers::parse(&s)
    }
}

impl From<Layers> for String {
    fn from(l: Layers) -> String {
        l.flag()
    }
}
