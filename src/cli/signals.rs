//! Signals: SIGINT (Ctrl-C) and SIGTERM (what `timeout`, SLURM, systemd and
//! Kubernetes send) both ask a run to finish its step, write a checkpoint
//! and exit with [`exit_code`]: 130 after SIGINT, 143 after SIGTERM (128 +
//! the signal, as shells report them). A second signal a second or more
//! after the first exits at once (every file is written atomically, so
//! nothing is left half-written); one sooner is the same signal delivered
//! twice (`timeout` signals the child and then its process group).

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// Raised by the first signal; training stops after its step.
static STOP: AtomicBool = AtomicBool::new(false);
/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// A run stopped by a signal after writing what it could; `main` exits
/// with [`exit_code`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// The exit code for a run stopped by a signal: 128 + the signal.
pub fn exit_code() -> u8 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 128 + SIGINT as u8,
        s => 128 + s as u8,
    }
}

/// Start listening for SIGINT and SIGTERM (once per process); the flag a
/// run polls after each step.
pub fn install() -> &'static AtomicBool {
    static LISTENING: OnceLock<()> = OnceLock::new();
    LISTENING.get_or_init(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
            return;
        };
        std::thread::spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for sig in signals.forever() {
                let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                STOP.store(true, Ordering::SeqCst);
                let at = *first.get_or_insert_with(std::time::Instant::now);
                if at.elapsed() >= std::time::Duration::from_secs(1) {
                    eprintln!("error: interrupted again; exiting without waiting for the step");
                    std::process::exit(i32::from(exit_code()));
                }
            }
        });
    });
    &STOP
}

/// This process's command line with `--resume PATH` in place of any
/// earlier `--resume`, quoted for a POSIX shell where needed.
pub fn resume_command(path: &std::path::Path) -> String {
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
    let quoted: Vec<String> = kept.iter().map(|a| crate::sweep::shell_quote(a)).collect();
    format!("mnist-blas {}", quoted.join(" "))
}
