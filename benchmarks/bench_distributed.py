"""Epoch time of data-parallel training, 1 vs 2 local CPU processes (not run by CI).

    python benchmarks/bench_distributed.py [--epochs 6] [--processes 1 2]

Runs the training entrypoint on a temporary /opt/ml with the sample data and default
hyperparameters, with CNN_KMEANS_PROCESSES_PER_HOST set to each count, and prints the median
epoch time read from the log, plus what DDP communicates per step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder

DATA = Path(__file__).resolve().parents[1] / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def epoch_times(processes: int, epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = root / "input" / "config"
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(
            json.dumps({"clusters": "3", "epochs": str(epochs)})
        )
        (config / "inputdataconfig.json").write_text('{"training": {}}')
        (config / "resourceconfig.json").write_text('{"current_host": "a", "hosts": ["a"]}')
        shutil.copytree(DATA / "training", root / "input" / "data" / "training")
        env = {
            **os.environ,
            "SAGEMAKER_BASE_DIR": str(root),
            "CNN_KMEANS_PROCESSES_PER_HOST": str(processes),
            "CNN_KMEANS_MASTER_PORT": str(free_port()),
        }
        command = [sys.executable, "-m", "cnn_kmeans.container.train", "train"]
        log = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
    return [float(s) for s in re.findall(r"epoch \d+/\d+: ([0-9.]+) s", log)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    parameters = sum(p.numel() for p in Encoder.from_config(Config()).parameters())
    cores = os.cpu_count()
    print(f"sample data (160 series, 16 steps/epoch), default hyperparameters, {cores} cores")
    for count in args.processes:
        times = epoch_times(count, args.epochs)[1:]  # the first epoch warms up
        print(f"{count} process(es): median epoch {statistics.median(times):.2f} s")
    print(
        f"per step, each process all-reduces the gradients of {parameters:,} parameters "
        f"({parameters * 4 / 1e6:.2f} MB float32) plus one 8-byte stop flag"
    )


if __name__ == "__main__":
    main()
