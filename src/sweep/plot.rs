//! The sweep's PNG: held-out accuracy against each swept hyperparameter (one
//! panel each, every run a dot, the mean per value a line), and the
//! held-out learning curves of the best runs. With no held-out rows in any
//! run (`--split 1`), the same panels of training accuracy.
//!
//! Drawn through [`crate::plot::render`]: the same embedded font and the
//! same atomic temp-file-and-rename as every other picture.

use super::results::{CurvePoint, RunResult};
use super::summary::ranked;
use super::SweepError;
use crate::plot::{Area, DrawResult};
use plotters::prelude::*;
use std::collections::HashMap;
use std::path::Path;

const PANEL: (u32, u32) = (520, 380);
/// How many of the best runs get a learning curve.
pub const CURVES: usize = 5;

/// How a hyperparameter's values are placed along x.
enum XAxis {
    /// Numbers; `log` plots log10 of the value (learning rates).
    Numeric { log: bool },
    /// Names at 0, 1, 2, ...
    Categorical(Vec<String>),
}

/// The accuracy the plot shows: held out, or training accuracy when no run
/// held rows out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
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

/// Short number text for tick labels: 0.003, 0.1, 32, 1e-5.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
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
    let panels = swept.len() + 1;
    let cols = panels.min(3);
    let nrows = panels.div_ceil(cols);
    let size = (PANEL.0 * cols as u32, PANEL.1 * nrows as u32 + 40);
    crate::plot::render(path, size, |root| {
        let failed = rows.iter().filter(|r| !r.is_ok()).count();
        let heading = if failed > 0 {
            format!(
                "{title}  ({} runs, {failed} failed and not shown)",
                rows.len()
            )
        } else {
            format!("{title}  ({} runs)", rows.len())
        };
        let root = root.titled(&heading, (crate::plot::FONT_NAME, 22))?;
        let areas = root.split_evenly((nrows, cols));
        let ok = ranked(rows);
        let shown = Shown::of(&ok);
        for (param, area) in swept.iter().zip(&areas) {
            param_panel(area, param, &ok, shown)?;
        }
        curves_panel(&areas[swept.len()], &ok, swept, curves, shown)?;
        Ok(())
    })
    .map_err(|e| SweepError::file(path, format!("cannot draw the plot: {}", e.message)))
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

impl XAxis {
    /// Few distinct values (a grid): evenly spaced, each labelled exactly.
    /// Many (random search): a number line, logarithmic for learning rates.
    fn for_values(param: &str, texts: &[String]) -> XAxis {
        let numbers: Option<Vec<f64>> = texts.iter().map(|t| t.parse::<f64>().ok()).collect();
        let mut names = texts.to_vec();
        match &numbers {
            Some(_) => names.sort_by(|a, b| {
                let (x, y) = (
                    a.parse::<f64>().unwrap_or(0.0),
                    b.parse::<f64>().unwrap_or(0.0),
                );
                x.total_cmp(&y)
            }),
            None => names.sort(),
        }
        names.dedup();
        match &numbers {
            Some(v) if names.len() > 10 => {
                let (lo, hi) = v
                    .iter()
                    .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
                XAxis::Numeric {
                    log: lo > 0.0 && (param == "lr" || hi / lo >= 20.0),
                }
            }
            _ => XAxis::Categorical(names),
        }
    }

    /// Where a value sits along x.
    fn x_of(&self, text: &str) -> f64 {
        match self {
            XAxis::Numeric { log } => {
                let v: f64 = text.parse().unwrap_or(f64::NAN);
                if *log {
                    v.log10()
                } else {
                    v
                }
            }
            XAxis::Categorical(names) => names.iter().position(|n| n == text).unwrap_or(0) as f64,
        }
    }

    /// The x range shown, around the `distinct` x values (sorted).
    fn range(&self, distinct: &[f64]) -> (f64, f64) {
        if let XAxis::Categorical(names) = self {
            return (-0.5, names.len() as f64 - 0.5);
        }
        match (distinct.first(), distinct.last()) {
            (Some(&a), Some(&b)) if b > a => {
                let pad = (b - a) * 0.08;
                (a - pad, b + pad)
            }
            (Some(&a), _) => (a - 0.5, a + 0.5),
            _ => (0.0, 1.0),
        }
    }

    fn tick_label(&self, v: f64) -> String {
        match self {
            XAxis::Numeric { log: true } => short(10f64.powf(v)),
            XAxis::Numeric { log: false } => short(v),
            // Ticks between categories stay unlabelled.
            XAxis::Categorical(names) if (v - v.round()).abs() < 1e-6 && v > -0.5 => {
                names.get(v.round() as usize).cloned().unwrap_or_default()
            }
            XAxis::Categorical(_) => String::new(),
        }
    }

    fn ticks(&self) -> usize {
        match self {
            XAxis::Categorical(names) => names.len() + 1,
            _ => 8,
        }
    }

    fn description(&self, param: &str) -> String {
        match self {
            XAxis::Numeric { log: true } => format!("{param} (log scale)"),
            _ => param.to_string(),
        }
    }
}

/// Held-out (or train) accuracy against one hyperparameter: a dot per run,
/// and with few distinct values, a line through the mean of each.
fn param_panel(area: &Area, param: &str, ok: &[&RunResult], shown: Shown) -> DrawResult {
    let texts: Vec<String> = ok.iter().map(|r| r.text(param)).collect();
    let axis = XAxis::for_values(param, &texts);
    let points: Vec<(f64, f64)> = ok
        .iter()
        .zip(&texts)
        .filter_map(|(r, t)| Some((axis.x_of(t), r.num(shown.column())?)))
        .collect();
    let mut distinct: Vec<f64> = points.iter().map(|p| p.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let (x_lo, x_hi) = axis.range(&distinct);
    let (y_lo, y_hi) = accuracy_range(points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(
            format!("{} vs {param}", shown.name()),
            (crate::plot::FONT_NAME, 17),
        )
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_labels(axis.ticks())
        .x_label_formatter(&|v| axis.tick_label(*v))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .x_desc(axis.description(param))
        .label_style((crate::plot::FONT_NAME, 13))
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 4, BLUE.mix(0.6).filled())),
    )?;
    if distinct.len() <= 10 {
        let means: Vec<(f64, f64)> = distinct
            .iter()
            .map(|&x| {
                let ys: Vec<f64> = points.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
                (x, ys.iter().sum::<f64>() / ys.len() as f64)
            })
            .collect();
        chart.draw_series(LineSeries::new(means, RED.stroke_width(2)))?;
    }
    Ok(())
}

fn curves_panel(
    area: &Area,
    ok: &[&RunResult],
    swept: &[String],
    curves: &HashMap<String, Vec<CurvePoint>>,
    shown: Shown,
) -> DrawResult {
    let best = best_curves(ok, curves, shown);
    let x_hi = best
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    let x_lo = best
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(x_hi, f64::min);
    let (y_lo, y_hi) = accuracy_range(best.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(
            format!("{} per epoch, best {}", shown.name(), best.len()),
            (crate::plot::FONT_NAME, 17),
        )
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_lo..x_hi.max(x_lo + 1.0), y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch (iteration for full batch)")
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style((crate::plot::FONT_NAME, 13))
        .draw()?;
    for (i, (r, pts)) in best.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(legend_label(i, r, swept))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    if !best.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((crate::plot::FONT_NAME, 12))
            .draw()?;
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

/// `#1 lr=0.1 seed=2`, cut to fit the legend.
fn legend_label(i: usize, r: &RunResult, swept: &[String]) -> String {
    let mut label = format!("#{} ", i + 1);
    label.push_str(
        &swept
            .iter()
            .map(|p| format!("{p}={}", r.text(p)))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if label.len() > 48 {
        label.truncate(45);
        label.push_str("...");
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
