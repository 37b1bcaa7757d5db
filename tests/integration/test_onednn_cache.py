"""Training on long series turns oneDNN's primitive cache off (bounded memory); short series keep
it (1.5x faster steps). Seen through oneDNN's own log of each primitive it creates
(`ONEDNN_VERBOSE=2`: "create:cache_hit" or "create:cache_miss"), in the CLI and the training job.
Long series also fix malloc's mmap threshold (`cnn_kmeans.heap`; tests/unit/test_heap.py checks
its effect); here, that both entrypoints apply it, and only on long series.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from cnn_kmeans.onednn import CACHE_ENV, LONG_SERIES
from tests.integration.opt_ml import (
    TINY,
    assert_same_encoder,
    entrypoint_env,
    make_job,
    train_command,
)
from tests.integration.test_cli import SCRIPT
from tests.integration.test_cli import TINY as CLI_TINY

NOTE = "oneDNN's primitive cache is off"
HEAP_NOTE = "are mapped from the OS (not the heap)"


def walks_csv(length: int, count: int = 12) -> str:
    rows = np.cumsum(np.random.default_rng(length).normal(size=(count, length)), axis=1)
    return "".join(",".join(f"{v:.3f}" for v in row) + "\n" for row in rows)


def convolutions(stdout: str) -> dict[str, int]:
    """How many convolution primitives oneDNN found in its cache and how many it compiled."""
    found = re.findall(r"create:(cache_hit|cache_miss),cpu,convolution", stdout)
    return {kind: found.count(kind) for kind in ("cache_hit", "cache_miss")}


def cli_train(tmp_path: Path, name: str, length: int, **env: str) -> subprocess.CompletedProcess:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train.csv").write_text(walks_csv(length))
    environ = {k: v for k, v in os.environ.items() if k != CACHE_ENV}
    flags = ["--clusters", "2", "--epochs", "1", "--threads", "1", *CLI_TINY]
    result = subprocess.run(
        [SCRIPT, "train", "--train", folder, "--model-dir", tmp_path / f"{name}-model", *flags],
        env={**environ, "ONEDNN_VERBOSE": "2", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_long_series_train_without_the_cache_and_short_ones_with_it(tmp_path):
    long = cli_train(tmp_path, "long", LONG_SERIES + 88)
    assert NOTE in long.stderr and HEAP_NOTE in long.stderr
    assert convolutions(long.stdout)["cache_hit"] == 0 and convolutions(long.stdout)["cache_miss"]
    short = cli_train(tmp_path, "short", 100)
    assert NOTE not in short.stderr and HEAP_NOTE not in short.stderr
    # Any hit means the cache is on (off, every primitive is a miss). How many depends on the
    # steps: since short steps store their activations instead of recomputing blocks, a 2-step
    # run creates most of its primitives once.
    assert convolutions(short.stdout)["cache_hit"] > 0


def test_a_capacity_the_user_set_is_kept_and_the_cache_changes_no_weight(tmp_path):
    off = cli_train(tmp_path, "off", LONG_SERIES + 88)
    kept = cli_train(tmp_path, "kept", LONG_SERIES + 88, **{CACHE_ENV: "1024"})
    assert NOTE in off.stderr and NOTE not in kept.stderr
    assert convolutions(kept.stdout)["cache_hit"] > 0
    assert_same_encoder(tmp_path / "off-model", tmp_path / "kept-model")


def test_the_training_job_turns_the_cache_off_on_long_series(tmp_path):
    root = make_job(
        tmp_path / "opt_ml",
        {**TINY, "clusters": "2", "epochs": "1"},
        {"training": {"train.csv": walks_csv(LONG_SERIES + 88)}},
    )
    environ = {k: v for k, v in entrypoint_env(root).items() if k != CACHE_ENV}
    result = subprocess.run(
        train_command(),
        env={**environ, "ONEDNN_VERBOSE": "2", "CNN_KMEANS_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert NOTE in result.stderr and HEAP_NOTE in result.stderr
    counts = convolutions(result.stdout)
    assert counts["cache_hit"] == 0 and counts["cache_miss"] > 0
