"""Training speed by torch thread count, on a quiet machine and beside one busy process.

    python benchmarks/bench_threads.py [--epochs 5] [--rounds 2] [--cap 20] [--write-readme FILE]

Trains the default encoder on data of GunPoint's shape (50 series of length 150, 5 steps per
epoch; the median time per step is reported) with four thread settings: torch's default, the
count cnn-kmeans chooses (the cores this process may use, `cnn_kmeans.threads.available_cores`),
that count with OpenMP's passive wait policy (what the CLI sets), and one thread. Each run is its
own process (the thread pool is set once per process), with OMP_NUM_THREADS, OMP_WAIT_POLICY and
CNN_KMEANS_THREADS removed from its environment; runs are interleaved, quiet then beside a CPU
hog (a busy-loop process this script starts before the run and stops after), round after
round. A run stops after `--epochs` epochs or `--cap` seconds of training, whichever comes first
(a thrashing run can take many seconds per step). About 3 minutes on a quiet 2-core machine at
the defaults.

It also reports how far the weights of the same seed drift between thread counts (float
rounding in the reductions), from the quiet runs of the first round.

With `--write-readme FILE`, the table replaces the block between `<!-- bench_threads:begin -->`
and `<!-- bench_threads:end -->` in FILE, with the date, the load average before the run and the
versions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEGIN, END = "<!-- bench_threads:begin -->", "<!-- bench_threads:end -->"
SETTINGS = ("default", "chosen", "passive", "one")
LABELS = {
    "default": "torch's default",
    "chosen": "chosen (API, training job)",
    "passive": "chosen + OMP_WAIT_POLICY=PASSIVE",
    "one": "one thread",
}
SCRUBBED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CNN_KMEANS_THREADS", "OMP_WAIT_POLICY")


def child(setting: str, epochs: int, cap: float, weights: Path) -> dict:
    """One run in this process: set the threads, train, return the median seconds per step."""
    import numpy as np
    import torch

    from cnn_kmeans.config import Config
    from cnn_kmeans.errors import TrainingInterrupted
    from cnn_kmeans.model import CNNKMeans
    from cnn_kmeans.threads import available_cores, set_threads

    default = torch.get_num_threads()
    if setting in ("chosen", "passive"):
        set_threads(available_cores())
    elif setting == "one":
        set_threads(1)
    rng = np.random.default_rng(0)
    series = np.cumsum(rng.normal(size=(50, 150)), axis=1).astype(np.float32) / 5
    model = CNNKMeans(Config(epochs=epochs), torch.device("cpu"), threads=None, progress=False)
    training = model.start(series)
    times: list[float] = []
    began = last = time.perf_counter()

    def on_step() -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now

    with contextlib.suppress(TrainingInterrupted):  # the cap: the steps done so far count
        training.trainer.fit(
            training.train,
            training.lengths,
            should_stop=lambda: time.perf_counter() - began > cap,
            on_step=on_step,
        )
    torch.save(model.encoder_.state_dict(), weights)
    return {
        "setting": setting,
        "threads": torch.get_num_threads(),
        "torch_default": default,
        "steps": len(times),
        "seconds_per_step": statistics.median(times) if times else float("nan"),
        "seconds": time.perf_counter() - began,
    }


def run(setting: str, hog: bool, epochs: int, cap: float, weights: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # read when OpenMP loads: before the child's torch
    busy = None
    if hog:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        command = [sys.executable, __file__, "--child", setting, "--epochs", str(epochs)]
        command += ["--cap", str(cap), "--weights", str(weights)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return {**json.loads(out.stdout.splitlines()[-1]), "hog": hog}


def weight_drift(first: Path, second: Path) -> float:
    import torch

    a = torch.load(first, weights_only=True)
    b = torch.load(second, weights_only=True)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def table(results: list[dict]) -> str:
    rows = [
        "| added load | setting | torch threads | s/step (median) | steps timed | vs default |",
        "|---|---|---|---|---|---|",
    ]
    for hog in (False, True):
        base = None
        for setting in SETTINGS:
            runs = [r for r in results if r["hog"] == hog and r["setting"] == setting]
            seconds = statistics.median(r["seconds_per_step"] for r in runs)
            base = seconds if setting == "default" else base
            rows.append(
                f"| {'one CPU hog' if hog else 'none'} | {LABELS[setting]} | "
                f"{runs[0]['threads']} | {seconds:.3f} | {sum(r['steps'] for r in runs)} | "
                f"{base / seconds:.2f}x |"
            )
    return "\n".join(rows)


def write_readme(path: Path, text: str) -> None:
    readme = path.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (at most)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--cap", type=float, default=20.0, help="seconds of training per run")
    parser.add_argument("--write-readme", type=Path, help="README to update (generated block)")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.epochs, args.cap, args.weights)))
        return

    import torch

    import cnn_kmeans
    from cnn_kmeans.threads import available_cores

    load = os.getloadavg()
    results = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for hog in (False, True):
                for setting in SETTINGS:
                    weights = Path(folder) / f"{setting}-{round_}-{hog}.pt"
                    result = run(setting, hog, args.epochs, args.cap, weights)
                    results.append(result)
                    print(json.dumps(result), file=sys.stderr)
        drift = weight_drift(Path(folder) / "default-0-False.pt", Path(folder) / "one-0-False.pt")
    threads = {r["setting"]: r["threads"] for r in results}
    same_steps = len({r["steps"] for r in results if not r["hog"]}) == 1
    text = "\n".join(
        [
            table(results),
            "",
            f"Measured {datetime.date.today().isoformat()} by `benchmarks/bench_threads.py "
            f"--epochs {args.epochs} --rounds {args.rounds} --cap {args.cap:g}` in "
            f"{time.perf_counter() - began:.0f} s: {os.cpu_count()} CPUs, {available_cores()} "
            f"available to the process, torch's default {results[0]['torch_default']} threads; "
            f"load average {load[0]:.2f} before the run; Python {platform.python_version()}, "
            f"torch {torch.__version__}, cnn-kmeans {cnn_kmeans.__version__}. Same seed, "
            f"{threads['default']} vs {threads['one']} thread(s): weights differ by at most "
            f"{drift:.2g} after the same steps"
            + ("" if same_steps else " (runs stopped at different steps: not comparable)")
            + ".",
        ]
    )
    print(text)
    if args.write_readme:
        write_readme(args.write_readme, text)


if __name__ == "__main__":
    main()
