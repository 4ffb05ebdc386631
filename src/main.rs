//! The `mnist-blas` binary: everything is in the library; this only maps a
//! failure to one line on stderr and a non-zero exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match mnist_blas::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {err:#}");
            if err.is::<mnist_blas::cli::Interrupted>() {
                ExitCode::from(mnist_blas::cli::interrupted_exit_code())
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
