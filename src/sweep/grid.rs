//! Which configurations a sweep runs: the full grid of the values given for
//! each swept flag, or `--samples N` random draws over ranges.
//!
//! A configuration is a list of `train` flags and their values, exactly as a
//! user would type them: the sweep hands them to the `train` argument parser,
//! so a sweep run is the `train` run with those flags by construction.

use super::SweepError;
use crate::rng::{SeededRng, Stream};

/// One configuration: `(flag without dashes, value)` pairs, e.g. `("lr", "0.1")`.
pub type Flags = Vec<(String, String)>;

/// How a range is drawn from in random search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Uniform in the value (momentum, hidden width, epochs, seeds).
    Linear,
    /// Uniform in the logarithm (learning rate, batch size), so each decade
    /// is sampled as often as the next.
    Log,
}

/// What one swept flag takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Every listed value (grid) or one of them at random (random search).
    List(Vec<String>),
    /// `lo:hi`, random search only.
    Range {
        lo: f64,
        hi: f64,
        scale: Scale,
        integer: bool,
    },
}

/// One swept flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub flag: String,
    pub values: Values,
}

/// How ranges of the flags we know are drawn: `(flag, scale, integer)`.
/// Flags not listed here (optimizer, init, ...) only take lists.
const RANGE_KINDS: &[(&str, Scale, bool)] = &[
    ("lr", Scale::Log, false),
    ("momentum", Scale::Linear, false),
    ("batch-size", Scale::Log, true),
    ("hidden", Scale::Linear, true),
    ("epochs", Scale::Linear, true),
    ("iterations", Scale::Linear, true),
    ("seed", Scale::Linear, true),
];

/// How random search draws the values of a results column (`batch_size`
/// is `--batch-size`, `layers` of one width is `--hidden`): its scale and
/// whether it is an integer; `None` for columns only drawn from lists.
pub(crate) fn column_scale(column: &str) -> Option<(Scale, bool)> {
    let flag = match column {
        "layers" => "hidden".to_string(),
        c => c.replace('_', "-"),
    };
    RANGE_KINDS
        .iter()
        .find(|(f, _, _)| *f == flag)
        .map(|&(_, scale, integer)| (scale, integer))
}

impl Axis {
    /// Parse the values given for `flag`: a list (`0.05,0.1` arrives already
    /// split into items) or a single `lo:hi` range.
    pub fn parse(flag: &str, items: &[String]) -> Result<Axis, SweepError> {
        let bad = |problem: String| SweepError::Axis {
            flag: flag.to_string(),
            problem,
        };
        let items: Vec<String> = items.iter().map(|s| s.trim().to_string()).collect();
        if items.is_empty() || items.iter().any(|s| s.is_empty()) {
            return Err(bad("an empty value".into()));
        }
        if items.len() == 1 {
            if let Some((lo, hi)) = items[0].split_once(':') {
                let &(_, scale, integer) = RANGE_KINDS
                    .iter()
                    .find(|(f, _, _)| *f == flag)
                    .ok_or_else(|| {
                        bad(format!(
                            "`{}` is a range, but --{flag} only takes a list of values",
                            items[0]
                        ))
                    })?;
                let num = |s: &str| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            bad(format!("`{s}` in range `{}` is not a number", items[0]))
                        })
                };
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi || (scale == Scale::Log && lo <= 0.0) || (integer && lo < 0.0) {
                    return Err(bad(format!(
                        "range `{}` must have low <= high{}",
                        items[0],
                        if scale == Scale::Log {
                            " and low > 0 (log scale)"
                        } else {
                            ""
                        }
                    )));
                }
                return Ok(Axis {
                    flag: flag.to_string(),
                    values: Values::Range {
                        lo,
                        hi,
                        scale,
                        integer,
                    },
                });
            }
        }
        if let Some(r) = items.iter().find(|s| s.contains(':')) {
            return Err(bad(format!(
                "`{r}`: a range `lo:hi` must be the flag's only value"
            )));
        }
        Ok(Axis {
            flag: flag.to_string(),
            values: Values::List(items),
        })
    }

    fn list(&self) -> Result<&[String], SweepError> {
        match &self.values {
            Values::List(v) => Ok(v),
            Values::Range { .. } => Err(SweepError::Axis {
                flag: self.flag.clone(),
                problem: "a range `lo:hi` needs random search (--samples N); a grid takes lists"
                    .into(),
            }),
        }
    }

    /// One random value of this axis.
    fn draw(&self, rng: &mut SeededRng) -> String {
        match &self.values {
            Values::List(v) => v[rng.below(v.len())].clone(),
            &Values::Range {
                lo,
                hi,
                scale,
                integer,
            } => {
                if integer {
                    let (lo, hi) = (lo.ceil() as u64, hi.floor() as u64);
                    if hi <= lo {
                        return lo.to_string();
                    }
                    let v = match scale {
                        Scale::Linear => lo + rng.below((hi - lo + 1) as usize) as u64,
                        Scale::Log => {
                            let (a, b) = ((lo.max(1) as f64).ln(), ((hi + 1) as f64).ln());
                            ((a + rng.uniform_f64() * (b - a)).exp().floor() as u64).clamp(lo, hi)
                        }
                    };
                    v.to_string()
                } else {
                    let v = match scale {
                        Scale::Linear => lo + rng.uniform_f64() * (hi - lo),
                        Scale::Log => {
                            let (a, b) = (lo.ln(), hi.ln());
                            (a + rng.uniform_f64() * (b - a)).exp()
                        }
                    };
                    // Three significant digits: readable in tables and
                    // command lines, and still a continuous-looking draw.
                    let v: f64 = format!("{v:.2e}").parse().expect("formatted float");
                    v.clamp(lo, hi).to_string()
                }
            }
        }
    }
}

/// Every combination of the axes' values, the last axis varying fastest.
/// No axes: one configuration with no flags (the `train` defaults).
pub fn expand_grid(axes: &[Axis]) -> Result<Vec<Flags>, SweepError> {
    let mut configs: Vec<Flags> = vec![Vec::new()];
    for axis in axes {
        let values = axis.list()?;
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.flag.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    Ok(configs)
}

/// `samples` random configurations drawn from `sweep_seed`'s sweep stream.
/// A `--seed` list is crossed rather than drawn from, so every sampled
/// configuration runs with each seed (for mean ± std over seeds).
pub fn sample_random(axes: &[Axis], samples: usize, sweep_seed: u64) -> Vec<Flags> {
    let mut rng = SeededRng::new(sweep_seed, Stream::Sweep);
    let crossed_seeds: Option<&[String]> = axes.iter().find_map(|a| match &a.values {
        Values::List(v) if a.flag == "seed" => Some(v.as_slice()),
        _ => None,
    });
    let mut out = Vec::new();
    for _ in 0..samples {
        let drawn: Flags = axes
            .iter()
            .filter(|a| !(a.flag == "seed" && crossed_seeds.is_some()))
            .map(|a| (a.flag.clone(), a.draw(&mut rng)))
            .collect();
        match crossed_seeds {
            Some(seeds) => out.extend(seeds.iter().map(|s| {
                let mut c = drawn.clone();
                c.push(("seed".to_string(), s.clone()));
                c
            })),
            None => out.push(drawn),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(flag: &str, items: &[&str]) -> Axis {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        Axis::parse(flag, &items).unwrap()
    }

    #[test]
    fn ranges_are_refused_where_they_make_no_sense() {
        let items = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Axis::parse("optimizer", &items(&["sgd:adam"])).is_err());
        assert!(
            Axis::parse("lr", &items(&["0:0.1"])).is_err(),
            "log range from 0"
        );
        assert!(Axis::parse("lr", &items(&["0.3:0.1"])).is_err(), "reversed");
        assert!(Axis::parse("lr", &items(&["0.1", "0.2:0.3"])).is_err());
        assert!(Axis::parse("lr", &items(&["0.1", ""])).is_err());
        let e = expand_grid(&[axis("lr", &["1e-3:0.1"])]).unwrap_err();
        assert!(e.to_string().contains("--samples"), "{e}");
    }

    #[test]
    fn log_uniform_draws_cover_each_decade_alike() {
        let a = axis("lr", &["1e-4:1"]);
        let flags = sample_random(&[a], 4000, 9);
        let mut per_decade = [0usize; 4];
        for f in &flags {
            let v: f64 = f[0].1.parse().unwrap();
            assert!((1e-4..=1.0).contains(&v), "{v}");
            per_decade[((v.log10() + 4.0).floor() as usize).min(3)] += 1;
        }
        assert!(
            per_decade.iter().all(|&n| n > 850 && n < 1150),
            "{per_decade:?}"
        );
    }

    #[test]
    fn integer_ranges_stay_in_bounds_and_hit_both_ends() {
        let flags = sample_random(&[axis("hidden", &["8:10"])], 300, 1);
        let vals: Vec<u64> = flags.iter().map(|f| f[0].1.parse().unwrap()).collect();
        for want in 8..=10 {
            assert!(vals.contains(&want), "{want} never drawn");
        }
        assert!(vals.iter().all(|v| (8..=10).contains(v)));
    }
}
