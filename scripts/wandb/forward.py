#!/usr/bin/env python3
"""Run `mnist-blas train --json-epochs ARGS` and log each epoch to W&B.

The W&B agent calls this with the sweep's parameters as `--name=value`
(scripts/wandb/sweep.yaml); they go to `train` unchanged. MNIST_BLAS names
the binary (default: `mnist-blas` on PATH). Each JSON line `train` prints
goes to `wandb.log` at its epoch; the run's exit code is this script's.
"""

import json
import os
import subprocess
import sys

import wandb


def main():
    run = wandb.init()
    cmd = [os.environ.get("MNIST_BLAS", "mnist-blas"), "train", "--json-epochs",
           *sys.argv[1:]]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            record = json.loads(line)
            if record.get("event") != "record":
                continue  # the final report, with --json
            step = record.pop("step")
            wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                      step=step)
        code = proc.wait()
    run.finish(exit_code=code)
    sys.exit(code)


if __name__ == "__main__":
    main()
