"""Lay out a temporary /opt/ml as SageMaker does, and run the training entrypoint on it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cnn_kmeans.container.metrics import METRICS

TINY = {"blocks": "2", "filters": "8", "reduced-size": "16", "output-size": "8", "clusters": "3"}


def make_job(
    root: Path,
    hyperparameters: dict[str, str],
    channels: dict[str, dict[str, bytes | str]],
    *,
    checkpoints: bool = False,
    input_mode: str = "File",
    distribution: str = "FullyReplicated",
    checkpoint_config: dict[str, str] | None = None,
) -> Path:
    """Write input/config/*.json and input/data/<channel>/<file> under root; returns root.

    Args:
        root: the folder standing for /opt/ml.
        hyperparameters: name -> value, strings as SageMaker writes them.
        channels: channel -> {relative file path: content}.
        checkpoints: create /opt/ml/checkpoints (SageMaker does when checkpointing is on).
        input_mode: every channel's TrainingInputMode (File, FastFile or Pipe).
        distribution: every channel's S3DistributionType (FullyReplicated, ShardedByS3Key).
        checkpoint_config: the job's CheckpointConfig as SageMaker writes it to
            input/config/checkpointconfig.json ({"LocalPath": ..., "S3Uri": ...}).
    """
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    data_config = {
        name: {
            "ContentType": "application/x-sagemaker-model" if name == "model" else "text/csv",
            "TrainingInputMode": input_mode,
            "S3DistributionType": distribution,
            "RecordWrapperType": "None",
        }
        for name in channels
    }
    (config / "inputdataconfig.json").write_text(json.dumps(data_config))
    set_hosts(root, "algo-1", ["algo-1"], "eth0")
    for name, files in channels.items():
        folder = root / "input" / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        for relative, content in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content)
            else:
                path.write_bytes(content)
    if checkpoints:
        (root / "checkpoints").mkdir(exist_ok=True)
    if checkpoint_config is not None:
        (config / "checkpointconfig.json").write_text(json.dumps(checkpoint_config))
    return root


def set_hosts(root: Path, current: str, hosts: list[str], interface: str) -> None:
    """Write resourceconfig.json as SageMaker does for `current` among `hosts`."""
    group = "homogeneousCluster"
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": current,
                "current_instance_type": "ml.m5.large",
                "current_group_name": group,
                "hosts": hosts,
                "instance_groups": [
                    {
                        "instance_group_name": group,
                        "instance_type": "ml.m5.large",
                        "hosts": hosts,
                    }
                ],
                "network_interface_name": interface,
            }
        )
    )


def entrypoint_env(root: Path) -> dict[str, str]:
    """The process environment of a job on this root."""
    return {**os.environ, "SAGEMAKER_BASE_DIR": str(root), "PYTHONUNBUFFERED": "1"}


def train_command() -> list[str]:
    """What the training image runs (with its literal `train` argument)."""
    return [sys.executable, "-m", "cnn_kmeans.container.train", "train"]


def run_job(root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the training entrypoint to completion."""
    return subprocess.run(
        train_command(),
        env=entrypoint_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def metric_values(stdout: str) -> dict[str, list[float]]:
    """Every metric's values in the log, found with the exported MetricDefinitions regexes."""
    import re

    return {metric.name: [float(v) for v in re.findall(metric.regex, stdout)] for metric in METRICS}


def terminate_after(process: subprocess.Popen, root: Path, epochs: int) -> int:
    """Wait for `epochs` train_loss lines, send SIGTERM as SageMaker does, check the job stops
    within 30 s with exit code 143; returns the number of epochs it completed."""
    import time

    seen = 0
    while seen < epochs:  # epochs are done: the job is inside the training loop
        line = process.stdout.readline()
        assert line, process.stderr.read()
        seen += line.startswith("train_loss")
    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    out, err = process.communicate(timeout=120)
    assert time.monotonic() - began < 30
    assert process.returncode == 143, err
    assert "SIGTERM" in (root / "output" / "failure").read_text()
    assert (root / "checkpoints" / "cnn-kmeans-checkpoint.pt").is_file()
    return seen + out.count("train_loss")


def start_job(root: Path, **extra_env: str) -> subprocess.Popen:
    """Start the training entrypoint in the background, its output piped."""
    return subprocess.Popen(
        train_command(),
        env={**entrypoint_env(root), **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_same_encoder(first: Path, second: Path) -> None:
    """The encoder.pt of two model folders hold exactly the same tensors."""
    import torch

    expected = torch.load(second / "encoder.pt", weights_only=True)
    got = torch.load(first / "encoder.pt", weights_only=True)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun and its workers below the entrypoint)."""
    found, parents = [], [pid]
    while parents:
        for task in Path(f"/proc/{parents.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                parents += children
    return found


def finish(process: subprocess.Popen, timeout: float, hint: str = "") -> tuple[str, str]:
    """The job's stdout and stderr once it ends; past `timeout` kill it and everything it
    started (torchrun's workers are in sessions of their own: killpg misses them), and fail with
    `hint` and the end of its log (where it hung)."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, err = process.communicate()
        pytest.fail(
            f"the job did not end within {timeout} s{hint}; the end of its log:\n{err[-3000:]}"
        )
