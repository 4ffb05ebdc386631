//! What a run shows while it works: indicatif bars on stderr when stderr is
//! a terminal, plain lines when it is not (CI logs, pipes), nothing with
//! `--quiet`.
//!
//! The per-record lines ("epoch 3: ...", the notebook's "iteration 25: ...")
//! always go to stdout, bar or no bar: they are the run's log, and scripts
//! and tests read them. Bars never touch stdout, so `> log.txt` captures a
//! clean log while the terminal still shows the bar.
//!
//! Nothing here is wider than the terminal (80 columns for plain lines):
//! the bar's line drops its least useful parts rather than wrap.

use super::report::WIDTH;
use crate::engine::BatchStats;
use crate::text::thousands;
use crate::train::{self, Record};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// `--quiet`: nothing.
    Quiet,
    /// stderr is a terminal: animated bars on stderr.
    Bars,
    /// stderr is a file or pipe: plain lines, no control characters.
    Plain,
}

impl Display {
    /// Bars only when stderr is a terminal and the user wants output.
    pub fn detect(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Plain
        }
    }
}

/// Plain mode writes a progress line to stderr at most this often, so a long
/// epoch in a CI log still shows signs of life between record lines.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// The bar's text is refreshed at most this often (indicatif redraws at
/// ~20 Hz anyway; formatting the message every 40 us step would be waste).
const MESSAGE_EVERY: Duration = Duration::from_millis(100);
/// The bar's width, between these, in what the text leaves of the line.
const MIN_BAR: usize = 10;
const MAX_BAR: usize = 30;

/// Columns of the terminal stderr is (the size indicatif draws for), or
/// [`WIDTH`] if it cannot be told.
fn terminal_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(WIDTH, |(_, cols)| cols as usize)
}

/// A spinner while a file loads (bars mode only); dropped or finished, it
/// erases itself.
pub struct Loading(Option<ProgressBar>);

impl Loading {
    pub fn start(display: Display, what: &str) -> Loading {
        if display != Display::Bars {
            return Loading(None);
        }
        // The path last, cut by indicatif at the terminal's edge.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner:.cyan} [{elapsed}] loading {wide_msg}")
                .expect("valid template"),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(80));
        Loading(Some(bar))
    }

    pub fn finish(self) {}
}

impl Drop for Loading {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The training observer: a bar (or plain lines) for steps, and one stdout
/// line per record.
pub struct TrainProgress {
    display: Display,
    bar: Option<ProgressBar>,
    /// The width of the bar in the bar's current style.
    bar_width: usize,
    /// "epoch" (mini-batch) or "iteration" (full batch).
    unit: &'static str,
    /// Epochs or iterations in the run.
    units: usize,
    /// Loss/accuracy of the steps since the last record (the running epoch).
    running: BatchStats,
    /// Rows processed since training started.
    samples: usize,
    records: usize,
    last_heldout: Option<f64>,
    started: Instant,
    last_message: Instant,
    last_plain: Instant,
}

impl TrainProgress {
    /// `units` is the number of epochs (mini-batch) or iterations (full batch).
    pub fn new(display: Display, full_batch: bool, units: usize) -> TrainProgress {
        let bar = (display == Display::Bars).then(|| {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(bar_style(MIN_BAR))
        });
        let now = Instant::now();
        TrainProgress {
            display,
            bar,
            bar_width: MIN_BAR,
            unit: if full_batch { "iteration" } else { "epoch" },
            units,
            running: BatchStats::default(),
            samples: 0,
            records: 0,
            last_heldout: None,
            started: now,
            last_message: now,
            last_plain: now,
        }
    }

    /// Erase the bar (before the summary screen is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Where the run is: "epoch 3/10" or "iteration 120/500".
    fn position(&self, done: usize, total: usize) -> String {
        if self.unit == "epoch" {
            let current = (self.records + 1).min(self.units.max(1));
            format!("epoch {current}/{}", self.units)
        } else {
            format!("iteration {}/{}", thousands(done), thousands(total))
        }
    }

    fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// What the bar and plain lines say after the position, most useful first.
    fn parts(&self, done: usize, total: usize) -> Vec<String> {
        step_parts(
            done,
            total,
            &self.running,
            self.last_heldout,
            self.samples_per_second(),
            self.started.elapsed().as_secs_f64(),
        )
    }
}

/// The bar's style with a bar `width` columns wide; its text is cut at the
/// terminal's edge should the terminal shrink before the next layout.
fn bar_style(width: usize) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{prefix:.bold}} [{{bar:{width}.cyan/blue}}] {{wide_msg}}"
    ))
    .expect("valid template")
    .progress_chars("=> ")
}

/// The bar's line `PREFIX [BAR] TEXT` for a terminal `width` columns wide:
/// the bar's width and the text, the first of `parts` that fit (joined by
/// two spaces) with a bar of at least [`MIN_BAR`]. The last column stays
/// free, so the line never wraps.
fn bar_layout(width: usize, prefix: &str, parts: &[String]) -> (usize, String) {
    let room = width.saturating_sub(1 + prefix.chars().count() + " [] ".len());
    let text = fit(parts, "  ", room.saturating_sub(MIN_BAR));
    let bar = room.saturating_sub(text.chars().count()).min(MAX_BAR);
    (bar, text)
}

/// The longest run of `parts` from the first, joined by `sep`, at most
/// `room` columns long.
fn fit(parts: &[String], sep: &str, room: usize) -> String {
    let mut out = String::new();
    for part in parts {
        let extra = if out.is_empty() { 0 } else { sep.len() };
        if out.chars().count() + extra + part.chars().count() > room {
            break;
        }
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(part);
    }
    out
}

/// The progress after the position, most useful first: percent done, time
/// left, this epoch's running loss and accuracy, the last held-out
/// accuracy, throughput.
fn step_parts(
    done: usize,
    total: usize,
    running: &BatchStats,
    heldout: Option<f64>,
    samples_per_s: f64,
    elapsed: f64,
) -> Vec<String> {
    let fraction = done as f64 / total.max(1) as f64;
    let eta = if fraction > 0.0 {
        duration(elapsed * (1.0 - fraction) / fraction)
    } else {
        "-".into()
    };
    let mut parts = vec![
        format!("{:.0}%", fraction * 100.0),
        format!("ETA {eta}"),
        format!("loss {:.4}", running.mean_loss()),
        format!("acc {:.4}", running.accuracy()),
    ];
    if let Some(a) = heldout {
        parts.push(format!("held-out {a:.4}"));
    }
    parts.push(format!("{} samples/s", human_count(samples_per_s)));
    parts
}

/// 42.4 -> "42s", 185.0 -> "3m05s", 7500.0 -> "2h05m".
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        // An error (divergence, interrupt) must not leave a half-drawn bar.
        self.finish();
    }
}

impl train::Observer for TrainProgress {
    fn on_step(&mut self, done: usize, total: usize, stats: &BatchStats) {
        self.running.merge(*stats);
        self.samples += stats.rows;
        if self.display == Display::Quiet {
            return;
        }
        let now = Instant::now();
        match &self.bar {
            Some(bar) => {
                if bar.length() != Some(total as u64) {
                    bar.set_length(total as u64);
                }
                bar.set_position(done as u64);
                if now.duration_since(self.last_message) >= MESSAGE_EVERY || done == total {
                    self.last_message = now;
                    let prefix = self.position(done, total);
                    let parts = self.parts(done, total);
                    let (width, text) = bar_layout(terminal_width(), &prefix, &parts);
                    if width != self.bar_width {
                        self.bar_width = width;
                        bar.set_style(bar_style(width));
                    }
                    bar.set_prefix(prefix);
                    bar.set_message(text);
                }
            }
            None => {
                if now.duration_since(self.last_plain) >= PLAIN_EVERY && done < total {
                    self.last_plain = now;
                    let position = self.position(done, total);
                    eprintln!("{}", plain_line(&position, &self.parts(done, total)));
                }
            }
        }
    }

    fn on_record(&mut self, r: &Record) {
        self.records += 1;
        self.running = BatchStats::default();
        self.last_heldout = r.heldout_accuracy;
        if self.display == Display::Quiet {
            return;
        }
        let line = record_line(self.unit, r);
        match &self.bar {
            Some(bar) => bar.suspend(|| outln!("{line}")),
            None => outln!("{line}"),
        }
    }
}

/// The stdout line of one record (the notebook's "every 25 iterations").
pub fn record_line(unit: &str, r: &Record) -> String {
    let held = match (r.heldout_accuracy, r.heldout_loss) {
        (Some(a), Some(l)) => format!("  held-out accuracy {a:.4} loss {l:.4}"),
        _ => String::new(),
    };
    format!(
        "{unit} {:>4}: train accuracy {:.4} loss {:.4}{held}  [{:.2} s]",
        r.step, r.train_accuracy, r.train_loss, r.seconds
    )
}

/// A plain progress line for logs: no colour, no carriage return, at most
/// [`WIDTH`] columns (the least useful `parts` left out to fit).
pub fn plain_line(position: &str, parts: &[String]) -> String {
    let head = format!("progress: {position}");
    let rest = fit(parts, ", ", WIDTH.saturating_sub(head.len() + ", ".len()));
    if rest.is_empty() {
        head
    } else {
        format!("{head}, {rest}")
    }
}

/// 812345.0 -> "812k", 1234567.0 -> "1.23M", 950.0 -> "950".
pub fn human_count(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Observer;

    fn stats() -> BatchStats {
        BatchStats {
            loss_sum: 32.0,
            correct: 24,
            rows: 32,
        }
    }

    #[test]
    fn plain_line_has_no_control_characters_and_says_where_it_is() {
        let parts = step_parts(1500, 10_500, &stats(), None, 812_345.0, 3.0);
        let line = plain_line("epoch 2/10", &parts);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(
            line,
            "progress: epoch 2/10, 14%, ETA 18s, loss 1.0000, acc 0.7500, 812k samples/s"
        );
        // A longer position leaves no room in 80 columns for the last parts.
        let parts = step_parts(1200, 5000, &stats(), Some(0.9123), 812_345.0, 6.0);
        let line = plain_line("iteration 1,200/5,000", &parts);
        assert_eq!(
            line,
            "progress: iteration 1,200/5,000, 24%, ETA 19s, loss 1.0000, acc 0.7500"
        );
    }

    #[test]
    fn the_bar_line_fits_the_terminal_and_keeps_the_first_parts() {
        let parts = step_parts(1500, 10_500, &stats(), Some(0.9123), 812_345.0, 3.0);
        for prefix in ["epoch 2/10", "iteration 1,200/5,000"] {
            for width in prefix.len() + 4 + MIN_BAR + 1..=240 {
                let (bar, text) = bar_layout(width, prefix, &parts);
                let line = format!("{prefix} [{}] {text}", "=".repeat(bar));
                let len = line.trim_end().chars().count();
                assert!(len < width, "{len} columns at {width}: {line}");
                assert!((MIN_BAR..=MAX_BAR).contains(&bar), "bar {bar} at {width}");
                // The parts shown are the first ones, in order.
                let shown = if text.is_empty() {
                    0
                } else {
                    text.split("  ").count()
                };
                assert_eq!(text, parts[..shown].join("  "), "at {width}");
            }
        }
        let (bar, text) = bar_layout(80, "epoch 2/10", &parts);
        assert_eq!(
            (bar, text.as_str()),
            (11, "14%  ETA 18s  loss 1.0000  acc 0.7500  held-out 0.9123")
        );
        let (bar, text) = bar_layout(200, "epoch 2/10", &parts);
        assert_eq!((bar, text), (MAX_BAR, parts.join("  ")));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0.2), "0s");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7500.0), "2h05m");
        assert_eq!(duration(-1.0), "0s");
    }

    #[test]
    fn human_counts() {
        assert_eq!(human_count(950.0), "950");
        assert_eq!(human_count(1234.0), "1.2k");
        assert_eq!(human_count(812_345.0), "812k");
        assert_eq!(human_count(1_234_567.0), "1.23M");
    }

    #[test]
    fn epoch_position_follows_records() {
        let mut p = TrainProgress::new(Display::Quiet, false, 3);
        assert_eq!(p.position(1, 30), "epoch 1/3");
        let r = Record {
            step: 1,
            train_loss: 0.5,
            train_accuracy: 0.9,
            heldout_loss: None,
            heldout_accuracy: None,
            seconds: 0.1,
        };
        p.on_record(&r);
        assert_eq!(p.position(11, 30), "epoch 2/3");
        let full = TrainProgress::new(Display::Quiet, true, 500);
        assert_eq!(full.position(25, 500), "iteration 25/500");
    }
}
