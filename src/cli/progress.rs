//! What a run shows while it works: indicatif bars on stderr when stderr is
//! a terminal, plain lines when it is not (CI logs, pipes), nothing with
//! `--quiet`.
//!
//! The per-record lines ("epoch 3: ...", the notebook's "iteration 25: ...")
//! always go to stdout, bar or no bar: they are the run's log, and scripts
//! and tests read them. Bars never touch stdout, so `> log.txt` captures a
//! clean log while the terminal still shows the bar.

use crate::engine::BatchStats;
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

/// A spinner while a file loads (bars mode only); dropped or finished, it
/// erases itself.
pub struct Loading(Option<ProgressBar>);

impl Loading {
    pub fn start(display: Display, what: &str) -> Loading {
        if display != Display::Bars {
            return Loading(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner:.cyan} loading {msg} [{elapsed}]")
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
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:28.cyan/blue}] {percent:>3}%  {msg}  ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            )
        });
        let now = Instant::now();
        TrainProgress {
            display,
            bar,
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
            format!("iteration {done}/{total}")
        }
    }

    fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
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
                    bar.set_prefix(self.position(done, total));
                    bar.set_message(step_message(
                        &self.running,
                        self.last_heldout,
                        self.samples_per_second(),
                    ));
                }
            }
            None => {
                if now.duration_since(self.last_plain) >= PLAIN_EVERY && done < total {
                    self.last_plain = now;
                    let elapsed = self.started.elapsed().as_secs_f64();
                    eprintln!(
                        "{}",
                        plain_line(
                            &self.position(done, total),
                            done,
                            total,
                            &self.running,
                            self.samples_per_second(),
                            elapsed
                        )
                    );
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

/// The bar's text: running loss/accuracy of this epoch, last held-out
/// accuracy, throughput.
fn step_message(running: &BatchStats, heldout: Option<f64>, samples_per_s: f64) -> String {
    let held = heldout
        .map(|a| format!("  held-out {a:.4}"))
        .unwrap_or_default();
    format!(
        "loss {:.4}  acc {:.4}{held}  {} samples/s",
        running.mean_loss(),
        running.accuracy(),
        human_count(samples_per_s)
    )
}

/// A plain progress line for logs: no colour, no carriage return.
pub fn plain_line(
    position: &str,
    done: usize,
    total: usize,
    running: &BatchStats,
    samples_per_s: f64,
    elapsed: f64,
) -> String {
    let fraction = done as f64 / total.max(1) as f64;
    let eta = if fraction > 0.0 {
        elapsed * (1.0 - fraction) / fraction
    } else {
        0.0
    };
    format!(
        "progress: {position}, step {done}/{total} ({:.0}%), loss {:.4} acc {:.4}, {} samples/s, ETA {:.0} s",
        fraction * 100.0,
        running.mean_loss(),
        running.accuracy(),
        human_count(samples_per_s),
        eta
    )
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

    #[test]
    fn plain_line_has_no_control_characters_and_says_where_it_is() {
        let stats = BatchStats {
            loss_sum: 32.0,
            correct: 24,
            rows: 32,
        };
        let line = plain_line("epoch 2/10", 1500, 10_500, &stats, 812_345.0, 3.0);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(
            line,
            "progress: epoch 2/10, step 1500/10500 (14%), loss 1.0000 acc 0.7500, 812k samples/s, ETA 18 s"
        );
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
