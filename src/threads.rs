//! OpenBLAS's own thread pool, and keeping it out of rayon's way.
//!
//! We parallelise by sharding each batch across rayon threads; if every
//! `sgemm` inside a shard also spawned OpenBLAS threads, the two pools would
//! oversubscribe the cores (measured 2-8x slower on 2 cores). So with the
//! `blas` feature, OpenBLAS is pinned to one thread before training.

#[cfg(feature = "blas")]
mod ffi {
    use std::os::raw::{c_char, c_int};
    extern "C" {
        pub fn openblas_set_num_threads(n: c_int);
        pub fn openblas_get_num_threads() -> c_int;
        pub fn openblas_get_config() -> *const c_char;
        pub fn openblas_get_corename() -> *const c_char;
        // DYNAMIC_ARCH builds (Debian's): pick the kernel set again.
        pub fn gotoblas_dynamic_init();
        pub fn gotoblas_dynamic_quit();
    }
}

/// OpenBLAS kernel sets older than AVX2 (names as `openblas_get_corename`
/// gives them, lower case).
#[cfg(feature = "blas")]
const PRE_AVX2_KERNELS: &[&str] = &[
    "prescott",
    "core2",
    "penryn",
    "dunnington",
    "nehalem",
    "sandybridge",
    "atom",
    "katmai",
    "coppermine",
    "northwood",
    "banias",
    "opteron",
    "barcelona",
    "bobcat",
    "bulldozer",
    "piledriver",
    "steamroller",
    "excavator",
    "nano",
    "unknown",
];

/// What [`select_openblas_kernel`] did, for the run summary.
static KERNEL_NOTE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Make OpenBLAS's kernels match the CPU (or [`crate::simd::SIMD_ENV`]).
///
/// OpenBLAS picks its kernels from the CPU's family and model numbers, and
/// a CPU it does not know (a new one, or a virtual machine that hides the
/// model) gets its oldest kernels: OpenBLAS 0.3.21 runs Prescott's (SSE3)
/// on an AVX-512 Xeon VM, 2-3x slower. So when the kernel chosen is older
/// than AVX2 but the CPU has AVX2 or AVX-512, or when `MNIST_BLAS_SIMD`
/// asks for a level, the kernel set is chosen again by its name
/// (`SkylakeX`, `Haswell`, `Prescott`), as `OPENBLAS_CORETYPE` would; a
/// user's own `OPENBLAS_CORETYPE` is always left alone.
///
/// Must run before any other thread exists (it sets an environment
/// variable) and before any BLAS call: first thing in `main`. An invalid
/// `MNIST_BLAS_SIMD` is the error.
pub fn select_openblas_kernel() -> Result<(), ThreadsError> {
    let requested = crate::simd::requested().map_err(ThreadsError)?;
    #[cfg(feature = "blas")]
    {
        use crate::simd::Level;
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return Ok(());
        }
        let level = requested.unwrap_or_else(crate::simd::detected);
        let want = match level {
            Level::Avx512 => "SkylakeX",
            Level::Avx2 => "Haswell",
            Level::Baseline => "Prescott",
        };
        let now = openblas_corename();
        let outdated =
            PRE_AVX2_KERNELS.contains(&now.to_ascii_lowercase().as_str()) && level >= Level::Avx2;
        if !(outdated || requested.is_some()) || now.eq_ignore_ascii_case(want) {
            return Ok(());
        }
        // SAFETY: no other thread exists yet (see above), so setting the
        // variable races with no reader; no BLAS call has run, and
        // quit/init only swap OpenBLAS's table of kernel functions.
        unsafe {
            std::env::set_var("OPENBLAS_CORETYPE", want);
            ffi::gotoblas_dynamic_quit();
            ffi::gotoblas_dynamic_init();
            std::env::remove_var("OPENBLAS_CORETYPE");
        }
        let why = match requested {
            Some(l) => format!("{}={}", crate::simd::SIMD_ENV, l.name()),
            None => format!("OpenBLAS detected {now} on a CPU with {}", level.name()),
        };
        let _ = KERNEL_NOTE.set(format!("{} chosen: {why}", openblas_corename()));
    }
    #[cfg(not(feature = "blas"))]
    let _ = requested;
    Ok(())
}

/// Why the OpenBLAS kernel is not the one OpenBLAS picked, if it is not.
pub fn kernel_note() -> Option<&'static str> {
    KERNEL_NOTE.get().map(String::as_str)
}

/// The name of OpenBLAS's kernel set, e.g. `Haswell`.
#[cfg(feature = "blas")]
fn openblas_corename() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(ffi::openblas_get_corename()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// Pins OpenBLAS to one thread, as [`pool`] does, and stops the worker
/// threads OpenBLAS started when it was loaded (one per core but one).
/// Pinned, they never get work, but each spins on `sched_yield` for its
/// first ~10^8 cycles before it sleeps: on two cores, through the whole
/// CSV load, beside rayon's threads (docs/performance.md has the figures).
/// A BLAS call on more than one thread would start them again.
///
/// Looked up by name rather than linked: the pthreads build of OpenBLAS
/// (Debian's default) has `blas_thread_shutdown_`; a serial build has
/// neither the function nor the threads. No-op without the `blas` feature.
///
/// For the binary, first thing: before any thread of ours exists and any
/// BLAS call runs, so that no call can be using the workers it stops.
pub fn stop_openblas_workers() {
    set_openblas_threads(1);
    #[cfg(feature = "blas")]
    // SAFETY: `dlsym` is given a NUL-terminated name. The symbol, where it
    // exists, is OpenBLAS's `int blas_thread_shutdown_(void)`, which joins
    // its idle workers; no other thread calls into OpenBLAS meanwhile (see
    // above).
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"blas_thread_shutdown_".as_ptr());
        if !f.is_null() {
            let shutdown: extern "C" fn() -> std::os::raw::c_int = std::mem::transmute(f);
            shutdown();
        }
    }
}

/// Pin OpenBLAS to `n` threads (no-op without the `blas` feature).
pub fn set_openblas_threads(n: usize) {
    #[cfg(feature = "blas")]
    // SAFETY: plain getter and setter of OpenBLAS's global thread count.
    // Only a change is set: setting it restarts workers that
    // [`stop_openblas_workers`] stopped.
    unsafe {
        let n = n.max(1) as std::os::raw::c_int;
        if ffi::openblas_get_num_threads() != n {
            ffi::openblas_set_num_threads(n)
        }
    }
    #[cfg(not(feature = "blas"))]
    let _ = n;
}

/// OpenBLAS's thread count, or `None` without the `blas` feature.
pub fn openblas_threads() -> Option<usize> {
    #[cfg(feature = "blas")]
    // SAFETY: plain getter.
    unsafe {
        Some(ffi::openblas_get_num_threads() as usize)
    }
    #[cfg(not(feature = "blas"))]
    None
}

/// OpenBLAS's build description and kernel, e.g.
/// `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64; core Haswell`.
pub fn openblas_config() -> String {
    #[cfg(feature = "blas")]
    // SAFETY: both return pointers to static NUL-terminated strings.
    unsafe {
        let config = std::ffi::CStr::from_ptr(ffi::openblas_get_config()).to_string_lossy();
        let core = std::ffi::CStr::from_ptr(ffi::openblas_get_corename()).to_string_lossy();
        format!(
            "{}; core {}; {} thread(s)",
            config.trim(),
            core.trim(),
            openblas_threads().unwrap_or(0)
        )
    }
    #[cfg(not(feature = "blas"))]
    "not linked".to_string()
}

/// What the blas engine's matrix products run on, in a few words:
/// "OpenBLAS 0.3.21" or "pure-Rust matrixmultiply".
pub fn matmul_backend() -> String {
    match openblas_threads() {
        Some(_) => openblas_version(),
        None => "pure-Rust matrixmultiply".to_string(),
    }
}

/// "OpenBLAS 0.3.21", from OpenBLAS's build description.
pub fn openblas_version() -> String {
    let config = openblas_config();
    let words: Vec<&str> = config.split_whitespace().take(2).collect();
    words.join(" ").trim_end_matches(';').to_string()
}

/// A thread count that cannot be used, as one line naming who set it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ThreadsError(String);

/// This machine's cores (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The most threads one pool may have: 4 per core, at most 1024. Results
/// never depend on the count; more threads than this only thrash.
pub fn limit() -> usize {
    (4 * cores()).min(1024)
}

/// The thread count to use for `requested` (0: `RAYON_NUM_THREADS` if it is
/// set to a number, else one per core), checked against [`limit`] whatever
/// set it; `flag` names the setting in the error.
pub fn count(requested: usize, flag: &str) -> Result<usize, ThreadsError> {
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    let (n, who) = match (requested, from_env) {
        (0, Some(n)) => (n, "RAYON_NUM_THREADS".to_string()),
        (0, None) => (cores(), String::new()),
        (n, _) => (n, flag.to_string()),
    };
    if n > limit() {
        return Err(ThreadsError(format!(
            "{who} {n} is not sensible: this machine has {} cores (use at most {}, or 0 for \
             one per core; results do not depend on it)",
            cores(),
            limit()
        )));
    }
    Ok(n)
}

/// A rayon pool of `threads` threads (0: see [`count`]), with OpenBLAS
/// pinned to one thread so the two never compete for cores.
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, ThreadsError> {
    let n = count(threads, "--threads")?;
    set_openblas_threads(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| ThreadsError(format!("cannot start {n} threads: {e}")))
}

/// The work buffer OpenBLAS (0.3, x86_64) maps for each thread that calls
/// it: `BUFFER_SIZE` = 32 << 22 bytes.
const OPENBLAS_BUFFER: usize = 128 << 20;

/// Checks that the address-space limit (`ulimit -v`) leaves room for the
/// buffers OpenBLAS maps for `threads` callers (and the calling thread),
/// plus a margin. OpenBLAS retries a failed buffer mapping forever, so a
/// run that would not fit must be refused before its first product. A
/// no-op without the `blas` feature or without a limit.
pub fn check_blas_memory(threads: usize) -> Result<(), ThreadsError> {
    if !cfg!(feature = "blas") {
        return Ok(());
    }
    let bytes = (threads + 1) * OPENBLAS_BUFFER + (64 << 20);
    // SAFETY: an anonymous, inaccessible, unreserved mapping that is
    // unmapped at once; it only asks the kernel whether the address space
    // would take it.
    let fits = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            false
        } else {
            libc::munmap(p, bytes);
            true
        }
    };
    if fits {
        return Ok(());
    }
    Err(ThreadsError(format!(
        "the address-space limit (ulimit -v) leaves no room for OpenBLAS's buffers ({} MiB \
         for {threads} thread(s)): raise the limit, use fewer --threads, or --engine sparse",
        bytes >> 20
    )))
}
