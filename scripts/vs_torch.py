#!/usr/bin/env python3
"""Side by side with the PyTorch peer (../shared/peers/torch_mlp.py): per-epoch time of the same
network on the same 60,000 MNIST rows, batch 128, Adam lr 1e-3, 5 epochs, median epoch.

Usage (from the project root, after `cargo build --release --features blas`):
  python3 scripts/vs_torch.py --torch-python /path/to/venv/bin/python [--layers 128,512,2048,256-128]
      [--runs 1] [--simd avx512,avx2] [--one-thread 512]

For each shape and run, in turn: torch with 2 threads, mnist-blas `--engine auto`, `--engine
blas` (2 threads), and at the `--one-thread` shapes torch and blas with 1 thread. Each
`--simd` level runs the mnist-blas columns again with MNIST_BLAS_SIMD set. Prints one line per
measurement and a Markdown table of medians with the ratios the targets are stated in.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--torch-python", required=True, help="a python with torch installed")
ap.add_argument("--peer", default=str(ROOT.parent / "shared/peers/torch_mlp.py"))
ap.add_argument("--idx", default=str(ROOT.parent / "shared/data/mnist-idx"))
ap.add_argument("--bin", default=str(ROOT / "target/release/mnist-blas"))
ap.add_argument("--layers", default="128,512,2048,256-128")
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--simd", default="", help="comma list of MNIST_BLAS_SIMD levels; empty = the CPU's own")
ap.add_argument("--one-thread", default="512", help="shapes also timed with 1 thread")
ap.add_argument("--no-torch", action="store_true")
a = ap.parse_args()


def median_epoch(metrics):
    ends = [float(r["seconds"]) for r in csv.DictReader(open(metrics))]
    return statistics.median(b - a for a, b in zip([0.0] + ends[:-1], ends))


def torch_epoch(layers, threads):
    out = subprocess.run([a.torch_python, a.peer, "--dir", a.idx, "--layers", layers, "--batch", "128",
                          "--threads", str(threads), "--epochs", str(a.epochs)],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[7:])["epoch_s_median"]


def ours(layers, engine, threads, simd, tmp):
    env = dict(os.environ)
    if simd:
        env["MNIST_BLAS_SIMD"] = simd
    cmd = [a.bin, "--data", f"{a.idx}/train-images-idx3-ubyte.gz", "--split", "0.9999", "--layers", layers,
           "--batch-size", "128", "--epochs", str(a.epochs), "--lr", "0.001", "--lr-schedule", "constant",
           "--weight-decay", "0", "--heldout-eval", "end", "--engine", engine, "--threads", str(threads),
           "--model", f"{tmp}/m.npz", "--metrics", f"{tmp}/m.csv", "-q", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    used = json.loads(out.splitlines()[-1])["engine_used"]
    return median_epoch(f"{tmp}/m.csv"), used


shapes = a.layers.split(",")
one = set(a.one_thread.split(",")) if a.one_thread else set()
simds = a.simd.split(",") if a.simd else [""]
got = {}  # (shape, column) -> [seconds]
with tempfile.TemporaryDirectory() as tmp:
    for run in range(a.runs):
        for L in shapes:
            cols = []
            if not a.no_torch:
                cols.append(("torch 2t", lambda L=L: (torch_epoch(L, 2), "")))
                if L in one:
                    cols.append(("torch 1t", lambda L=L: (torch_epoch(L, 1), "")))
            for s in simds:
                tag = f" {s}" if s else ""
                cols.append((f"auto{tag}", lambda L=L, s=s: ours(L, "auto", 2, s, tmp)))
                cols.append((f"blas 2t{tag}", lambda L=L, s=s: ours(L, "blas", 2, s, tmp)))
                if L in one:
                    cols.append((f"blas 1t{tag}", lambda L=L, s=s: ours(L, "blas", 1, s, tmp)))
            for name, f in cols:
                sec, used = f()
                got.setdefault((L, name), []).append(sec)
                print(f"run {run + 1} layers {L:>8} {name:<16} {sec:7.3f} s/epoch {used}", flush=True)

names = []
for (_, n) in got:
    if n not in names:
        names.append(n)
med = {k: statistics.median(v) for k, v in got.items()}
print()
print("| layers | " + " | ".join(names) + " | torch/auto | torch/blas | blas 1t/2t |")
print("|---" * (len(names) + 4) + "|")
for L in shapes:
    row = [f"{med[(L, n)]:.3f}" if (L, n) in med else "-" for n in names]
    t = med.get((L, "torch 2t"))
    au = med.get((L, "auto"))
    bl = med.get((L, "blas 2t"))
    b1 = med.get((L, "blas 1t"))
    r = lambda x, y: f"{x / y:.2f}x" if x and y else "-"
    print(f"| 784-{L}-10 | " + " | ".join(row) + f" | {r(t, au)} | {r(t, bl)} | {r(b1, bl)} |")
