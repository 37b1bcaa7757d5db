"""The silhouette's working memory: time and peak RSS of `model.silhouette` (not CI).

    python benchmarks/bench_silhouette.py [--count 12000] [--dim 320] [--rounds 2]

scikit-learn computes a silhouette's pairwise distances in chunks of its `working_memory`. Each
setting (scikit-learn's default 1,024 MB, then smaller ones, the model's
`SILHOUETTE_WORKING_MB` among them) runs `cnn_kmeans.model.silhouette` on the same random
features in a fresh process (its own peak RSS), interleaved over rounds; the scores must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench_common import machine_line, peak_rss_mb
from cnn_kmeans import model as model_module

SETTINGS = (1024, 256, model_module.SILHOUETTE_WORKING_MB, 16)


def point(count: int, dim: int, working_mb: int) -> dict:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(count, dim)).astype(np.float32)
    labels = rng.integers(0, 8, count)
    model_module.SILHOUETTE_WORKING_MB = working_mb
    before = peak_rss_mb()
    began = time.perf_counter()
    score = model_module.silhouette(features, labels, seed=0)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "added_mb": peak_rss_mb() - before, "score": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12_000)
    parser.add_argument("--dim", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--point", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point is not None:
        print(json.dumps(point(args.count, args.dim, args.point)))
        return
    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {mb: [] for mb in SETTINGS}
    for _ in range(args.rounds):
        for mb in SETTINGS:
            argv = [sys.executable, __file__, "--count", str(args.count), "--dim", str(args.dim)]
            done = subprocess.run([*argv, "--point", str(mb)], check=True, capture_output=True)
            runs[mb].append(json.loads(done.stdout.decode().splitlines()[-1]))
    scores = {r["score"] for rs in runs.values() for r in rs}
    print(f"| working memory MB | seconds (best of {args.rounds}) | peak RSS added MB |")
    print("|---|---|---|")
    for mb, rs in runs.items():
        mark = " (the model's)" if mb == model_module.SILHOUETTE_WORKING_MB else ""
        best = min(r["seconds"] for r in rs)
        print(f"| {mb}{mark} | {best:.2f} | {max(r['added_mb'] for r in rs):.0f} |")
    print(
        f"\n{args.count:,} x {args.dim} features, silhouette on "
        f"{model_module.SILHOUETTE_SAMPLE:,} sampled; scores identical: {len(scores) == 1}; "
        f"{machine_line(load_before, os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
