//! Pictures of a run, as PNG: learning curves (`train --plot`), the
//! confusion matrix as a heat map and the worst-misclassified digits
//! (`eval --plot`, `eval --errors-png`), and the hidden units' input weights
//! as 28x28 images (`inspect`).
//!
//! Text is drawn through plotters' `ab_glyph` backend with an embedded
//! DejaVu Sans subset (`assets/DejaVuSans-ascii.ttf`, printable ASCII and
//! `±`; licence beside it), so no system font or fontconfig is needed. The
//! sweep plots (`sweep::plot`) draw through [`render`] too. Every PNG is
//! drawn and encoded in memory, then written through [`crate::output`]'s
//! policy (atomically for a file): never half a picture.

use crate::data::{CLASSES, FEATURES};
use crate::model::Mlp;
use crate::train::Record;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
static FONT: Once = Once::new();
/// The family every picture's text uses.
pub const FONT_NAME: &str = "sans-serif";

/// Image side in pixels.
const SIDE: usize = 28;

fn register_font() {
    FONT.call_once(|| {
        plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| ())
            .expect("the embedded font parses");
    });
}

/// A picture that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write the picture: {message}", path.display())]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

/// A drawing surface handed to [`render`]'s callback.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// What a drawing callback returns.
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draw into memory, encode as PNG, and write `path` through
/// [`crate::output::write_atomic`].
pub fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<(), PlotError> {
    register_font();
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    let (w, h) = size;
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let mut png = Vec::new();
    // Best compression: pictures land in repositories and READMEs, and
    // drawing them costs more than compressing them harder.
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(&pixels, w, h, ColorType::Rgb8)
        .map_err(|e| fail(e.to_string()))?;
    crate::output::write_atomic(path, |f| f.write_all(&png)).map_err(|e| fail(e.reason()))
}

fn text_style(size: u32, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    (FONT_NAME, size)
        .into_font()
        .color(&color)
        .pos(Pos::new(h, v))
}

fn centered(size: u32, color: RGBColor) -> TextStyle<'static> {
    text_style(size, color, HPos::Center, VPos::Center)
}

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const HELDOUT_COLOR: RGBColor = RGBColor(230, 120, 20);
const INK: RGBColor = RGBColor(30, 30, 30);
const MUTED: RGBColor = RGBColor(110, 110, 110);

/// Learning curves: loss and accuracy per record, training rows (mean over
/// the steps since the previous record) against held-out rows.
pub fn learning_curves(
    path: &Path,
    records: &[Record],
    unit: &str,
    title: &str,
) -> Result<(), PlotError> {
    render(path, (1200, 500), |root| {
        let root = root.titled(title, (FONT_NAME, 22))?;
        let (left, right) = root.split_horizontally(600);
        curve_panel(&left, records, unit, "loss (cross-entropy)", false, |r| {
            (r.train_loss, r.heldout_loss)
        })?;
        curve_panel(&right, records, unit, "accuracy", true, |r| {
            (r.train_accuracy, r.heldout_accuracy)
        })?;
        Ok(())
    })
}

fn curve_panel(
    area: &Area,
    records: &[Record],
    unit: &str,
    what: &str,
    accuracy: bool,
    pick: impl Fn(&Record) -> (f64, Option<f64>),
) -> DrawResult {
    let train: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.step as f64, pick(r).0))
        .filter(|p| p.1.is_finite())
        .collect();
    let held: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| Some((r.step as f64, pick(r).1?)))
        .filter(|p| p.1.is_finite())
        .collect();
    let xs = || train.iter().chain(&held).map(|p| p.0);
    let ys = || train.iter().chain(&held).map(|p| p.1);
    let (mut x_lo, mut x_hi) = (
        xs().fold(f64::INFINITY, f64::min),
        xs().fold(f64::NEG_INFINITY, f64::max),
    );
    if !x_lo.is_finite() {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    if x_hi <= x_lo {
        (x_lo, x_hi) = (x_lo - 1.0, x_hi + 1.0);
    }
    let (y_lo, y_hi) = {
        let lo = ys().fold(f64::INFINITY, f64::min);
        let hi = ys().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            (0.0, 1.0)
        } else if accuracy {
            let pad = ((hi - lo) * 0.08).max(0.005);
            ((lo - pad).max(0.0), (hi + pad).min(1.0))
        } else {
            (0.0, hi * 1.08 + 1e-6)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .caption(what, (FONT_NAME, 18))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    let integer_steps = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(unit)
        .x_label_formatter(&integer_steps)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style((FONT_NAME, 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let dots = records.len() <= 40;
    for (points, color, label) in [
        (&train, TRAIN_COLOR, "train (mean over the steps)"),
        (&held, HELDOUT_COLOR, "held out"),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if dots {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(if accuracy {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT_NAME, 14))
        .draw()?;
    Ok(())
}

/// Blend from white to `to` by `t` in [0, 1].
fn shade(to: RGBColor, t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |c: u8| (255.0 + (c as f64 - 255.0) * t).round() as u8;
    RGBColor(mix(to.0), mix(to.1), mix(to.2))
}

/// Black text on light cells, white on dark ones.
fn text_on(c: RGBColor) -> RGBColor {
    let luminance = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if luminance < 140.0 {
        WHITE
    } else {
        INK
    }
}

/// The confusion matrix as a heat map: rows are true labels, columns
/// predictions; the diagonal is shaded blue by recall, the errors red by
/// count (square-root scale, relative to the largest error cell) so the
/// few-percent mistakes stay visible beside a diagonal of thousands. Recall
/// is written at the end of each row, precision under each column.
// Rows and columns are both indexed (true label t, predicted p): ranges read best.
#[allow(clippy::needless_range_loop)]
pub fn confusion_heatmap(
    path: &Path,
    confusion: &[[usize; CLASSES]; CLASSES],
    title: &str,
) -> Result<(), PlotError> {
    const CELL: i32 = 56;
    const LEFT: i32 = 90;
    const TOP: i32 = 96;
    let grid = CELL * CLASSES as i32;
    let size = ((LEFT + grid + 100) as u32, (TOP + grid + 80) as u32);
    let diagonal = RGBColor(8, 81, 156);
    let error = RGBColor(203, 24, 29);
    render(path, size, |root| {
        root.draw(&Text::new(
            title.to_string(),
            (size.0 as i32 / 2, 24),
            centered(20, INK),
        ))?;
        root.draw(&Text::new(
            "predicted label",
            (LEFT + grid / 2, 52),
            centered(15, MUTED),
        ))?;
        root.draw(&Text::new(
            "true",
            (LEFT - 48, TOP - 28),
            centered(15, MUTED),
        ))?;
        root.draw(&Text::new(
            "recall",
            (LEFT + grid + 48, TOP - 14),
            centered(14, MUTED),
        ))?;
        root.draw(&Text::new(
            "precision",
            (LEFT - 48, TOP + grid + 20),
            centered(14, MUTED),
        ))?;
        let max_error = (0..CLASSES)
            .flat_map(|t| (0..CLASSES).filter(move |&p| p != t).map(move |p| (t, p)))
            .map(|(t, p)| confusion[t][p])
            .max()
            .unwrap_or(0)
            .max(1);
        for t in 0..CLASSES {
            let y = TOP + CELL * t as i32;
            root.draw(&Text::new(
                t.to_string(),
                (LEFT - 16, y + CELL / 2),
                centered(16, INK),
            ))?;
            let row_total: usize = confusion[t].iter().sum();
            for p in 0..CLASSES {
                let x = LEFT + CELL * p as i32;
                if t == 0 {
                    root.draw(&Text::new(
                        p.to_string(),
                        (x + CELL / 2, TOP - 14),
                        centered(16, INK),
                    ))?;
                }
                let n = confusion[t][p];
                let fill = if t == p {
                    shade(diagonal, n as f64 / row_total.max(1) as f64)
                } else if n == 0 {
                    WHITE
                } else {
                    shade(error, 0.12 + 0.88 * (n as f64 / max_error as f64).sqrt())
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    RGBColor(225, 225, 225).stroke_width(1),
                ))?;
                if n > 0 {
                    root.draw(&Text::new(
                        n.to_string(),
                        (x + CELL / 2, y + CELL / 2),
                        centered(if n >= 10_000 { 12 } else { 14 }, text_on(fill)),
                    ))?;
                }
            }
            let recall = confusion[t][t] as f64 / row_total.max(1) as f64;
            root.draw(&Text::new(
                format!("{recall:.3}"),
                (LEFT + grid + 48, y + CELL / 2),
                centered(14, INK),
            ))?;
        }
        for p in 0..CLASSES {
            let predicted: usize = (0..CLASSES).map(|t| confusion[t][p]).sum();
            let precision = confusion[p][p] as f64 / predicted.max(1) as f64;
            root.draw(&Text::new(
                format!("{precision:.3}"),
                (LEFT + CELL * p as i32 + CELL / 2, TOP + grid + 20),
                centered(14, INK),
            ))?;
        }
        root.draw(&Text::new(
            "diagonal: blue by recall;  errors: red by count (square-root scale)",
            (LEFT + grid / 2, TOP + grid + 54),
            centered(13, MUTED),
        ))?;
        Ok(())
    })
}

/// One misclassified image for [`worst_misclassified`].
#[derive(Debug, Clone)]
pub struct Misclassified {
    /// 784 pixels, row-major, 0 = background.
    pub pixels: Vec<u8>,
    /// Row of the image in its file (0-based).
    pub row: usize,
    pub label: u8,
    pub predicted: u8,
    /// The model's probability for its (wrong) prediction.
    pub confidence: f32,
}

/// A grid of misclassified digits (ink dark on white), each with its true
/// and predicted label, the probability given to the prediction, and its row.
pub fn worst_misclassified(
    path: &Path,
    items: &[Misclassified],
    title: &str,
) -> Result<(), PlotError> {
    const SCALE: i32 = 3;
    const COLS: usize = 8;
    const CELL_W: i32 = 28 * SCALE + 24;
    const CELL_H: i32 = 28 * SCALE + 44;
    const TOP: i32 = 56;
    let rows = items.len().div_ceil(COLS).max(1);
    let size = (
        (COLS as i32 * CELL_W + 20) as u32,
        (TOP + rows as i32 * CELL_H + 10) as u32,
    );
    render(path, size, |root| {
        root.draw(&Text::new(
            title.to_string(),
            (size.0 as i32 / 2, 22),
            centered(18, INK),
        ))?;
        root.draw(&Text::new(
            "true -> predicted (probability of the prediction), row in the file from 0",
            (size.0 as i32 / 2, 44),
            centered(13, MUTED),
        ))?;
        for (i, item) in items.iter().enumerate() {
            let x0 = 10 + (i % COLS) as i32 * CELL_W + (CELL_W - 28 * SCALE) / 2;
            let y0 = TOP + (i / COLS) as i32 * CELL_H + 4;
            draw_digit(root, &item.pixels, (x0, y0), SCALE)?;
            root.draw(&Rectangle::new(
                [(x0 - 1, y0 - 1), (x0 + 28 * SCALE, y0 + 28 * SCALE)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))?;
            let cx = x0 + 14 * SCALE;
            root.draw(&Text::new(
                format!("{} -> {}", item.label, item.predicted),
                (cx, y0 + 28 * SCALE + 12),
                centered(15, RGBColor(180, 20, 20)),
            ))?;
            root.draw(&Text::new(
                format!("p {:.2}  row {}", item.confidence, item.row),
                (cx, y0 + 28 * SCALE + 30),
                centered(11, MUTED),
            ))?;
        }
        Ok(())
    })
}

/// A grid of digits, each with a caption under it.
pub fn digit_grid(path: &Path, cells: &[(Vec<u8>, String)], title: &str) -> Result<(), PlotError> {
    const SCALE: i32 = 3;
    const COLS: usize = 8;
    const CELL_W: i32 = 28 * SCALE + 16;
    const CELL_H: i32 = 28 * SCALE + 26;
    const TOP: i32 = 40;
    let rows = cells.len().div_ceil(COLS).max(1);
    let size = (
        (COLS as i32 * CELL_W + 20) as u32,
        (TOP + rows as i32 * CELL_H + 6) as u32,
    );
    render(path, size, |root| {
        root.draw(&Text::new(
            title.to_string(),
            (size.0 as i32 / 2, 20),
            centered(15, INK),
        ))?;
        for (i, (pixels, caption)) in cells.iter().enumerate() {
            let x0 = 10 + (i % COLS) as i32 * CELL_W + (CELL_W - 28 * SCALE) / 2;
            let y0 = TOP + (i / COLS) as i32 * CELL_H;
            draw_digit(root, pixels, (x0, y0), SCALE)?;
            root.draw(&Rectangle::new(
                [(x0 - 1, y0 - 1), (x0 + 28 * SCALE, y0 + 28 * SCALE)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))?;
            root.draw(&Text::new(
                caption.clone(),
                (x0 + 14 * SCALE, y0 + 28 * SCALE + 12),
                centered(12, MUTED),
            ))?;
        }
        Ok(())
    })
}

/// Draw a 28x28 digit with its top-left corner at `at`, `scale` pixels per
/// pixel, ink dark on white.
fn draw_digit(root: &Area, pixels: &[u8], at: (i32, i32), scale: i32) -> DrawResult {
    for (i, &v) in pixels.iter().take(FEATURES).enumerate() {
        let g = 255 - v;
        let (r, c) = ((i / SIDE) as i32, (i % SIDE) as i32);
        let x = at.0 + c * scale;
        let y = at.1 + r * scale;
        root.draw(&Rectangle::new(
            [(x, y), (x + scale, y + scale)],
            RGBColor(g, g, g).filled(),
        ))?;
    }
    Ok(())
}

/// The colour scale of a weight tile: the 98th percentile of |w|, so a few
/// extreme weights saturate instead of washing out everything else.
fn robust_scale(magnitudes: impl Iterator<Item = f32>) -> f32 {
    let mut m: Vec<f32> = magnitudes.filter(|v| v.is_finite()).collect();
    if m.is_empty() {
        return 1.0;
    }
    m.sort_by(f32::total_cmp);
    let at = ((m.len() - 1) as f64 * 0.98).round() as usize;
    m[at].max(1e-12)
}

/// Largest number of hidden units drawn by [`hidden_weights`]: an 8 x 8
/// grid of tiles large enough to read.
pub const MAX_UNITS_DRAWN: usize = 64;

/// How [`units_by_size`] orders the units, for titles and notes.
pub const UNIT_ORDER: &str = "largest |w_in|*|w_out| first";

/// One first-layer unit's weight sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitSize {
    pub unit: usize,
    /// Norm of its input weights (its row of w1).
    pub w_in: f64,
    /// Norm of its output weights (its column of w2).
    pub w_out: f64,
}

impl UnitSize {
    /// `|w_in| * |w_out|`: a ReLU unit's contribution to the next layer is
    /// at most its output weights' norm times its input's, and moving a
    /// factor from one side to the other changes nothing, so the product
    /// (not either norm) is what the unit weighs. A dead or pruned unit has
    /// zero on one side and sinks to the end.
    pub fn score(&self) -> f64 {
        self.w_in * self.w_out
    }
}

/// Every first-layer unit, by [`UnitSize::score`], largest first (equal
/// scores by index; a non-finite score last).
pub fn units_by_size(model: &Mlp) -> Vec<UnitSize> {
    let norm =
        |v: ndarray::ArrayView1<f32>| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let mut units: Vec<UnitSize> = (0..model.hidden())
        .map(|unit| UnitSize {
            unit,
            w_in: norm(model.first().w.row(unit)),
            w_out: norm(model.layers[1].w.column(unit)),
        })
        .collect();
    let key = |u: &UnitSize| {
        let s = u.score();
        if s.is_finite() {
            s
        } else {
            f64::NEG_INFINITY
        }
    };
    units.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.unit.cmp(&b.unit)));
    units
}

/// Pixels inked in fewer than this fraction of the images are greyed out in
/// [`hidden_weights`] when the ink is known.
pub const RARE_INK: f64 = 0.01;

/// The fraction of images in which each pixel has any ink (for
/// [`hidden_weights`]).
pub fn ink_fraction(pixels: &[u8]) -> Vec<f64> {
    let rows = pixels.len() / FEATURES;
    let mut inked = vec![0usize; FEATURES];
    for row in pixels.chunks_exact(FEATURES) {
        for (n, &v) in inked.iter_mut().zip(row) {
            *n += (v > 0) as usize;
        }
    }
    inked
        .into_iter()
        .map(|n| n as f64 / rows.max(1) as f64)
        .collect()
}

/// The first-layer units' 784 input weights, each as a 28x28 image: red
/// where a lit pixel raises the unit's input, blue where it lowers it.
/// The [`MAX_UNITS_DRAWN`] largest units by [`units_by_size`] are drawn,
/// largest first, each labelled with its index. Under each tile: the digit
/// the unit votes for most (largest outgoing weight) and against most.
/// `name` (the model file) heads the title.
///
/// With `ink` (per-pixel fraction of images inked, from [`ink_fraction`]),
/// pixels almost never inked are drawn grey and left out of the colour
/// scale: their weights hardly ever matter, and optimizers that scale steps
/// per weight (Adam) give such rarely-seen pixels large weights that would
/// otherwise wash out the picture. Each tile has its own colour scale: full
/// colour at the 98th percentile of |weight| over the pixels shown in colour.
pub fn hidden_weights(
    path: &Path,
    model: &Mlp,
    name: &str,
    ink: Option<&[f64]>,
) -> Result<(), PlotError> {
    let drawn: Vec<usize> = units_by_size(model)
        .iter()
        .take(MAX_UNITS_DRAWN)
        .map(|u| u.unit)
        .collect();
    let units = drawn.len();
    let title = format!(
        "{name}: {}, input weights of {}, {UNIT_ORDER}",
        model.shape(),
        units_shown(units, model.hidden())
    );
    let votes = model.class_votes();
    let (scale, cols) = match units {
        0..=10 => (5, units.clamp(1, 5)),
        11..=25 => (4, 5),
        26..=64 => (3, 8),
        _ => (2, 10),
    };
    let cell_w = 28 * scale + 20;
    let cell_h = 28 * scale + 44;
    let top = 64;
    let rows = units.div_ceil(cols).max(1);
    let width = (cols as i32 * cell_w + 20).max(720);
    let left = (width - cols as i32 * cell_w) / 2;
    let size = (width as u32, (top + rows as i32 * cell_h + 10) as u32);
    let positive = RGBColor(178, 24, 43);
    let negative = RGBColor(33, 102, 172);
    render(path, size, |root| {
        root.draw(&Text::new(
            title.clone(),
            (width / 2, 22),
            centered(18, INK),
        ))?;
        root.draw(&Text::new(
            if ink.is_some() {
                "red: weight > 0, blue: < 0 (per tile, full colour at the 98th percentile of |w|); grey: pixel inked in < 1% of the images"
            } else {
                "red: weight > 0, blue: < 0 (per tile, full colour at the 98th percentile of |w|); for/against: digit favoured most/least"
            },
            (width / 2, 46),
            centered(12, MUTED),
        ))?;
        for (slot, &j) in drawn.iter().enumerate() {
            let w = model.first().w.row(j);
            let shown = |i: usize| ink.is_none_or(|f| f[i] >= RARE_INK);
            let max_abs = robust_scale(
                w.iter()
                    .enumerate()
                    .filter(|&(i, _)| shown(i))
                    .map(|(_, v)| v.abs()),
            );
            let x0 = left + (slot % cols) as i32 * cell_w + 10;
            let y0 = top + (slot / cols) as i32 * cell_h;
            for (i, &v) in w.iter().enumerate() {
                let t = (v / max_abs).clamp(-1.0, 1.0) as f64;
                let color = if !shown(i) {
                    RGBColor(200, 200, 200)
                } else if t >= 0.0 {
                    shade(positive, t)
                } else {
                    shade(negative, -t)
                };
                let (r, c) = ((i / SIDE) as i32, (i % SIDE) as i32);
                let (x, y) = (x0 + c * scale, y0 + r * scale);
                root.draw(&Rectangle::new(
                    [(x, y), (x + scale, y + scale)],
                    color.filled(),
                ))?;
            }
            root.draw(&Rectangle::new(
                [(x0 - 1, y0 - 1), (x0 + 28 * scale, y0 + 28 * scale)],
                RGBColor(190, 190, 190).stroke_width(1),
            ))?;
            let out = votes.column(j);
            let (mut best, mut worst) = (0, 0);
            for k in 0..out.len() {
                if out[k] > out[best] {
                    best = k;
                }
                if out[k] < out[worst] {
                    worst = k;
                }
            }
            let cx = x0 + 14 * scale;
            let small = scale < 4;
            root.draw(&Text::new(
                format!("#{}  unit {j}", slot + 1),
                (cx, y0 + 28 * scale + 11),
                centered(if small { 11 } else { 14 }, INK),
            ))?;
            root.draw(&Text::new(
                format!("for {best}, against {worst}"),
                (cx, y0 + 28 * scale + 28),
                centered(if small { 10 } else { 12 }, MUTED),
            ))?;
        }
        Ok(())
    })
}

/// `all 10 units` or `64 of 512 units`.
pub fn units_shown(shown: usize, of: usize) -> String {
    match (shown, of) {
        (1, 1) => "its one unit".into(),
        (s, o) if s == o => format!("all {o} units"),
        (s, o) => format!("{s} of {o} units"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shade_goes_from_white_to_the_colour() {
        let c = RGBColor(0, 100, 200);
        assert_eq!(shade(c, 0.0), WHITE);
        assert_eq!(shade(c, 1.0), c);
        assert_eq!(shade(c, 2.0), c, "clamped");
        assert_eq!(text_on(RGBColor(8, 81, 156)), WHITE);
        assert_eq!(text_on(WHITE), INK);
    }

    #[test]
    fn units_rank_by_input_norm_times_output_norm() {
        let mut m = Mlp::zeros(&crate::model::Layers::one(4));
        // Unit 0: big input weights, no output weights (a dead end).
        m.layers[0].w.row_mut(0).fill(1.0);
        // Unit 1: |w_in| 2, |w_out| 3; unit 2: |w_in| 0.5, |w_out| 24 (the
        // same unit rescaled by 1/4 and 4, plus a factor 2); unit 3: 1 * 1.
        m.layers[0].w[[1, 5]] = 2.0;
        m.layers[1].w[[7, 1]] = 3.0;
        m.layers[0].w[[2, 5]] = 0.5;
        m.layers[1].w[[7, 2]] = 24.0;
        m.layers[0].w[[3, 9]] = 1.0;
        m.layers[1].w[[2, 3]] = 1.0;
        let ranked = units_by_size(&m);
        let order: Vec<usize> = ranked.iter().map(|u| u.unit).collect();
        assert_eq!(order, [2, 1, 3, 0]);
        assert_eq!(ranked[0].score(), 12.0);
        assert_eq!(ranked[1].score(), 6.0);
        assert_eq!(units_shown(64, 512), "64 of 512 units");
        assert_eq!(units_shown(10, 10), "all 10 units");
    }

    #[test]
    fn a_failed_render_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let err = render(&path, (10, 10), |_| Err("no".into())).unwrap_err();
        assert!(err.to_string().contains("x.png"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
