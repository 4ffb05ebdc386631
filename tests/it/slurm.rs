//! `sweep --emit slurm` on a real one-node SLURM cluster
//! (`scripts/slurm-local.sh`: munged, slurmctld, slurmd, and slurmdbd with
//! MariaDB when installed, all under the test's temporary folder): the job
//! array's collected rows and model files equal a local sweep's bit for
//! bit, and a task requeued mid-run resumes from its checkpoint to the same
//! bits. Ignored by default (needs root and Debian's slurm-wlm and munge):
//! `cargo test --release --features blas --test it -- --ignored slurm`, as
//! .ci/run does.

use crate::common::{model_bits, repo, stderr, stdout, BIN};
use crate::sweep::{csv_rows, ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The cluster of `scripts/slurm-local.sh up STATE`; `down` when dropped,
/// the test passed or not.
struct Cluster {
    state: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn up(state: &Path) -> Cluster {
        // Free ports for slurmctld, slurmd, slurmdbd and MariaDB: a cluster
        // already on this machine (the default ports) is left alone.
        let listeners: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port().to_string())
            .collect();
        drop(listeners);
        let cluster = Cluster {
            state: state.to_path_buf(),
            conf: state.join("slurm.conf"),
        };
        let o = Command::new("bash")
            .arg(repo("scripts/slurm-local.sh"))
            .arg("up")
            .arg(state)
            .env("SLURMCTLD_PORT", &ports[0])
            .env("SLURMD_PORT", &ports[1])
            .env("SLURMDBD_PORT", &ports[2])
            .env("SLURM_LOCAL_DB_PORT", &ports[3])
            .output()
            .unwrap();
        println!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "slurm-local.sh up failed");
        cluster
    }

    /// A SLURM client command against this cluster.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// Run a client command; its output, which must be a success.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let o = self.cmd(program).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{program} {args:?}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn accounting(&self) -> bool {
        std::fs::read_to_string(&self.conf)
            .unwrap()
            .contains("accounting_storage/slurmdbd")
    }

    /// `sacct` for a job, every attempt (`--duplicates`), if there is accounting.
    fn sacct(&self, job: &str) -> Option<String> {
        self.accounting().then(|| {
            self.run(
                "sacct",
                &[
                    "-j",
                    job,
                    "--duplicates",
                    "--format=JobID,JobName%18,State,ExitCode,Elapsed,AllocCPUS",
                ],
            )
        })
    }

    /// Wait until `job` has no task left in the queue.
    fn wait_gone(&self, job: &str, limit: Duration) {
        let started = Instant::now();
        while !self.run("squeue", &["-h", "-j", job]).trim().is_empty() {
            assert!(started.elapsed() < limit, "job {job} still queued");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let o = Command::new("bash")
            .arg(repo("scripts/slurm-local.sh"))
            .arg("down")
            .arg(&self.state)
            .output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("slurm-local.sh down: {}{}", stdout(&o), stderr(&o)),
            Err(e) => eprintln!("slurm-local.sh down: {e}"),
        }
    }
}

fn is_root() -> bool {
    let o = Command::new("id").arg("-u").output().unwrap();
    stdout(&o).trim() == "0"
}

fn mnist(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Every column of each collected row equals the local sweep's row of the
/// same key (times, paths, the command and the columns `may_differ`
/// excepted), and so do the models.
fn assert_same_as_local(
    d: &Path,
    collected: &str,
    runs: &str,
    models: &str,
    may_differ: &[&str],
) -> usize {
    let local = csv_rows(&d.join("local.csv"));
    let rows = csv_rows(&d.join(collected));
    for c in &rows {
        let key = &c["key"];
        let l = local
            .iter()
            .find(|l| l["key"] == *key)
            .unwrap_or_else(|| panic!("run {key} not in the local sweep"));
        assert_eq!(c["status"], "ok", "{c:?}");
        for (name, value) in c {
            let differs_by_nature = name.ends_with("seconds")
                || ["samples_per_second", "command", "model", "metrics", "plot"]
                    .contains(&name.as_str())
                || may_differ.contains(&name.as_str());
            if !differs_by_nature {
                assert_eq!(value, &l[name], "{name} of run {key}");
            }
        }
        let slurm_model = d.join(runs).join(format!("run-{key}.npz"));
        let local_model = d.join(models).join(format!("run-{key}.npz"));
        assert!(
            model_bits(&slurm_model) == model_bits(&local_model),
            "the weights of run {key} differ"
        );
    }
    rows.len()
}

/// The rows of the metrics file so far (header excluded).
fn records(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root, slurm-wlm and munge; run by .ci/run"]
fn a_slurm_job_array_gives_the_local_sweeps_bits_and_a_requeued_task_resumes() {
    if !is_root() {
        println!(
            "SKIPPED: the SLURM test starts munged, slurmctld and slurmd, which needs root \
             (run it as root, as .ci/run does)"
        );
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cluster = Cluster::up(&d.join("slurm"));

    // 6 configurations x 2 epochs, 2 tasks at a time.
    let grid = [
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.05,0.1,0.2",
        "--seed",
        "1,2",
    ];
    let mut emit = vec![
        "sweep",
        "--emit",
        "slurm",
        "--out-dir",
        "runs",
        "--bin",
        BIN,
    ];
    emit.extend(["--max-parallel", "2"]);
    emit.extend(grid);
    println!("{}", ok(&mnist(d, &emit)));
    let script = std::fs::read_to_string(d.join("runs/sweep.sbatch")).unwrap();
    println!("{script}");
    assert!(script.contains("#SBATCH --array=0-5%2\n"), "{script}");

    // `sbatch --wait`, with a look at the queue while it runs.
    let mut submit = cluster
        .cmd("sbatch")
        .args(["--wait", "runs/sweep.sbatch"])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut queue = String::new();
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(60) {
        queue = cluster.run("squeue", &["--array"]);
        if queue.lines().count() > 1 || submit.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("$ squeue --array\n{queue}");
    let submitted = submit.wait_with_output().unwrap();
    let said = stdout(&submitted);
    assert!(submitted.status.success(), "sbatch --wait: {said}");
    let job = said.trim().rsplit(' ').next().unwrap().to_string();
    if let Some(sacct) = cluster.sacct(&job) {
        println!("$ sacct -j {job}\n{sacct}");
        assert_eq!(
            sacct.matches("COMPLETED").count(),
            12,
            "6 tasks and their batch steps"
        );
    }

    let collected = ok(&mnist(
        d,
        &[
            "sweep",
            "--collect",
            "runs",
            "--results",
            "slurm.csv",
            "--no-plot",
        ],
    ));
    println!("$ mnist-blas sweep --collect runs\n{collected}");
    assert!(collected.contains("collected 6 new runs"), "{collected}");

    // The same sweep, here, in one process.
    let mut local = vec!["sweep", "--no-plot", "-q", "--results", "local.csv"];
    local.extend(["--save-models", "models"]);
    local.extend(grid);
    ok(&mnist(d, &local));
    assert_eq!(
        assert_same_as_local(d, "slurm.csv", "runs", "models", &[]),
        6
    );

    // A task stopped mid-run and requeued: SLURM sends it SIGCONT and
    // SIGTERM, it checkpoints; run again, it resumes.
    let long = [
        "--epochs",
        "20",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--seed",
        "1",
        "--hidden",
        "64",
    ];
    let mut emit = vec![
        "sweep",
        "--emit",
        "slurm",
        "--out-dir",
        "requeue",
        "--bin",
        BIN,
    ];
    emit.extend(long);
    ok(&mnist(d, &emit));
    let key = csv_rows(&d.join("requeue/sweep-plan.csv"))[0]["key"].clone();
    let metrics = d.join(format!("requeue/run-{key}.metrics.csv"));
    let result = d.join(format!("requeue/run-{key}.json"));
    let job = cluster
        .run(
            "sbatch",
            &[
                "--parsable",
                &d.join("requeue/sweep.sbatch").display().to_string(),
            ],
        )
        .trim()
        .to_string();
    let task = format!("{job}_0");
    let waiting = Instant::now();
    while records(&metrics) == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "no epoch ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Frozen after its first epoch, so that the run is surely mid-way when
    // the requeue's SIGTERM reaches it.
    cluster.run("scancel", &["--signal=STOP", "--full", &task]);
    let epochs_before = records(&metrics);
    assert!(
        std::fs::read_to_string(&result)
            .unwrap_or_default()
            .is_empty(),
        "the run ended before the test could stop it"
    );
    cluster.run("scontrol", &["requeue", &task]);
    cluster.wait_gone(&job, Duration::from_secs(180));
    let log = |ext: &str| {
        std::fs::read_to_string(d.join(format!("requeue/logs/{job}_0.{ext}"))).unwrap_or_default()
    };
    let (out, err) = (log("out"), log("err"));
    println!("task log:\n{out}{err}");
    assert!(
        err.contains("error: interrupted"),
        "the first attempt did not checkpoint: {err}"
    );
    assert!(
        out.contains("restarts: 1") && out.contains("resuming from"),
        "the second attempt did not resume: {out}"
    );
    if let Some(sacct) = cluster.sacct(&job) {
        println!("$ sacct -j {job} --duplicates\n{sacct}");
        assert!(sacct.contains("REQUEUED"), "{sacct}");
    }
    let c = ok(&mnist(
        d,
        &[
            "sweep",
            "--collect",
            "requeue",
            "--results",
            "requeued.csv",
            "--no-plot",
        ],
    ));
    println!("{c}");
    let mut local = vec!["sweep", "--no-plot", "-q", "--results", "local.csv"];
    local.extend(["--save-models", "models"]);
    local.extend(long);
    ok(&mnist(d, &local));
    // `samples` counts the rows this process trained on (it gives
    // samples_per_second): after a resume, those since the checkpoint.
    let resumed = assert_same_as_local(d, "requeued.csv", "requeue", "models", &["samples"]);
    assert_eq!(resumed, 1);
    println!(
        "requeued after {epochs_before} of 20 epochs; resumed to the same bits; test wall time {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(cluster);
}

/// Without a cluster: `--emit slurm` writes the plan, the same lines as
/// `--emit commands` and the script; a task of the script run by hand (as
/// SLURM would, with its variables) runs its configuration, and run again
/// finds it done.
#[test]
fn the_emitted_array_script_runs_a_task_by_its_array_index() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let grid = ["--epochs", "1", "--batch-size", "64", "--lr", "0.1,0.2"];
    let mut emit = vec![
        "sweep",
        "--emit",
        "slurm",
        "--out-dir",
        "runs",
        "--bin",
        BIN,
    ];
    emit.extend(["--threads-per-run", "2", "--sbatch=--time=10"]);
    emit.extend(grid);
    let said = ok(&mnist(d, &emit));
    assert!(said.contains("submit: sbatch runs/sweep.sbatch"), "{said}");
    let script = std::fs::read_to_string(d.join("runs/sweep.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-1%2\n",
        "#SBATCH --cpus-per-task=2\n",
        "#SBATCH --time=10\n",
    ] {
        assert!(script.contains(line), "no {line:?} in\n{script}");
    }
    // The old spelling prints what the script's tasks read.
    let mut lines = vec![
        "sweep",
        "--emit-commands",
        "--out-dir",
        "runs",
        "--bin",
        BIN,
    ];
    lines.extend(["--threads-per-run", "2"]);
    lines.extend(grid);
    let printed = ok(&mnist(d, &lines));
    let file = std::fs::read_to_string(d.join("runs/commands.txt")).unwrap();
    assert_eq!(printed, file);
    assert_eq!(file.lines().count(), 2);

    let plan = csv_rows(&d.join("runs/sweep-plan.csv"));
    let task = |id: &str| {
        let o = Command::new("bash")
            .arg(d.join("runs/sweep.sbatch"))
            .current_dir(d)
            .env("SLURM_ARRAY_TASK_ID", id)
            .env("SLURM_ARRAY_JOB_ID", "7")
            .env("SLURM_JOB_ID", "8")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    let first = task("1");
    let key = &plan[1]["key"];
    assert!(first.contains(&format!("run {key}: done")), "{first}");
    let result = std::fs::read_to_string(d.join(format!("runs/run-{key}.json"))).unwrap();
    assert!(result.contains("\"lr\":0.2"), "{result}");
    assert!(!d.join(format!("runs/run-{}.json", plan[0]["key"])).exists());
    let again = task("1");
    assert!(again.contains("done already"), "{again}");

    // --sbatch goes with --emit slurm only.
    let o = mnist(d, &["sweep", "--sbatch=--time=1", "--lr", "0.1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("go with --emit slurm"),
        "{}",
        stderr(&o)
    );
}
