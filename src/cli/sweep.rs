//! `mnist-blas sweep`: many `train` runs over one loaded data set, in
//! parallel, with resumable results, a summary table and a plot; or the
//! runs as `mnist-blas train` command lines for other machines, and
//! `--collect` to merge what they wrote.

use super::signals;
use crate::data::Dataset;
use crate::engine::EngineKind;
use crate::output::write_atomic;
use crate::sweep::grid::{expand_grid, sample_random, Axis, Flags};
use crate::sweep::lock::ResultsLock;
use crate::sweep::repair::repair;
use crate::sweep::results::{read_curves, read_results, ResultPaths, RunResult, FAILED, OK};
use crate::sweep::run::{self, Outcome};
use crate::sweep::slurm;
use crate::sweep::{self, plot, summary, DataFingerprint, RunSpec, SweepError};
use crate::text::{plural, thousands};
use crate::train::Preset;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    mnist-blas sweep --data train.csv --lr 0.05,0.1,0.2 --batch-size 32,128 \\\n      \
        --optimizer sgd,adam --seed 1,2,3\n  \
    mnist-blas sweep --data train.csv --samples 20 --lr 1e-4:0.3 \\\n      \
        --hidden 10:64 --seed 1,2\n  \
    mnist-blas sweep --data train.csv --lr 0.1,0.2 \\\n      \
        --axis lr-schedule=constant,cosine -- --early-stop 3\n  \
    mnist-blas sweep --data \"$PWD/train.csv\" --lr 0.1,0.2 --emit commands \\\n      \
        --out-dir runs > jobs.txt\n  \
    parallel < jobs.txt && mnist-blas sweep --collect runs\n  \
    mnist-blas sweep --data train.csv --lr 0.1,0.2 --seed 1,2 \\\n      \
        --emit slurm --out-dir runs\n  \
    sbatch --wait runs/sweep.sbatch && mnist-blas sweep --collect runs\n\n\
    Every run is the `mnist-blas train` run with the same flags: same split, init, shuffles and \
    final evaluation, bit for bit. Re-running a sweep skips the runs already in --results (a run's \
    key covers the data's content: data replaced in place runs again). One sweep at a time writes \
    a --results file. SIGINT or SIGTERM stops the sweep after the current step of the runs in \
    progress, which are not recorded; the summary is printed and the exit code is 130 or 143; \
    running the same command again runs the rest.")]
pub struct SweepArgs {
    /// Training data, as for `train`; read once for all runs.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Settings bundle for every run, as for `train`.
    #[arg(long, value_enum, value_name = "NAME")]
    pub preset: Option<Preset>,

    /// Hidden widths to sweep, e.g. `10,32,64` (random search: `10:128`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub hidden: Vec<String>,
    /// Network shapes to sweep, e.g. `128,256-128,512-256` (a list only).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub layers: Vec<String>,
    /// Initialisations to sweep: `uniform,he,orthogonal`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub init: Vec<String>,
    /// Optimizers to sweep: `sgd,momentum,adam`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub optimizer: Vec<String>,
    /// Learning rates to sweep, e.g. `0.05,0.1,0.2` (random search:
    /// `1e-4:0.3`, log-uniform).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub lr: Vec<String>,
    /// Momentum coefficients to sweep (random search: `0.5:0.99`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub momentum: Vec<String>,
    /// Batch sizes to sweep, e.g. `32,128,full` (random search: `16:512`,
    /// log-uniform).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub batch_size: Vec<String>,
    /// Epoch counts to sweep (random search: `5:20`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub epochs: Vec<String>,
    /// Seeds (split, init, shuffles), e.g. `1,2,3`. With --samples, every
    /// sampled configuration runs with each listed seed.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub seed: Vec<String>,
    /// Any other `train` flag to sweep, as `FLAG=V1,V2` (e.g.
    /// `iterations=100,500`, `engine=blas,sparse`).
    #[arg(long = "axis", value_name = "FLAG=LIST")]
    pub axes: Vec<String>,

    /// Training fraction for every run, as for `train`.
    #[arg(long, value_name = "FRACTION")]
    pub split: Option<String>,
    /// Full-batch gradient steps for every run, as for `train`.
    #[arg(long, value_name = "N")]
    pub iterations: Option<String>,
    /// Arithmetic engine for every run, as for `train` [default: auto].
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineKind>,
    /// Full-batch: record metrics every N iterations, as for `train`.
    #[arg(long, value_name = "N")]
    pub log_every: Option<String>,

    /// Random search: draw this many configurations (lists: one value at
    /// random; `lo:hi`: a value in the range) instead of the full grid.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Seed of the random search's draws.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sweep_seed: u64,

    /// Runs at a time (0: one per core).
    #[arg(long, short, default_value_t = 0, value_name = "N")]
    pub jobs: usize,
    /// Threads inside each run. Results do not depend on it.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads_per_run: usize,

    /// Results CSV, one row per run, appended; runs already in it are skipped.
    #[arg(long, default_value = "sweep-results.csv", value_name = "PATH")]
    pub results: PathBuf,
    /// One JSON line per run [default: the results path with .jsonl].
    #[arg(long, value_name = "PATH")]
    pub json_lines: Option<PathBuf>,
    /// Per-epoch metrics of every run [default: for --results X.csv,
    /// X-curves.csv].
    #[arg(long, value_name = "PATH")]
    pub curves: Option<PathBuf>,
    /// The summary plot [default: the results path with .png].
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Draw no plot.
    #[arg(long)]
    pub no_plot: bool,
    /// Rows of the summary table.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Also write each run's model as DIR/run-KEY.npz.
    #[arg(long, value_name = "DIR")]
    pub save_models: Option<PathBuf>,
    /// List the configurations (key and `train` flags) and stop. Reads
    /// the data: the keys cover its content.
    #[arg(long)]
    pub dry_run: bool,

    /// Instead of running: `commands` prints one `mnist-blas train ...` line
    /// per configuration (each writes OUT-DIR/run-KEY.json), for GNU
    /// parallel, ...; `slurm` writes OUT-DIR/sweep.sbatch, a SLURM job array
    /// of them (`sbatch OUT-DIR/sweep.sbatch`). Both write the plan and
    /// OUT-DIR/commands.txt.
    #[arg(long, value_enum, value_name = "KIND")]
    pub emit: Option<Emit>,
    /// The same as `--emit commands`.
    #[arg(long, hide = true, conflicts_with = "emit")]
    pub emit_commands: bool,
    /// Where the emitted commands write, and the plan --collect reads.
    #[arg(long, default_value = "sweep-runs", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// The program the emitted commands call.
    #[arg(long, default_value = "mnist-blas", value_name = "PATH")]
    pub bin: String,
    /// `--emit slurm`: array tasks running at a time (its `%` throttle).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_parallel: usize,
    /// `--emit slurm`: one more `#SBATCH` option, e.g.
    /// `--sbatch=--time=2:00:00` or `--sbatch=--partition=short`; repeatable.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// Merge the results of emitted commands in DIR into --results, then
    /// summarise and plot; no grid flags needed.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["emit", "emit_commands"])]
    pub collect: Option<PathBuf>,

    /// Print only the summary (and errors).
    #[arg(long, short)]
    pub quiet: bool,
    /// Further `train` flags for every run, after `--`.
    #[arg(last = true, value_name = "TRAIN FLAGS")]
    pub extra: Vec<String>,
}

/// What `--emit` writes instead of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// `mnist-blas train` lines on stdout.
    Commands,
    /// A SLURM job array script, OUT-DIR/sweep.sbatch.
    Slurm,
}

/// Flags the sweep sets itself for each run.
const MANAGED: &[&str] = &[
    "--data",
    "--model",
    "--metrics",
    "--json",
    "--quiet",
    "-q",
    "--threads",
];

impl SweepArgs {
    fn paths(&self) -> (ResultPaths, PathBuf) {
        let mut p = ResultPaths::beside(&self.results);
        if let Some(j) = &self.json_lines {
            p.json_lines = j.clone();
        }
        if let Some(c) = &self.curves {
            p.curves = c.clone();
        }
        let plot = self
            .plot
            .clone()
            .unwrap_or_else(|| self.results.with_extension("png"));
        (p, plot)
    }

    /// The swept axes, seed last (so the seeds of one configuration run together).
    fn axes(&self) -> Result<Vec<Axis>> {
        let mut named: Vec<(String, Vec<String>)> = [
            ("hidden", &self.hidden),
            ("layers", &self.layers),
            ("init", &self.init),
            ("optimizer", &self.optimizer),
            ("lr", &self.lr),
            ("momentum", &self.momentum),
            ("batch-size", &self.batch_size),
            ("epochs", &self.epochs),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(f, v)| (f.to_string(), v.clone()))
        .collect();
        for a in &self.axes {
            let Some((flag, list)) = a.split_once('=') else {
                bail!("--axis {a}: expected FLAG=V1,V2 (e.g. --axis iterations=100,500)");
            };
            let flag = flag.trim().trim_start_matches("--").to_string();
            if named.iter().any(|(f, _)| *f == flag) || flag == "seed" {
                bail!("--axis {a}: --{flag} is swept twice");
            }
            if MANAGED.contains(&format!("--{flag}").as_str()) {
                bail!("--axis {a}: --{flag} cannot be swept (the sweep sets it)");
            }
            named.push((flag, list.split(',').map(str::to_string).collect()));
        }
        if !self.seed.is_empty() {
            named.push(("seed".into(), self.seed.clone()));
        }
        Ok(named
            .iter()
            .map(|(f, v)| Axis::parse(f, v))
            .collect::<Result<_, _>>()?)
    }

    fn fixed(&self) -> Flags {
        let mut f = Flags::new();
        let mut add = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                f.push((flag.to_string(), v));
            }
        };
        add("data", self.data.as_ref().map(|p| p.display().to_string()));
        add("preset", self.preset.map(|p| value_name(&p)));
        add("split", self.split.clone());
        add("iterations", self.iterations.clone());
        add("engine", self.engine.map(|e| value_name(&e)));
        add("log-every", self.log_every.clone());
        f
    }

    /// Checks of the flags themselves, before any configuration is parsed.
    fn check(&self) -> Result<()> {
        for e in &self.extra {
            let name = e.split('=').next().unwrap_or("");
            if MANAGED.contains(&name) {
                bail!("`{e}` after --: the sweep sets {name} itself (use --data, --save-models, --results)");
            }
        }
        if self.threads_per_run == 0 {
            bail!("--threads-per-run must be at least 1");
        }
        if self.samples == Some(0) {
            bail!("--samples must be at least 1");
        }
        if !self.sbatch.is_empty() && self.emit() != Some(Emit::Slurm) {
            bail!(
                "--sbatch {}: #SBATCH options go with --emit slurm",
                self.sbatch[0]
            );
        }
        Ok(())
    }

    /// Every configuration, parsed and resolved by the `train` parser.
    fn configs(&self) -> Result<Configs> {
        let axes = self.axes()?;
        let swept: Vec<String> = axes
            .iter()
            .filter(|a| !matches!(&a.values, sweep::grid::Values::List(v) if v.len() == 1))
            .map(|a| a.flag.clone())
            .collect();
        let configs = match self.samples {
            Some(n) => sample_random(&axes, n, self.sweep_seed),
            None => expand_grid(&axes)?,
        };
        let proposed = configs.len();
        let configs = sweep::resolve(&self.fixed(), configs, &self.extra)?;
        Ok(Configs {
            configs,
            proposed,
            swept,
        })
    }

    /// `--emit`, or `--emit-commands` (its old spelling).
    fn emit(&self) -> Option<Emit> {
        self.emit.or(self.emit_commands.then_some(Emit::Commands))
    }

    fn jobs(&self) -> usize {
        if self.jobs == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.jobs
        }
    }

    fn say(&self, line: String) {
        if !self.quiet {
            outln!("{line}");
        }
    }
}

/// The configurations of a sweep, before the data gives them their keys.
struct Configs {
    configs: Vec<sweep::Config>,
    /// How many the grid or the random search proposed (repeats included).
    proposed: usize,
    /// The flags that take more than one value.
    swept: Vec<String>,
}

/// The data (and `--val-data`), loaded once for every run and for the run keys.
struct Loaded {
    all: Dataset,
    val: Option<Dataset>,
    seconds: f64,
    fingerprint: DataFingerprint,
    val_fingerprint: Option<DataFingerprint>,
}

impl Loaded {
    fn load(configs: &[sweep::Config]) -> Result<Loaded> {
        let source = sweep::data_source(configs).context("no configuration to run")?;
        let started = Instant::now();
        let pool = super::thread_pool(0)?;
        // --val-data first, as `train` does: a bad file is refused sooner.
        let val = match sweep::val_data(configs) {
            Some(path) => Some(pool.install(|| crate::train::run::load_val_data(path))?),
            None => None,
        };
        let all = pool.install(|| source.load())?;
        Ok(Loaded {
            fingerprint: DataFingerprint::of(&all),
            val_fingerprint: val.as_ref().map(DataFingerprint::of),
            seconds: started.elapsed().as_secs_f64(),
            all,
            val,
        })
    }

    fn specs(&self, configs: Vec<sweep::Config>) -> Vec<RunSpec> {
        sweep::plan(configs, &self.fingerprint, self.val_fingerprint.as_ref())
    }
}

/// `mnist-blas sweep`: plan, then list (`--dry-run`), emit
/// (`--emit commands|slurm`), collect (`--collect`) or run.
///
/// Running holds the results' lock for the whole sweep, and stops on
/// SIGINT or SIGTERM: no new run starts, the runs in progress stop after
/// their step and are not recorded, the summary of what is recorded is
/// printed, and the exit code is 130 or 143. A write error (a full disk)
/// stops the sweep the same way, with the error and exit code 1.
pub fn run(args: SweepArgs) -> Result<()> {
    let (paths, plot_path) = args.paths();
    if let Some(dir) = &args.collect {
        let _lock = ResultsLock::acquire(&paths.results)?;
        return collect(&args, dir, &paths, &plot_path);
    }
    args.check()?;
    let configs = args.configs()?;
    // The keys cover the data's content: even listing loads the data.
    if args.dry_run || args.emit().is_some() {
        let data = Loaded::load(&configs.configs)?;
        let specs = data.specs(configs.configs);
        if let Some(kind) = args.emit() {
            return emit(&args, kind, &specs);
        }
        for s in &specs {
            outln!("{}  {}", s.key, s.train_args().join(" "));
        }
        return Ok(());
    }
    let stop = signals::install();
    let _lock = ResultsLock::acquire(&paths.results)?;
    let data = Loaded::load(&configs.configs)?;
    let sweep = Sweep {
        specs: data.specs(configs.configs),
        args: &args,
        paths,
        plot_path,
        proposed: configs.proposed,
        swept: configs.swept,
    };
    sweep.execute(&data, stop)
}

/// A sweep about to run, with its keys.
struct Sweep<'a> {
    args: &'a SweepArgs,
    paths: ResultPaths,
    plot_path: PathBuf,
    specs: Vec<RunSpec>,
    proposed: usize,
    swept: Vec<String>,
}

impl Sweep<'_> {
    /// Repair the results, skip the runs they hold, run the others, report.
    fn execute(&self, data: &Loaded, stop: &AtomicBool) -> Result<()> {
        for note in repair(&self.paths)? {
            eprintln!("warning: {note}");
        }
        let header = RunResult::new(&self.specs[0], "sweep", OK, "", None).header();
        self.paths.check_header(&header)?;
        let todo = self.todo()?;
        self.announce(&todo, data);
        if let Some(dir) = &self.args.save_models {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        let started = Instant::now();
        let outcome = if todo.is_empty() {
            Ok(Outcome::default())
        } else {
            let shape = (self.args.jobs(), self.args.threads_per_run);
            let finished = AtomicUsize::new(0);
            let on_done = |f: run::Finished| self.record(f, &todo, &finished);
            let rows = run::SweepData {
                all: &data.all,
                val: data.val.as_ref(),
            };
            run::run_all(&todo, rows, data.seconds, shape, stop, &on_done)
        };
        self.finish(outcome, todo.len(), started.elapsed().as_secs_f64())
    }

    /// The runs not in the results yet. Every key already there (ok or
    /// failed: a failure is deterministic too) is not run again.
    fn todo(&self) -> Result<Vec<&RunSpec>> {
        let done: HashSet<String> = read_results(&self.paths.results)?
            .iter()
            .filter(|r| r.status() == OK || r.status() == FAILED)
            .map(RunResult::key)
            .collect();
        Ok(self
            .specs
            .iter()
            .filter(|s| !done.contains(&s.key))
            .collect())
    }

    fn announce(&self, todo: &[&RunSpec], data: &Loaded) {
        let total = self.specs.len();
        let repeated = match self.proposed - total {
            0 => String::new(),
            n => format!(" ({} repeated dropped)", thousands(n)),
        };
        self.args.say(format!(
            "sweep: {}{repeated}; {} already in {} (skipped), {} to run on {} x {}",
            plural(total, "configuration"),
            thousands(total - todo.len()),
            self.paths.results.display(),
            thousands(todo.len()),
            plural(self.args.jobs().min(todo.len().max(1)), "worker"),
            plural(self.args.threads_per_run, "thread")
        ));
        let source = &self.specs[0].plan.source;
        self.args.say(format!(
            "data: {} ({}, loaded once in {:.2} s)",
            source.describe(),
            plural(data.all.len(), "labeled row"),
            data.seconds
        ));
        if let (Some(path), Some(val)) = (&self.specs[0].plan.val_data, &data.val) {
            self.args.say(format!(
                "val data: {} ({} labeled rows, held out)",
                path.display(),
                val.len()
            ));
        }
    }

    /// Write one finished run (its model, then its lines) and say so.
    fn record(
        &self,
        mut f: run::Finished,
        todo: &[&RunSpec],
        finished: &AtomicUsize,
    ) -> Result<(), SweepError> {
        let spec = todo[f.index];
        if let (Some(dir), Some(model)) = (&self.args.save_models, &f.model) {
            let path = sweep::run_file(dir, &spec.key, "npz");
            model
                .save_npz(&path)
                .map_err(|e| SweepError::file(&path, e.reason()))?;
            f.result.set("model", path.display().to_string().into());
        }
        self.paths.append(&f.result, &f.curve)?;
        let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
        let r = &f.result;
        let train = r.num("train_accuracy").unwrap_or(f64::NAN);
        let what = match r.num("heldout_accuracy") {
            _ if !r.is_ok() => format!("FAILED: {}", r.text("error")),
            Some(held) => format!(
                "held-out {held:.4} (train {train:.4}), best epoch {}",
                r.text("best_epoch"),
            ),
            None => format!("train {train:.4}, no held-out rows"),
        };
        self.args.say(format!(
            "[{n}/{}] {} {}: {what}  [{:.1} s]",
            todo.len(),
            spec.key,
            spec.label(&self.swept),
            r.num("seconds").unwrap_or(0.0)
        ));
        Ok(())
    }

    /// The summary, then success, the signal's exit or the write error.
    fn finish(&self, outcome: Result<Outcome, SweepError>, todo: usize, wall: f64) -> Result<()> {
        let keys: Vec<String> = self.specs.iter().map(|s| s.key.clone()).collect();
        let report = |plot: bool| report(self.args, &self.paths, &self.plot_path, &keys, plot);
        match outcome {
            Err(e) => {
                // One error line: the summary is best effort, without the
                // plot (the disk may be full).
                let _ = report(false);
                bail!("{e}; the sweep stopped: run the same command again to run the rest")
            }
            Ok(o) if o.stopped => {
                report(true)?;
                Err(signals::Interrupted(format!(
                    "interrupted: {} of {} finished and recorded, {} stopped unfinished (not recorded); \
                     run the same command again to run the rest",
                    thousands(o.finished),
                    plural(todo, "run"),
                    thousands(o.unrecorded)
                ))
                .into())
            }
            Ok(_) => {
                report(true)?;
                outln!(
                    "sweep wall time: {wall:.1} s for {} (data loaded once)",
                    plural(todo, "run")
                );
                Ok(())
            }
        }
    }
}

/// Summary table, seed statistics and (if `plot` and not `--no-plot`) the
/// plot over the rows of `keys`.
fn report(
    args: &SweepArgs,
    paths: &ResultPaths,
    plot_path: &Path,
    keys: &[String],
    plot: bool,
) -> Result<()> {
    let wanted: HashSet<&String> = keys.iter().collect();
    // The last row of each key (a key appears once unless files were merged by hand).
    let mut by_key: HashMap<String, RunResult> = HashMap::new();
    for r in read_results(&paths.results)? {
        if wanted.contains(&r.key()) {
            by_key.insert(r.key(), r);
        }
    }
    let rows: Vec<RunResult> = keys.iter().filter_map(|k| by_key.remove(k)).collect();
    let swept = summary::swept_params(&rows);
    let ok = rows.iter().filter(|r| r.is_ok()).count();
    outln!(
        "\n{} in this sweep: {} ok, {} failed; results: {}, {}, {}",
        plural(rows.len(), "run"),
        thousands(ok),
        thousands(rows.len() - ok),
        paths.results.display(),
        paths.json_lines.display(),
        paths.curves.display()
    );
    if rows.len() < keys.len() {
        outln!(
            "{} of this sweep not recorded yet",
            plural(keys.len() - rows.len(), "run")
        );
    }
    for r in rows.iter().filter(|r| !r.is_ok()) {
        outln!("  failed {}: {}", r.key(), r.text("error"));
    }
    if ok > 0 {
        let by = if rows.iter().any(|r| r.num("heldout_accuracy").is_some()) {
            "held-out accuracy"
        } else {
            "train accuracy (no held-out rows: pass --val-data FILE to score them)"
        };
        outln!("\nbest {} by {by}:", plural(args.top.min(ok), "run"));
        outln!("{}", summary::top_table(&rows, &swept, args.top).trim_end());
        let groups = summary::seed_groups(&rows, &swept);
        if groups.iter().any(|g| g.runs > 1) {
            outln!("\nheld-out accuracy over seeds, per configuration:");
            outln!("{}", summary::seed_table(&groups).trim_end());
        }
    }
    if plot && !args.no_plot && !rows.is_empty() {
        let curves = read_curves(&paths.curves)?;
        plot::plot_sweep(plot_path, &rows, &swept, &curves, "mnist-blas sweep")?;
        outln!("plot: {}", plot_path.display());
    }
    Ok(())
}

/// `--emit`: the plan and the commands file in OUT-DIR, then the commands
/// on stdout or the SLURM script.
fn emit(args: &SweepArgs, kind: Emit, specs: &[RunSpec]) -> Result<()> {
    let dir = &args.out_dir;
    let lines: Vec<String> = specs
        .iter()
        .map(|s| sweep::command_line(&args.bin, s, dir, args.threads_per_run))
        .collect();
    let script = match kind {
        Emit::Commands => None,
        Emit::Slurm => {
            for l in &lines {
                slurm::check_command(l)?;
            }
            let workdir = std::env::current_dir().context("the current directory")?;
            // Checked before anything is written.
            let text = slurm::script(&slurm::ArrayScript {
                tasks: specs.len(),
                max_parallel: args.max_parallel,
                cpus_per_task: args.threads_per_run,
                workdir: &workdir,
                dir: &workdir.join(dir),
                options: &args.sbatch,
            })?;
            Some(text)
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    sweep::collect::write_plan(dir, specs)?;
    let commands = dir.join(slurm::COMMANDS_FILE);
    write_atomic(&commands, |w| {
        lines.iter().try_for_each(|l| writeln!(w, "{l}"))
    })?;
    let Some(script) = script else {
        for l in &lines {
            outln!("{l}");
        }
        eprintln!(
            "{}; each writes {}/run-KEY.json; then: mnist-blas sweep --collect {}",
            plural(specs.len(), "command"),
            dir.display(),
            dir.display()
        );
        return Ok(());
    };
    let logs = dir.join(slurm::LOGS_DIR);
    std::fs::create_dir_all(&logs).with_context(|| format!("{}: cannot create", logs.display()))?;
    let path = dir.join(slurm::SCRIPT_FILE);
    write_atomic(&path, |w| w.write_all(script.as_bytes()))?;
    args.say(format!(
        "wrote {}: a job array of {}, {} at a time, {} each; task N runs line N+1 of {}",
        path.display(),
        plural(specs.len(), "task"),
        args.max_parallel.min(specs.len()),
        plural(args.threads_per_run, "CPU"),
        commands.display()
    ));
    args.say(format!(
        "submit: sbatch {}",
        sweep::shell_quote(&path.display().to_string())
    ));
    args.say(format!(
        "then:   mnist-blas sweep --collect {}",
        sweep::shell_quote(&dir.display().to_string())
    ));
    Ok(())
}

fn collect(args: &SweepArgs, dir: &Path, paths: &ResultPaths, plot_path: &Path) -> Result<()> {
    let found = sweep::collect::collect(dir)?;
    let Some((first, _)) = found.first() else {
        bail!(
            "{}: the plan lists no runs",
            dir.join(sweep::collect::PLAN_FILE).display()
        );
    };
    for note in repair(paths)? {
        eprintln!("warning: {note}");
    }
    let mut header = first.header();
    // Rows carry the sweep's column set; a collected row says command=train.
    header.dedup();
    paths.check_header(&header)?;
    let done: HashSet<String> = read_results(&paths.results)?
        .iter()
        .map(RunResult::key)
        .collect();
    let (mut added, mut pending) = (0, 0);
    for (_, got) in &found {
        match got {
            Some(c) if !done.contains(&c.row.key()) => {
                paths.append(&c.row, &c.records)?;
                added += 1;
            }
            Some(_) => {}
            None => pending += 1,
        }
    }
    if !args.quiet {
        outln!(
            "collected {} from {} into {}; {} already there; {} not finished yet",
            plural(added, "new run"),
            dir.display(),
            paths.results.display(),
            thousands(found.len() - added - pending),
            thousands(pending)
        );
    }
    let keys: Vec<String> = found.iter().map(|(p, _)| p.key()).collect();
    report(args, paths, plot_path, &keys, true)
}

/// A flag's value as `train` reads it back (`notebook`, `sparse`).
fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}
