#!/usr/bin/env python3
"""Labels for Kaggle's digit-recognizer test.csv, looked up in the original MNIST files.

Kaggle's 70,000 rows (train.csv + test.csv) are the MNIST digits (IDX files, 60,000 + 10,000),
so each test row's 784 bytes match an MNIST image whose label is known. Used to score a
`predict` submission on the real test set without shipping its labels in this repository.

  python3 scripts/kaggle_test_labels.py ../shared/data/mnist-idx test.csv.gz labels.csv
  python3 scripts/kaggle_test_labels.py --score labels.csv submission.csv
"""
import csv, gzip, sys


def idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return b[4 + 4 * nd:], dims


def lines(path):
    return (gzip.open if path.endswith(".gz") else open)(path, "rt", newline="")


def labels(mnist_dir, test_csv, out):
    known = {}
    for images, labs in [("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                         ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]:
        pix, dims = idx(f"{mnist_dir}/{images}")
        lab, _ = idx(f"{mnist_dir}/{labs}")
        for i in range(dims[0]):
            known.setdefault(pix[i * 784:(i + 1) * 784], lab[i])
    found = missing = 0
    with lines(test_csv) as f, open(out, "w", newline="") as o:
        r = csv.reader(f)
        next(r)
        w = csv.writer(o)
        w.writerow(["ImageId", "Label"])
        for i, row in enumerate(r, 1):
            label = known.get(bytes(int(v) for v in row))
            if label is None:
                missing += 1
                continue
            found += 1
            w.writerow([i, label])
    print(f"{found} test rows labelled, {missing} not found in MNIST", file=sys.stderr)


def score(labels_csv, submission):
    with open(labels_csv) as f:
        truth = {int(r["ImageId"]): int(r["Label"]) for r in csv.DictReader(f)}
    with open(submission) as f:
        pred = {int(r["ImageId"]): int(r["Label"]) for r in csv.DictReader(f)}
    both = [i for i in truth if i in pred]
    right = sum(truth[i] == pred[i] for i in both)
    print(f"{right} / {len(both)} correct = {right / len(both):.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "--score":
        score(sys.argv[2], sys.argv[3])
    else:
        labels(*sys.argv[1:4])
