//! The sweep's PNG: held-out accuracy against each swept hyperparameter (one
//! panel each, every run a dot, the mean of a value's runs a bar where it
//! has several), and the held-out learning curves of the best runs with
//! their legend beside the chart.
//!
//! Numbers sit on a number line, on the scale random search draws them
//! from (`grid::column_scale`): the learning rate and the batch size on a
//! log scale, the hidden width, momentum, epochs and seeds linear. So a
//! grid of decades (`--lr 0.001,0.01,0.1`) is evenly spaced, and two
//! sampled learning rates 500 times apart are far apart. Names (optimizer,
//! init, engine, a layer shape such as `256-128`) are evenly spaced
//! categories.
//!
//! Drawn through [`crate::plot::render`]: the same embedded font and the
//! same atomic temp-file-and-rename as every other picture.

use super::grid::{column_scale, Scale};
use super::results::{CurvePoint, RunResult};
use super::summary::ranked;
use super::SweepError;
use crate::plot::{Area, DrawResult, FONT_NAME};
use crate::text::{plural, thousands};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::HashMap;
use std::path::Path;

const PANEL: (u32, u32) = (520, 380);
/// Height of the title and the key under it.
const HEADER: u32 = 64;
/// Width of the learning curves' legend, right of their chart.
const LEGEND_W: u32 = 400;
/// How many of the best runs get a learning curve.
pub const CURVES: usize = 5;

const DOT: RGBColor = RGBColor(31, 119, 180);
const MEAN: RGBColor = RGBColor(214, 39, 40);
const INK: RGBColor = RGBColor(30, 30, 30);
const MUTED: RGBColor = RGBColor(110, 110, 110);

/// How a hyperparameter's values are placed along x.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum XAxis {
    /// The value itself; `integer`: every value is a whole number (seeds,
    /// widths, epochs), so ticks are whole numbers too.
    Linear { integer: bool },
    /// log10 of the value; ticks at powers of two (`base2`: integers such
    /// as the batch size) or at 1, 2, 5 times powers of ten.
    Log { base2: bool },
    /// Names at 0, 1, 2, ... in this order.
    Categorical(Vec<String>),
}

/// Short number text for tick labels: 0.003, 0.1, 32, 1e-5.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // Twelve significant digits: 10^log10(0.001) prints as 0.001.
    let v: f64 = format!("{v:.11e}").parse().unwrap_or(v);
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl XAxis {
    /// Numbers on the scale random search draws `param` from (a log scale
    /// needs every value > 0), linear for numbers it only takes from lists;
    /// anything that is not a number, as categories.
    pub(crate) fn for_values(param: &str, texts: &[String]) -> XAxis {
        let numbers: Option<Vec<f64>> = texts
            .iter()
            .map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect();
        match numbers {
            Some(v) => match column_scale(param) {
                Some((Scale::Log, integer)) if v.iter().all(|&x| x > 0.0) => {
                    XAxis::Log { base2: integer }
                }
                _ => XAxis::Linear {
                    integer: v.iter().all(|x| x.fract() == 0.0),
                },
            },
            None => {
                let mut names = texts.to_vec();
                names.sort();
                names.dedup();
                XAxis::Categorical(names)
            }
        }
    }

    /// Where a value sits along x.
    pub(crate) fn x_of(&self, text: &str) -> f64 {
        match self {
            XAxis::Linear { .. } => text.parse().unwrap_or(f64::NAN),
            XAxis::Log { .. } => text.parse::<f64>().unwrap_or(f64::NAN).log10(),
            XAxis::Categorical(names) => names
                .iter()
                .position(|n| n == text)
                .map_or(f64::NAN, |i| i as f64),
        }
    }

    /// The value at position `x`.
    fn value_at(&self, x: f64) -> f64 {
        match self {
            XAxis::Log { .. } => 10f64.powf(x),
            _ => x,
        }
    }

    /// The x range shown, around the `distinct` x values (sorted).
    fn range(&self, distinct: &[f64]) -> (f64, f64) {
        if let XAxis::Categorical(names) = self {
            return (-0.5, names.len() as f64 - 0.5);
        }
        match (distinct.first(), distinct.last()) {
            (Some(&a), Some(&b)) if b > a => {
                let pad = (b - a) * 0.06;
                (a - pad, b + pad)
            }
            (Some(&a), _) => match self {
                XAxis::Log { .. } => (a - 0.3, a + 0.3),
                _ => (a - a.abs().max(1.0) * 0.5, a + a.abs().max(1.0) * 0.5),
            },
            _ => (0.0, 1.0),
        }
    }

    /// Tick positions within `lo..=hi` for runs at the `distinct` x
    /// positions (sorted): every category; on a number line, the values
    /// themselves when there are at most eight, none closer than a twelfth
    /// of the axis (a grid: each value labelled exactly), else round numbers
    /// of the value (not of its logarithm).
    pub(crate) fn ticks(&self, lo: f64, hi: f64, distinct: &[f64]) -> Vec<f64> {
        let inside = |v: &f64| *v >= lo - 1e-9 && *v <= hi + 1e-9;
        if !matches!(self, XAxis::Categorical(_))
            && (2..=8).contains(&distinct.len())
            && distinct.windows(2).all(|w| w[1] - w[0] >= (hi - lo) / 12.0)
        {
            return distinct.to_vec();
        }
        match self {
            XAxis::Categorical(names) => (0..names.len()).map(|i| i as f64).collect(),
            XAxis::Linear { integer: false } => nice_ticks(lo, hi),
            XAxis::Linear { integer: true } => {
                let ticks: Vec<f64> = nice_ticks(lo, hi)
                    .into_iter()
                    .filter(|v| v.fract() == 0.0)
                    .collect();
                if ticks.is_empty() {
                    distinct.to_vec()
                } else {
                    ticks
                }
            }
            XAxis::Log { base2 } => {
                let candidates: Vec<Vec<f64>> = if *base2 {
                    let (a, b) = (
                        (lo / 2f64.log10()).floor() as i32,
                        (hi / 2f64.log10()).ceil() as i32,
                    );
                    vec![
                        (a..=b).map(|k| 2f64.powi(k).log10()).collect(),
                        (a..=b)
                            .flat_map(|k| [2f64.powi(k), 1.5 * 2f64.powi(k)])
                            .map(f64::log10)
                            .collect(),
                    ]
                } else {
                    let (a, b) = (lo.floor() as i32, hi.ceil() as i32);
                    let at = |ms: &'static [f64]| -> Vec<f64> {
                        (a..=b)
                            .flat_map(|k| ms.iter().map(move |m| (m * 10f64.powi(k)).log10()))
                            .collect()
                    };
                    vec![
                        at(&[1.0]),
                        at(&[1.0, 2.0, 5.0]),
                        at(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
                    ]
                };
                // The sparsest set with three ticks in range, thinned to at
                // most eight; a range too narrow for any takes linear ticks.
                let mut best: Vec<f64> = Vec::new();
                for set in candidates {
                    let mut set: Vec<f64> = set.into_iter().filter(inside).collect();
                    set.sort_by(f64::total_cmp);
                    best = set;
                    if best.len() >= 3 {
                        break;
                    }
                }
                if best.len() < 2 {
                    return nice_ticks(10f64.powf(lo), 10f64.powf(hi))
                        .into_iter()
                        .filter(|v| *v > 0.0)
                        .map(f64::log10)
                        .filter(inside)
                        .collect();
                }
                let stride = best.len().div_ceil(8);
                best.into_iter().step_by(stride).collect()
            }
        }
    }

    fn tick_label(&self, x: f64) -> String {
        match self {
            XAxis::Categorical(names) => {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
            _ => short(self.value_at(x)),
        }
    }

    fn description(&self, param: &str) -> String {
        let name = if param == "layers" && !matches!(self, XAxis::Categorical(_)) {
            "hidden units (layers)"
        } else {
            param
        };
        match self {
            XAxis::Log { .. } => format!("{name} (log scale)"),
            _ => name.to_string(),
        }
    }
}

/// A number line with its ticks exactly at `ticks` (no light lines between
/// them); plotters' own `with_key_points` has no label formatter for `f64`.
struct Ticked {
    line: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.line.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.line.range()
    }
}

/// About six round ticks (1, 2 or 5 times a power of ten apart) in `lo..=hi`.
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// The accuracy the plot shows: held out, or training accuracy when no run
/// held rows out (`--split 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    Heldout,
    Train,
}

impl Shown {
    fn of(ok: &[&RunResult]) -> Shown {
        if ok.iter().any(|r| r.num("heldout_accuracy").is_some()) {
            Shown::Heldout
        } else {
            Shown::Train
        }
    }

    /// The results column.
    fn column(self) -> &'static str {
        match self {
            Shown::Heldout => "heldout_accuracy",
            Shown::Train => "train_accuracy",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shown::Heldout => "held-out accuracy",
            Shown::Train => "train accuracy",
        }
    }

    fn point(self, p: &CurvePoint) -> Option<f64> {
        match self {
            Shown::Heldout => p.heldout_accuracy,
            Shown::Train => Some(p.train_accuracy).filter(|a| a.is_finite()),
        }
    }
}

/// The mean accuracy (as [`Shown`]) of the runs at one x value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mean {
    pub x: f64,
    pub accuracy: f64,
    pub runs: usize,
}

/// What one hyperparameter's panel draws.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Panel {
    pub axis: XAxis,
    pub shown: Shown,
    /// `(x, held-out accuracy)` of every ok run with an accuracy.
    pub points: Vec<(f64, f64)>,
    /// The mean at each value with two runs or more, by x. A value with one
    /// run has its dot and nothing else: a mean of one run says no more.
    pub means: Vec<Mean>,
    /// Join the means with a line: a number axis where every value has
    /// several runs, each run with the same settings of the other swept
    /// flags (a grid), so the means differ by this flag alone. In random
    /// search the other flags differ from value to value, and a line through
    /// them would zig-zag with whatever else was drawn.
    pub line: bool,
}

/// Lay out the runs `ok` against `param`; `swept` names every swept column.
pub(crate) fn panel(param: &str, ok: &[&RunResult], swept: &[String]) -> Panel {
    let texts: Vec<String> = ok.iter().map(|r| r.text(param)).collect();
    let axis = XAxis::for_values(param, &texts);
    let shown = Shown::of(ok);
    // (x, accuracy, the other swept flags' values) per run.
    let runs: Vec<(f64, f64, String)> = ok
        .iter()
        .zip(&texts)
        .filter_map(|(r, t)| {
            let others: Vec<String> = swept
                .iter()
                .filter(|p| *p != param)
                .map(|p| r.text(p))
                .collect();
            Some((axis.x_of(t), r.num(shown.column())?, others.join("\u{1f}")))
        })
        .filter(|(x, y, _)| x.is_finite() && y.is_finite())
        .collect();
    let mut distinct: Vec<f64> = runs.iter().map(|r| r.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let mut means = Vec::new();
    let mut settings: Vec<Vec<&str>> = Vec::new();
    for &x in &distinct {
        let at: Vec<&(f64, f64, String)> = runs.iter().filter(|r| r.0 == x).collect();
        let mut others: Vec<&str> = at.iter().map(|r| r.2.as_str()).collect();
        others.sort_unstable();
        settings.push(others);
        if at.len() >= 2 {
            means.push(Mean {
                x,
                accuracy: at.iter().map(|r| r.1).sum::<f64>() / at.len() as f64,
                runs: at.len(),
            });
        }
    }
    let line = !matches!(axis, XAxis::Categorical(_))
        && distinct.len() >= 2
        && means.len() == distinct.len()
        && settings.windows(2).all(|w| w[0] == w[1]);
    Panel {
        shown,
        axis,
        points: runs.iter().map(|r| (r.0, r.1)).collect(),
        means,
        line,
    }
}

/// Draw `rows` (and `curves` of the best of them) into `path` (written to a
/// temporary file beside it, then renamed).
pub fn plot_sweep(
    path: &Path,
    rows: &[RunResult],
    swept: &[String],
    curves: &HashMap<String, Vec<CurvePoint>>,
    title: &str,
) -> Result<(), SweepError> {
    let cols = swept.len().clamp(1, 3);
    let param_rows = swept.len().div_ceil(cols);
    let width = PANEL.0 * cols.max(2) as u32;
    let size = (width, HEADER + PANEL.1 * (param_rows as u32 + 1));
    crate::plot::render(path, size, |root| {
        let failed = rows.iter().filter(|r| !r.is_ok()).count();
        let heading = if failed > 0 {
            format!(
                "{title}  ({}, {} failed and not shown)",
                plural(rows.len(), "run"),
                thousands(failed)
            )
        } else {
            format!("{title}  ({})", plural(rows.len(), "run"))
        };
        let (header, body) = root.split_vertically(HEADER);
        let centre = |size: u32, color: RGBColor| {
            (FONT_NAME, size)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        header.draw(&Text::new(heading, (width as i32 / 2, 20), centre(22, INK)))?;
        let ok = ranked(rows);
        let panels: Vec<Panel> = swept.iter().map(|p| panel(p, &ok, swept)).collect();
        header.draw(&Text::new(
            key_line(&panels),
            (width as i32 / 2, 48),
            centre(13, MUTED),
        ))?;
        let (params_area, curves_area) = body.split_vertically(PANEL.1 * param_rows as u32);
        if !swept.is_empty() {
            let areas = params_area.split_evenly((param_rows, cols));
            for ((param, p), area) in swept.iter().zip(&panels).zip(&areas) {
                param_panel(area, param, p)?;
            }
        }
        curves_panel(&curves_area, &ok, swept, curves)?;
        Ok(())
    })
    .map_err(|e| SweepError::file(path, format!("cannot draw the plot: {}", e.message)))
}

/// The key under the title: what the marks of these panels mean.
fn key_line(panels: &[Panel]) -> String {
    if panels.is_empty() {
        return "no hyperparameter differs between the runs".into();
    }
    if panels.iter().all(|p| p.points.is_empty()) {
        return "no run succeeded".into();
    }
    let means = panels.iter().any(|p| !p.means.is_empty());
    let lines = panels.iter().any(|p| p.line);
    match (means, lines) {
        (false, _) => {
            "each dot is one run; no value ran more than once, so no means are drawn".into()
        }
        (true, false) => {
            "dots: runs;  red bar: mean of a value's runs, where it has two or more".into()
        }
        (true, true) => "dots: runs;  red bar: mean of a value's runs, where it has two or more; \
             red line: means of a grid's values (each run with the same other settings)"
            .into(),
    }
}

/// A panel's caption over a note that it has nothing to show (every run
/// failed, or no run recorded a curve).
fn empty_panel(area: &Area, caption: &str) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let style = |size: u32, color: RGBColor| {
        (FONT_NAME, size)
            .into_font()
            .color(&color)
            .pos(Pos::new(HPos::Center, VPos::Center))
    };
    area.draw(&Text::new(
        caption.to_string(),
        (w as i32 / 2, 24),
        style(17, INK),
    ))?;
    area.draw(&Text::new(
        "no successful run to show",
        (w as i32 / 2, h as i32 / 2),
        style(14, MUTED),
    ))?;
    Ok(())
}

/// Digits that tell the y ticks of an accuracy range apart.
fn accuracy_digits(lo: f64, hi: f64) -> usize {
    if hi - lo < 0.02 {
        4
    } else {
        3
    }
}

fn accuracy_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.002);
    ((lo - pad).max(0.0), (hi + pad).min(1.0))
}

/// Held-out accuracy against one hyperparameter, as [`panel`] laid it out.
fn param_panel(area: &Area, param: &str, p: &Panel) -> DrawResult {
    if p.points.is_empty() {
        return empty_panel(area, &format!("{} vs {param}", p.shown.name()));
    }
    let mut distinct: Vec<f64> = p.points.iter().map(|q| q.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let (x_lo, x_hi) = p.axis.range(&distinct);
    let (y_lo, y_hi) = accuracy_range(p.points.iter().map(|q| q.1));
    let ticks = p.axis.ticks(x_lo, x_hi, &distinct);
    let digits = accuracy_digits(y_lo, y_hi);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(format!("{} vs {param}", p.shown.name()), (FONT_NAME, 17))
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(
            Ticked {
                line: (x_lo..x_hi).into(),
                ticks,
            },
            y_lo..y_hi,
        )?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| p.axis.tick_label(*v))
        .y_label_formatter(&|v| format!("{v:.digits$}"))
        .x_desc(p.axis.description(param))
        .label_style((FONT_NAME, 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    chart.draw_series(
        p.points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 4, DOT.mix(0.55).filled())),
    )?;
    if p.line {
        chart.draw_series(LineSeries::new(
            p.means.iter().map(|m| (m.x, m.accuracy)),
            MEAN.mix(0.8).stroke_width(2),
        ))?;
    }
    // A bar a twentieth of the panel wide (a third of a category).
    let half = match p.axis {
        XAxis::Categorical(_) => 0.17,
        _ => (x_hi - x_lo) / 40.0,
    };
    chart.draw_series(p.means.iter().map(|m| {
        PathElement::new(
            vec![(m.x - half, m.accuracy), (m.x + half, m.accuracy)],
            MEAN.stroke_width(3),
        )
    }))?;
    Ok(())
}

fn curves_panel(
    area: &Area,
    ok: &[&RunResult],
    swept: &[String],
    curves: &HashMap<String, Vec<CurvePoint>>,
) -> DrawResult {
    let shown = Shown::of(ok);
    let best = best_curves(ok, curves, shown);
    if best.is_empty() {
        return empty_panel(area, &format!("{} per epoch", shown.name()));
    }
    let (chart_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND_W);
    let x_hi = best
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    let x_lo = best
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(x_hi, f64::min);
    let (y_lo, y_hi) = accuracy_range(best.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let digits = accuracy_digits(y_lo, y_hi);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(12)
        .caption(
            format!("{} per epoch, best {}", shown.name(), best.len()),
            (FONT_NAME, 17),
        )
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(
            Ticked {
                line: (x_lo..x_hi.max(x_lo + 1.0)).into(),
                // Whole epochs only.
                ticks: nice_ticks(x_lo, x_hi.max(x_lo + 1.0))
                    .into_iter()
                    .filter(|v| v.fract() == 0.0)
                    .collect(),
            },
            y_lo..y_hi,
        )?;
    chart
        .configure_mesh()
        .x_desc("epoch (iteration for full batch)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.digits$}"))
        .label_style((FONT_NAME, 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let label_style = |color: RGBColor| {
        (FONT_NAME, 13)
            .into_font()
            .color(&color)
            .pos(Pos::new(HPos::Left, VPos::Center))
    };
    legend_area.draw(&Text::new(
        format!("best runs by {}:", shown.name()),
        (8, 44),
        label_style(MUTED),
    ))?;
    for (i, (r, pts)) in best.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&q| Circle::new(q, 3, color.filled())))?;
        let y = 70 + 22 * i as i32;
        legend_area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            color.stroke_width(3),
        ))?;
        legend_area.draw(&Text::new(
            legend_label(i, r, swept, shown),
            (38, y),
            label_style(INK),
        ))?;
    }
    Ok(())
}

/// The held-out (or train) curves of the best runs that have one, best first.
fn best_curves<'a>(
    ok: &[&'a RunResult],
    curves: &HashMap<String, Vec<CurvePoint>>,
    shown: Shown,
) -> Vec<(&'a RunResult, Vec<(f64, f64)>)> {
    ok.iter()
        .filter_map(|r| {
            let pts: Vec<(f64, f64)> = curves
                .get(&r.key())?
                .iter()
                .filter_map(|p| Some((p.step as f64, shown.point(p)?)))
                .collect();
            (!pts.is_empty()).then_some((*r, pts))
        })
        .take(CURVES)
        .collect()
}

/// `#1 0.9412  lr=0.1 seed=2`, cut to fit the legend.
fn legend_label(i: usize, r: &RunResult, swept: &[String], shown: Shown) -> String {
    let acc = r
        .num(shown.column())
        .map_or("-".to_string(), |a| format!("{a:.4}"));
    let mut label = format!("#{} {acc}  ", i + 1);
    label.push_str(
        &swept
            .iter()
            .map(|p| format!("{p}={}", r.text(p)))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if label.chars().count() > 52 {
        label = label.chars().take(49).collect();
        label.push_str("...");
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::grid::{sample_random, Axis};
    use serde_json::{json, Value};

    /// An ok run with these hyperparameters and held-out accuracy.
    fn run(key: &str, params: &[(&str, Value)], accuracy: f64) -> RunResult {
        let mut columns = vec![
            ("key".to_string(), json!(key)),
            ("status".to_string(), json!("ok")),
        ];
        columns.extend(params.iter().map(|(n, v)| (n.to_string(), v.clone())));
        columns.push(("heldout_accuracy".into(), json!(accuracy)));
        RunResult { columns }
    }

    fn texts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_random_sweeps_learning_rates_sit_on_a_log_number_line() {
        let lr = Axis::parse("lr", &texts(&["1e-4:1"])).unwrap();
        let drawn: Vec<String> = sample_random(&[lr], 8, 3)
            .into_iter()
            .map(|f| f[0].1.clone())
            .chain(texts(&["0.000233", "0.119"]))
            .collect();
        let axis = XAxis::for_values("lr", &drawn);
        assert_eq!(axis, XAxis::Log { base2: false });
        // Each value at its logarithm: 0.000233 and 0.119 are 2.7 decades
        // apart, not neighbouring categories.
        let gap = axis.x_of("0.119") - axis.x_of("0.000233");
        assert!((gap - (0.119f64 / 0.000233).log10()).abs() < 1e-9, "{gap}");
        for t in &drawn {
            let v: f64 = t.parse().unwrap();
            assert!((axis.x_of(t) - v.log10()).abs() < 1e-12, "{t}");
        }
        // Ticks are round learning rates (1, 2, 5 times a power of ten).
        let ticks = axis.ticks(-4.0, 0.0, &[-4.0, -3.5, -3.2, -2.0, -1.9, -0.5]);
        let labels: Vec<String> = ticks.iter().map(|&x| axis.tick_label(x)).collect();
        assert_eq!(labels, ["1e-4", "0.001", "0.01", "0.1", "1"]);
    }

    #[test]
    fn numbers_take_the_scale_random_search_draws_them_from() {
        let batch = XAxis::for_values("batch_size", &texts(&["16", "37", "256"]));
        assert_eq!(batch, XAxis::Log { base2: true });
        let (lo, hi) = batch.range(&[16f64.log10(), 256f64.log10()]);
        let labels: Vec<String> = batch
            .ticks(
                lo,
                hi,
                &[16f64.log10(), 37f64.log10(), 40f64.log10(), 256f64.log10()],
            )
            .iter()
            .map(|&x| batch.tick_label(x))
            .collect();
        assert_eq!(labels, ["16", "32", "64", "128", "256"]);
        assert_eq!(
            XAxis::for_values("layers", &texts(&["12", "57"])),
            XAxis::Linear { integer: true }
        );
        assert_eq!(
            XAxis::for_values("momentum", &texts(&["0.5", "0.9"])),
            XAxis::Linear { integer: false }
        );
        // Two seeds: ticks 1 and 2, nothing between.
        let seeds = XAxis::for_values("seed", &texts(&["1", "2", "1"]));
        let (lo, hi) = seeds.range(&[1.0, 2.0]);
        assert_eq!(seeds.ticks(lo, hi, &[1.0, 2.0]), [1.0, 2.0]);
        // A grid's values are labelled exactly, on a log scale still.
        let lr = XAxis::for_values("lr", &texts(&["0.003", "0.03", "0.3"]));
        let xs: Vec<f64> = ["0.003", "0.03", "0.3"].map(|t| lr.x_of(t)).to_vec();
        let (lo, hi) = lr.range(&xs);
        let labels: Vec<String> = lr
            .ticks(lo, hi, &xs)
            .iter()
            .map(|&x| lr.tick_label(x))
            .collect();
        assert_eq!(labels, ["0.003", "0.03", "0.3"]);
        // Names stay categories, a layer shape too.
        assert_eq!(
            XAxis::for_values("layers", &texts(&["256-128", "64", "256-128"])),
            XAxis::Categorical(texts(&["256-128", "64"]))
        );
        assert_eq!(
            XAxis::for_values("optimizer", &texts(&["sgd", "adam"])),
            XAxis::Categorical(texts(&["adam", "sgd"]))
        );
    }

    #[test]
    fn means_only_where_a_value_has_several_runs() {
        // Random search: three learning rates, one of them run twice (two
        // seeds), with different batch sizes from value to value.
        let rows = [
            run("a", &[("lr", json!(0.01)), ("batch_size", json!(32))], 0.90),
            run("b", &[("lr", json!(0.01)), ("batch_size", json!(32))], 0.92),
            run("c", &[("lr", json!(0.2)), ("batch_size", json!(100))], 0.80),
            run(
                "d",
                &[("lr", json!(0.0003)), ("batch_size", json!(20))],
                0.70,
            ),
        ];
        let ok: Vec<&RunResult> = rows.iter().collect();
        let swept = texts(&["lr", "batch_size"]);
        let p = panel("lr", &ok, &swept);
        assert_eq!(p.points.len(), 4);
        assert_eq!(p.means.len(), 1, "{:?}", p.means);
        assert_eq!(p.means[0].runs, 2);
        assert!((p.means[0].x - 0.01f64.log10()).abs() < 1e-12);
        assert!((p.means[0].accuracy - 0.91).abs() < 1e-12);
        assert!(!p.line, "no line through single runs");
    }

    #[test]
    fn a_grid_joins_its_means_and_a_random_search_does_not() {
        // A grid: every lr with both optimizers.
        let mut rows = Vec::new();
        for (i, lr) in [0.001, 0.01, 0.1].iter().enumerate() {
            for (j, opt) in ["sgd", "adam"].iter().enumerate() {
                let acc = 0.8 + 0.01 * i as f64 + 0.02 * j as f64;
                rows.push(run(
                    &format!("{i}{j}"),
                    &[("lr", json!(lr)), ("optimizer", json!(opt))],
                    acc,
                ));
            }
        }
        let ok: Vec<&RunResult> = rows.iter().collect();
        let swept = texts(&["lr", "optimizer"]);
        let p = panel("lr", &ok, &swept);
        assert_eq!(p.means.len(), 3);
        assert!(p.means.iter().all(|m| m.runs == 2));
        assert!(p.line);
        // A category has no order to draw a line along.
        let q = panel("optimizer", &ok, &swept);
        assert_eq!(q.means.len(), 2);
        assert!(!q.line);
        // Random search with two seeds per draw: each lr has two runs, but
        // the draws differ in batch size too, so the means are not joined.
        let rows: Vec<RunResult> = [(0.01, 32), (0.2, 100)]
            .iter()
            .flat_map(|&(lr, b)| {
                [1, 2].map(|seed| {
                    run(
                        &format!("{lr}-{seed}"),
                        &[
                            ("lr", json!(lr)),
                            ("batch_size", json!(b)),
                            ("seed", json!(seed)),
                        ],
                        0.9,
                    )
                })
            })
            .collect();
        let ok: Vec<&RunResult> = rows.iter().collect();
        let p = panel("lr", &ok, &texts(&["lr", "batch_size", "seed"]));
        assert_eq!(p.means.len(), 2);
        assert!(!p.line);
    }

    #[test]
    fn without_held_out_rows_the_plot_shows_train_accuracy() {
        let row = |key: &str, heldout: serde_json::Value| RunResult {
            columns: vec![
                ("key".into(), json!(key)),
                ("status".into(), json!("ok")),
                ("heldout_accuracy".into(), heldout),
                ("train_accuracy".into(), json!(0.9)),
            ],
        };
        let point = |step, heldout| CurvePoint {
            step,
            train_accuracy: 0.5 + step as f64 / 10.0,
            heldout_accuracy: heldout,
        };
        let none = [row("a", serde_json::Value::Null)];
        let ok: Vec<&RunResult> = none.iter().collect();
        assert_eq!(Shown::of(&ok), Shown::Train);
        let curves = HashMap::from([("a".to_string(), vec![point(1, None), point(2, None)])]);
        let best = best_curves(&ok, &curves, Shown::Train);
        assert_eq!(best[0].1, [(1.0, 0.6), (2.0, 0.7)]);
        assert!(best_curves(&ok, &curves, Shown::Heldout).is_empty());

        let some = [row("a", serde_json::Value::Null), row("b", json!(0.8))];
        let ok: Vec<&RunResult> = some.iter().collect();
        assert_eq!(Shown::of(&ok), Shown::Heldout);
    }
}
