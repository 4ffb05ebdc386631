//! Checkpoints: a training run saved mid-way so it can be continued, with a
//! result bit-identical to a run that never stopped.
//!
//! A checkpoint is an `.npz` (written atomically, like every output):
//! - `w1`, `b1`, ..., `wL`, `bL`: the model, in the model file's names and
//!   shapes (so `predict --model model.ckpt.npz` works on it too);
//! - `m_w1` ... `m_bL` and `v_w1` ... `v_bL`: the optimizer's moments (only
//!   those the optimizer has: none for SGD, `m` for momentum, both for Adam);
//! - `best_w1` ... `best_bL`: with `--early-stop`, the weights of the record
//!   with the lowest held-out loss so far (once there is one);
//! - `state`: UTF-8 JSON bytes with the position in the run (steps, epoch,
//!   batch in the epoch, shuffle stream word position), the optimizer's step
//!   count, the records so far, early stopping's best record (step, and
//!   held-out loss as bits), and what the run was: its [`TrainConfig`],
//!   its `--split` and a fingerprint of its training rows (and of its
//!   `--val-data` rows), so a checkpoint is never continued with other
//!   settings or other data.
//!
//! Floats that decide anything are stored as raw bits (arrays in `.npz` are
//! exact; JSON holds only integers and the records, which are for display).

use crate::data::Dataset;
use crate::engine::BatchStats;
use crate::model::{Dense, Mlp, ModelError};
use crate::npz::{show_shape, ArrayInfo, Dtype, Npz, NpzError};
use crate::optim::OptimizerKind;
use crate::output::WriteError;
use crate::rng::{SeededRng, Stream};
use crate::train::config::RunConfig;
use crate::train::{
    Best, Control, Observer, Position, Record, Schedule, StepView, TrainConfig, TrainState,
};
use ndarray::{Array1, Array2, Ix1, Ix2};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bumped when the layout changes; older files are refused by name.
pub const FORMAT: u32 = 3;

/// The default checkpoint path for a model path: `model.npz` ->
/// `model.ckpt.npz`.
pub fn default_path(model: &Path) -> PathBuf {
    model.with_extension("ckpt.npz")
}

/// What a run trains on besides its [`TrainConfig`]: two runs with equal
/// configs and equal identities take the same steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// `--split` (the training fraction).
    pub split: f64,
    /// Training rows (after the split).
    pub rows: usize,
    /// CRC-32 of the training pixels, then of the labels.
    pub pixels_crc32: u32,
    pub labels_crc32: u32,
    /// With `--val-data`, the held-out rows' fingerprint: they decide the
    /// records and early stopping. None for rows held out by `--split`
    /// (they follow from the data, the split and the seed) and in
    /// checkpoints written before `--val-data` existed.
    #[serde(default)]
    pub val_data: Option<RowsIdentity>,
}

/// A set of rows: its size and the CRC-32 of its pixels, then its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsIdentity {
    pub rows: usize,
    pub pixels_crc32: u32,
    pub labels_crc32: u32,
}

impl RowsIdentity {
    pub fn of(data: &Dataset) -> RowsIdentity {
        RowsIdentity {
            rows: data.len(),
            pixels_crc32: crc32fast::hash(&data.pixels),
            labels_crc32: crc32fast::hash(data.labels.as_deref().unwrap_or(&[])),
        }
    }
}

impl RunIdentity {
    pub fn of(split: f64, train: &Dataset) -> RunIdentity {
        let rows = RowsIdentity::of(train);
        RunIdentity {
            split,
            rows: rows.rows,
            pixels_crc32: rows.pixels_crc32,
            labels_crc32: rows.labels_crc32,
            val_data: None,
        }
    }

    /// The identity of a run that holds out `val` (its `--val-data` rows).
    pub fn with_val_data(self, val: Option<&Dataset>) -> RunIdentity {
        RunIdentity {
            val_data: val.map(RowsIdentity::of),
            ..self
        }
    }
}

/// A checkpoint that cannot be read or does not belong to this run.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct CheckpointError {
    pub path: PathBuf,
    pub problem: String,
}

impl CheckpointError {
    fn new(path: &Path, problem: impl Into<String>) -> Self {
        CheckpointError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl From<ModelError> for CheckpointError {
    fn from(e: ModelError) -> Self {
        CheckpointError {
            path: e.path,
            problem: e.problem,
        }
    }
}

/// The JSON part.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: u32,
    config: serde_json::Value,
    /// The run's settings as flags (`--resume CKPT` alone replays them);
    /// absent from checkpoints written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<RunConfig>,
    identity: RunIdentity,
    optimizer: OptimizerKind,
    optimizer_steps: u64,
    steps: usize,
    completed: usize,
    batch_in_epoch: usize,
    /// Decimal: JSON numbers do not reliably hold 128 bits.
    shuffle_word_pos: String,
    seen_loss_sum_bits: u64,
    seen_correct: usize,
    seen_rows: usize,
    records: Vec<Record>,
    seconds: f64,
    /// Early stopping's best record (its weights are the `best_` arrays).
    best_step: Option<usize>,
    best_loss_bits: Option<u64>,
}

/// A checkpoint as read from disk; [`Checkpoint::into_state`] turns it into
/// a [`TrainState`] once it is known to match the run.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    meta: Meta,
    model: Mlp,
    m: Option<Mlp>,
    v: Option<Mlp>,
    best: Option<Mlp>,
}

/// Save `state` of the run (`cfg`, `identity`) to `path`, under
/// [`crate::output`]'s policy.
pub fn save(
    path: &Path,
    cfg: &TrainConfig,
    settings: Option<&RunConfig>,
    identity: &RunIdentity,
    state: &TrainState,
) -> Result<(), WriteError> {
    let p = &state.position;
    let meta = Meta {
        format: FORMAT,
        config: serde_json::to_value(cfg).expect("config serialises"),
        settings: settings.cloned(),
        identity: identity.clone(),
        optimizer: state.optimizer.kind,
        optimizer_steps: state.optimizer.t,
        steps: p.steps,
        completed: p.completed,
        batch_in_epoch: p.batch_in_epoch,
        shuffle_word_pos: p.shuffle_word_pos.to_string(),
        seen_loss_sum_bits: p.seen.loss_sum.to_bits(),
        seen_correct: p.seen.correct,
        seen_rows: p.seen.rows,
        records: state.records.clone(),
        seconds: state.seconds,
        best_step: state.best.as_ref().map(|b| b.step),
        best_loss_bits: state.best.as_ref().map(|b| b.loss.to_bits()),
    };
    let json = serde_json::to_vec(&meta).expect("meta serialises");
    let opt = &state.optimizer;
    let mut extra: Vec<(&str, &Mlp)> = match opt.kind {
        OptimizerKind::Sgd => vec![],
        OptimizerKind::Momentum => vec![("m", &opt.m)],
        OptimizerKind::Adam => vec![("m", &opt.m), ("v", &opt.v)],
    };
    if let Some(best) = &state.best {
        extra.push(("best", &best.model));
    }
    // Uncompressed: checkpoints are written often and read rarely.
    crate::output::write_npz(path, false, |npz| {
        state.model.add_to_npz(npz)?;
        for (prefix, g) in extra {
            for (i, layer) in g.layers.iter().enumerate() {
                npz.add_array(format!("{prefix}_w{}", i + 1), &layer.w)?;
                npz.add_array(format!("{prefix}_b{}", i + 1), &layer.b)?;
            }
        }
        npz.add_array("state", &Array1::from(json))?;
        Ok(())
    })
}

impl Checkpoint {
    /// Read a checkpoint written by [`save`].
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let npz = Npz::open(path).map_err(|e| npz_error(path, e))?;
        Checkpoint::from_npz(npz, path)
    }

    /// [`Checkpoint::load`] from any reader; `path` names it in messages.
    pub(crate) fn read<R: Read + Seek>(
        reader: R,
        path: &Path,
    ) -> Result<Checkpoint, CheckpointError> {
        let npz = Npz::new(reader).map_err(|e| npz_error(path, e))?;
        Checkpoint::from_npz(npz, path)
    }

    fn from_npz<R: Read + Seek>(
        mut npz: Npz<R>,
        path: &Path,
    ) -> Result<Checkpoint, CheckpointError> {
        if !npz.contains("state") {
            return Err(CheckpointError::new(
                path,
                "not a checkpoint: no 'state' array (a model file? checkpoints are written by \
                 `train --checkpoint-every N` or Ctrl-C)",
            ));
        }
        let info = npz.info("state").map_err(|e| npz_error(path, e))?;
        if info.dtype != Dtype::U8 || info.shape.len() != 1 {
            return Err(CheckpointError::new(
                path,
                format!(
                    "array 'state': expected a 1-D uint8 array, found {}",
                    info.describe()
                ),
            ));
        }
        let json = npz
            .read_u8(&info, MAX_STATE_BYTES)
            .map_err(|e| npz_error(path, e))?;
        let meta: Meta =
            serde_json::from_slice(json.as_slice().unwrap_or_default()).map_err(|e| {
                CheckpointError::new(path, format!("array 'state': bad JSON: {}", cut(&e)))
            })?;
        if meta.format != FORMAT {
            return Err(CheckpointError::new(
                path,
                format!(
                    "checkpoint format {} (this program reads format {FORMAT})",
                    meta.format
                ),
            ));
        }
        let model = Mlp::from_npz(&mut npz, path)?;
        let mut moment = |prefix: &str| -> Result<Mlp, CheckpointError> {
            let mut layers = Vec::with_capacity(model.layers.len());
            for (i, layer) in model.layers.iter().enumerate() {
                let n = i + 1;
                layers.push(Dense {
                    w: read2(&mut npz, path, &format!("{prefix}_w{n}"), layer.w.dim())?,
                    b: read1(&mut npz, path, &format!("{prefix}_b{n}"), layer.b.len())?,
                });
            }
            Ok(Mlp { layers })
        };
        let (m, v) = match meta.optimizer {
            OptimizerKind::Sgd => (None, None),
            OptimizerKind::Momentum => (Some(moment("m")?), None),
            OptimizerKind::Adam => (Some(moment("m")?), Some(moment("v")?)),
        };
        let best = match (meta.best_step, meta.best_loss_bits) {
            (None, None) => None,
            (Some(_), Some(_)) => Some(moment("best")?),
            _ => {
                return Err(CheckpointError::new(
                    path,
                    "state: best_step and best_loss_bits must be given together",
                ))
            }
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            meta,
            model,
            m,
            v,
            best,
        })
    }

    /// Optimizer steps taken when the checkpoint was written.
    /// The records (epochs or logged iterations) up to the checkpoint.
    pub fn records(&self) -> &[Record] {
        &self.meta.records
    }

    /// The settings of the run that wrote it, if it kept them.
    pub fn settings(&self) -> Option<&RunConfig> {
        self.meta.settings.as_ref()
    }

    pub fn steps(&self) -> usize {
        self.meta.steps
    }

    /// Epochs (mini-batch) or iterations (full-batch) finished.
    pub fn completed(&self) -> usize {
        self.meta.completed
    }

    /// The model at the checkpoint.
    pub fn model(&self) -> &Mlp {
        &self.model
    }

    /// Refuses, naming the first difference as a flag, a checkpoint written
    /// by a run with other settings or other training rows.
    pub fn check_matches(
        &self,
        cfg: &TrainConfig,
        identity: &RunIdentity,
    ) -> Result<(), CheckpointError> {
        let now = serde_json::to_value(cfg).expect("config serialises");
        if let Some((flag, then, here)) = first_difference(&self.meta.config, &now) {
            return Err(CheckpointError::new(
                &self.path,
                format!(
                    "was written by a run with {flag} {then}, this run has {flag} {here}; \
                     resume with the flags of the run that wrote it"
                ),
            ));
        }
        let was = &self.meta.identity;
        let held = |v: &Option<RowsIdentity>| match v {
            Some(v) => format!(
                "--val-data ({} rows, CRC-32 {:08x})",
                v.rows, v.pixels_crc32
            ),
            None => "no --val-data".into(),
        };
        if was.val_data != identity.val_data {
            return Err(CheckpointError::new(
                &self.path,
                format!(
                    "was written by a run with {}, this run has {}; resume with the same --val-data",
                    held(&was.val_data),
                    held(&identity.val_data)
                ),
            ));
        }
        if was.split != identity.split {
            return Err(CheckpointError::new(
                &self.path,
                format!(
                    "was written by a run with --split {}, this run has --split {}",
                    was.split, identity.split
                ),
            ));
        }
        if was != identity {
            return Err(CheckpointError::new(
                &self.path,
                format!(
                    "was written by a run on other training data ({} rows, CRC-32 {:08x}; \
                     this run: {} rows, CRC-32 {:08x}); resume with the same --data",
                    was.rows, was.pixels_crc32, identity.rows, identity.pixels_crc32
                ),
            ));
        }
        self.check_sound(cfg, identity.rows)
    }

    /// Refuses a state no run could have written: weights or moments that
    /// are not finite, a negative second moment, counts that do not fit,
    /// or a shuffle position other than the one this run's seed reaches
    /// after the epochs done (a resumed run would not be bit-identical).
    fn check_sound(&self, cfg: &TrainConfig, rows: usize) -> Result<(), CheckpointError> {
        let bad = |what: String| Err(CheckpointError::new(&self.path, what));
        let finite = |m: &Mlp| m.params().iter().all(|p| p.iter().all(|v| v.is_finite()));
        if !finite(&self.model) {
            return bad("the weights hold NaN or infinite values".into());
        }
        if self.m.as_ref().is_some_and(|m| !finite(m)) {
            return bad("the optimizer's first moment holds NaN or infinite values".into());
        }
        if let Some(v) = &self.v {
            if !finite(v) || v.params().iter().any(|p| p.iter().any(|&x| x < 0.0)) {
                return bad(
                    "the optimizer's second moment holds negative, NaN or infinite values".into(),
                );
            }
        }
        let meta = &self.meta;
        if let (Some(step), Some(bits), Some(best)) =
            (meta.best_step, meta.best_loss_bits, &self.best)
        {
            if !finite(best) {
                return bad("the best record's weights hold NaN or infinite values".into());
            }
            let loss = f64::from_bits(bits);
            let recorded = meta
                .records
                .iter()
                .any(|r| r.step == step && r.heldout_loss.map(f64::to_bits) == Some(bits));
            if !(loss.is_finite() && loss >= 0.0 && recorded) {
                return bad(format!(
                    "state: the best record (step {step}, held-out loss {loss}) is not one of \
                     the records"
                ));
            }
        }
        let loss = f64::from_bits(meta.seen_loss_sum_bits);
        if !(loss.is_finite() && loss >= 0.0) || meta.seen_correct > meta.seen_rows {
            return bad(format!(
                "state: the unfinished epoch's counts are impossible (loss sum {loss}, {} \
                 correct of {} rows)",
                meta.seen_correct, meta.seen_rows
            ));
        }
        let Ok(pos) = meta.shuffle_word_pos.parse::<u128>() else {
            return bad(format!(
                "state: shuffle_word_pos {:?} is not a number",
                meta.shuffle_word_pos
            ));
        };
        let mut rng = SeededRng::new(cfg.seed, Stream::Shuffle);
        if let Schedule::MiniBatch { epochs, .. } = cfg.schedule {
            for _ in 0..meta.completed.min(epochs) {
                rng.permutation(rows);
            }
        }
        if pos != rng.word_pos() {
            return bad(format!(
                "state: shuffle position {pos} is not where seed {} is after {} epoch(s) \
                 ({}); the file was altered",
                cfg.seed,
                meta.completed,
                rng.word_pos()
            ));
        }
        Ok(())
    }

    /// The training state to continue from, for the run `cfg` (checked with
    /// [`Checkpoint::check_matches`] first).
    pub fn into_state(self, cfg: &TrainConfig) -> Result<TrainState, CheckpointError> {
        let path = self.path.clone();
        let bad = |what: String| CheckpointError::new(&path, what);
        let meta = self.meta;
        let shuffle_word_pos: u128 = meta.shuffle_word_pos.parse().map_err(|_| {
            bad(format!(
                "state: shuffle_word_pos {:?} is not a number",
                meta.shuffle_word_pos
            ))
        })?;
        let mut optimizer = cfg.optimizer();
        if optimizer.kind != meta.optimizer {
            return Err(bad(format!(
                "holds {} optimizer state, the run uses {}",
                meta.optimizer.name(),
                cfg.optimizer.name()
            )));
        }
        optimizer.t = meta.optimizer_steps;
        if let Some(m) = self.m {
            optimizer.m = m;
        }
        if let Some(v) = self.v {
            optimizer.v = v;
        }
        Ok(TrainState {
            model: self.model,
            optimizer,
            position: Position {
                steps: meta.steps,
                completed: meta.completed,
                batch_in_epoch: meta.batch_in_epoch,
                shuffle_word_pos,
                seen: BatchStats {
                    loss_sum: f64::from_bits(meta.seen_loss_sum_bits),
                    correct: meta.seen_correct,
                    rows: meta.seen_rows,
                },
            },
            records: meta.records,
            seconds: meta.seconds,
            best: match (self.best, meta.best_step, meta.best_loss_bits) {
                (Some(model), Some(step), Some(bits)) => Some(Best {
                    step,
                    loss: f64::from_bits(bits),
                    model,
                }),
                _ => None,
            },
        })
    }
}

/// Longest `state` array read: its JSON holds the run's settings and one
/// record per epoch (a few hundred bytes each).
const MAX_STATE_BYTES: usize = 64 << 20;

/// An `.npz` error as a checkpoint error.
fn npz_error(path: &Path, e: NpzError) -> CheckpointError {
    match e {
        NpzError::NotZip(why) => {
            CheckpointError::new(path, format!("not a valid checkpoint (.npz) file: {why}"))
        }
        e => CheckpointError::new(path, e.to_string()),
    }
}

/// A JSON error cut to one short line (it may quote the file).
fn cut(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// A float32 optimizer moment of exactly `shape`.
fn read2<R: Read + Seek>(
    npz: &mut Npz<R>,
    path: &Path,
    name: &str,
    shape: (usize, usize),
) -> Result<Array2<f32>, CheckpointError> {
    let info = moment_info(npz, path, name, &[shape.0, shape.1])?;
    let a = npz
        .read_f32(&info, shape.0 * shape.1)
        .map_err(|e| npz_error(path, e))?;
    Ok(a.into_dimensionality::<Ix2>().expect("2-D, checked"))
}

/// A float32 optimizer moment of `len` values.
fn read1<R: Read + Seek>(
    npz: &mut Npz<R>,
    path: &Path,
    name: &str,
    len: usize,
) -> Result<Array1<f32>, CheckpointError> {
    let info = moment_info(npz, path, name, &[len])?;
    let a = npz.read_f32(&info, len).map_err(|e| npz_error(path, e))?;
    Ok(a.into_dimensionality::<Ix1>().expect("1-D, checked"))
}

/// The header of a moment array, checked: float32 (what [`save`] writes)
/// of exactly `shape`.
fn moment_info<R: Read + Seek>(
    npz: &mut Npz<R>,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<ArrayInfo, CheckpointError> {
    let info = npz.info(name).map_err(|e| npz_error(path, e))?;
    let expected = match shape {
        [n] => format!("({n},)"),
        _ => format!("{shape:?}").replace('[', "(").replace(']', ")"),
    };
    if !matches!(info.dtype, Dtype::F32 { .. }) || info.shape.len() != shape.len() {
        return Err(CheckpointError::new(
            path,
            format!(
                "array '{name}': expected float32 {expected}, found {}",
                info.describe()
            ),
        ));
    }
    if info.shape != shape {
        return Err(CheckpointError::new(
            path,
            format!(
                "array '{name}': expected shape {expected}, found {}",
                show_shape(&info.shape)
            ),
        ));
    }
    Ok(info)
}

/// The first setting that differs between two serialised configs, as
/// (flag, value in `then`, value in `now`).
fn first_difference(
    then: &serde_json::Value,
    now: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (Some(then), Some(now)) = (then.as_object(), now.as_object()) else {
        return (then != now).then(|| ("config".into(), then.to_string(), now.to_string()));
    };
    let mut keys: Vec<&String> = then.keys().chain(now.keys()).collect();
    // The network's shape first: other settings (the engine `auto` picks,
    // the defaults of deeper networks) follow from it.
    keys.sort_by_key(|k| (k.as_str() != "layers", k.as_str()));
    keys.dedup();
    for key in keys {
        let (a, b) = (then.get(key), now.get(key));
        if a == b {
            continue;
        }
        if let (Some(a @ serde_json::Value::Object(_)), Some(b @ serde_json::Value::Object(_))) =
            (a, b)
        {
            if let Some(d) = first_difference(a, b) {
                return Some(d);
            }
            continue;
        }
        let flag = match key.as_str() {
            // `{"schedule": "full-batch"}` vs `"mini-batch"`: --batch-size full or not.
            "schedule" => "--batch-size".to_string(),
            k => format!("--{}", k.replace('_', "-")),
        };
        let show = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => "(unset)".into(),
            // f32 settings (--lr) come back as f64: show them as typed.
            Some(serde_json::Value::Number(n))
                if n.as_f64()
                    .is_some_and(|x| x.fract() != 0.0 && x as f32 as f64 == x) =>
            {
                (n.as_f64().unwrap_or_default() as f32).to_string()
            }
            Some(v) => v.to_string(),
        };
        return Some((flag, show(a), show(b)));
    }
    None
}

/// Wraps the run's observer: writes a checkpoint every `every` epochs
/// (mini-batch) or iterations (full-batch), and when `stop` is raised
/// (Ctrl-C) writes one and stops training after the current step.
pub struct Checkpointer<'a> {
    pub inner: &'a mut dyn Observer,
    pub path: PathBuf,
    pub every: Option<usize>,
    pub config: &'a TrainConfig,
    pub settings: Option<RunConfig>,
    pub identity: RunIdentity,
    pub stop: &'a AtomicBool,
    /// Position of the last checkpoint written.
    pub written: Option<Position>,
    /// Set when training stopped because `stop` was raised.
    pub interrupted: bool,
    /// A checkpoint that could not be written (training stops).
    pub error: Option<WriteError>,
}

impl<'a> Checkpointer<'a> {
    pub fn new(
        inner: &'a mut dyn Observer,
        path: PathBuf,
        every: Option<usize>,
        config: &'a TrainConfig,
        identity: RunIdentity,
        stop: &'a AtomicBool,
    ) -> Self {
        Checkpointer {
            inner,
            path,
            every,
            config,
            settings: None,
            identity,
            stop,
            written: None,
            interrupted: false,
            error: None,
        }
    }
}

impl Observer for Checkpointer<'_> {
    fn on_step(&mut self, done: usize, total: usize, stats: &BatchStats) {
        self.inner.on_step(done, total, stats);
    }

    fn on_record(&mut self, record: &Record) {
        self.inner.on_record(record);
    }

    fn after_step(&mut self, state: &mut StepView) -> Control {
        if self.inner.after_step(state) == Control::Stop {
            return Control::Stop;
        }
        let p = state.position().clone();
        let stop = self.stop.load(Ordering::SeqCst);
        let due = self
            .every
            .is_some_and(|n| p.batch_in_epoch == 0 && p.completed.is_multiple_of(n.max(1)));
        if due || stop {
            if let Err(e) = save(
                &self.path,
                self.config,
                self.settings.as_ref(),
                &self.identity,
                state.state(),
            ) {
                self.error = Some(e);
                return Control::Stop;
            }
            self.written = Some(p);
        }
        if stop {
            self.interrupted = true;
            return Control::Stop;
        }
        Control::Continue
    }
}
