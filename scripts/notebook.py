#!/usr/bin/env python3
"""Faithful numpy port of the Kaggle notebook "MNIST digit recognition from
scratch using numpy" (../shared/reference/000_3cdfda728df5176d.txt), used as
the baseline for side-by-side timing and accuracy with the Rust crate.

The algorithm is the notebook's:
  * pandas.read_csv(train CSV), ``np.c_[label, pixels / 255]`` (float64),
    np.random.shuffle of the rows, first 20 % -> train, remaining 80 % -> test,
    columns are samples (X is 784 x N);
  * 784-10-10 network, init ``np.random.rand(...) - .5`` in the order b1, b2, w1, w2;
  * softmax WITHOUT max subtraction, ``e / sum(e)`` (Python's builtin sum);
  * full-batch gradient descent, rate 0.1, 500 iterations;
  * bias gradients ``1/m * np.sum(dl)``: a SCALAR over the whole matrix, the
    notebook's bug, kept by default (``--fix-bias`` uses per-unit
    ``sum(axis=1, keepdims=True)`` instead);
  * ``normalize_Y`` builds the one-hot matrix from the GLOBAL ``Y_train`` and
    ignores its argument, as in the notebook.  back_prop is only ever called
    with Y_train, so this is equivalent; the global is kept on purpose;
  * the accuracy printed every 25 iterations (and in "End of training") is
    that of the forward pass done BEFORE that iteration's update, as in the
    notebook.
Cells that are not part of the algorithm are left out: the Keras comparison,
the unused ``pd.read_csv(test.csv)``, and (unless --print-weights) the final
dump of the weights.

Additions: --seed N (np.random.seed before the shuffle; the notebook has no
seed), --fix-bias, --dtype float64|float32 (float32 casts the data, the
initial parameters and the one-hot matrix, so the whole loop runs in float32),
--iterations, --rate.  The last stdout line is one JSON object:
  load_seconds   read_csv + /255 + shuffle + split
  fit_seconds    the fit() call (init + all iterations)
  total_seconds  from this module's import (before numpy/pandas are imported)
                 to the end, after the test-set evaluation
  train_accuracy the "End of training" value; test_accuracy a fraction in [0,1]
  seed, iterations, dtype, fix_bias, peak_rss_mb (ru_maxrss / 1024, Linux KiB)

Usage:
    python3 scripts/notebook.py ../shared/data/digit-recognizer/train.csv.gz --seed 0
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DTYPE = np.float64   # set from --dtype in main()
FIX_BIAS = False     # set from --fix-bias in main()
Y_train = None       # global, read by normalize_Y exactly like the notebook


# --- In [2] -----------------------------------------------------------------
def data_splitter(data: np.ndarray):
    train_prop = .2
    train_len = int(train_prop * data.shape[0])

    np.random.shuffle(data)
    return data[:train_len, 1:].T, data[train_len:, 1:].T, data[:train_len, 0].T, data[train_len:, 0].T


# --- In [4] -----------------------------------------------------------------
def relu(x: np.ndarray):
    return np.maximum(0, x)


def softmax(x: np.ndarray):
    e = np.exp(x)
    return e / sum(e)


def deriv_relu(x: np.ndarray):
    return x > 0


def forward_prop(w1: np.ndarray, w2: np.ndarray, b1: np.ndarray, b2: np.ndarray, X: np.ndarray):
    l1 = np.matmul(w1, X) + b1
    l1_output = relu(l1)
    l2 = np.matmul(w2, l1_output) + b2
    l2_output = softmax(l2)
    return l1, l1_output, l2, l2_output


def normalize_Y(Y: np.ndarray):
    # Notebook behaviour: uses the global Y_train, not the argument.
    Y_norm = np.zeros((Y_train.shape[0], 10), dtype=DTYPE)
    Y_norm[np.arange(Y_train.shape[0], dtype=int), Y_train.astype(int)] = 1
    return Y_norm.T


def back_prop(y: np.ndarray, w2: np.ndarray, l1: np.ndarray, l2: np.ndarray, l1_out: np.ndarray, l2_out: np.ndarray, x: np.ndarray):
    m = y.shape[0]
    Y_norm = normalize_Y(y)

    dl2 = l2_out - Y_norm
    dw2 = 1 / m * np.matmul(dl2, l1_out.T)
    if FIX_BIAS:
        db2 = 1 / m * np.sum(dl2, axis=1, keepdims=True)
    else:
        db2 = 1 / m * np.sum(dl2)  # notebook bug: one scalar for all units
    dl1 = w2.T.dot(dl2) * deriv_relu(l1)
    dw1 = 1 / m * np.matmul(dl1, x.T)
    if FIX_BIAS:
        db1 = 1 / m * np.sum(dl1, axis=1, keepdims=True)
    else:
        db1 = 1 / m * np.sum(dl1)  # notebook bug

    return dw1, dw2, db1, db2


def update_params(w1, w2, b1, b2, dw1, dw2, db1, db2, rate):
    w1 = w1 - rate * dw1
    w2 = w2 - rate * dw2
    b1 = b1 - rate * db1
    b2 = b2 - rate * db2
    return w1, w2, b1, b2


# --- In [5] -----------------------------------------------------------------
def init_params():
    b1 = np.random.rand(10, 1) - .5
    b2 = np.random.rand(10, 1) - .5
    w1 = np.random.rand(10, 784) - .5
    w2 = np.random.rand(10, 10) - .5
    return w1.astype(DTYPE), w2.astype(DTYPE), b1.astype(DTYPE), b2.astype(DTYPE)


# --- In [6] -----------------------------------------------------------------
def fit(X, Y, rate, iterations, verbose=False):
    w1, w2, b1, b2 = init_params()

    for i in range(int(iterations)):
        l1, l1_out, l2, l2_out = forward_prop(w1, w2, b1, b2, X)
        dw1, dw2, db1, db2 = back_prop(Y, w2, l1, l2, l1_out, l2_out, X)
        w1, w2, b1, b2 = update_params(w1, w2, b1, b2, dw1, dw2, db1, db2, rate)
        if verbose and i % 25 == 0:
            print((Y == np.argmax(l2_out, axis=0)).sum() / Y.size)
    train_acc = (Y == np.argmax(l2_out, axis=0)).sum() / Y.size
    print(f'End of training: {train_acc} accuracy')
    return w1, w2, b1, b2, train_acc


def main():
    global DTYPE, FIX_BIAS, Y_train
    ap = argparse.ArgumentParser(description="numpy port of the Kaggle MNIST-from-scratch notebook")
    ap.add_argument("csv", help="Kaggle train.csv (optionally .gz): label,pixel0..pixel783")
    ap.add_argument("--seed", type=int, default=None, help="np.random.seed (default: unseeded, like the notebook)")
    ap.add_argument("--fix-bias", action="store_true", help="per-unit bias gradients instead of the scalar np.sum bug")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--rate", type=float, default=.1)
    ap.add_argument("--print-weights", action="store_true", help="also print the notebook's final weight dump")
    args = ap.parse_args()
    DTYPE = np.dtype(args.dtype).type
    FIX_BIAS = args.fix_bias
    if args.seed is not None:
        np.random.seed(args.seed)

    # --- In [2] ---
    t_load = time.perf_counter()
    data_train = pd.read_csv(args.csv)
    array = data_train.to_numpy()
    data = np.c_[array[:, 0], array[:, 1:] / 255]
    if DTYPE is not np.float64:
        data = data.astype(DTYPE)
    X_train, X_test, Y_train, Y_test = data_splitter(data)
    load_seconds = time.perf_counter() - t_load
    print(X_train.shape, X_test.shape)
    print(Y_train, Y_train.shape)

    # --- In [7] ---
    iterations = args.iterations
    t_fit = time.perf_counter()
    w1, w2, b1, b2, train_acc = fit(X_train, Y_train, args.rate, iterations, verbose=True)
    fit_seconds = time.perf_counter() - t_fit
    # Test set:
    _, _, _, y_hat = forward_prop(w1, w2, b1, b2, X_test)
    n_ok = (Y_test == np.argmax(y_hat, axis=0)).sum()
    print(f'Test set: {n_ok} accurate results on a {Y_test.size} images set ({n_ok / Y_test.size * 100:.2f}%) after {iterations} iterations')
    if args.print_weights:
        print(f'w1:\n{w1}\n\nw2:\n{w2}\n\nb1:\n{b1}\n\nb2:\n{b2}')
    total_seconds = time.perf_counter() - T0

    print(json.dumps({
        "load_seconds": round(load_seconds, 4),
        "fit_seconds": round(fit_seconds, 4),
        "total_seconds": round(total_seconds, 4),
        "train_accuracy": float(train_acc),
        "test_accuracy": float(n_ok / Y_test.size),
        "seed": args.seed,
        "iterations": iterations,
        "dtype": args.dtype,
        "fix_bias": FIX_BIAS,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
