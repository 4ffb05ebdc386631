#!/usr/bin/env bash
# Example hyperparameter sweeps (docs/sweeps.md explains each).
#
#   scripts/sweep.sh grid     [DATA]  # 24-configuration grid of 784-10-10, 10 epochs each
#   scripts/sweep.sh random   [DATA]  # 16 random configurations, lr log-uniform, 2 seeds each
#   scripts/sweep.sh seeds    [DATA]  # one configuration over 5 seeds: mean ± std
#   scripts/sweep.sh emit     [DATA]  # the grid as `mnist-blas train` lines + --collect
#   scripts/sweep.sh compare  [DATA]  # wall time: the grid as one sweep vs 24 `train` processes
#
# DATA defaults to ../shared/data/digit-recognizer/train.csv.gz, else the
# built-in sample. Results go to target/sweeps/NAME/ (SWEEP_OUT overrides;
# resumable: re-run to finish).
# MNIST_BLAS overrides the binary (default: target/release/mnist-blas, built
# with --features blas if missing).
set -euo pipefail

cd "$(dirname "$0")/.."
what=${1:-grid}
data=${2:-../shared/data/digit-recognizer/train.csv.gz}
bin=${MNIST_BLAS:-target/release/mnist-blas}
if [[ ! -x $bin ]]; then
    cargo build --release --features blas
fi
data_flag=()
if [[ -f $data ]]; then
    data=$(realpath "$data")
    data_flag=(--data "$data")
else
    echo "no $data: using the built-in sample" >&2
fi
bin=$(realpath "$bin")

# The issue's grid: 3 learning rates x 2 batch sizes x 2 optimizers x 2 seeds.
grid=(--hidden 10 --epochs 10 --lr 0.003,0.03,0.3 --batch-size 32,128 --optimizer sgd,adam --seed 1,2)

out=${SWEEP_OUT:-target/sweeps}/$what
mkdir -p "$out"
case $what in
grid)
    "$bin" sweep "${data_flag[@]}" "${grid[@]}" --results "$out/results.csv"
    ;;
random)
    "$bin" sweep "${data_flag[@]}" --samples 16 --sweep-seed 7 \
        --lr 1e-4:0.5 --hidden 10:64 --batch-size 16:256 --optimizer sgd,momentum,adam \
        --epochs 10 --seed 1,2 --results "$out/results.csv"
    ;;
seeds)
    "$bin" sweep "${data_flag[@]}" --epochs 10 --optimizer adam --lr 0.003 --batch-size 32 \
        --seed 1,2,3,4,5 --results "$out/results.csv"
    ;;
emit)
    # What a cluster does with the lines: GNU parallel here; over machines,
    # `parallel --sshloginfile hosts` (same paths on every host), or one line
    # per SLURM array task (sed -n "${SLURM_ARRAY_TASK_ID}p" jobs.txt | sh).
    "$bin" sweep "${data_flag[@]}" "${grid[@]}" --emit-commands --out-dir "$out/runs" \
        --bin "$bin" > "$out/jobs.txt"
    if command -v parallel > /dev/null; then
        parallel --will-cite < "$out/jobs.txt" || true
    else
        xargs -P "$(nproc)" -I{} sh -c '{}' < "$out/jobs.txt" || true
    fi
    "$bin" sweep --collect "$out/runs" --results "$out/results.csv"
    ;;
compare)
    rm -rf "${out:?}"/*
    uptime
    start=$(date +%s.%N)
    "$bin" sweep "${data_flag[@]}" "${grid[@]}" --results "$out/results.csv" -q > "$out/sweep.txt"
    sweep_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    # KEY then the run's train flags, one configuration a line.
    "$bin" sweep "${data_flag[@]}" "${grid[@]}" --dry-run > "$out/configs.txt"
    n=$(wc -l < "$out/configs.txt")
    run_one() {
        local key=$1
        shift
        "$bin" train "$@" --threads "$threads" -q --json --model "$out/$tag-$key.npz" \
            --metrics "$out/$tag-$key.csv" > "$out/$tag-$key.json"
    }
    export -f run_one
    export bin out
    # The shell-loop way: one process per configuration, one after the
    # other, each reading the data and using every core.
    start=$(date +%s.%N)
    # shellcheck disable=SC2086 # the flags have no spaces: split them
    while read -r line; do tag=loop threads=0 run_one $line; done < "$out/configs.txt"
    loop_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    # The same processes, one per core at a time (xargs -P), single-threaded.
    start=$(date +%s.%N)
    xargs -P "$(nproc)" -L 1 bash -c 'tag=par threads=1 run_one "$@"' _ < "$out/configs.txt"
    par_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    uptime
    tail -n 1 "$out/sweep.txt"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
    printf '%d configurations: one sweep %.1f s; %d train processes in a loop %.1f s (%sx the sweep); %d processes, %d at a time, %.1f s (%sx)\n' \
        "$n" "$sweep_s" "$n" "$loop_s" "$(ratio "$loop_s" "$sweep_s")" \
        "$n" "$(nproc)" "$par_s" "$(ratio "$par_s" "$sweep_s")"
    ;;
*)
    echo "usage: scripts/sweep.sh grid|random|seeds|emit|compare [DATA]" >&2
    exit 2
    ;;
esac
