//! `--emit slurm`: the emitted commands as a SLURM job array script.
//!
//! Task N of the array runs line N+1 of [`COMMANDS_FILE`], the run whose key
//! is on row N+1 of the plan (line N+2 of its CSV: the header is line 1).
//! Requeued and preempted tasks resume: SLURM ends a task with SIGTERM
//! (then SIGKILL after `KillWait`), `train` writes its checkpoint and exits,
//! and when SLURM starts the task again the script passes `--resume` with
//! that checkpoint, so the run ends with the bits of a run never stopped.

use super::{collect::PLAN_FILE, SweepError};
use std::path::Path;

/// The job array script `--emit slurm` writes in its directory.
pub const SCRIPT_FILE: &str = "sweep.sbatch";
/// One `mnist-blas train` line per configuration, in plan order (both modes
/// of `--emit` write it).
pub const COMMANDS_FILE: &str = "commands.txt";
/// Where each task's stdout and stderr go (`%A_%a.out`, `%A_%a.err`).
pub const LOGS_DIR: &str = "logs";
/// Seconds before a `--time` limit at which a task is told (SIGUSR1) to
/// checkpoint and requeue itself: ample for a step and a checkpoint.
pub const WARN_SECONDS: u32 = 60;

/// What the script needs besides the commands file and the plan.
pub struct ArrayScript<'a> {
    /// Configurations: tasks 0 to `tasks - 1`.
    pub tasks: usize,
    /// Tasks running at a time (`%` throttle).
    pub max_parallel: usize,
    /// `--cpus-per-task`: each run's `--threads`.
    pub cpus_per_task: usize,
    /// The directory the commands were emitted from, absolute: their
    /// relative paths (data, out-dir) are relative to it.
    pub workdir: &'a Path,
    /// The emitted directory, absolute.
    pub dir: &'a Path,
    /// Further `#SBATCH` options, as given (`--time=2:00:00`).
    pub options: &'a [String],
}

/// A path on an `#SBATCH` line: one line, and no `%` (a file name
/// pattern there).
fn check_sbatch_path(what: &str, path: &str) -> Result<(), SweepError> {
    if path.contains(['\n', '\r', '%']) {
        return Err(SweepError::Slurm(format!(
            "{what} `{}`: an #SBATCH line cannot hold a line break or `%`",
            path.escape_debug()
        )));
    }
    Ok(())
}

/// A value on an `#SBATCH` line, where sbatch splits at blanks and reads
/// double quotes and backslashes.
fn sbatch_value(text: &str) -> String {
    if text.contains(|c: char| c.is_whitespace() || "\"\\#'".contains(c)) {
        let escaped = text.replace('\\', r"\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        text.to_string()
    }
}

/// The script: `#SBATCH` options, then the task that runs (or resumes, or
/// skips when done) its configuration.
pub fn script(a: &ArrayScript) -> Result<String, SweepError> {
    if a.tasks == 0 {
        return Err(SweepError::Slurm("no configuration to run".into()));
    }
    if a.max_parallel == 0 {
        return Err(SweepError::Slurm(
            "--max-parallel must be at least 1".into(),
        ));
    }
    let dir = a.dir.display().to_string();
    let workdir = a.workdir.display().to_string();
    check_sbatch_path("--out-dir", &dir)?;
    check_sbatch_path("working directory", &workdir)?;
    let workdir = sbatch_value(&workdir);
    let logs = |ext: &str| sbatch_value(&format!("{dir}/{LOGS_DIR}/%A_%a.{ext}"));
    let (out, err) = (logs("out"), logs("err"));
    let mut extra = String::new();
    for o in a.options {
        if o.contains(['\n', '\r']) {
            return Err(SweepError::Slurm(format!(
                "--sbatch `{}`: an #SBATCH line cannot hold a line break",
                o.escape_debug()
            )));
        }
        extra.push_str(&format!("#SBATCH {o}\n"));
    }
    let n = a.tasks;
    let last = n - 1;
    let k = a.max_parallel.min(n);
    let cpus = a.cpus_per_task;
    let q = super::shell_quote(&dir);
    let warn = WARN_SECONDS;
    let configurations = crate::text::plural(n, "configuration");
    Ok(format!(
        r#"#!/bin/bash
# mnist-blas sweep: {configurations} as a SLURM job array, one run per task,
# at most {k} at a time. Task N runs line N+1 of {COMMANDS_FILE}, the run
# whose key starts line N+2 of {PLAN_FILE}.
#
#   sbatch {q}/{SCRIPT_FILE}
#   mnist-blas sweep --collect {q}      # again as more tasks end
#
# A task stopped by SIGTERM (preemption, `scontrol requeue`, `scancel`)
# leaves its run's checkpoint, run-KEY.ckpt.npz; when SLURM runs the task
# again, the run resumes from it and ends with the bits of a run never
# stopped. SIGUSR1, {warn} s before a --time limit, stops the run the same way
# and requeues the task. A task whose run is done exits at once.
#SBATCH --job-name=mnist-blas-sweep
#SBATCH --array=0-{last}%{k}
#SBATCH --cpus-per-task={cpus}
#SBATCH --chdir={workdir}
#SBATCH --output={out}
#SBATCH --error={err}
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{warn}
{extra}
dir={q}
line=$((SLURM_ARRAY_TASK_ID + 1))
command=$(sed -n "${{line}}p" "$dir/{COMMANDS_FILE}")
key=$(awk -F, -v row=$((line + 1)) 'NR == row {{ print $1; exit }}' "$dir/{PLAN_FILE}")
if [ -z "$command" ] || [ -z "$key" ]; then
    echo "task $SLURM_ARRAY_TASK_ID: no configuration on line $line of $dir/{COMMANDS_FILE}" >&2
    exit 2
fi
result=$dir/run-$key.json
checkpoint=$dir/run-$key.ckpt.npz
finished() {{ grep -q '^{{' "$result" 2>/dev/null; }}
echo "task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID (restarts: ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): run $key"
if finished; then
    echo "run $key: done already ($result)"
    exit 0
fi
if [ -e "$checkpoint" ]; then
    echo "run $key: resuming from $checkpoint"
    command="$command --resume \"\$checkpoint\""
fi

# The run in the background, so that this shell outlives it (SLURM ends a
# task when its shell ends) and passes signals on.
requeue=
trap 'kill -TERM "$pid" 2>/dev/null' TERM
trap 'requeue=1; kill -TERM "$pid" 2>/dev/null' USR1
eval "exec $command" &
pid=$!
# A trapped signal ends `wait` early (status above 128) while the run goes on.
while wait "$pid"; status=$?; [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do :; done

if finished; then
    echo "run $key: done"
    exit 0
fi
if [ -s "$dir/run-$key.err" ]; then
    cat "$dir/run-$key.err" >&2
fi
if [ -n "$requeue" ] && [ -e "$checkpoint" ]; then
    echo "run $key: stopped before the time limit; requeueing the task"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit "$status"
"#
    ))
}

/// A command line fit for the commands file: one line.
pub fn check_command(line: &str) -> Result<(), SweepError> {
    if line.contains(['\n', '\r']) {
        return Err(SweepError::Slurm(format!(
            "the command `{}` holds a line break (in a path?); each task reads one line of {COMMANDS_FILE}",
            line.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array<'a>(dir: &'a Path, options: &'a [String]) -> ArrayScript<'a> {
        ArrayScript {
            tasks: 12,
            max_parallel: 4,
            cpus_per_task: 2,
            workdir: Path::new("/home/u/mnist"),
            dir,
            options,
        }
    }

    #[test]
    fn the_array_covers_every_configuration_with_its_throttle_and_cpus() {
        let s = script(&array(Path::new("/home/u/mnist/runs"), &[])).unwrap();
        for line in [
            "#SBATCH --array=0-11%4\n",
            "#SBATCH --cpus-per-task=2\n",
            "#SBATCH --chdir=/home/u/mnist\n",
            "#SBATCH --output=/home/u/mnist/runs/logs/%A_%a.out\n",
            "#SBATCH --error=/home/u/mnist/runs/logs/%A_%a.err\n",
            "#SBATCH --requeue\n",
            "#SBATCH --signal=B:USR1@60\n",
            "\ndir=/home/u/mnist/runs\n",
        ] {
            assert!(s.contains(line), "no {line:?} in\n{s}");
        }
        // No more tasks at a time than tasks.
        let one = ArrayScript {
            tasks: 1,
            ..array(Path::new("/r"), &[])
        };
        assert!(script(&one).unwrap().contains("--array=0-0%1\n"));
    }

    #[test]
    fn paths_are_quoted_for_sbatch_and_the_shell_and_odd_ones_refused() {
        let opts = ["--time=1:00:00".to_string()];
        let s = script(&array(Path::new("/home/u/my runs"), &opts)).unwrap();
        assert!(
            s.contains("#SBATCH --output=\"/home/u/my runs/logs/%A_%a.out\"\n"),
            "{s}"
        );
        assert!(s.contains("\ndir='/home/u/my runs'\n"), "{s}");
        assert!(s.contains("#SBATCH --time=1:00:00\n"), "{s}");
        for bad in ["/r/100%", "/r/a\nb"] {
            let e = script(&array(Path::new(bad), &[])).unwrap_err();
            assert!(e.to_string().contains("#SBATCH line"), "{e}");
        }
        let bad = ["--time=1\n#SBATCH --x".to_string()];
        assert!(script(&array(Path::new("/r"), &bad)).is_err());
        assert!(check_command("a 'b\nc'").is_err());
        assert!(check_command("a b c").is_ok());
    }
}
