#!/usr/bin/env python3
"""A correct numpy mini-batch trainer for 784-10-10: the yardstick for
mnist-blas's mini-batch epoch (benches/epoch.rs, `mnist-blas train`).

What "correct" means here (unlike the Kaggle notebook): He-initialised
weights, per-unit biases, a softmax with the maximum subtracted, mean
cross-entropy gradients, Adam (lr 0.003, betas 0.9/0.999, eps 1e-8), rows
as samples, everything float32.  Each epoch reshuffles the training rows and
walks them in batches of --batch-size (the last batch may be short).

Data: Kaggle train.csv (plain or .gz), read with pandas, pixels / 255,
seeded shuffle, first --split of the rows train (default 0.8 -> 33,600 of
42,000 rows), the rest held out.

The last stdout line is one JSON object:
  load_seconds      read_csv + scaling + split
  epoch_seconds     list, one per epoch: the training loop only
  median_epoch_seconds, train_rows, batch_size, epochs
  heldout_accuracy  after the last epoch
  peak_rss_mb       ru_maxrss / 1024 (Linux KiB)

Usage:
    python3 scripts/numpy_minibatch.py train.csv --epochs 3 --batch-size 32
"""

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd


def main():
    ap = argparse.ArgumentParser(description="numpy mini-batch 784-10-10 (Adam, float32)")
    ap.add_argument("csv", help="Kaggle train.csv (optionally .gz)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--split", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    f32 = np.float32

    t_load = time.perf_counter()
    frame = pd.read_csv(args.csv)
    array = frame.to_numpy()
    del frame
    labels = array[:, 0].astype(np.int64)
    pixels = (array[:, 1:] / 255).astype(f32)
    del array
    order = rng.permutation(len(labels))
    n_train = int(len(labels) * args.split)
    x_train, y_train = pixels[order[:n_train]], labels[order[:n_train]]
    x_held, y_held = pixels[order[n_train:]], labels[order[n_train:]]
    del pixels
    load_seconds = time.perf_counter() - t_load

    h = args.hidden
    params = {
        "w1": (rng.standard_normal((784, h)) * np.sqrt(2 / 784)).astype(f32),
        "b1": np.zeros(h, f32),
        "w2": (rng.standard_normal((h, 10)) * np.sqrt(2 / h)).astype(f32),
        "b2": np.zeros(10, f32),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, eps, lr = f32(0.9), f32(0.999), f32(1e-8), f32(args.lr)
    eye = np.eye(10, dtype=f32)
    t = 0

    def forward(x):
        z1 = x @ params["w1"] + params["b1"]
        a1 = np.maximum(z1, 0)
        z2 = a1 @ params["w2"] + params["b2"]
        z2 = z2 - z2.max(axis=1, keepdims=True)
        e = np.exp(z2)
        return a1, e / e.sum(axis=1, keepdims=True)

    epoch_seconds = []
    for _ in range(args.epochs):
        t_epoch = time.perf_counter()
        perm = rng.permutation(n_train)
        for start in range(0, n_train, args.batch_size):
            idx = perm[start:start + args.batch_size]
            x, y = x_train[idx], y_train[idx]
            a1, p = forward(x)
            dz2 = (p - eye[y]) / f32(len(idx))
            grads = {"w2": a1.T @ dz2, "b2": dz2.sum(axis=0)}
            dz1 = (dz2 @ params["w2"].T) * (a1 > 0)
            grads["w1"] = x.T @ dz1
            grads["b1"] = dz1.sum(axis=0)
            t += 1
            c1 = f32(1 - beta1 ** t)
            c2 = f32(1 - beta2 ** t)
            for k, g in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                params[k] -= lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
        epoch_seconds.append(time.perf_counter() - t_epoch)

    _, p = forward(x_held)
    heldout_accuracy = float((p.argmax(axis=1) == y_held).mean())
    print(f"epochs {args.epochs}, batch {args.batch_size}: "
          f"median epoch {np.median(epoch_seconds):.3f} s, held-out accuracy {heldout_accuracy:.4f}")
    print(json.dumps({
        "load_seconds": round(load_seconds, 4),
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "median_epoch_seconds": round(float(np.median(epoch_seconds)), 4),
        "train_rows": int(n_train),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "heldout_accuracy": heldout_accuracy,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
