#!/usr/bin/env python3
"""Side by side with the PyTorch peer (../shared/peers/torch_mlp.py): per-epoch time of the same
network on the same 60,000 MNIST rows, batch 128, Adam lr 1e-3, 5 epochs, median epoch.

Usage (from the project root, after `cargo build --release --features blas`):
  python3 scripts/vs_torch.py --torch-python /path/to/venv/bin/python [--layers 128,512,2048,256-128]
      [--runs 1] [--simd avx512,avx2] [--one-thread 512]

For each shape and run, in turn: torch with 2 threads, mnist-blas `--engine auto`, `--engine
blas` (2 threads), and at the `--one-thread` shapes torch and blas with 1 thread. Each
`--simd` level runs the columns again with MNIST_BLAS_SIMD set for mnist-blas and, for `avx2`,
torch held to AVX2 too (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA), as on
a machine without AVX-512. Prints one line per measurement and a Markdown table of medians with
the ratios the targets are stated in.
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


# What holds torch (ATen, MKL, oneDNN) to a SIMD level.
TORCH_SIMD = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                 "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def torch_epoch(layers, threads, simd=""):
    env = dict(os.environ, **TORCH_SIMD.get(simd, {}))
    out = subprocess.run([a.torch_python, a.peer, "--dir", a.idx, "--layers", layers, "--batch", "128",
                          "--threads", str(threads), "--epochs", str(a.epochs)],
                         capture_output=True, text=True, check=True, env=env).stdout
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
            for s in simds:
                tag = f" {s}" if s else ""
                if not a.no_torch:
                    cols.append((f"torch 2t{tag}", lambda L=L, s=s: (torch_epoch(L, 2, s), "")))
                    if L in one:
                        cols.append((f"torch 1t{tag}", lambda L=L, s=s: (torch_epoch(L, 1, s), "")))
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
ratios = []
for s in simds:
    tag = f" {s}" if s else ""
    ratios += [(f"torch/auto{tag}", f"torch 2t{tag}", f"auto{tag}"),
               (f"torch/blas{tag}", f"torch 2t{tag}", f"blas 2t{tag}"),
               (f"blas 1t/2t{tag}", f"blas 1t{tag}", f"blas 2t{tag}")]
print("| layers | " + " | ".join(names + [r[0] for r in ratios]) + " |")
print("|---" * (len(names) + len(ratios) + 1) + "|")
for L in shapes:
    row = [f"{med[(L, n)]:.3f}" if (L, n) in med else "-" for n in names]
    for _, x, y in ratios:
        x, y = med.get((L, x)), med.get((L, y))
        row.append(f"{x / y:.2f}x" if x and y else "-")
    print(f"| 784-{L}-10 | " + " | ".join(row) + " |")
