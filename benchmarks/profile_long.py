"""Where a training step and encoding spend time and memory on long series (not run by CI).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/profile_long.py [--length 1460] [--steps 12]
    OMP_NUM_THREADS=1 python benchmarks/profile_long.py --cache --steps 30 [--length 1460]
    OMP_NUM_THREADS=1 python benchmarks/profile_long.py --memory --steps 30 [--length 1460]

At the default hyperparameters, on `--count` random walks of `--length` steps (issue 16 item 2:
100 series of length 1,460), it prints:

- the seconds per training step with block recomputation off and on, both on the same windows in
  alternating order, in one process (medians and the per-step ratio, in CPU time, which holds up
  on a loaded machine better than wall time);
- the peak RSS of a process that only trains (recomputation off, on, then at the default budget
  `RECOMPUTE_ABOVE_BYTES`, each in a process of its own) and of one that only encodes, beside the
  RSS right after start-up;
- the convolution calls and distinct convolution shapes (input, weight, dilation) per step, and
  how many shapes were new to the process at each step (each new one makes oneDNN build a
  primitive);
- the operators that take the most CPU time in a profiled step and in encoding;
- the convolution floor of a step: its recorded convolutions (recomputation off) replayed alone
  on random data of their shapes, forward and backward, each the best of 3, in CPU seconds, beside
  the step's own time and its forward FLOPs; scaled by the windows' true cells over the padded
  cells, it is what the triplet step's convolutions cost on this CPU with no padding and nothing
  else (issue 16 item 2 asks for 5x the paper's code per step: that is possible only if this
  floor is below a fifth of the paper's CPU seconds per step).

With `--memory`, only training at the default budget as the training job runs it (oneDNN's
cache off past 512 steps, `cnn_kmeans.heap`'s mmap threshold, recomputation in runs of
`RECOMPUTE_RUN` blocks) against malloc's default threshold and one block per run, each in its
own process, alternating, twice: CPU seconds per step and the peak RSS every 5 steps.

With `--cache`, only training with oneDNN's primitive cache at its default and off (see
`cnn_kmeans.onednn`), each in its own process, twice, interleaved: CPU seconds per step and the
peak RSS every 5 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnn_kmeans import encoder as encoder_module
from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder
from cnn_kmeans.heap import map_large_allocations
from cnn_kmeans.loss import sample_triplets, triplet_loss
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.onednn import CACHE_ENV, LEGACY_CACHE_ENV
from cnn_kmeans.trainer import as_tensor


class ConvShapes:
    """Counts F.conv1d calls and their shapes while installed."""

    def __init__(self) -> None:
        self.seen: set = set()
        self.step: list = []
        self.original = F.conv1d

    def __enter__(self) -> ConvShapes:
        def counted(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            self.step.append((tuple(x.shape), tuple(weight.shape), dilation))
            return self.original(x, weight, bias, stride, padding, dilation, groups)

        F.conv1d = counted
        return self

    def __exit__(self, *exc: object) -> None:
        F.conv1d = self.original

    def take(self) -> dict:
        shapes = set(self.step)
        new = len(shapes - self.seen)
        self.seen |= shapes
        calls, self.step = len(self.step), []
        return {"calls": calls, "shapes": len(shapes), "new": new}


def conv_floor(calls: list, repeats: int = 3) -> tuple[float, float]:
    """(CPU seconds, forward FLOPs) of the recorded `F.conv1d` calls (input shape, weight shape,
    dilation) replayed alone: forward, then the input gradient (not for one-channel inputs: the
    series need none) and the weight gradient, each call the best of `repeats`."""
    total, flops = 0.0, 0.0
    for x_shape, w_shape, dilation in calls:
        dilation = dilation[0] if isinstance(dilation, (tuple, list)) else int(dilation)
        x = torch.randn(x_shape, requires_grad=x_shape[1] > 1)
        w = torch.randn(w_shape, requires_grad=True)
        batch, c_out, c_in, taps = x_shape[0], w_shape[0], w_shape[1], w_shape[2]
        width = x_shape[2] - dilation * (taps - 1)
        flops += 2.0 * batch * c_out * c_in * taps * width
        best = float("inf")
        for _ in range(repeats):
            began = time.process_time()
            y = F.conv1d(x, w, dilation=dilation)
            y.backward(torch.ones_like(y))
            best = min(best, time.process_time() - began)
            x.grad = w.grad = None
        total += best
    return total, flops


def cells(triplets) -> tuple[int, int]:
    """(true, padded) time steps a training step encodes: its windows' lengths, and the cells of
    the groups they are padded into (`TRAINING_GROUPS` groups, each to its longest window)."""
    lengths = np.concatenate(
        [triplets.anchor_length, triplets.positive_length, triplets.negative_length.ravel()]
    )
    padded = sum(
        len(group) * int(encoder_module.padded_width(int(lengths[group].max())))
        for group in encoder_module.length_buckets(lengths, groups=encoder_module.TRAINING_GROUPS)
    )
    return int(lengths.sum()), padded


def floor(args: argparse.Namespace, config, rng, series, encoder, lengths) -> None:
    """Prints each step's CPU time (recomputation off) beside its convolution floor."""
    set_recompute(False)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    rows = []
    with ConvShapes() as shapes:
        for _ in range(args.floor_steps):
            anchors = rng.permutation(len(lengths))[: config.batch_size]
            triplets = sample_triplets(rng, lengths, anchors, config.negative_samples)
            shapes.step = []
            seconds = step(encoder, optimizer, config, rng, series, lengths, triplets)
            calls = shapes.step
            shapes.step = []
            conv_s, flops = conv_floor(calls)
            true, padded = cells(triplets)
            rows.append((seconds, conv_s, conv_s * true / padded, flops, true, padded))
    print(
        "step CPU s (recompute off) | its convolutions alone | the same at true cells | "
        "forward GFLOP | true/padded cells"
    )
    for seconds, conv_s, true_s, flops, true, padded in rows:
        print(
            f"  {seconds:.2f} | {conv_s:.2f} | {true_s:.2f} | {flops / 1e9:.1f} | "
            f"{true:,}/{padded:,}"
        )
    total = [sum(r[i] for r in rows) for i in range(4)]
    # The steps above are few and their window lengths vary widely: the floor of an average step
    # is the floor per true cell times the mean true cells of many drawn steps.
    draws = np.random.default_rng(1)
    mean_cells = statistics.mean(
        cells(
            sample_triplets(
                draws,
                lengths,
                draws.permutation(len(lengths))[: config.batch_size],
                config.negative_samples,
            )
        )[0]
        for _ in range(2000)
    )
    per_cell = total[2] / sum(r[4] for r in rows)
    print(
        f"  over {len(rows)} steps: the convolutions alone are {total[1] / total[0]:.0%} of the "
        f"step time; at true cells {total[2] / len(rows):.2f} CPU s per step; the step runs its "
        f"convolutions' forward+backward at {3 * total[3] / total[0] / 1e9:.0f} GFLOP/s, alone "
        f"they run at {3 * total[3] / total[1] / 1e9:.0f} (3x the forward FLOPs; load "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    print(
        f"  floor per true cell {per_cell * 1e6:.1f} us; an average step here has "
        f"{mean_cells:,.0f} true cells (2,000 drawn steps): its convolution floor is "
        f"{per_cell * mean_cells:.2f} CPU s"
    )


def setup(args: argparse.Namespace) -> tuple:
    config = Config()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    values = np.cumsum(rng.normal(size=(args.count, args.length)), axis=1) / 5
    series = as_tensor(values, torch.device("cpu"))
    encoder = Encoder.from_config(config)
    return config, rng, series, encoder, np.full(args.count, args.length)


def step(encoder, optimizer, config, rng, series, lengths, triplets=None) -> float:
    """CPU seconds of one optimisation step (on `triplets` if given, else freshly drawn)."""
    began = time.process_time()
    if triplets is None:
        anchors = rng.permutation(len(lengths))[: config.batch_size]
        triplets = sample_triplets(rng, lengths, anchors, config.negative_samples)
    loss = triplet_loss(encoder, series, triplets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.process_time() - began


def top_ops(run, rows: int = 6) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return "\n".join(table.splitlines()[: rows + 4])


def set_recompute(on: bool) -> None:
    """Every training step recomputes its blocks (on) or none does (off), whatever its size."""
    encoder_module.RECOMPUTE_ABOVE_BYTES = 0 if on else sys.maxsize


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from
    the parent, so a child started by a large process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    """One measurement in this process: 'train0', 'train1' (recompute off/on), 'train' (the
    default: recompute past `RECOMPUTE_ABOVE_BYTES`) or 'encode'."""
    start_rss = peak_rss_mb()
    config, rng, series, encoder, lengths = setup(args)
    if args.recompute_run:
        encoder_module.RECOMPUTE_RUN = args.recompute_run
    if not args.malloc_default:
        map_large_allocations(series.numpy())  # as the training job does
    if args.child == "encode":
        model = CNNKMeans(config, device=torch.device("cpu"))
        model.encoder_ = encoder
        values = series.numpy()
        model.encode(values[:10], lengths[:10])
        began = time.process_time()
        model.encode(values, lengths)
        rate = len(lengths) / (time.process_time() - began)
        result = {"series_per_s_cpu": rate}
    else:
        if args.child != "train":
            set_recompute(args.child == "train1")
        optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
        times, peaks = [], []
        for i in range(args.steps):
            times.append(step(encoder, optimizer, config, rng, series, lengths))
            if (i + 1) % 5 == 0:
                peaks.append(round(peak_rss_mb()))
        result = {"step_s_cpu": statistics.median(times[2:]), "peak_rss_mb_every_5_steps": peaks}
    result["start_rss_mb"] = start_rss
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def compare_memory(args: argparse.Namespace) -> None:
    """The training job's memory settings against malloc's default and per-block recomputation
    (see the module docstring), interleaved twice."""
    print(f"length {args.length}, {args.count} series, --steps {args.steps}, oneDNN cache off")
    environ = {**os.environ, CACHE_ENV: "0"}
    for _ in range(2):
        for label, extra in (
            ("as the job (mmap threshold fixed, runs of blocks)", []),
            ("malloc's default, one block per run", ["--malloc-default", "--recompute-run", "1"]),
        ):
            command = [sys.executable, __file__, "--child", "train", *extra]
            command += ["--length", str(args.length), "--count", str(args.count)]
            command += ["--steps", str(args.steps)]
            out = subprocess.run(
                command, check=True, capture_output=True, text=True, env=environ
            ).stdout
            print(f"  {label}: {out.strip()}", flush=True)
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def compare_cache(args: argparse.Namespace) -> None:
    """Training with oneDNN's primitive cache at its default and off (`cnn_kmeans.onednn`), each
    in its own process, interleaved twice: CPU s/step and the peak RSS every 5 steps."""
    print(f"length {args.length}, {args.count} series, --steps {args.steps}, recompute on")
    base = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, LEGACY_CACHE_ENV)}
    for _ in range(2):
        for label, extra in (("cache default", {}), ("cache off", {CACHE_ENV: "0"})):
            command = [sys.executable, __file__, "--child", "train1"]
            command += ["--length", str(args.length), "--count", str(args.count)]
            command += ["--steps", str(args.steps)]
            out = subprocess.run(
                command, check=True, capture_output=True, text=True, env={**base, **extra}
            ).stdout
            print(f"  {label}: {out.strip()}", flush=True)
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=1460)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--cache",
        action="store_true",
        help="only compare oneDNN's primitive cache on and off (recompute on, --steps steps)",
    )
    parser.add_argument(
        "--floor-steps",
        type=int,
        default=8,
        help="steps for the convolution floor (0: skip it)",
    )
    parser.add_argument("--floor-only", action="store_true", help="only the convolution floor")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only compare the training job's memory settings with malloc's and per-block runs",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--malloc-default", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recompute-run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.cache:
        compare_cache(args)
        return
    if args.memory:
        compare_memory(args)
        return
    print(f"length {args.length}, {args.count} series, torch threads {torch.get_num_threads()}")
    config, rng, series, encoder, lengths = setup(args)
    if args.floor_steps:
        floor(args, config, rng, series, encoder, lengths)
        if args.floor_only:
            return
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    times: dict[bool, list[float]] = {False: [], True: []}
    with ConvShapes() as shapes:
        for i in range(args.steps):
            # Both modes on the same windows (window lengths vary a lot from step to step),
            # in alternating order.
            anchors = rng.permutation(len(lengths))[: config.batch_size]
            triplets = sample_triplets(rng, lengths, anchors, config.negative_samples)
            for recompute in (False, True) if i % 2 else (True, False):
                set_recompute(recompute)
                times[recompute].append(
                    step(encoder, optimizer, config, rng, series, lengths, triplets)
                )
                counts = shapes.take()
                if i < 3 or i == args.steps - 1:
                    print(f"  step {i} recompute={recompute}: conv calls/shapes/new {counts}")
    ratios = [on / off for off, on in zip(times[False][1:], times[True][1:], strict=True)]
    off, on = statistics.median(times[False][1:]), statistics.median(times[True][1:])
    print(
        f"step CPU s: recompute off {off:.2f}, on {on:.2f}; on/off same windows: median "
        f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
        f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    set_recompute(True)
    print("one step (recompute on), by self CPU time:")
    print(top_ops(lambda: step(encoder, optimizer, config, rng, series, lengths)))
    model = CNNKMeans(config, device=torch.device("cpu"))
    model.encoder_ = encoder
    with ConvShapes() as shapes:
        print("encoding, by self CPU time:")
        print(top_ops(lambda: model.encode(series.numpy(), lengths)))
        print(f"  encoding conv calls/shapes {shapes.take()}")
    for mode in ("train0", "train1", "train", "encode"):
        command = [sys.executable, __file__, "--child", mode]
        command += ["--length", str(args.length), "--count", str(args.count)]
        command += ["--steps", str(args.steps)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(f"{mode} (own process): {out.strip()}", flush=True)


if __name__ == "__main__":
    main()
