"""The scale curve: how each stage of a training job grows with N series and length L (not CI).

    python benchmarks/bench_scale.py [--sizes 1000 10000 100000 1000000] \
        [--lengths 100 1000 10000] [--fixed-count 1000] [--write-readme README.md]

Points: N in `--sizes` at length 150, and L in `--lengths` at N = `--fixed-count`; random walks,
written to a CSV first (not timed). Each point runs in a fresh process, through the code a
training job runs, and times:

- **parse**: `read_channel` on the CSV (the training channel's reader);
- **prepare**: cleaning and scaling (`CNNKMeans.start`);
- **step**: median seconds per optimisation step of the real trainer (`Trainer.run_epoch` over
  a prefix of an epoch's shuffled order, negatives drawn from all N), after warm-up steps; an
  epoch is N / batch-size such steps, so one epoch's time is N / 10 x this figure;
- **encode**: features of all N series (`CNNKMeans.encode`, the job's path);
- **kmeans**: the model's KMeans (`fit_clusters`: scikit-learn, n_init=10; past `KMEANS_SAMPLE`
  series the restarts run on a sample, then Lloyd's iterations on all);
- **silhouette**: the job's silhouette (on at most 10,000 series);
- **peak RSS** after each stage, and the values' size (N x L float32) beside it.

For every stage it prints the growth exponent between successive points in the work N x L
(log time / log work; 1 = linear). With `--kmeans-options` the largest point also times the
alternatives on its features (10 restarts on all, as before issue 16; one restart; fitting on a
sample then assigning all; a smaller sample; MiniBatchKMeans) with their inertia on all the
features relative to 10 restarts on all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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
from cnn_kmeans.data import read_channel
from cnn_kmeans.heap import map_large_allocations
from cnn_kmeans.model import KMEANS_SAMPLE, CNNKMeans, silhouette
from cnn_kmeans.onednn import limit_primitive_cache
from cnn_kmeans.trainer import as_tensor

CLUSTERS = 8
WARM_STEPS, STEPS = 3, 12
STAGES = ("parse", "prepare", "step", "encode", "kmeans", "silhouette")


def write_csv(path: Path, count: int, length: int, seed: int = 0) -> None:
    """`count` random walks of `length` values, 5 significant digits, written in chunks."""
    rng = np.random.default_rng(seed)
    rows = max(1, 2_000_000 // length)
    with path.open("w") as out:
        for begin in range(0, count, rows):
            chunk = np.cumsum(rng.normal(size=(min(rows, count - begin), length)), axis=1) / 5
            np.savetxt(out, chunk, fmt="%.5g", delimiter=",")


def timed(stage: str, out: dict, work, *args):
    began = time.perf_counter()
    result = work(*args)
    out[stage] = time.perf_counter() - began
    out[f"{stage}_rss_mb"] = peak_rss_mb()
    return result


def point(csv: Path, kmeans_options: bool) -> dict:
    """Every stage on one CSV, in this process."""
    import sklearn.cluster  # noqa: F401  (imported before the clock starts, as in a job)

    out: dict = {"baseline_rss_mb": peak_rss_mb()}
    config = Config(clusters=CLUSTERS, epochs=1)
    model = CNNKMeans(config, torch.device("cpu"), progress=False)
    values = timed("parse", out, read_channel, csv)
    limit_primitive_cache(os.environ, values)  # as the training job does, before training
    map_large_allocations(values)
    out["count"], out["length"] = values.shape
    out["values_mb"] = values.nbytes / 1e6
    training = timed("prepare", out, model.start, values)
    del values
    trainer = training.trainer
    rng = np.random.default_rng(1)
    size = config.batch_size
    trainer.order = rng.permutation(len(training.lengths))[: size * (WARM_STEPS + STEPS)]
    trainer.step, trainer.loss_sum = 0, 0.0
    stamps = [time.perf_counter()]
    series = as_tensor(training.train, trainer.device)
    trainer.run_epoch(series, training.lengths, on_step=lambda: stamps.append(time.perf_counter()))
    del series
    out["step"] = statistics.median(np.diff(stamps)[WARM_STEPS:])
    out["step_rss_mb"] = peak_rss_mb()
    model.encoder_.eval()
    features = timed("encode", out, model.encode, training.train, training.lengths)
    timed("kmeans", out, model.fit_clusters, features)
    timed("silhouette", out, silhouette, features, model.labels_, config.seed)
    if kmeans_options:
        fitted = {"centroids": model.centroids_, "seconds": out["kmeans"]}
        out["options"] = kmeans_alternatives(features, config.seed, fitted)
    return out


def kmeans_alternatives(features: np.ndarray, seed: int, model: dict) -> list[dict]:
    """Seconds and inertia on all `features` (relative to n_init=10 on all) of each KMeans option.

    The model's fit (`KMEANS_SAMPLE`: 10 restarts on a sample, then Lloyd on all) is timed by the
    `kmeans` stage: `model` holds its centroids and seconds, not refitted.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import pairwise_distances_argmin_min

    def inertia(centroids: np.ndarray) -> float:
        nearest = pairwise_distances_argmin_min(features, centroids)[1].astype(np.float64)
        return float((nearest**2).sum())

    def sample(size: int) -> np.ndarray:
        rows = np.random.default_rng(seed).choice(len(features), min(size, len(features)), False)
        return features[np.sort(rows)]

    def restarts(data: np.ndarray, n_init: int = 10) -> np.ndarray:
        return KMeans(CLUSTERS, n_init=n_init, random_state=seed).fit(data).cluster_centers_

    def then_all(start: np.ndarray) -> np.ndarray:
        fitted = KMeans(CLUSTERS, init=start, n_init=1, random_state=seed).fit(features)
        return fitted.cluster_centers_

    small = KMEANS_SAMPLE // 4
    options = {
        "KMeans n_init=10 on all (the spec before issue 16)": lambda: restarts(features),
        "KMeans n_init=1 on all": lambda: restarts(features, 1),
        f"KMeans n_init=10 on {KMEANS_SAMPLE:,} sampled, then assign": lambda: restarts(
            sample(KMEANS_SAMPLE)
        ),
        f"KMeans n_init=10 on {small:,} sampled, then Lloyd on all": lambda: then_all(
            restarts(sample(small))
        ),
        "MiniBatchKMeans n_init=3, batches of 4,096": lambda: (
            MiniBatchKMeans(CLUSTERS, n_init=3, batch_size=4096, random_state=seed)
            .fit(features)
            .cluster_centers_
        ),
    }
    rows = [
        {
            "option": f"KMeans n_init=10 on {KMEANS_SAMPLE:,} sampled, then Lloyd on all "
            "(the model's fit)",
            "seconds": model["seconds"],
            "inertia": inertia(model["centroids"]),
        }
    ]
    for name, fit in options.items():
        began = time.perf_counter()
        centroids = fit()
        rows.append(
            {"option": name, "seconds": time.perf_counter() - began, "inertia": inertia(centroids)}
        )
    for row in rows:
        row["relative_inertia"] = row["inertia"] / rows[1]["inertia"]
    return rows


def child(csv: Path, kmeans_options: bool) -> dict:
    """`point` in a fresh process (its own peak RSS); its last stdout line, as JSON."""
    argv = [sys.executable, __file__, "--point", str(csv)]
    if kmeans_options:
        argv.append("--kmeans-options")
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def exponents(results: list[dict], stage: str) -> str:
    """Growth exponents of `stage` between successive points, in the work N x L."""
    parts = []
    for before, after in itertools.pairwise(results):
        work = math.log((after["count"] * after["length"]) / (before["count"] * before["length"]))
        parts.append(f"{math.log(after[stage] / before[stage]) / work:.2f}")
    return ", ".join(parts) or "-"


def table(title: str, results: list[dict]) -> str:
    lines = [
        f"| {title} | parse s | prepare s | s/step | encode s | KMeans s (the model's) "
        "| silhouette s | values MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['count']:,} x {r['length']:,} | {r['parse']:.2f} | {r['prepare']:.2f} "
            f"| {r['step']:.3f} | {r['encode']:.1f} | {r['kmeans']:.1f} | {r['silhouette']:.2f} "
            f"| {r['values_mb']:,.0f} | {r['silhouette_rss_mb']:,.0f} |"
        )
    lines.append(
        "| growth exponents (1 = linear in N x L) | "
        + " | ".join(exponents(results, stage) for stage in STAGES)
        + " | | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--fixed-count", type=int, default=1000)
    parser.add_argument("--kmeans-options", action="store_true")
    parser.add_argument("--write-readme", type=Path, help="replace the bench_scale block here")
    parser.add_argument("--point", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(args.point, args.kmeans_options)))
        return
    began, load_before = time.monotonic(), os.getloadavg()
    grids = {
        "N series x length 150": [(n, 150) for n in args.sizes],
        f"{args.fixed_count:,} series x length L": [(args.fixed_count, n) for n in args.lengths],
    }
    texts, options = [], None
    biggest = max(n * length for grid in grids.values() for n, length in grid)
    with tempfile.TemporaryDirectory() as folder:
        for title, grid in grids.items():
            results = []
            for count, length in grid:
                csv = Path(folder) / f"{count}x{length}.csv"
                write_csv(csv, count, length)
                measure = args.kmeans_options and count * length == biggest and options is None
                result = child(csv, measure)
                result["csv_mb"] = csv.stat().st_size / 1e6
                csv.unlink()
                options = result.get("options", options)
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "options"}), flush=True)
            texts.append(table(title, results))
    text = "\n\n".join(texts)
    if options:
        text += "\n\n| KMeans option at the largest point | seconds "
        text += "| inertia vs n_init=10 on all |\n|---|---|---|\n" + "\n".join(
            f"| {o['option']} | {o['seconds']:.1f} | {o['relative_inertia']:.4f} |" for o in options
        )
    note = (
        f"Random walks, k={CLUSTERS}, {torch.get_num_threads()} torch thread(s), each point a "
        f"fresh process; s/step is the median of {STEPS} steps after {WARM_STEPS} (one epoch "
        f"is N / 10 steps); peak RSS is the process's, values MB the N x L float32 array; "
        f"{machine_line(load_before, os.getloadavg())}; {(time.monotonic() - began) / 60:.1f} "
        f"min; torch {torch.__version__}, {git_commit()}. Generated by "
        "`python benchmarks/bench_scale.py --kmeans-options --write-readme README.md`."
    )
    print(text)
    print()
    print(note)
    if args.write_readme:
        write_block(args.write_readme, "bench_scale", f"{text}\n\n{note}")


if __name__ == "__main__":
    main()
