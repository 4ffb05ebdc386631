#!/usr/bin/env python3
"""Reference fixtures for ONE training step of a 784-H-10 MLP, in numpy float64.

Writes two compressed .npz files next to the Rust tests:

    tests/fixtures/step_h10_b32.npz   hidden H=10, batch B=32  (data rows 0..32)
    tests/fixtures/step_h16_b7.npz    hidden H=16, batch B=7   (data rows 100..107)

Everything is computed independently of the Rust crate, in float64, and the
analytic gradients are verified in this script with a central finite-difference
check (eps 1e-6, relative error < 1e-6), so the files can be trusted as ground
truth for the crate's forward pass, loss, backward pass, SGD and Adam steps.

Conventions ("notebook orientation", see tests/fixtures/README.md):
  * samples are COLUMNS: X = x.T / 255 has shape (784, B);
  * Z1 = w1 @ X + b1,  A1 = relu(Z1),  Z2 = w2 @ A1 + b2,
    P  = softmax over axis 0 (classes), with the per-column max subtracted;
  * loss = mean_i -log P[y_i, i]   (MEAN over the batch, not the sum);
  * biases are column vectors of shape (H, 1) / (10, 1), and their gradients
    are per-unit sums over the batch axis only (dZ.sum(axis=1, keepdims=True)),
    NOT the Kaggle notebook's scalar np.sum(dZ) bug.
  * parameters w1, b1, w2, b2 are drawn uniform in [-0.5, 0.5) in float64 and
    cast to float32; all math uses those exact float32 values upcast to float64.

Determinism: a single np.random.default_rng(20261128) draws, in this order,
(w1, b1, w2, b2) for case 1, then (w1, b1, w2, b2) for case 2, then the
coordinates used by the finite-difference check.  Pixels/labels are real
digits read from data/sample/train-sample.csv.gz if that file exists, else
from ../shared/data/digit-recognizer/train.csv.gz (paths relative to the repo
root; both are Kaggle CSVs "label,pixel0..pixel783", gzipped).

Regenerate (from the repository root):

    pip install numpy            # pandas is not needed
    python3 scripts/make_step_fixture.py

Options: --out DIR (default tests/fixtures), --data PATH (force a CSV source).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys

import numpy as np

SEED = 20261128
N_IN, N_OUT = 784, 10
LR_SGD = 0.1
ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 0.01, 0.9, 0.999, 1e-8
FD_EPS = 1e-6
FD_REL_TOL = 1e-6
FD_K = 6             # coordinates checked per parameter (relative-error test)
FD_MIN_GRAD = 1e-3   # only coordinates with |grad| >= this take the relative test
FD_ZERO_K = 2        # extra arbitrary coordinates, absolute-error test
FD_ABS_TOL = 1e-8

# (file name, hidden size, first data row, batch size)
CASES = [
    ("step_h10_b32.npz", 10, 0, 32),
    ("step_h16_b7.npz", 16, 100, 7),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_CANDIDATES = [
    os.path.join(REPO, "data", "sample", "train-sample.csv.gz"),
    os.path.join(REPO, "..", "shared", "data", "digit-recognizer", "train.csv.gz"),
]


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def pick_data(explicit: str | None) -> str:
    if explicit:
        return explicit
    for p in DATA_CANDIDATES:
        if os.path.exists(p):
            return p
    sys.exit("no training CSV found; tried:\n  " + "\n  ".join(DATA_CANDIDATES))


def read_rows(path: str, n_rows: int) -> np.ndarray:
    """First n_rows data rows (header skipped) as an (n_rows, 785) int array."""
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    with opener(path, "rb") as fh:
        reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
        header = next(reader)
        if len(header) != 1 + N_IN or header[0].strip() != "label":
            sys.exit(f"{path}: unexpected header (want label,pixel0..pixel783)")
        for row in reader:
            if len(rows) == n_rows:
                break
            rows.append([int(v) for v in row])
    arr = np.asarray(rows, dtype=np.int64)
    if arr.shape != (n_rows, 1 + N_IN):
        sys.exit(f"{path}: need {n_rows} rows of {1 + N_IN} columns, got {arr.shape}")
    if arr.min() < 0 or arr[:, 1:].max() > 255 or arr[:, 0].max() > 9:
        sys.exit(f"{path}: values out of range")
    return arr


# ----------------------------------------------------------------------------
# network math (float64, columns are samples)
# ----------------------------------------------------------------------------
def forward(p: dict, X: np.ndarray):
    z1 = p["w1"] @ X + p["b1"]
    a1 = np.maximum(z1, 0.0)
    z2 = p["w2"] @ a1 + p["b2"]
    e = np.exp(z2 - z2.max(axis=0, keepdims=True))
    probs = e / e.sum(axis=0, keepdims=True)
    return z1, a1, z2, probs


def loss_of(probs: np.ndarray, y: np.ndarray) -> float:
    b = y.shape[0]
    return float(np.mean(-np.log(probs[y, np.arange(b)])))


def loss_lse(p: dict, X: np.ndarray, y: np.ndarray) -> float:
    """Same loss via log-sum-exp (less round-off; used by the FD check)."""
    _, _, z2, _ = forward(p, X)
    m = z2.max(axis=0, keepdims=True)
    lse = (m + np.log(np.exp(z2 - m).sum(axis=0, keepdims=True)))[0]
    return float(np.mean(lse - z2[y, np.arange(y.shape[0])]))


def backward(p: dict, X: np.ndarray, y: np.ndarray, z1, a1, probs) -> dict:
    b = y.shape[0]
    onehot = np.zeros_like(probs)
    onehot[y, np.arange(b)] = 1.0
    dz2 = (probs - onehot) / b
    g = {}
    g["w2"] = dz2 @ a1.T
    g["b2"] = dz2.sum(axis=1, keepdims=True)
    da1 = p["w2"].T @ dz2
    dz1 = da1 * (z1 > 0)
    g["w1"] = dz1 @ X.T
    g["b1"] = dz1.sum(axis=1, keepdims=True)
    return g


def adam_step(param: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """One bias-corrected Adam step from zero state (t = 1)."""
    m = (1.0 - ADAM_B1) * grad
    v = (1.0 - ADAM_B2) * grad * grad
    mhat = m / (1.0 - ADAM_B1)
    vhat = v / (1.0 - ADAM_B2)
    return param - ADAM_LR * mhat / (np.sqrt(vhat) + ADAM_EPS)


# ----------------------------------------------------------------------------
# finite-difference check
# ----------------------------------------------------------------------------
def fd_check(name: str, p: dict, g: dict, X, y, z1, rng) -> float:
    worst = 0.0
    print(f"  finite differences, {name} (eps {FD_EPS:g}, central):")
    for key in ("w1", "b1", "w2", "b2"):
        grad = g[key]
        flat = np.abs(grad).ravel()
        big = np.flatnonzero(flat >= FD_MIN_GRAD)
        if big.size == 0:
            sys.exit(f"{name}.{key}: no gradient entry >= {FD_MIN_GRAD}")
        picks = rng.choice(big, size=min(FD_K, big.size), replace=False)
        extra = rng.choice(flat.size, size=min(FD_ZERO_K, flat.size), replace=False)
        rels, abss = [], []
        for idx, relative in [(int(i), True) for i in picks] + [(int(i), False) for i in extra]:
            coord = np.unravel_index(idx, grad.shape)
            q = {k: v.copy() for k, v in p.items()}
            orig = q[key][coord]
            q[key][coord] = orig + FD_EPS
            lp = loss_lse(q, X, y)
            q[key][coord] = orig - FD_EPS
            lm = loss_lse(q, X, y)
            fd = (lp - lm) / (2.0 * FD_EPS)
            an = float(grad[coord])
            err = abs(fd - an)
            if relative:
                rel = err / max(abs(fd), abs(an))
                rels.append(rel)
                worst = max(worst, rel)
                ok = rel < FD_REL_TOL
                print(f"    {key}{list(map(int, coord))!s:>10}: analytic {an:+.12e}  fd {fd:+.12e}  rel {rel:.2e}"
                      + ("" if ok else "  FAIL"))
                assert ok, f"{name}.{key}{coord}: relative error {rel:.3e} >= {FD_REL_TOL}"
            else:
                abss.append(err)
                ok = err < FD_ABS_TOL
                print(f"    {key}{list(map(int, coord))!s:>10}: analytic {an:+.12e}  fd {fd:+.12e}  abs {err:.2e}"
                      + ("" if ok else "  FAIL"))
                assert ok, f"{name}.{key}{coord}: absolute error {err:.3e} >= {FD_ABS_TOL}"
    return worst


# ----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--data", default=None, help="training CSV(.gz) to read digits from")
    args = ap.parse_args()

    data_path = pick_data(args.data)
    n_needed = max(start + b for _, _, start, b in CASES)
    rows = read_rows(data_path, n_needed)
    print(f"digits from {os.path.relpath(data_path, REPO)} (rows 0..{n_needed})")

    rng = np.random.default_rng(SEED)

    def draw(shape):
        return (rng.random(shape) - 0.5).astype(np.float32)

    params32 = []
    for _, h, _, _ in CASES:  # all parameter draws first, in a fixed order
        w1 = draw((h, N_IN))
        b1 = draw((h, 1))
        w2 = draw((N_OUT, h))
        b2 = draw((N_OUT, 1))
        params32.append({"w1": w1, "b1": b1, "w2": w2, "b2": b2})

    os.makedirs(args.out, exist_ok=True)
    worst_all = 0.0
    for (fname, h, start, b), p32 in zip(CASES, params32):
        block = rows[start:start + b]
        x = block[:, 1:].astype(np.uint8)           # (B, 784)
        y = block[:, 0].astype(np.uint8)            # (B,)
        yi = y.astype(np.int64)
        X = x.T.astype(np.float64) / 255.0          # (784, B)
        p = {k: v.astype(np.float64) for k, v in p32.items()}

        z1, a1, _, probs = forward(p, X)
        loss = loss_of(probs, yi)
        g = backward(p, X, yi, z1, a1, probs)

        print(f"{fname}: H={h} B={b} rows {start}..{start + b} labels {y.tolist()}")
        print(f"  loss {loss:.15f}  (log-sum-exp form {loss_lse(p, X, yi):.15f})"
              f"  min|z1| {np.abs(z1).min():.3e}  active relu {int((z1 > 0).sum())}/{z1.size}")
        worst_all = max(worst_all, fd_check(fname, p, g, X, yi, z1, rng))

        out = {
            "x": x, "y": y,
            "w1": p32["w1"], "b1": p32["b1"], "w2": p32["w2"], "b2": p32["b2"],
            "lr": np.array(LR_SGD, dtype=np.float64),
            "z1": z1, "probs": probs,
            "loss": np.array(loss, dtype=np.float64),
            "dw1": g["w1"], "db1": g["b1"], "dw2": g["w2"], "db2": g["b2"],
        }
        for k in ("w1", "b1", "w2", "b2"):
            out[k + "_next"] = p[k] - LR_SGD * g[k]
        for k in ("w1", "b1", "w2", "b2"):
            out[k + "_adam"] = adam_step(p[k], g[k])

        path = os.path.join(args.out, fname)
        np.savez_compressed(path, **out)
        print(f"  wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)")
        with np.load(path) as chk:  # round-trip sanity
            for k, v in out.items():
                assert chk[k].dtype == v.dtype and chk[k].shape == v.shape and np.array_equal(chk[k], v), k
    print(f"finite-difference check passed: worst relative error {worst_all:.2e} < {FD_REL_TOL:g}")


if __name__ == "__main__":
    main()
