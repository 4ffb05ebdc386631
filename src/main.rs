//! The `mnist-blas` binary: everything is in the library; this only maps a
//! failure to one line on stderr and a non-zero exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    match mnist_blas::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {err:#}");
            if err.is::<mnist_blas::cli::Interrupted>() {
                ExitCode::from(mnist_blas::cli::INTERRUPTED_EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Rust ignores SIGPIPE, so `mnist-blas eval ... | head -1` would panic
/// ("failed printing to stdout") when `head` exits. Like any Unix filter,
/// we should just stop quietly: restore the default action. Output files
/// are unaffected (they are never pipes, and are written atomically).
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at start-up, before
    // any thread exists, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
