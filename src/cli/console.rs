//! Standard output that survives a closed pipe. Rust ignores SIGPIPE, so a
//! write to a pipe whose reader has gone fails with EPIPE; `println!` would
//! panic. Here the first failure silences stdout for the rest of the
//! process, and the work (training, writing files) goes on.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static GONE: AtomicBool = AtomicBool::new(false);

/// Print one line on stdout, unless stdout is gone.
pub fn line(args: std::fmt::Arguments) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|_| out.flush()).is_err() {
        GONE.store(true, Ordering::Relaxed);
    }
}
