#!/usr/bin/env python3
"""Optuna search over `mnist-blas train` flags, pruning bad runs early.

Each trial is one `mnist-blas train --json-epochs --json --threads 1` process:
its per-epoch held-out accuracy goes to `trial.report`, and when the
MedianPruner says the trial falls behind the median of earlier trials at the
same epoch, the process gets SIGTERM (it writes a checkpoint and exits 143)
and the trial is marked pruned. A finished trial's value is its final
held-out accuracy (maximised). Searched: `--lr` (log-uniform), `--batch-size`,
`--hidden`, `--optimizer`; every trial uses the same `--seed`.

    pip install optuna
    scripts/optuna_search.py --data train.csv.gz --epochs 10 --trials 40

Without `--data`, trials train on the built-in sample. At the end the best
trial is printed as a ready `mnist-blas train ...` command line (the same
run, bit for bit), and a last JSON line on stdout holds the best value, its
flags and the count of complete/pruned/failed trials.

The study lives in `--storage` (default `sqlite:///optuna.db`), so re-running
the same command with the same `--study-name` adds trials to it. Distributed:
run this same script on several machines with one shared database, e.g.
`--storage postgresql://user:pass@host/db --study-name mnist` (pip install
psycopg2-binary); Optuna hands each worker its own trials. Give every machine
its own `--out-dir` or a shared one: run folders are named by study and
trial number, which are unique in the study.
"""

import argparse
import json
import shlex
import signal
import subprocess
import tempfile

import optuna


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="training data (default: the built-in sample)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--storage", default="sqlite:///optuna.db")
    p.add_argument("--study-name", default="mnist-blas")
    p.add_argument("--bin", default="mnist-blas", help="the mnist-blas binary")
    p.add_argument("--out-dir", default="runs/optuna", help="trial run folders")
    p.add_argument("--seed", type=int, default=1, help="train --seed of every trial")
    p.add_argument("--sampler-seed", type=int, default=0, help="TPESampler seed")
    p.add_argument("--startup-trials", type=int, default=3,
                   help="MedianPruner n_startup_trials: trials never pruned")
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="MedianPruner n_warmup_steps: epochs before pruning starts")
    return p.parse_args()


def suggest_flags(trial):
    """The searched `train` flags of one trial, as a list of arguments."""
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
    hidden = trial.suggest_int("hidden", 8, 64, step=8)
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "momentum", "adam"])
    return [f"--lr={lr:.6g}", f"--batch-size={batch_size}",
            f"--hidden={hidden}", f"--optimizer={optimizer}"]


def fixed_flags(args):
    """The flags every trial shares (and the best command keeps)."""
    flags = [f"--epochs={args.epochs}", f"--seed={args.seed}"]
    if args.data:
        flags.append(f"--data={args.data}")
    return flags


def objective(trial, args):
    flags = fixed_flags(args) + suggest_flags(trial)
    trial.set_user_attr("flags", flags)
    cmd = [args.bin, "train", *flags, "--json-epochs", "--json", "-q",
           "--threads=1", f"--out-dir={args.out_dir}",
           f"--name={args.study_name}-trial-{trial.number}"]
    final = None
    # train's stderr (a pruned run's "interrupted" line) is shown only if it fails.
    err = tempfile.TemporaryFile(mode="w+")
    with err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        for line in proc.stdout:
            record = json.loads(line)
            if record.get("command") == "train":
                final = record
                continue
            trial.report(record["heldout_accuracy"], record["step"])
            if trial.should_prune():
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                raise optuna.TrialPruned()
        code = proc.wait()
        if code != 0 or final is None:
            err.seek(0)
            raise RuntimeError(f"trial {trial.number}: {shlex.join(cmd)} exited {code}\n"
                               + err.read().strip())
    return final["heldout_accuracy"]


def main():
    args = parse_args()
    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=args.startup_trials, n_warmup_steps=args.warmup_steps),
    )
    # A failed process fails its trial, not the study.
    study.optimize(lambda t: objective(t, args), n_trials=args.trials,
                   catch=(RuntimeError,))

    states = [t.state for t in study.trials]
    state = optuna.trial.TrialState
    count = {"complete": states.count(state.COMPLETE),
             "pruned": states.count(state.PRUNED),
             "failed": states.count(state.FAIL)}
    summary = {"event": "optuna", "study": args.study_name, "trials": len(states),
               **count}
    if count["complete"]:
        best = study.best_trial
        flags = best.user_attrs["flags"]
        command = shlex.join([args.bin, "train", *flags])
        print(f"best: trial {best.number}, held-out accuracy {best.value:.4f}")
        print(f"  {command}")
        summary.update(best_trial=best.number, best_value=best.value,
                       best_params=best.params, best_args=["train", *flags],
                       best_command=command)
    print(f"{count['complete']} complete, {count['pruned']} pruned, "
          f"{count['failed']} failed")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
