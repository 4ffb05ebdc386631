//! The screen that ends every `train`: what data, which model and engine
//! (and whether OpenBLAS is linked), the settings, where the time went, the
//! throughput, the final accuracies and the files written.

use super::progress::human_count;
use crate::engine::EngineKind;
use crate::text::{plural, thousands};
use crate::train::{HeldoutEval, RunReport};
use std::fmt::Write;
use std::path::Path;

/// Width of the rule above the summary.
const RULE: usize = 78;
/// Columns of the summary's lines: a terminal's 80 (each line ends with
/// its newline, not at the edge).
pub(crate) const WIDTH: usize = 80;
/// Where the values start, after `key:` and padding.
const VALUE_COLUMN: usize = 12;

/// What a run without held-out rows says in place of their figures.
pub fn no_heldout(split: f64) -> String {
    format!(
        "held out: none (--split {split}): no held-out accuracy; pass --val-data FILE to score one"
    )
}

/// How the rows were divided, after `split:`: cut by `--split`, all
/// trained with the `--val-data` rows held out, or none held out. `count`
/// formats the row counts.
pub fn split_text(
    (train, heldout): (usize, usize),
    split: f64,
    val_data: Option<&str>,
    seed: u64,
    count: fn(usize) -> String,
) -> String {
    let (train, held) = (count(train), count(heldout));
    match val_data {
        Some(path) => {
            format!("{train} train (all of --data) / {held} held out from {path} (--val-data)")
        }
        None if heldout == 0 => format!("{train} train; {}", no_heldout(split)),
        None => format!("{train} train / {held} held out (--split {split}, seed {seed})"),
    }
}

/// The summary screen (several lines, no trailing newline); `source_rows`
/// is the size of the loaded file, `written` the files the run wrote.
/// Values too long for [`WIDTH`] go on continuation lines that start at
/// the value column.
pub fn summary_screen(s: &RunReport, source_rows: usize, written: &[&Path]) -> String {
    let mut out = String::new();
    let title = "-- summary ";
    let _ = writeln!(out, "{title}{}", "-".repeat(RULE - title.len()));
    let mut line = |key: &str, value: String| {
        for (i, part) in wrap(&value, WIDTH - VALUE_COLUMN).iter().enumerate() {
            let key = if i == 0 {
                format!("{key}:")
            } else {
                String::new()
            };
            let _ = writeln!(out, "{key:<VALUE_COLUMN$}{part}");
        }
    };
    line(
        "data",
        format!("{} ({})", s.data, plural(source_rows, "row")),
    );
    line(
        "split",
        split_text(
            (s.train_rows, s.heldout_rows),
            s.split,
            s.val_data.as_deref(),
            s.seed,
            thousands,
        ),
    );
    line(
        "model",
        format!(
            "{} ({}), init {}",
            s.layers,
            plural(s.layers.params(), "parameter"),
            serde_name(&s.init)
        ),
    );
    line(
        "engine",
        engine_line(s.engine_used, &s.engine_reason, s.threads),
    );
    line("blas", blas_line(s.engine_used, &s.layers));
    line("settings", settings_line(s));
    if let (Some(spec), Some(secs)) = (&s.augment, s.augment_seconds) {
        line(
            "augment",
            format!(
                "{spec}; distorting took {secs:.2} s of the {:.2} s of training ({:.1}%)",
                s.train_seconds,
                100.0 * secs / s.train_seconds.max(1e-9)
            ),
        );
    }
    line(
        "time",
        format!(
            "load {:.2} s, train {:.2} s, eval {:.2} s (total {:.2} s){}",
            s.load_seconds,
            s.train_seconds,
            s.eval_seconds,
            s.seconds,
            if s.earlier_train_seconds > 0.0 {
                format!(
                    "; {:.2} s of training before the resume",
                    s.earlier_train_seconds
                )
            } else {
                String::new()
            }
        ),
    );
    line(
        "throughput",
        format!(
            "{} samples/s ({} in {:.2} s{})",
            human_count(s.samples_per_second),
            plural(s.samples, "sample"),
            s.train_seconds,
            match s.heldout_eval {
                Some(HeldoutEval::Records) => ", held-out checks included",
                _ => "",
            }
        ),
    );
    let heldout = match (s.heldout_accuracy, s.heldout_loss) {
        (Some(accuracy), Some(loss)) => format!("held-out accuracy {accuracy:.4} (loss {loss:.4})"),
        _ => "no held-out rows".into(),
    };
    line(
        "final",
        format!(
            "train accuracy {:.4} (loss {:.4}), {heldout}",
            s.train_accuracy, s.train_loss
        ),
    );
    if let Some(what) = early_stop_line(s) {
        line("early stop", what);
    }
    line(
        "wrote",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.pop();
    out
}

/// Optimizer, rate, schedule and preset, on one line.
fn settings_line(s: &RunReport) -> String {
    let mut settings = format!(
        "{} lr {} ({} schedule)",
        s.optimizer.name(),
        s.lr,
        serde_name(&s.lr_schedule)
    );
    if s.optimizer == crate::optim::OptimizerKind::Momentum {
        let _ = write!(settings, ", momentum {}", s.momentum);
    }
    if s.weight_decay > 0.0 {
        let _ = write!(settings, ", weight decay {} (AdamW)", s.weight_decay);
    }
    let stopped = if s.early_stopped_at.is_some() {
        " (stopped early)"
    } else {
        ""
    };
    match (s.iterations, s.epochs, s.batch_size) {
        (Some(it), _, _) => {
            let _ = write!(
                settings,
                ", full batch, {}{stopped}",
                plural(it, "iteration")
            );
        }
        (_, Some(epochs), Some(batch)) => {
            let _ = write!(
                settings,
                ", batch {}, {}{stopped} = {}",
                thousands(batch),
                plural(epochs, "epoch"),
                plural(s.steps, "step")
            );
        }
        _ => {}
    }
    let _ = write!(settings, "; preset {}", serde_name(&s.preset));
    settings
}

/// With `--early-stop`: where training stopped and which weights it kept.
fn early_stop_line(s: &RunReport) -> Option<String> {
    let patience = s.early_stop?;
    // Full batch counts records (every --log-every iterations), named by iteration.
    let (unit, total, counted) = match (s.iterations, s.epochs) {
        (Some(it), _) => ("iteration", it, "record"),
        (_, epochs) => ("epoch", epochs.unwrap_or_default(), "epoch"),
    };
    let kept = match s.restored_step {
        Some(b) => format!("restored {unit} {b}'s weights"),
        None => "kept the last weights".into(),
    };
    let patience = plural(patience, counted);
    Some(match (s.early_stopped_at, s.restored_step) {
        (Some(at), Some(b)) => format!(
            "no held-out improvement for {patience} after {unit} {b}, \
             stopped at {unit} {at} of {total}; {kept}"
        ),
        (Some(at), None) => format!(
            "no held-out improvement for {patience}, stopped at {unit} {at} \
             of {total}; {kept}"
        ),
        (None, _) => format!(
            "ran {} {} (never {patience} without held-out improvement); {kept}",
            if total == 1 { "its" } else { "all" },
            plural(total, unit)
        ),
    })
}

/// What computes the products.
fn engine_line(engine: EngineKind, reason: &str, threads: usize) -> String {
    let what = match engine {
        EngineKind::Blas => "f32 matrix products",
        EngineKind::Naive => "f64 loops, the reference",
        EngineKind::Sparse => "f32 over each image's non-zero pixels",
        EngineKind::Auto => "?",
    };
    let why = if reason == "--engine" {
        String::new()
    } else {
        format!("; auto: {reason}")
    };
    format!(
        "{} ({what}{why}), batches sharded over {}",
        engine.name(),
        plural(threads, "rayon thread")
    )
}

/// Whether OpenBLAS is linked, its version, kernel and thread count.
fn blas_line(engine: EngineKind, layers: &crate::model::Layers) -> String {
    // The sparse engine runs the layers above a deep network's first on it.
    let unused = if engine == EngineKind::Blas {
        ""
    } else if engine == EngineKind::Sparse && layers.depth() > 2 {
        " (the layers above the first)"
    } else {
        " (not used by this engine)"
    };
    match crate::threads::openblas_threads() {
        Some(threads) => {
            // "OpenBLAS 0.3.21 NO_LAPACKE ...; core Haswell; 1 thread(s)"
            let config = crate::threads::openblas_config();
            let core = config
                .split("; ")
                .find_map(|part| part.strip_prefix("core "))
                .unwrap_or("?");
            let kernel = match crate::threads::kernel_note() {
                Some(note) => format!("kernel {note}"),
                None => format!("kernel {core}"),
            };
            format!(
                "{} linked ({kernel}; {}: rayon owns the cores){unused}",
                crate::threads::openblas_version(),
                plural(threads, "thread")
            )
        }
        None => format!(
            "OpenBLAS not linked: pure-Rust matrixmultiply (build with --features blas){unused}"
        ),
    }
}

/// The name serde gives a unit enum value ("he", "cosine", "default").
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// `text` in lines of at most `width` columns, broken at spaces (the
/// space dropped); a word longer than a line (a long path) is cut.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_len = 0;
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        if line_len > 0 && line_len + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
            line_len = 0;
        }
        while word.len() > width {
            let rest = word.split_off(width);
            if line_len > 0 {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.iter().collect());
            line_len = 0;
            word = rest;
        }
        if line_len > 0 {
            line.push(' ');
            line_len += 1;
        }
        line.extend(word.iter());
        line_len += word.len();
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_only_overlong_words() {
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("short", 10), ["short"]);
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("aaa bbb ccc", 11), ["aaa bbb ccc"]);
        assert_eq!(
            wrap("wrote: /a/very/long/path.npz, m.csv", 10),
            ["wrote:", "/a/very/lo", "ng/path.np", "z, m.csv"]
        );
        // Joined with spaces, the pieces of a text without long words are
        // the text.
        let text = "sparse (f32 over each image's non-zero pixels; auto: 81% of \
                    pixels are 0, 10 hidden units <= 128), batches sharded over 2 \
                    rayon threads";
        let lines = wrap(text, 68);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.chars().count() <= 68));
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn the_split_line_says_where_the_held_out_rows_came_from() {
        let text = |rows, split, val| split_text(rows, split, val, 3, thousands);
        assert_eq!(
            text((4800, 1200), 0.8, None),
            "4,800 train / 1,200 held out (--split 0.8, seed 3)"
        );
        assert_eq!(
            text((6000, 0), 1.0, None),
            "6,000 train; held out: none (--split 1): no held-out accuracy; pass --val-data FILE \
             to score one"
        );
        assert_eq!(
            text((6000, 1000), 1.0, Some("val.csv")),
            "6,000 train (all of --data) / 1,000 held out from val.csv (--val-data)"
        );
    }
}
