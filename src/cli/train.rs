//! `mnist-blas train`: load, then [`train::run`] (split, train, score),
//! then write the model, the metrics and the summary. The flags and their
//! resolution live in [`crate::train::args`], shared with the sweep.

use super::progress::{Display, Loading, TrainProgress};
use super::report::{no_heldout, split_text, summary_screen};
use super::{check_outputs, signals, thread_pool};
use crate::data::{self, DataSource};
use crate::engine::{BatchStats, EngineKind};
use crate::output::write_atomic;
use crate::plot;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::{
    self, Checkpointing, Control, Observer, Plan, Preset, Record, RunError, RunOptions, RunReport,
    RunStart, Schedule, StepView, TrainArgs,
};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The examples under `mnist-blas train --help`.
pub const EXAMPLES: &str = "Examples:
  mnist-blas train                                   # data/train.csv, or the built-in sample
  mnist-blas train --data train.csv.gz --plot curves.png
  mnist-blas train --preset notebook --data train.csv.gz   # the Kaggle notebook's job, fixed
  mnist-blas train --hidden 128 --epochs 20 --lr 0.002 --seed 3
  mnist-blas train --optimizer sgd --batch-size full --iterations 500 --lr 0.1
  mnist-blas train --quiet --json | jq .heldout_accuracy

Output: a log line per epoch (per 25 iterations for full batch) on stdout, a progress bar
on stderr when it is a terminal, and a summary screen at the end (data, model, engine and
OpenBLAS, settings, time split, throughput, final accuracies, files written). Piped or in
CI there is no bar: plain lines only. `train` is the default subcommand: `mnist-blas
--epochs 3` is `mnist-blas train --epochs 3`.";

/// The `--json` line: the run's report, with what this command wrote.
#[derive(serde::Serialize)]
struct TrainJson<'a> {
    command: &'static str,
    #[serde(flatten)]
    report: &'a RunReport,
    model: &'a Path,
    metrics: &'a Path,
    plot: Option<&'a Path>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let plan = args.resolve()?;
    let resume = match &args.resume {
        Some(path) => Some(Checkpoint::load(path)?),
        None => None,
    };
    check_train_outputs(&args, &plan)?;
    let pool = thread_pool(plan.threads)?;
    pool.install(|| {
        let display = Display::detect(args.quiet);
        // --val-data first: it is usually the smaller file, and a bad one
        // is refused before the training data is read.
        let val = match &plan.val_data {
            Some(path) => Some(train::run::load_val_data(path)?),
            None => None,
        };
        let loading = Loading::start(display, &plan.source.describe());
        let all = plan.source.load()?;
        loading.finish();
        let load_seconds = started.elapsed().as_secs_f64();
        let say = |s: String| {
            if !args.quiet {
                outln!("{s}");
            }
        };
        say(format!(
            "data: {} ({} labeled rows, loaded in {load_seconds:.2} s)",
            plan.source.describe(),
            all.len()
        ));
        if let DataSource::BuiltinSample = plan.source {
            say(data::sample::HOW_TO_GET_FULL_DATA.to_string());
        }
        if let (Some(path), Some(val)) = (&plan.val_data, &val) {
            say(format!(
                "val data: {} ({} labeled rows, held out)",
                path.display(),
                val.len()
            ));
        }
        let val = val.map(Cow::Owned);
        let stop = signals::install();
        let checkpoint_path = checkpoint_path(&args);
        let options = RunOptions {
            resume,
            checkpoints: Some(Checkpointing {
                path: checkpoint_path.clone(),
                every: args.checkpoint_every,
                stop,
            }),
            val,
        };
        let full_batch = matches!(plan.config.schedule, Schedule::FullBatch { .. });
        let units = plan.config.schedule.units();
        let mut progress = TrainProgress::new(display, full_batch, units);
        let mut console = Console {
            plan: &plan,
            progress: &mut progress,
            say: &say,
        };
        let source_rows = all.len();
        let done = match train::run(&plan, Cow::Owned(all), load_seconds, options, &mut console) {
            Err(RunError::Interrupted { at, path }) => {
                return Err(signals::Interrupted(format!(
                    "interrupted {at}; wrote {}; resume with: {}",
                    path.display(),
                    signals::resume_command(&path)
                ))
                .into())
            }
            other => other?,
        };
        progress.finish();
        let written = write_outputs(&args, &plan, &done)?;
        if plan.preset == Preset::Notebook || full_batch {
            notebook_lines(&done, &say);
        }
        let report = RunReport {
            seconds: started.elapsed().as_secs_f64(),
            ..done.report
        };
        say(summary_screen(&report, source_rows, &written));
        if args.json {
            let line = TrainJson {
                command: "train",
                report: &report,
                model: &args.model,
                metrics: &args.metrics,
                plot: args.plot.as_deref(),
            };
            outln!("{}", serde_json::to_string(&line)?);
        }
        Ok(())
    })
}

/// Every file `train` writes, checked before the data is even read; the
/// checkpoint may be the file resumed from (that is its default).
fn check_train_outputs(args: &TrainArgs, plan: &Plan) -> Result<()> {
    let mut data: Vec<&Path> = match &plan.source {
        DataSource::File(p) => vec![p.as_path()],
        DataSource::BuiltinSample => vec![],
    };
    data.extend(plan.val_data.as_deref());
    let checkpoint = checkpoint_path(args);
    let mut outputs = vec![
        ("--model", args.model.as_path()),
        ("--metrics", args.metrics.as_path()),
    ];
    if let Some(p) = &args.plot {
        outputs.push(("--plot", p.as_path()));
    }
    if let Some(resume) = &args.resume {
        check_outputs(&[resume.as_path()], &outputs)?;
    }
    outputs.push(("--checkpoint", checkpoint.as_path()));
    check_outputs(&data, &outputs)
}

/// Where checkpoints go: `--checkpoint`, else the file being resumed, else
/// next to the model (`model.ckpt.npz`).
fn checkpoint_path(args: &TrainArgs) -> PathBuf {
    args.checkpoint
        .clone()
        .or_else(|| args.resume.clone())
        .unwrap_or_else(|| checkpoint::default_path(&args.model))
}

/// The model, the metrics CSV and the plot, if asked; the paths written.
fn write_outputs<'a>(args: &'a TrainArgs, plan: &Plan, done: &train::Run) -> Result<Vec<&'a Path>> {
    done.model.save_npz(&args.model)?;
    write_metrics(&args.metrics, &done.records)?;
    let mut written = vec![args.model.as_path(), args.metrics.as_path()];
    if let Some(path) = &args.plot {
        let c = &plan.config;
        let accuracy = match done.report.heldout_accuracy {
            Some(a) => format!("held-out accuracy {a:.4}"),
            None => format!("train accuracy {:.4}", done.report.train_accuracy),
        };
        let title = format!(
            "{}, {} {}, {}: {accuracy}",
            c.layers,
            c.optimizer.name(),
            c.lr,
            plan.source.describe(),
        );
        let unit = c.schedule.unit();
        plot::learning_curves(path, &done.records, unit, &title)?;
        written.push(path.as_path());
    }
    Ok(written)
}

/// The notebook's closing lines.
fn notebook_lines(done: &train::Run, say: &dyn Fn(String)) {
    if let Some(last) = done.records.last() {
        say(format!("End of training: {} accuracy", last.train_accuracy));
    }
    let r = &done.report;
    // Early stopping's restored weights are those after the record's
    // iteration (full batch: records count iterations from 0) or epoch.
    let iterations = match (r.restored_step, r.batch_size) {
        (None, _) => r.steps,
        (Some(it), None) => it + 1,
        (Some(epoch), Some(batch)) => {
            epoch * r.train_rows.div_ceil(batch.clamp(1, r.train_rows.max(1)))
        }
    };
    match (r.heldout_correct, r.heldout_accuracy) {
        (Some(correct), Some(accuracy)) => say(format!(
            "Test set: {correct} accurate results on a {} images set ({:.2}%) after {iterations} iterations",
            r.heldout_rows,
            accuracy * 100.0,
        )),
        _ => say(format!("Test set: {}", no_heldout(r.split))),
    }
}

/// The progress display, plus the lines printed once the rows are split.
struct Console<'a> {
    plan: &'a Plan,
    progress: &'a mut TrainProgress,
    say: &'a dyn Fn(String),
}

impl Observer for Console<'_> {
    fn on_start(&mut self, start: &RunStart) {
        let c = &self.plan.config;
        (self.say)(format!(
            "split: {}",
            split_text(
                (start.train_rows, start.heldout_rows),
                self.plan.split,
                self.plan
                    .val_data
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .as_deref(),
                c.seed,
                |n| n.to_string(),
            )
        ));
        let schedule = match c.schedule {
            Schedule::FullBatch { iterations } => format!("full batch, {iterations} iterations"),
            Schedule::MiniBatch { epochs, batch_size } => {
                format!("batch {batch_size}, {epochs} epochs")
            }
        };
        (self.say)(format!(
            "model: {}, init {}; optimizer {} lr {} ({}); {schedule}; engine {} on {}; {} thread(s)",
            c.layers,
            c.init.name(),
            c.optimizer.name(),
            c.lr,
            c.lr_schedule.name(),
            start.engine.kind,
            match start.engine.kind {
                // The full OpenBLAS build line is in the summary at the end.
                EngineKind::Blas => crate::threads::matmul_backend(),
                EngineKind::Sparse => "f32 loops over non-zero pixels".into(),
                EngineKind::Naive => "f64 loops".into(),
                EngineKind::Auto => unreachable!("resolved before the start"),
            },
            rayon::current_num_threads(),
        ));
        if let Some((path, completed, steps)) = &start.resumed {
            (self.say)(format!(
                "resuming from {}: {completed} {}s done, step {steps}",
                path.display(),
                c.schedule.unit()
            ));
        }
    }
    fn on_step(&mut self, done: usize, total: usize, stats: &BatchStats) {
        self.progress.on_step(done, total, stats);
    }
    fn on_record(&mut self, record: &Record) {
        self.progress.on_record(record);
    }
    fn after_step(&mut self, state: &mut StepView) -> Control {
        self.progress.after_step(state)
    }
}

/// The per-record metrics CSV, written atomically.
fn write_metrics(path: &Path, records: &[Record]) -> Result<()> {
    write_atomic(path, |w| {
        writeln!(
            w,
            "step,train_loss,train_accuracy,heldout_loss,heldout_accuracy,seconds"
        )?;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in records {
            writeln!(
                w,
                "{},{},{},{},{},{:.6}",
                r.step,
                r.train_loss,
                r.train_accuracy,
                opt(r.heldout_loss),
                opt(r.heldout_accuracy),
                r.seconds
            )?;
        }
        Ok(())
    })
    .with_context(|| "writing the metrics file")
}
