"""Seconds per optimisation step of a training lever against the defaults, same run (not in CI).

    python benchmarks/bench_step_cost.py min-window=0.5 [--datasets CBF GunPoint ...]
        [--epochs 5] [--rounds 3]

Issue 14 bounds a new default's cost per optimisation step at 1.5x today's. A lever that changes
what a step computes (longer windows, more negatives) changes that cost; the quality records'
training times were taken on different days and loads, so they cannot say by how much. This
trains the default job and the lever's job on each set's TRAIN split, alternating them round by
round in one process with one torch thread, and prints the median seconds per step of each and
their ratio. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cnn_kmeans.config import Config
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.trainer import planned_epochs

sys.path.insert(0, str(Path(__file__).parent))
import quality_suite as qs

DATASETS = ("ECGFiveDays", "CBF", "GunPoint", "DiatomSizeReduction", "ItalyPowerDemand", "ECG200")


def seconds_per_step(config: Config, X: np.ndarray) -> float:
    """Training time of the job's passes over X (no KMeans) per optimisation step (`min-steps`
    included: the steps are the trainer's own count)."""
    model = CNNKMeans(config, threads=1, progress=False)
    training = model.start(X)
    began = time.perf_counter()
    training.run()
    steps = planned_epochs(config, len(X)) * math.ceil(len(X) / config.batch_size)
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", nargs="+", metavar="KEY=VALUE", help="the lever's hyperparameters")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=qs.SUITE)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    overrides = dict(pair.split("=", 1) for pair in args.lever)
    print(f"| data set | default s/step | {' '.join(args.lever)} s/step | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for name in args.datasets:
        X, _, _, _ = qs.load(name)
        base = Config(epochs=args.epochs)
        lever = Config.from_dict({**base.to_dict(), **overrides})
        times: dict[str, list[float]] = {"default": [], "lever": []}
        for _ in range(args.rounds):
            times["default"].append(seconds_per_step(base, X))
            times["lever"].append(seconds_per_step(lever, X))
        a, b = (statistics.median(times[k]) for k in ("default", "lever"))
        ratios.append(b / a)
        print(f"| {name} | {a:.4f} | {b:.4f} | {b / a:.2f}x |")
    print(f"geometric mean ratio: {float(np.exp(np.mean(np.log(ratios)))):.2f}x")


if __name__ == "__main__":
    main()
