"""Speed and memory of the core at the paper's default hyperparameters (not run by CI).

    python benchmarks/bench_core.py [--steps 300] [--parse-mb 100]

Prints, for equal-length (GunPoint's shape: 50 series of length 150) and unequal-length data
(lengths uniform in 75..150): the median seconds per optimisation step, steps/s, the encoding
throughput in series/s, and the peak resident memory of the process that did it. Each scenario
runs in its own process so its peak RSS is its own; it takes enough steps for the peak to settle
(oneDNN compiles convolutions for each new window width it meets, and the heap grows with them:
a 30-step run understates a long job's peak by ~100 MB). Then it times parsing a generated CSV of
about `--parse-mb` MB against encoding the same series.

It prints only what it measured. Comparing with the paper's code means running that code in the
same session on the same data (issue 15's bench_paper.py), not dividing by a stored figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnn_kmeans.config import Config
from cnn_kmeans.data import read_channel
from cnn_kmeans.encoder import Encoder, encode_windows
from cnn_kmeans.loss import sample_triplets, triplet_loss
from cnn_kmeans.model import INFERENCE_CELLS
from cnn_kmeans.trainer import as_tensor


def lengths_for(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "equal":
        return np.full(count, 150)
    return rng.integers(75, 151, size=count)


def make_series(lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = np.full((len(lengths), lengths.max()), np.nan, dtype=np.float32)
    for i, n in enumerate(lengths):
        values[i, :n] = np.cumsum(rng.normal(size=n)) / 5
    return values


def encode_all(encoder: Encoder, values: np.ndarray, lengths: np.ndarray) -> None:
    with torch.inference_mode():
        encode_windows(
            encoder,
            as_tensor(values, torch.device("cpu")),
            np.arange(len(lengths)),
            np.zeros(len(lengths), dtype=np.int64),
            lengths,
            max_cells=INFERENCE_CELLS,
        )


def scenario(kind: str, steps: int) -> dict:
    """Run one scenario in this process and return its figures."""
    config = Config()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    lengths = lengths_for(kind, 50, rng)
    series = as_tensor(make_series(lengths, rng), torch.device("cpu"))
    encoder = Encoder.from_config(config)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    times = []
    for _ in range(steps + 3):
        began = time.perf_counter()
        anchors = rng.permutation(50)[: config.batch_size]
        loss = triplet_loss(
            encoder, series, sample_triplets(rng, lengths, anchors, config.negative_samples)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    step = statistics.median(times[3:])  # the first steps warm up allocators and kernels

    encoder.eval()
    test_lengths = lengths_for(kind, 2000, rng)
    test = make_series(test_lengths, rng)
    encode_all(encoder, test[:200], test_lengths[:200])
    began = time.perf_counter()
    encode_all(encoder, test, test_lengths)
    throughput = len(test_lengths) / (time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "step_s": step, "series_per_s": throughput, "peak_rss_mb": peak}


def parse_versus_encode(megabytes: float) -> dict:
    """Seconds to parse a generated CSV of about `megabytes` MB, and to encode its series."""
    rng = np.random.default_rng(1)
    row = ",".join(f"{v:.6f}" for v in rng.normal(size=150)) + "\n"
    rows = max(1, int(megabytes * 1e6 / len(row)))
    lines = [
        ",".join(f"{v:.6f}" for v in rng.normal(size=150)) + "\n" for _ in range(min(rows, 2000))
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.csv"
        with path.open("w") as out:
            for i in range(rows):
                out.write(lines[i % len(lines)])
        size = path.stat().st_size / 1e6
        began = time.perf_counter()
        values = read_channel(path)
        parse = time.perf_counter() - began
    encoder = Encoder.from_config(Config()).eval()
    sample = 2000
    began = time.perf_counter()
    encode_all(encoder, values[:sample], np.full(sample, 150))
    encode = (time.perf_counter() - began) * len(values) / sample
    return {"csv_mb": size, "rows": len(values), "parse_s": parse, "encode_s_estimated": encode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--parse-mb", type=float, default=100.0)
    parser.add_argument("--scenario", choices=["equal", "unequal"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.steps)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, defaults {Config()}")
    results = {}
    for kind in ("equal", "unequal"):
        out = subprocess.run(
            [sys.executable, __file__, "--scenario", kind, "--steps", str(args.steps)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    print(f"{'':10} {'s/step':>8} {'steps/s':>8} {'series/s':>9} {'peak MB':>8}")
    # Only what this run measured: a comparison with the paper's code must run it side by side,
    # in the same run on the same data (never a stored figure).
    for name, r in results.items():
        print(
            f"{name:10} {r['step_s']:8.3f} {1 / r['step_s']:8.2f} "
            f"{r['series_per_s']:9.0f} {r['peak_rss_mb']:8.0f}"
        )
    equal, unequal = results["equal"], results["unequal"]
    print(
        f"unequal/equal: step time {unequal['step_s'] / equal['step_s']:.2f}, "
        f"encoding {unequal['series_per_s'] / equal['series_per_s']:.2f}"
    )
    if args.parse_mb > 0:
        r = parse_versus_encode(args.parse_mb)
        print(
            f"parse {r['csv_mb']:.0f} MB ({r['rows']} rows): {r['parse_s']:.1f} s "
            f"({r['csv_mb'] / r['parse_s']:.0f} MB/s); "
            f"encoding them: ~{r['encode_s_estimated']:.1f} s"
        )


if __name__ == "__main__":
    main()
