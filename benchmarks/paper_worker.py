"""One measurement of bench_paper.py, in a fresh process: the paper's code or cnn-kmeans.

    python benchmarks/paper_worker.py '{"side": "paper", "paper_dir": ..., "data": ..., ...}'

Prints one JSON line: the seconds of every optimisation step, the encoding passes' seconds, and
the process's peak resident memory (MB). The paper's side imports only the paper's code, torch,
numpy and scikit-learn; cnn-kmeans is imported only on its own side, so neither process carries
the other's modules. Both train on the same `train.npy` and encode the same `all.npy` (N, L)
float64 arrays, NaN after each series' end.

How each side is timed (neither side's code is changed):

- paper: `scikit_wrappers.CausalCNNEncoderClassifier(**default_hyperparameters.json)` with
  `nb_steps` = warm-up + measured steps, then `fit_encoder(X)`: its own loop (DataLoader batches,
  `TripletLoss` or, when the data hold NaN, `TripletLossVaryingLength`, backward, Adam). A
  post-step hook on its optimizer (`register_step_post_hook`, torch's public API) stamps the
  time after every step. Encoding: its `encode(X, batch_size=50)`, which batches equal-length
  data by 50 and, when any value is NaN, encodes series one at a time (batch size 1), each cut
  to its length: that is what its code does with unequal lengths.
- cnn-kmeans: `CNNKMeans(Config(...)).start(X)` then the product's `Trainer.fit` (the loop a
  training job runs) with `on_step` stamping the time after every step and `should_stop`
  ending it after the same number of steps. Encoding: `CNNKMeans.transform(X)`, the path a
  user or the server takes (cleaning and scaling included).

Step i's time is stamp i minus stamp i-1 (stamp 0 is taken just before training starts), so
each covers everything the loop does between two optimizer steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_common import peak_rss_mb


def encode_passes(encode, data: np.ndarray, warmup_rows: int, repeats: int) -> list[float]:
    """Seconds of `repeats` passes of `encode(data)`, after one warm-up on the first rows."""
    encode(data[:warmup_rows])
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        encode(data)
        seconds.append(time.perf_counter() - began)
    return seconds


def run_paper(spec: dict, train: np.ndarray, data: np.ndarray) -> dict:
    """Train and encode with the paper's code (its directory first on sys.path)."""
    sys.path.insert(0, spec["paper_dir"])
    import scikit_wrappers  # the paper's module
    import torch

    torch.set_num_threads(spec["threads"])
    np.random.seed(spec["seed"])  # the paper's sampling draws from numpy's global generator
    torch.manual_seed(spec["seed"])
    hyper = json.loads((Path(spec["paper_dir"]) / "default_hyperparameters.json").read_text())
    hyper.update(nb_steps=spec["warmup"] + spec["steps"], cuda=False, gpu=0)
    model = scikit_wrappers.CausalCNNEncoderClassifier(**hyper)

    # As the paper's ucr.py prepares UCR data: (N, 1, L) float64, one mean and variance over
    # all values (it skips this for some sets; values do not change the timing).
    mean, std = np.nanmean(data), np.nanstd(data)
    train = ((train - mean) / std)[:, None, :]
    data = ((data - mean) / std)[:, None, :]

    stamps: list[float] = []
    model.optimizer.register_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    stamps.append(time.perf_counter())
    model.fit_encoder(train)
    train_peak = peak_rss_mb()

    encode_s = encode_passes(
        lambda x: model.encode(x, batch_size=50), data, spec["warmup_rows"], spec["repeats"]
    )
    return {
        "version": f"torch {torch.__version__}",
        "step_s": list(np.diff(stamps)),
        "train_peak_mb": train_peak,
        "encode_s": encode_s,
    }


def run_ours(spec: dict, train: np.ndarray, data: np.ndarray) -> dict:
    """Train and encode with cnn-kmeans's training loop and transform."""
    import torch

    from cnn_kmeans import __version__
    from cnn_kmeans.config import Config
    from cnn_kmeans.errors import TrainingInterrupted
    from cnn_kmeans.heap import map_large_allocations
    from cnn_kmeans.model import CNNKMeans
    from cnn_kmeans.onednn import limit_primitive_cache

    torch.set_num_threads(spec["threads"])
    limit_primitive_cache(os.environ, train)  # as the training job does, before training
    map_large_allocations(train)
    total = spec["warmup"] + spec["steps"]
    # The defaults are the paper's: batch 10, 10 negatives, 40 filters, 10 blocks, reduced 160,
    # output 320, kernel 3, lr 0.001 (bench_paper.py prints them). Epochs only bound the run.
    config = Config(seed=spec["seed"], epochs=10_000)
    model = CNNKMeans(config, torch.device("cpu"))
    training = model.start(train)
    stamps = [time.perf_counter()]
    with contextlib.suppress(TrainingInterrupted):  # how should_stop ends the run
        training.trainer.fit(
            training.train,
            training.lengths,
            should_stop=lambda: len(stamps) > total,
            on_step=lambda: stamps.append(time.perf_counter()),
        )
    train_peak = peak_rss_mb()

    encode_s = encode_passes(model.transform, data, spec["warmup_rows"], spec["repeats"])
    return {
        "version": f"cnn-kmeans {__version__}, torch {torch.__version__}",
        "step_s": list(np.diff(stamps)),
        "train_peak_mb": train_peak,
        "encode_s": encode_s,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    folder = Path(spec["data"])
    train = np.load(folder / "train.npy", allow_pickle=False)
    data = np.load(folder / "all.npy", allow_pickle=False)
    run = run_paper if spec["side"] == "paper" else run_ours
    result = run(spec, train, data)
    result.update(side=spec["side"], shape=spec["shape"], peak_mb=peak_rss_mb())
    expected = spec["warmup"] + spec["steps"]
    if len(result["step_s"]) != expected:
        raise SystemExit(f"{spec['side']}: took {len(result['step_s'])} steps, not {expected}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
