"""Speed and memory of the core at the paper's default hyperparameters (not run by CI).

    python benchmarks/bench_core.py [--steps 300] [--parse-mb 100] [--write-readme README.md]

Prints, for equal-length (GunPoint's shape: 50 series of length 150) and unequal-length data
(lengths uniform in 75..150): the median seconds per optimisation step, steps/s, the encoding
throughput in series/s, and the peak resident memory of the process that did it. Each scenario
runs in its own process so its peak RSS is its own; it takes enough steps for the peak to settle
(oneDNN compiles convolutions for each new window width it meets, and the heap grows with them:
a 30-step run understates a long job's peak by ~100 MB).

Then, in a fresh process, the batch-transform path on a generated CSV of about `--parse-mb` MB
(70,000 series of length 150 at 100 MB): parsing it as a training channel (`read_channel`) and
as a request body (the CSV decoder), predicting every row (`predict_fn`: features, labels and
distances of all of them, not an extrapolation from a sample) and encoding the CSV response,
with that process's peak RSS.

It prints only what it measured; `--write-readme` puts it in README's `bench_core` block with
the date and the load. About 3 minutes on a quiet 2-core machine with the defaults. Comparing
with the paper's code is bench_paper.py's job (same run, same data), never a stored figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import git_commit, machine_line, peak_rss_mb, write_block
from cnn_kmeans.config import Config
from cnn_kmeans.container.inference import input_fn, output_fn, predict_fn
from cnn_kmeans.data import read_channel
from cnn_kmeans.encoder import Encoder, encode_windows
from cnn_kmeans.loss import sample_triplets, triplet_loss
from cnn_kmeans.model import INFERENCE_CELLS, CNNKMeans
from cnn_kmeans.trainer import as_tensor

KINDS = {"equal": "equal lengths (150)", "unequal": "lengths 75–150"}


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
    return {"kind": kind, "step_s": step, "series_per_s": throughput, "peak_rss_mb": peak_rss_mb()}


def write_csv(path: Path, megabytes: float) -> None:
    """A CSV of about `megabytes` MB of random rows of 150 values (2,000 distinct rows, cycled)."""
    rng = np.random.default_rng(1)
    lines = [",".join(f"{v:.6f}" for v in rng.normal(size=150)) + "\n" for _ in range(2000)]
    rows = max(1, int(megabytes * 1e6 / len(lines[0])))
    with path.open("w") as out:
        for i in range(rows):
            out.write(lines[i % len(lines)])


def batch_transform(path: Path) -> dict:
    """Seconds to parse the CSV at `path` (as a channel and as a request body), predict all its
    rows and encode the response; run in a fresh process so the peak RSS is this path's."""
    model = CNNKMeans(Config(epochs=1), torch.device("cpu"))
    model.fit(np.cumsum(np.random.default_rng(0).normal(size=(50, 150)), axis=1))
    body = path.read_bytes()
    began = time.perf_counter()
    values = read_channel(path)
    parse = time.perf_counter() - began
    del values
    began = time.perf_counter()
    batch = input_fn(body, "text/csv")
    decode = time.perf_counter() - began
    predict_fn(batch.values[:200], model)  # warm-up
    began = time.perf_counter()
    prediction = predict_fn(batch, model)
    predict = time.perf_counter() - began
    began = time.perf_counter()
    response, _ = output_fn(prediction, "text/csv")
    respond = time.perf_counter() - began
    return {
        "csv_mb": len(body) / 1e6,
        "rows": len(prediction.labels),
        "parse_s": parse,
        "decode_s": decode,
        "predict_s": predict,
        "response_s": respond,
        "response_mb": len(response) / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


def child(*args: str) -> dict:
    """Run this script with `args` in a fresh process; its last stdout line, as JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--parse-mb", type=float, default=100.0, help="0: skip this part")
    parser.add_argument("--write-readme", type=Path, help="replace the bench_core block here")
    parser.add_argument("--scenario", choices=["equal", "unequal"], help=argparse.SUPPRESS)
    parser.add_argument("--batch-transform", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.steps)))
        return
    if args.batch_transform:
        print(json.dumps(batch_transform(args.batch_transform)))
        return
    began, load_before = time.monotonic(), os.getloadavg()
    threads = torch.get_num_threads()
    results = {kind: child("--scenario", kind, "--steps", str(args.steps)) for kind in KINDS}
    transform = None
    if args.parse_mb > 0:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "big.csv"
            write_csv(path, args.parse_mb)
            transform = child("--batch-transform", str(path))
    load_after = os.getloadavg()

    # Only what this run measured: a comparison with the paper's code runs it side by side
    # (bench_paper.py), never against a stored figure.
    lines = [
        "| random walks of GunPoint's shape (50 to train, 2,000 to encode) | seconds per step "
        "| series encoded per second | peak RSS |",
        "|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {KINDS[kind]} | {r['step_s']:.3f} | {r['series_per_s']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} MB |"
        )
    text = "\n".join(lines)
    if transform is not None:
        t = transform
        text += (
            f"\n\nBatch transform of a {t['csv_mb']:.0f} MB CSV ({t['rows']:,} series of length "
            f"150), every row predicted: parsing it as a training channel takes "
            f"{t['parse_s']:.1f} s ({t['csv_mb'] / t['parse_s']:.0f} MB/s), as a request body "
            f"{t['decode_s']:.1f} s; predicting all {t['rows']:,} rows (features, labels, "
            f"distances) {t['predict_s']:.1f} s ({t['rows'] / t['predict_s']:,.0f} series/s); "
            f"the {t['response_mb']:.0f} MB CSV response {t['response_s']:.1f} s; peak RSS "
            f"{t['peak_rss_mb']:,.0f} MB."
        )
    note = (
        f"{args.steps} steps per scenario (median after 3 warm-up steps), encoding 2,000 series "
        f"after a 200-series warm-up, each scenario a fresh process with {threads} torch "
        f"thread(s); {machine_line(load_before, load_after)}; "
        f"{(time.monotonic() - began) / 60:.1f} min; torch {torch.__version__}, "
        f"{git_commit()}. Generated by `python benchmarks/bench_core.py --write-readme README.md`."
    )
    print(text)
    print()
    print(note)
    if args.write_readme:
        write_block(args.write_readme, "bench_core", f"{text}\n\n{note}")


if __name__ == "__main__":
    main()
