//! `train`'s checkpoint plumbing: `--checkpoint-every N`, `--checkpoint
//! PATH`, `--resume CHECKPOINT`, and Ctrl-C (finish the step, write a
//! checkpoint, exit 130 saying how to resume).

use super::train::TrainArgs;
use crate::checkpoint::{self, Checkpoint, Checkpointer, RunIdentity};
use crate::data::Dataset;
use crate::train::{self, Observer, Schedule, TrainConfig, TrainOutcome, TrainState};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised by the first Ctrl-C; the training loop stops after its step.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT_CODE: u8 = 130;

/// Training stopped by Ctrl-C after writing a checkpoint; `main` exits with
/// [`INTERRUPTED_EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Where checkpoints go: `--checkpoint`, else the file being resumed, else
/// next to the model (`model.ckpt.npz`).
pub fn checkpoint_path(args: &TrainArgs) -> PathBuf {
    args.checkpoint
        .clone()
        .or_else(|| args.resume.clone())
        .unwrap_or_else(|| checkpoint::default_path(&args.model))
}

/// Train (or continue, with `--resume`) `cfg` on `train_set`, writing
/// checkpoints as asked, and stopping cleanly on Ctrl-C.
pub fn train_with_checkpoints(
    args: &TrainArgs,
    cfg: &TrainConfig,
    split: f64,
    train_set: &Dataset,
    heldout: Option<&Dataset>,
    progress: &mut dyn Observer,
    say: &dyn Fn(String),
) -> Result<TrainOutcome> {
    let identity = RunIdentity::of(split, train_set);
    let state = match &args.resume {
        None => TrainState::new(cfg),
        Some(path) => {
            let ckpt = Checkpoint::load(path)?;
            ckpt.check_matches(cfg, &identity)?;
            say(format!(
                "resuming from {}: {} {} done, step {}",
                path.display(),
                ckpt.completed(),
                unit_name(cfg),
                ckpt.steps()
            ));
            ckpt.into_state(cfg)?
        }
    };
    install_ctrl_c();
    let path = checkpoint_path(args);
    let mut observer = Checkpointer::new(
        progress,
        path.clone(),
        args.checkpoint_every,
        cfg,
        identity,
        &INTERRUPT,
    );
    let outcome = train::train_from(cfg, state, train_set, heldout, &mut observer)?;
    if let Some(e) = observer.error.take() {
        return Err(anyhow::Error::new(e).context("writing a checkpoint"));
    }
    if observer.interrupted && outcome.stopped {
        let at = observer
            .written
            .as_ref()
            .map(|p| describe_position(cfg, p.completed, p.batch_in_epoch, train_set.len()))
            .unwrap_or_default();
        return Err(Interrupted(format!(
            "interrupted {at}; wrote {}; resume with: {}",
            path.display(),
            resume_command(&path)
        ))
        .into());
    }
    Ok(outcome)
}

fn unit_name(cfg: &TrainConfig) -> &'static str {
    match cfg.schedule {
        Schedule::FullBatch { .. } => "iterations",
        Schedule::MiniBatch { .. } => "epochs",
    }
}

/// "at epoch 3 (batch 57 of 150)" or "after iteration 41 of 500".
fn describe_position(cfg: &TrainConfig, completed: usize, batch: usize, rows: usize) -> String {
    match cfg.schedule {
        Schedule::FullBatch { iterations } => {
            format!("after iteration {completed} of {iterations}")
        }
        Schedule::MiniBatch { epochs, batch_size } => {
            let batches = rows.div_ceil(batch_size.clamp(1, rows.max(1)));
            if batch == 0 {
                format!("after epoch {completed} of {epochs}")
            } else {
                format!(
                    "at epoch {} of {epochs} (batch {batch} of {batches})",
                    completed + 1
                )
            }
        }
    }
}

/// This process's command line with `--resume PATH` in place of any
/// earlier `--resume`, quoted for a POSIX shell where needed.
fn resume_command(path: &std::path::Path) -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut kept = Vec::with_capacity(args.len() + 2);
    let mut drop_next = false;
    for a in args.drain(..) {
        if drop_next {
            drop_next = false;
        } else if a == "--resume" {
            drop_next = true;
        } else if !a.starts_with("--resume=") {
            kept.push(a);
        }
    }
    if kept.first().is_none_or(|a| a.starts_with('-')) {
        kept.insert(0, "train".into());
    }
    kept.push("--resume".into());
    kept.push(path.display().to_string());
    let quoted: Vec<String> = kept.iter().map(|a| shell_quote(a)).collect();
    format!("mnist-blas {}", quoted.join(" "))
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// First Ctrl-C: finish the step, checkpoint, exit 130. Second: exit now
/// (every file is written atomically, so nothing is left half-written).
fn install_ctrl_c() {
    // Fails only if a handler is already set (a second run in one process):
    // that one raises the same flag.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPT.swap(true, Ordering::SeqCst) {
            eprintln!("error: interrupted again; exiting without a checkpoint");
            std::process::exit(i32::from(INTERRUPTED_EXIT_CODE));
        }
    });
}
