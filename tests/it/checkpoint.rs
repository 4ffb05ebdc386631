//! Checkpoints and resume: a run stopped anywhere (by an observer, SIGINT or
//! SIGKILL) and continued from its last checkpoint ends with exactly the
//! weights of a run that never stopped, bit for bit.

use crate::common::{after_sample_warning, bin, bits, model_bits, tree};
use crate::testutil::random_dataset;
use mnist_blas::data::Dataset;
use mnist_blas::engine::EngineKind;
use mnist_blas::model::{Init, Layers, Mlp};
use mnist_blas::optim::OptimizerKind;
use mnist_blas::train::checkpoint::{self, Checkpoint, RunIdentity};
use mnist_blas::train::{
    self, Control, LrSchedule, Observer, Schedule, StepView, TrainConfig, TrainState,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn config(optimizer: OptimizerKind, schedule: Schedule) -> TrainConfig {
    TrainConfig {
        layers: Layers::one(12),
        weight_decay: 0.0,
        init: Init::He,
        optimizer,
        lr: if optimizer == OptimizerKind::Adam {
            0.01
        } else {
            0.1
        },
        lr_schedule: LrSchedule::Cosine,
        momentum: 0.9,
        schedule,
        seed: 5,
        engine: EngineKind::Blas,
        log_every: 3,
        early_stop: None,
        augment: None,
    }
}

/// Stops training once `at` steps are done, keeping the state there.
struct StopAt {
    at: usize,
    state: Option<TrainState>,
}

impl Observer for StopAt {
    fn after_step(&mut self, state: &mut StepView) -> Control {
        if state.position().steps == self.at {
            self.state = Some(state.state().clone());
            return Control::Stop;
        }
        Control::Continue
    }
}

/// Stops after `at` steps without looking at the state.
struct StopBlind {
    at: usize,
}

impl Observer for StopBlind {
    fn after_step(&mut self, state: &mut StepView) -> Control {
        if state.position().steps == self.at {
            return Control::Stop;
        }
        Control::Continue
    }
}

/// Train to the end, and again stopped after `stop_at` steps, saved to a
/// checkpoint file, loaded, and continued; the two must agree bit for bit.
fn resume_matches_uninterrupted(cfg: &TrainConfig, data: &Dataset, stop_at: usize) {
    let full = train::train(cfg, data, None, &mut train::Silent).unwrap();

    let mut stop = StopAt {
        at: stop_at,
        state: None,
    };
    let first = train::train(cfg, data, None, &mut stop).unwrap();
    assert!(first.stopped, "stopped after step {stop_at}");
    let state = stop.state.expect("stopped");
    assert_ne!(bits(&state.model), bits(&full.model), "stopped early");
    assert_eq!(
        bits(&first.model),
        bits(&state.model),
        "a stopped run returns the model it stopped with"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt.npz");
    let identity = RunIdentity::of(0.8, data);
    checkpoint::save(&path, cfg, None, &identity, &state).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.steps(), stop_at);
    ckpt.check_matches(cfg, &identity).unwrap();
    let loaded = ckpt.into_state(cfg).unwrap();
    assert_eq!(loaded.position, state.position);
    assert_eq!(bits(&loaded.optimizer.m), bits(&state.optimizer.m));
    assert_eq!(bits(&loaded.optimizer.v), bits(&state.optimizer.v));

    let resumed = train::train_from(cfg, loaded, data, None, &mut train::Silent).unwrap();
    assert!(!resumed.stopped);
    assert_eq!(resumed.steps, full.steps);
    assert!(
        bits(&resumed.model) == bits(&full.model),
        "resumed after step {stop_at}: weights differ from the uninterrupted run"
    );
    let losses = |rs: &[train::Record]| -> Vec<(usize, u64, u64)> {
        rs.iter()
            .map(|r| (r.step, r.train_loss.to_bits(), r.train_accuracy.to_bits()))
            .collect()
    };
    assert_eq!(losses(&resumed.records), losses(&full.records));
}

#[test]
fn minibatch_adam_resumes_bit_identically_mid_epoch_and_at_a_boundary() {
    // 300 rows, batch 64: 5 batches per epoch (the last one short), 3 epochs.
    let data = random_dataset(300, 1);
    let cfg = config(
        OptimizerKind::Adam,
        Schedule::MiniBatch {
            epochs: 3,
            batch_size: 64,
        },
    );
    for stop_at in [1, 5, 7, 14] {
        resume_matches_uninterrupted(&cfg, &data, stop_at);
    }
}

/// The sparse engine keeps the model in its own layout between steps (and,
/// at batches of up to 256 rows, applies each update at the start of the
/// next step, half of it on a helper thread): a stop must still save
/// exactly the state an uninterrupted run passes through.
#[test]
fn sparse_minibatch_resumes_bit_identically_with_either_trainer() {
    let data = random_dataset(300, 4);
    // One hidden layer of 12 (the one-layer trainers), then the deep path's
    // resident trainer at batch 32: a first layer in two pieces (400), and a
    // deeper network (24-12); at 280 rows these take the generic path.
    let cases = [(32, &[1, 9, 10, 23][..]), (280, &[1, 2, 5][..])]
        .into_iter()
        .flat_map(|c| ["12", "400", "24-12"].map(|l| (Layers::parse(l).unwrap(), c)));
    for (layers, (batch_size, stops)) in cases {
        let mut cfg = config(
            OptimizerKind::Adam,
            Schedule::MiniBatch {
                epochs: 3,
                batch_size,
            },
        );
        cfg.engine = EngineKind::Sparse;
        cfg.layers = layers;
        for &stop_at in stops {
            resume_matches_uninterrupted(&cfg, &data, stop_at);
            // An observer that stops without asking for the state still gets
            // the model as of its stop back (the trainer's pending update
            // applied), as one that asked for it saw.
            let mut blind = StopBlind { at: stop_at };
            let stopped = train::train(&cfg, &data, None, &mut blind).unwrap();
            let mut seen = StopAt {
                at: stop_at,
                state: None,
            };
            train::train(&cfg, &data, None, &mut seen).unwrap();
            assert!(stopped.stopped);
            assert_eq!(
                bits(&stopped.model),
                bits(&seen.state.unwrap().model),
                "layers {}, batch {batch_size}, stopped after step {stop_at}",
                cfg.layers
            );
        }
    }
}

#[test]
fn fullbatch_sgd_and_momentum_resume_bit_identically() {
    let data = random_dataset(300, 2);
    for optimizer in [OptimizerKind::Sgd, OptimizerKind::Momentum] {
        let cfg = config(optimizer, Schedule::FullBatch { iterations: 9 });
        for stop_at in [1, 4, 8] {
            resume_matches_uninterrupted(&cfg, &data, stop_at);
        }
    }
}

#[test]
fn checkpoint_of_another_run_is_refused_naming_the_difference() {
    let data = random_dataset(200, 3);
    let cfg = config(
        OptimizerKind::Adam,
        Schedule::MiniBatch {
            epochs: 2,
            batch_size: 50,
        },
    );
    let mut stop = StopAt { at: 2, state: None };
    train::train(&cfg, &data, None, &mut stop).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.npz");
    let identity = RunIdentity::of(0.8, &data);
    checkpoint::save(&path, &cfg, None, &identity, &stop.state.unwrap()).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();

    let mut other = cfg.clone();
    other.lr = 0.02;
    let err = ckpt
        .check_matches(&other, &identity)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.npz") && err.contains("--lr 0.01") && err.contains("--lr 0.02"),
        "{err}"
    );
    let mut other = cfg.clone();
    other.schedule = Schedule::MiniBatch {
        epochs: 2,
        batch_size: 32,
    };
    let err = ckpt
        .check_matches(&other, &identity)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--batch-size 50") && err.contains("32"),
        "{err}"
    );
    let err = ckpt
        .check_matches(&cfg, &RunIdentity::of(0.8, &random_dataset(200, 4)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("other training data"), "{err}");
    let err = ckpt
        .check_matches(&cfg, &RunIdentity::of(0.7, &data))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--split 0.8") && err.contains("0.7"), "{err}");

    // A model file is not a checkpoint, and says so.
    let model = dir.path().join("model.npz");
    Mlp::init(&Layers::one(12), Init::He, 0)
        .unwrap()
        .save_npz(&model)
        .unwrap();
    let err = Checkpoint::load(&model).unwrap_err().to_string();
    assert!(err.contains("not a checkpoint"), "{err}");
}

/// A checkpoint whose optimizer state or shuffle position was altered is
/// refused by name, not resumed into a run that is no longer bit-identical
/// (nor reported later as divergence).
#[test]
fn tampered_checkpoint_state_is_refused() {
    let data = random_dataset(200, 3);
    let cfg = config(
        OptimizerKind::Adam,
        Schedule::MiniBatch {
            epochs: 3,
            batch_size: 50,
        },
    );
    // Stopped after the first epoch (4 steps), at an epoch boundary.
    let mut stop = StopAt { at: 4, state: None };
    train::train(&cfg, &data, None, &mut stop).unwrap();
    let state = stop.state.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let identity = RunIdentity::of(0.8, &data);
    let refused = |tamper: &dyn Fn(&mut TrainState)| -> String {
        let mut s = state.clone();
        tamper(&mut s);
        let path = dir.path().join("t.npz");
        checkpoint::save(&path, &cfg, None, &identity, &s).unwrap();
        match Checkpoint::load(&path) {
            Ok(ckpt) => ckpt.check_matches(&cfg, &identity).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    };
    // The untouched state is accepted.
    let path = dir.path().join("ok.npz");
    checkpoint::save(&path, &cfg, None, &identity, &state).unwrap();
    Checkpoint::load(&path)
        .unwrap()
        .check_matches(&cfg, &identity)
        .unwrap();

    let err = refused(&|s| s.optimizer.v.layers[0].w[[0, 0]] = -1e-3);
    assert!(
        err.contains("second moment") && err.contains("negative"),
        "{err}"
    );
    let err = refused(&|s| s.optimizer.v.layers[1].b[3] = f32::NAN);
    assert!(err.contains("second moment"), "{err}");
    let err = refused(&|s| s.optimizer.m.layers[1].w[[1, 1]] = f32::INFINITY);
    assert!(err.contains("first moment"), "{err}");
    let err = refused(&|s| s.model.layers[0].b[0] = f32::NAN);
    assert!(err.contains("NaN or infinite weights"), "{err}");
    let err = refused(&|s| s.position.shuffle_word_pos += 16);
    assert!(
        err.contains("shuffle position") && err.contains("altered"),
        "{err}"
    );
}

// ------------------------------------------------------------ the binary --

/// Long enough on the built-in sample (4,800 training rows) that there is
/// time to kill it between checkpoints; small enough to run twice in a test.
const RUN: &[&str] = &[
    "train",
    "--epochs",
    "30",
    "--hidden",
    "64",
    "--batch-size",
    "32",
    "--seed",
    "4",
    "--quiet",
    "--model",
    "model.npz",
    "--metrics",
    "metrics.csv",
];

fn spawn(dir: &Path, extra: &[&str]) -> Child {
    bin()
        .current_dir(dir)
        .args(RUN)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs")
}

/// The model of the uninterrupted run (computed once for all tests here).
fn reference_model() -> &'static (Mlp, Vec<u8>) {
    static REFERENCE: OnceLock<(Mlp, Vec<u8>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let o = run(dir.path(), RUN);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let path = dir.path().join("model.npz");
        (Mlp::load_npz(&path).unwrap(), std::fs::read(&path).unwrap())
    })
}

/// Waits until `path` holds a checkpoint with at least `epochs` epochs done
/// (checkpoints are renamed into place, so any file there is complete).
fn wait_for_checkpoint(child: &mut Child, path: &Path, epochs: usize) -> Checkpoint {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before a checkpoint with {epochs} epochs appeared");
        }
        if path.exists() {
            let ckpt = Checkpoint::load(path).expect("a checkpoint on disk is always whole");
            if ckpt.completed() >= epochs {
                return ckpt;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigkill_mid_run_leaves_an_intact_checkpoint_and_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_path = dir.path().join("model.ckpt.npz");
    let mut child = spawn(dir.path(), &["--checkpoint-every", "1"]);
    wait_for_checkpoint(&mut child, &ckpt_path, 2);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed: {status}");

    // Whatever instant the kill hit, the checkpoint is a whole one (maybe
    // a later epoch than we saw), and no model file was started.
    let ckpt = Checkpoint::load(&ckpt_path).expect("intact after SIGKILL");
    assert!(
        (2..30).contains(&ckpt.completed()),
        "{} epochs",
        ckpt.completed()
    );
    assert!(!dir.path().join("model.npz").exists());
    // The metrics file is written as the run goes: whole rows only.
    let metrics = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert!(
        metrics.starts_with("step,train_loss,") && metrics.ends_with('\n'),
        "{metrics}"
    );
    for (i, row) in metrics.lines().skip(1).enumerate() {
        assert!(
            row.starts_with(&format!("{},", i + 1)) && row.split(',').count() == 6,
            "{metrics}"
        );
    }
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &ckpt_path && p != &dir.path().join("metrics.csv"))
        .collect();
    // A temp file may remain if the kill hit mid-write; it is never the checkpoint.
    assert!(
        leftovers
            .iter()
            .all(|p| p.file_name().unwrap().to_string_lossy().ends_with(".tmp")),
        "{leftovers:?}"
    );

    let mut args = RUN.to_vec();
    args.extend(["--checkpoint-every", "1", "--resume", "model.ckpt.npz"]);
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (reference, reference_bytes) = reference_model();
    let resumed = model_bits(&dir.path().join("model.npz"));
    assert!(
        resumed == bits(reference),
        "resumed weights differ from the uninterrupted run"
    );
    // The model files differ at most in zip timestamps; report, don't require.
    let bytes = std::fs::read(dir.path().join("model.npz")).unwrap();
    eprintln!(
        "model.npz bytes identical to the uninterrupted run: {}",
        &bytes == reference_bytes
    );
}

/// SIGTERM (what `timeout`, SLURM and systemd send) is handled like
/// Ctrl-C: the step finishes, a checkpoint is written, exit 143.
#[test]
fn sigterm_writes_a_checkpoint_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_path = dir.path().join("model.ckpt.npz");
    let mut child = spawn(dir.path(), &["--checkpoint-every", "1"]);
    wait_for_checkpoint(&mut child, &ckpt_path, 1);
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let o = child.wait_with_output().unwrap();
    let err = after_sample_warning(&o);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: interrupted ") && err.contains("--resume model.ckpt.npz"),
        "{err}"
    );
    let ckpt = Checkpoint::load(&ckpt_path).unwrap();
    assert!(ckpt.completed() >= 1);
    assert!(!dir.path().join("model.npz").exists());
}

#[test]
fn sigint_writes_a_checkpoint_exits_130_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.npz"), b"the previous model").unwrap();
    let ckpt_path = dir.path().join("model.ckpt.npz");
    let mut child = spawn(dir.path(), &["--checkpoint-every", "1"]);
    wait_for_checkpoint(&mut child, &ckpt_path, 1);
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let o = child.wait_with_output().unwrap();
    let err = after_sample_warning(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: interrupted "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("model.npz")).unwrap(),
        b"the previous model",
        "an interrupted run leaves the old model alone"
    );

    // Run exactly the command the message suggests.
    let suggested = err
        .trim_end()
        .split_once("resume with: mnist-blas ")
        .map(|(_, cmd)| cmd.to_string())
        .unwrap_or_else(|| panic!("no resume command in: {err}"));
    assert!(
        suggested.ends_with("--resume model.ckpt.npz"),
        "{suggested}"
    );
    let args: Vec<&str> = suggested.split_whitespace().collect();
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (reference, _) = reference_model();
    assert!(
        model_bits(&dir.path().join("model.npz")) == bits(reference),
        "resumed after SIGINT: weights differ from the uninterrupted run"
    );
}

/// A checkpoint of a `--layers 16-8` run resumed with other layers (or
/// with `--hidden`, which means one hidden layer) is refused in one line
/// naming `--layers` and both values; nothing is written: the run folder
/// the checkpoint is in stays as it was, and no other is made.
#[test]
fn resuming_with_other_layers_is_refused_naming_layers() {
    let dir = tempfile::tempdir().unwrap();
    let first = &[
        "train",
        "--layers",
        "16-8",
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--seed",
        "3",
        "--quiet",
        "--name",
        "first",
    ];
    let o = run(dir.path(), first);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt_path = dir.path().join("runs/first/checkpoint.npz");
    let ckpt = Checkpoint::load(&ckpt_path).unwrap();
    assert_eq!(ckpt.model().shape(), Layers::parse("16-8").unwrap());
    let before = tree(dir.path());

    for (flags, now) in [
        (&["--layers", "16-4"][..], "--layers 16-4"),
        (&["--layers", "16-8-4"][..], "--layers 16-8-4"),
        (&["--hidden", "16"][..], "--layers 16"),
    ] {
        let mut args = vec![
            "train",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--quiet",
            "--resume",
            "runs/first/checkpoint.npz",
        ];
        args.extend(flags);
        let o = run(dir.path(), &args);
        let err = after_sample_warning(&o);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert!(
            err.starts_with("error: ")
                && err.contains("runs/first/checkpoint.npz")
                && err.contains("--layers 16-8,")
                && err.contains(&format!("this run has {now};")),
            "{flags:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // The checkpoint, model, metrics, config.toml, report and `latest`.
        assert!(tree(dir.path()) == before, "{flags:?} changed files");
    }

    // The same layers resume (the run is already complete: nothing to add
    // but the end).
    let mut args = first.to_vec();
    args.extend(["--resume", "runs/first/checkpoint.npz"]);
    let o = run(dir.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
