//! With `--features blas`, check that a system OpenBLAS is there before the
//! linker finds out: one clear line saying what to install beats a page of
//! `undefined reference to cblas_sgemm`.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=OPENBLAS_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BLAS").is_none() {
        return;
    }
    if openblas_found() {
        return;
    }
    println!(
        "cargo::error=feature `blas` needs the system OpenBLAS, which was not found: \
         install it with `sudo apt-get install -y libopenblas-dev` (Debian/Ubuntu), \
         or build without `--features blas` for the pure-Rust matmul"
    );
}

fn openblas_found() -> bool {
    let mut dirs: Vec<String> = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/opt/homebrew/opt/openblas/lib",
        "/usr/local/opt/openblas/lib",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for var in ["OPENBLAS_LIB_DIR", "LIBRARY_PATH", "LD_LIBRARY_PATH"] {
        if let Ok(v) = std::env::var(var) {
            dirs.extend(v.split(':').filter(|s| !s.is_empty()).map(String::from));
        }
    }
    let names = ["libopenblas.so", "libopenblas.a", "libopenblas.dylib"];
    if dirs
        .iter()
        .any(|d| names.iter().any(|n| Path::new(d).join(n).exists()))
    {
        return true;
    }
    // Anything else pkg-config knows about (openblas-src asks it too).
    std::process::Command::new("pkg-config")
        .args(["--exists", "openblas"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
