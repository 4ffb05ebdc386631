#!/bin/sh
# Regenerates the small real-digit samples in data/sample/ from Kaggle's
# digit-recognizer files (see data/sample/README.md).
#
# Usage: scripts/make-sample.sh [KAGGLE_DIR]
#   KAGGLE_DIR holds train.csv.gz and test.csv.gz (or train.csv / test.csv);
#   default: ../shared/data/digit-recognizer relative to the repository root.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-"$root/../shared/data/digit-recognizer"}
out="$root/data/sample"
mkdir -p "$out"

# Prints a Kaggle file, gzipped or not.
cat_any() {
    if [ -f "$1.gz" ]; then gzip -dc "$1.gz"; else cat "$1"; fi
}

# cut_sample NAME ROWS: header + the first ROWS data rows of NAME.csv.
# `head` closing the pipe early makes gzip -dc exit with SIGPIPE; that is
# expected, so the pipeline status is not checked, the output is.
cut_sample() {
    name=$1 rows=$2
    dest="$out/$name-sample.csv.gz"
    { cat_any "$src/$name.csv" || true; } | head -n "$((rows + 1))" | gzip -9n > "$dest.tmp"
    lines=$(gzip -dc "$dest.tmp" | wc -l)
    if [ "$lines" -ne "$((rows + 1))" ]; then
        echo "error: $dest: got $lines lines, expected $((rows + 1))" >&2
        rm -f "$dest.tmp"
        exit 1
    fi
    mv "$dest.tmp" "$dest"
    echo "wrote $dest ($(wc -c < "$dest") bytes, $rows rows)"
}

cut_sample train 6000
cut_sample test 1000
