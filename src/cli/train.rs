//! `mnist-blas train`: load, then [`train::run`] (split, train, score),
//! then write the model, the metrics and the summary. The flags and their
//! resolution live in [`crate::train::args`], shared with the sweep.

use super::metrics_log::MetricsLog;
use super::progress::{Display, Loading, TrainProgress};
use super::report::{no_heldout, split_text, summary_screen};
use super::runs::{self, RunFolder};
use super::{check_exists, check_outputs, signals, thread_pool};
use crate::data::{self, DataSource};
use crate::engine::{BatchStats, EngineKind};
use crate::output::write_atomic;
use crate::plot;
use crate::text::{plural, thousands};
use crate::train::args::{clap_error_line, parse_flags};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::config::{self, RunConfig};
use crate::train::{
    self, Checkpointing, Control, Observer, Plan, Preset, Record, RunError, RunOptions, RunReport,
    RunStart, Schedule, StepView, TrainArgs,
};
use anyhow::{bail, Result};
use std::borrow::Cow;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The examples under `mnist-blas train --help`.
pub const EXAMPLES: &str = "Examples:
  mnist-blas train                      # data/train.csv, or the built-in sample
  mnist-blas train --data train.csv --plot --name first
  mnist-blas train --preset notebook --data train.csv  # the notebook, fixed
  mnist-blas train --data train.csv --layers 256-128 --epochs 15
  mnist-blas train --config runs/first/config.toml --seed 2
  mnist-blas train --resume runs/first/checkpoint.npz
  mnist-blas train --layers 256-128 --print-config > deep.toml
  mnist-blas train --quiet --json | jq .heldout_accuracy

Each run writes into a folder of its own, runs/NAME (--out-dir, --name): \
model.npz, metrics.csv (a row per epoch, written as it ends), config.toml (the \
settings: --config replays them, flags beside it override), report.json, \
checkpoint.npz when one is written, curves.png with --plot. runs/latest points \
at the last finished run: eval, predict and inspect read its model by default. \
Every flag also takes its --json key's spelling (--batch_size=128).

Output: a log line per epoch (per 25 iterations for full batch), a progress \
bar on stderr in a terminal, and a summary at the end. `train` is the default \
subcommand: `mnist-blas --epochs 3` is `mnist-blas train --epochs 3`.";

/// The `--json` line (and a run folder's `report.json`): the run's
/// report, with what this command wrote.
#[derive(serde::Serialize)]
struct TrainJson<'a> {
    command: &'static str,
    #[serde(flatten)]
    report: &'a RunReport,
    run_folder: Option<&'a Path>,
    model: &'a Path,
    metrics: &'a Path,
    plot: Option<&'a Path>,
}

/// Where this run's files go.
struct Outputs {
    folder: Option<RunFolder>,
    model: PathBuf,
    metrics: PathBuf,
    plot: Option<PathBuf>,
    checkpoint: PathBuf,
}

impl Outputs {
    /// A run folder holds every file not given a path of its own; `--model`
    /// and `--metrics` both given (and no `--out-dir`/`--name`) make none.
    fn new(args: &TrainArgs, folder: Option<RunFolder>) -> Outputs {
        let in_folder = |name: &str| folder.as_ref().map(|f| f.file(name));
        let model = args
            .model
            .clone()
            .or_else(|| in_folder(runs::MODEL))
            .expect("a run folder when --model is not given");
        let metrics = args
            .metrics
            .clone()
            .or_else(|| in_folder("metrics.csv"))
            .expect("a run folder when --metrics is not given");
        let plot = match &args.plot {
            None => None,
            Some(Some(p)) => Some(p.clone()),
            Some(None) => {
                Some(in_folder("curves.png").unwrap_or_else(|| model.with_file_name("curves.png")))
            }
        };
        let checkpoint = args
            .checkpoint
            .clone()
            .or_else(|| args.resume.clone())
            .or_else(|| in_folder("checkpoint.npz"))
            .unwrap_or_else(|| checkpoint::default_path(&model));
        Outputs {
            folder,
            model,
            metrics,
            plot,
            checkpoint,
        }
    }
}

pub fn run(args: TrainArgs, command_line: &[OsString]) -> Result<()> {
    let started = Instant::now();
    let (args, resume) = with_settings(args, command_line)?;
    let plan = args.resolve()?;
    if args.print_config {
        outln!("{}", settings(&args, &plan).to_toml().trim_end());
        return Ok(());
    }
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if args.quiet && matches!(plan.source, DataSource::BuiltinSample) {
        eprintln!(
            "warning: no --data and no data/train.csv: training on the sample of real digits built into the binary"
        );
    }
    check_given_outputs(&args, &plan)?;
    let folder = run_folder(&args, resume.as_ref())?;
    let outputs = Outputs::new(&args, folder);
    let result = train_into(&args, &plan, resume, &outputs, started);
    if result.is_err() {
        if let Some(f) = &outputs.folder {
            f.discard_if_empty();
        }
    }
    result
}

/// The settings of `--resume`'s checkpoint, then of `--config`, then the
/// command line's flags: the arguments to run with, and the checkpoint.
fn with_settings(
    args: TrainArgs,
    command_line: &[OsString],
) -> Result<(TrainArgs, Option<Checkpoint>)> {
    let resume = match &args.resume {
        Some(path) => {
            check_exists(path, "--resume")?;
            Some(Checkpoint::load(path)?)
        }
        None => None,
    };
    let mut given = config::flags_given(command_line);
    let mut from_file = Vec::new();
    if let Some(path) = &args.config {
        check_exists(path, "--config")?;
        let file = RunConfig::load(path)?;
        from_file = file.to_flags(&given);
        // Alone, so that a bad value is blamed on the file.
        if let Err(e) = parse_flags(&from_file) {
            bail!("{}: {}", path.display(), clap_error_line(&e));
        }
        given.extend(config::flags_given(&from_file));
    }
    let mut flags = match resume.as_ref().and_then(|c| c.settings()) {
        Some(settings) => settings.to_flags(&given),
        None => Vec::new(),
    };
    if flags.is_empty() && from_file.is_empty() {
        return Ok((args, resume));
    }
    flags.extend(from_file);
    flags.extend(command_line.iter().cloned());
    // No flag comes twice: `to_flags` left out what a later source gives.
    let args = parse_flags(&flags).map_err(|e| anyhow::anyhow!(clap_error_line(&e)))?;
    Ok((args, resume))
}

/// The run's settings as a config file records them.
fn settings(args: &TrainArgs, plan: &Plan) -> RunConfig {
    RunConfig {
        checkpoint_every: args.checkpoint_every.map(|n| n as u64),
        ..RunConfig::of(plan)
    }
}

/// The run folder: the resumed checkpoint's, when it is in one and no
/// other is named; none when `--model` and `--metrics` say where both go;
/// else a new one.
fn run_folder(args: &TrainArgs, resume: Option<&Checkpoint>) -> Result<Option<RunFolder>> {
    let named = args.out_dir.is_some() || args.name.is_some();
    if let Some(ckpt) = resume {
        let dir = runs::folder_of(&ckpt.path);
        let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
        let asked = args.name.as_ref().map(|n| {
            args.out_dir
                .as_deref()
                .unwrap_or(Path::new(runs::DEFAULT_PARENT))
                .join(n)
        });
        let continues = match &asked {
            None => !named,
            Some(asked) => same(asked, &dir),
        };
        if runs::is_run_folder(&dir) && continues {
            return Ok(Some(RunFolder::existing(&dir)));
        }
    }
    if !named && args.model.is_some() && args.metrics.is_some() {
        return Ok(None);
    }
    RunFolder::create(args.out_dir.as_deref(), args.name.as_deref()).map(Some)
}

/// Load, train, write: the run once its folder exists.
fn train_into(
    args: &TrainArgs,
    plan: &Plan,
    resume: Option<Checkpoint>,
    outputs: &Outputs,
    started: Instant,
) -> Result<()> {
    check_train_outputs(args, plan, outputs)?;
    let pool = thread_pool(plan.threads)?;
    pool.install(|| {
        let machine = args.json_epochs;
        let display = Display::detect(args.quiet || machine);
        let say = |s: String| {
            if !args.quiet && !machine {
                outln!("{s}");
            }
        };
        if let Some(f) = &outputs.folder {
            say(format!("run folder: {}", f.path.display()));
        }
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
        say(format!(
            "data: {} ({}, loaded in {load_seconds:.2} s)",
            plan.source.describe(),
            plural(all.len(), "labeled row")
        ));
        if let DataSource::BuiltinSample = plan.source {
            say(data::sample::HOW_TO_GET_FULL_DATA.to_string());
        }
        if let (Some(path), Some(val)) = (&plan.val_data, &val) {
            say(format!(
                "val data: {} ({}, held out)",
                path.display(),
                plural(val.len(), "labeled row")
            ));
        }
        let val = val.map(Cow::Owned);
        let start = Start {
            config: outputs
                .folder
                .as_ref()
                .map(|f| (f.file(runs::CONFIG), settings(args, plan).to_toml())),
            metrics: &outputs.metrics,
            earlier: resume
                .as_ref()
                .map(|c| c.records().to_vec())
                .unwrap_or_default(),
        };
        let stop = signals::install();
        let options = RunOptions {
            resume,
            checkpoints: Some(Checkpointing {
                path: outputs.checkpoint.clone(),
                every: args.checkpoint_every,
                stop,
            }),
            val,
        };
        let full_batch = matches!(plan.config.schedule, Schedule::FullBatch { .. });
        let units = plan.config.schedule.units();
        let mut progress = TrainProgress::new(display, full_batch, units);
        let mut console = Console {
            plan,
            progress: &mut progress,
            say: &say,
            start: Some(start),
            metrics: None,
            failed: None,
            json_epochs: machine,
        };
        let source_rows = all.len();
        let done = match train::run(plan, Cow::Owned(all), load_seconds, options, &mut console) {
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
        let Console {
            metrics, failed, ..
        } = console;
        progress.finish();
        if let Some(e) = failed {
            return Err(e);
        }
        metrics.expect("a run that ends started").finish()?;
        let report = RunReport {
            seconds: started.elapsed().as_secs_f64(),
            ..done.report.clone()
        };
        let line = TrainJson {
            command: "train",
            report: &report,
            run_folder: outputs.folder.as_ref().map(|f| f.path.as_path()),
            model: &outputs.model,
            metrics: &outputs.metrics,
            plot: outputs.plot.as_deref(),
        };
        let written = write_outputs(plan, outputs, &done, &line)?;
        if plan.preset == Preset::Notebook || full_batch {
            notebook_lines(&done, &say);
        }
        say(summary_screen(&report, source_rows, &written));
        if let Some(f) = &outputs.folder {
            if let Some(warning) = f.mark_latest() {
                eprintln!("warning: {warning}");
            }
        }
        if args.json {
            outln!("{}", serde_json::to_string(&line)?);
        }
        Ok(())
    })
}

/// The paths the user named, checked before a run folder is made.
fn check_given_outputs(args: &TrainArgs, plan: &Plan) -> Result<()> {
    let mut outputs = vec![];
    if let Some(p) = &args.model {
        outputs.push(("--model", p.as_path()));
    }
    if let Some(p) = &args.metrics {
        outputs.push(("--metrics", p.as_path()));
    }
    if let Some(Some(p)) = &args.plot {
        outputs.push(("--plot", p.as_path()));
    }
    if let Some(p) = &args.checkpoint {
        outputs.push(("--checkpoint", p.as_path()));
    }
    check_outputs(&inputs(plan), &outputs)
}

/// The files the run reads.
fn inputs(plan: &Plan) -> Vec<&Path> {
    let mut inputs = match &plan.source {
        DataSource::File(p) => vec![p.as_path()],
        DataSource::BuiltinSample => vec![],
    };
    inputs.extend(plan.val_data.as_deref());
    inputs
}

/// Every file `train` writes, checked before the data is even read; the
/// checkpoint may be the file resumed from (that is its default).
fn check_train_outputs(args: &TrainArgs, plan: &Plan, o: &Outputs) -> Result<()> {
    let mut outputs = vec![
        ("--model", o.model.as_path()),
        ("--metrics", o.metrics.as_path()),
    ];
    if let Some(p) = &o.plot {
        outputs.push(("--plot", p.as_path()));
    }
    if let Some(resume) = &args.resume {
        check_outputs(&[resume.as_path()], &outputs)?;
    }
    outputs.push(("--checkpoint", o.checkpoint.as_path()));
    check_outputs(&inputs(plan), &outputs)
}

/// The model (with its metadata), the plot if asked and the run folder's
/// report; the paths written, metrics included.
fn write_outputs<'a>(
    plan: &Plan,
    o: &'a Outputs,
    done: &train::Run,
    line: &TrainJson,
) -> Result<Vec<&'a Path>> {
    let meta = serde_json::json!({
        "format": "mnist-blas model",
        "version": env!("CARGO_PKG_VERSION"),
        "shape": done.model.shape().to_string(),
        "input": "784 pixels of a 28x28 image, row by row, ink 255 on background 0, divided by 255",
        "output": "softmax probabilities of the classes 0-9",
        "report": model_report(&done.report),
    });
    done.model.save_npz_with_meta(&o.model, &meta.to_string())?;
    let mut written = vec![o.model.as_path(), o.metrics.as_path()];
    if let Some(path) = &o.plot {
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
    if let Some(f) = &o.folder {
        let json = serde_json::to_string_pretty(line)? + "\n";
        write_atomic(&f.file("report.json"), |w| w.write_all(json.as_bytes()))?;
    }
    Ok(written)
}

/// The report a model file carries: the run's settings and results, not
/// its times nor the paths it wrote, so that two runs alike write the same
/// bytes.
fn model_report(report: &RunReport) -> serde_json::Value {
    let mut value = serde_json::to_value(report).expect("a report serialises");
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|k, _| !k.ends_with("seconds") && k != "samples_per_second");
    }
    value
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
            "Test set: {} accurate results on a {} images set ({:.2}%) after {}",
            thousands(correct),
            thousands(r.heldout_rows),
            accuracy * 100.0,
            plural(iterations, "iteration"),
        )),
        _ => say(format!("Test set: {}", no_heldout(r.split))),
    }
}

/// The files a run starts once training starts: after every refusal
/// [`train::run`] makes (a checkpoint of another run, too little memory
/// for OpenBLAS), so that a refused run writes nothing, neither into a
/// new run folder nor into the folder of the run it would resume.
struct Start<'a> {
    /// The run folder's `config.toml` and its text.
    config: Option<(PathBuf, String)>,
    metrics: &'a Path,
    /// The records of the part of the run before `--resume`.
    earlier: Vec<Record>,
}

impl Start<'_> {
    fn write(self) -> Result<MetricsLog> {
        if let Some((path, text)) = &self.config {
            write_atomic(path, |w| w.write_all(text.as_bytes()))?;
        }
        MetricsLog::open(self.metrics, &self.earlier)
    }
}

/// The progress display, the metrics file and the lines printed once the
/// rows are split.
struct Console<'a> {
    plan: &'a Plan,
    progress: &'a mut TrainProgress,
    say: &'a dyn Fn(String),
    /// The files to start when training starts.
    start: Option<Start<'a>>,
    metrics: Option<MetricsLog>,
    /// Starting the files failed: training stops, the run ends with this.
    failed: Option<anyhow::Error>,
    /// `--json-epochs`: a JSON line per record on stdout.
    json_epochs: bool,
}

impl Observer for Console<'_> {
    fn on_start(&mut self, start: &RunStart) {
        match self.start.take().map(Start::write) {
            Some(Ok(log)) => self.metrics = Some(log),
            Some(Err(e)) => self.failed = Some(e),
            None => {}
        }
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
                thousands,
            )
        ));
        let schedule = match c.schedule {
            Schedule::FullBatch { iterations } => {
                format!("full batch, {}", plural(iterations, "iteration"))
            }
            Schedule::MiniBatch { epochs, batch_size } => {
                format!(
                    "batch {}, {}",
                    thousands(batch_size),
                    plural(epochs, "epoch")
                )
            }
        };
        (self.say)(format!(
            "model: {}, init {}; {} lr {} ({}); {schedule}",
            c.layers,
            c.init.name(),
            c.optimizer.name(),
            c.lr,
            c.lr_schedule.name(),
        ));
        (self.say)(format!(
            "engine: {} on {}, {}",
            start.engine.kind,
            match start.engine.kind {
                // The full OpenBLAS build line is in the summary at the end.
                EngineKind::Blas => crate::threads::matmul_backend(),
                EngineKind::Sparse => "f32 loops over non-zero pixels".into(),
                EngineKind::Naive => "f64 loops".into(),
                EngineKind::Auto => unreachable!("resolved before the start"),
            },
            plural(rayon::current_num_threads(), "thread"),
        ));
        if let Some((path, completed, steps)) = &start.resumed {
            (self.say)(format!(
                "resuming from {}: {} done, step {}",
                path.display(),
                plural(*completed, c.schedule.unit()),
                thousands(*steps)
            ));
        }
    }
    fn on_step(&mut self, done: usize, total: usize, stats: &BatchStats) {
        self.progress.on_step(done, total, stats);
    }
    fn on_record(&mut self, record: &Record) {
        if let Some(metrics) = &mut self.metrics {
            metrics.append(record);
        }
        if self.json_epochs {
            let line = EpochJson {
                event: "record",
                unit: self.plan.config.schedule.unit(),
                record,
            };
            outln!(
                "{}",
                serde_json::to_string(&line).expect("a record serialises")
            );
        }
        self.progress.on_record(record);
    }
    fn after_step(&mut self, state: &mut StepView) -> Control {
        if self.failed.is_some() {
            return Control::Stop;
        }
        self.progress.after_step(state)
    }
}

/// A `--json-epochs` line.
#[derive(serde::Serialize)]
struct EpochJson<'a> {
    event: &'static str,
    /// `epoch` (mini-batch) or `iteration` (full batch): what `step` counts.
    unit: &'static str,
    #[serde(flatten)]
    record: &'a Record,
}
