#!/usr/bin/env python3
"""numpy vs mnist-blas on the same train.csv, in one invocation.

Part 1, the notebook's job: scripts/notebook.py (the Kaggle notebook's
algorithm in numpy, float64, faithful) and `mnist-blas train --preset
notebook` with each engine given by --engines, run in turn A, B, C, A, B,
C, ... --runs times, so a drift in the machine's speed hits all alike.
For each: whole-process wall time (measured here, around the child),
load and fit time and accuracy (from the child's JSON line), peak RSS (the
kernel's ru_maxrss of the child), and ratios to numpy.

Part 2, mini-batch training: scripts/numpy_minibatch.py (correct 784-10-10,
float32, Adam, batch 32) vs `mnist-blas train` (same network, optimizer and
batch size), seconds per epoch over 33,600 rows and the ratios: the median
epoch (numpy's `epoch_seconds`; for mnist-blas, from the `seconds` column of its
metrics file, one row per epoch), and all training time over the epochs
(for mnist-blas that adds the one-off preparation before the first step, such
as the sparse engine's gathering of non-zero pixels; numpy's preparation is in
its load time). Both score the held-out rows once, after the last epoch
(mnist-blas with `--heldout-eval end`), so an epoch is training only on both
sides.

Part 3, cold start to 92% held-out accuracy: `mnist-blas train --epochs E`
for E = 1, 2, ... until the held-out accuracy reaches 0.92; whole-process
wall time of that run.

Needs: python3 with numpy and pandas, and a release build:
    cargo build --release --features blas
Usage:
    python3 scripts/side_by_side.py train.csv [--runs 3] [--engines blas,sparse]
(a .csv.gz works too; both sides then pay for decompression.)
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    """Run `cmd`; return (wall seconds, peak RSS MB, JSON of its last line)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err}")
    last = out.strip().splitlines()[-1]
    return wall, usage.ru_maxrss / 1024, json.loads(last)


def median(xs):
    return statistics.median(xs)


def epoch_seconds(metrics_csv):
    """Each epoch's seconds from an mnist-blas metrics file (its `seconds`
    column is the training time at the end of each epoch)."""
    with open(metrics_csv, newline="") as f:
        ends = [float(row["seconds"]) for row in csv.DictReader(f)]
    return [b - a for a, b in zip([0.0] + ends, ends)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="Kaggle train.csv (or .csv.gz)")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per command (median reported)")
    ap.add_argument("--engines", default="blas,sparse", help="mnist-blas engines to time, comma-separated")
    ap.add_argument("--binary", default=str(ROOT / "target/release/mnist-blas"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs for the mini-batch comparison")
    ap.add_argument("--skip-minibatch", action="store_true")
    args = ap.parse_args()
    if not Path(args.binary).exists():
        sys.exit(f"{args.binary} not found: run `cargo build --release --features blas` first")
    engines = [e for e in args.engines.split(",") if e]
    tmp = tempfile.mkdtemp(prefix="side_by_side_")
    outputs = ["--model", f"{tmp}/model.npz", "--metrics", f"{tmp}/metrics.csv"]
    py = sys.executable

    # --- Part 1: the notebook's job ---------------------------------------
    commands = {"numpy notebook (float64)": [py, str(ROOT / "scripts/notebook.py"), args.csv, "--seed", "0"]}
    for e in engines:
        commands[f"mnist-blas --engine {e}"] = [
            args.binary, "train", "--preset", "notebook", "--data", args.csv,
            "--engine", e, "--json", "--quiet", *outputs]
    if "blas" in engines:
        # A build without `--features blas` would time ndarray's pure-Rust
        # matmul under the name of the OpenBLAS engine.
        probe = subprocess.run(
            [args.binary, "train", "--epochs", "1", "--json", "--quiet", *outputs],
            capture_output=True, text=True, check=True)
        backend = json.loads(probe.stdout)["matmul_backend"]
        if "OpenBLAS" not in backend:
            sys.exit(f"{args.binary} multiplies with {backend}: rebuild it with "
                     "`cargo build --release --features blas`, or pass --engines sparse")
    results = {name: [] for name in commands}
    for r in range(args.runs):
        for name, cmd in commands.items():
            wall, rss, js = run(cmd)
            if name.startswith("numpy"):
                row = dict(wall=wall, load=js["load_seconds"], fit=js["fit_seconds"],
                           rss=rss, acc=js["test_accuracy"])
            else:
                row = dict(wall=wall, load=js["load_seconds"], fit=js["train_seconds"],
                           rss=rss, acc=js["heldout_accuracy"])
                # The fit's two big products (x w1^T and dz1^T x), the dense
                # FLOPs the benches count, per second of fit (printed for the
                # dense engine only: the sparse one skips most of them).
                flops = 2 * 2 * js["train_rows"] * 784 * int(js["layers"].split("-")[0]) * js["iterations"]
                row["gflops"] = flops / js["train_seconds"] / 1e9
            results[name].append(row)
            print(f"  run {r + 1}: {name:<28} wall {wall:6.2f} s", file=sys.stderr)

    print(f"\nThe notebook's job on {args.csv}: median of {args.runs} alternating runs")
    print(f"{'':<28} {'wall s':>8} {'load s':>8} {'fit s':>8} {'peak MB':>8} {'accuracy':>9}"
          f" {'wall ratio':>11} {'fit ratio':>10}")
    base = None
    for name, rows in results.items():
        m = {k: median([row[k] for row in rows]) for k in rows[0]}
        if base is None:
            base = m
        print(f"{name:<28} {m['wall']:8.2f} {m['load']:8.2f} {m['fit']:8.2f} {m['rss']:8.0f}"
              f" {m['acc']:9.4f} {base['wall'] / m['wall']:10.1f}x {base['fit'] / m['fit']:9.1f}x")
    print("accuracy: numpy = its test set (80% of rows, the notebook's bias bug kept);"
          " mnist-blas = held-out 80% (bug fixed).  ratio = numpy / this row.")
    for name, rows in results.items():
        if name.endswith("--engine blas"):
            print(f"{name}: fit at {median([r['gflops'] for r in rows]):.0f} GFLOP/s of dense"
                  " products (2 x 2 x rows x 784 x H per iteration; compare `cargo bench"
                  " --features blas --bench sgemm`)")

    if args.skip_minibatch:
        return
    # --- Part 2: mini-batch epochs -----------------------------------------
    mb = {"numpy mini-batch (float32, Adam)": [py, str(ROOT / "scripts/numpy_minibatch.py"), args.csv,
                                                "--epochs", str(args.epochs), "--batch-size", "32"]}
    for e in engines:
        mb[f"mnist-blas --engine {e}"] = [
            args.binary, "train", "--data", args.csv, "--epochs", str(args.epochs), "--batch-size", "32",
            "--optimizer", "adam", "--engine", e, "--heldout-eval", "end", "--json", "--quiet", *outputs]
    epoch = {name: [] for name in mb}
    whole = {name: [] for name in mb}
    acc = {}
    for _ in range(args.runs):
        for name, cmd in mb.items():
            _, _, js = run(cmd)
            if name.startswith("numpy"):
                epoch[name].append(js["median_epoch_seconds"])
                # numpy's data preparation (scaling, split) is in its load time.
                whole[name].append(sum(js["epoch_seconds"]) / js["epochs"])
            else:
                # With --heldout-eval end, the epochs are training alone;
                # train_seconds adds the one-off preparation before step 1.
                epoch[name].append(median(epoch_seconds(f"{tmp}/metrics.csv")))
                whole[name].append(js["train_seconds"] / js["epochs"])
            acc[name] = js["heldout_accuracy"]
    print(f"\nMini-batch training, batch 32, {args.epochs} epochs over the 80% split"
          f" (33,600 rows of Kaggle's 42,000): seconds per epoch, median epoch and"
          f" all training / epochs")
    base = whole_base = None
    for name in mb:
        s, w = median(epoch[name]), median(whole[name])
        base, whole_base = base or s, whole_base or w
        print(f"{name:<34} {s:8.4f} s/epoch {base / s:6.1f}x   {w:8.4f} s/epoch {whole_base / w:6.1f}x"
              f"   held-out {acc[name]:.4f}")
    print("(training only on both sides: each scores the held-out rows once, after the last epoch)")

    # --- Part 3: cold start to 92% held-out --------------------------------
    print("\nCold start to 92% held-out accuracy (784-10-10, default preset, whole process):")
    for e in engines:
        for epochs in range(1, 11):
            wall, rss, js = run([args.binary, "train", "--data", args.csv, "--epochs", str(epochs),
                                 "--engine", e, "--json", "--quiet", *outputs])
            if js["heldout_accuracy"] >= 0.92:
                print(f"mnist-blas --engine {e:<7} --epochs {epochs}: held-out {js['heldout_accuracy']:.4f}"
                      f" in {wall:.3f} s wall (load {js['load_seconds']:.3f} s, train {js['train_seconds']:.3f} s)")
                break
        else:
            print(f"mnist-blas --engine {e}: did not reach 92% in 10 epochs")


if __name__ == "__main__":
    main()
