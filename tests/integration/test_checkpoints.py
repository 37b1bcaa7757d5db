"""Checkpoints and stopping as SageMaker drives them: CheckpointConfig.LocalPath, saves between
steps once the interval has passed, refusal of another job's checkpoint, and a SIGTERM that
stops a job after some epochs still leaving a usable model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from cnn_kmeans.container.checkpoint import FILE_NAME, INTERVAL_ENV
from cnn_kmeans.persistence import load
from tests.helpers import cylinder_bell_funnel
from tests.integration.opt_ml import (
    TINY,
    assert_same_encoder,
    make_job,
    metric_values,
    run_job,
    start_job,
    train_command,
)

EPOCHS = 3
# 20 series in batches of 5: 4 steps per epoch, so "epoch 2, step 2" is mid-epoch.
HYPERPARAMETERS = {**TINY, "epochs": str(EPOCHS), "batch-size": "5"}
EVERY_STEP = {INTERVAL_ENV: "0"}  # a checkpoint after every step


def small_csv(count: int, seed: int) -> str:
    rows, _ = cylinder_bell_funnel(count, seed=seed, low=20, high=40)
    return "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in rows)


CHANNELS = {"training": {"t.csv": small_csv(20, 5)}}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The job run once without interruption or checkpoints: the reference model."""
    root = make_job(tmp_path_factory.mktemp("straight"), HYPERPARAMETERS, CHANNELS)
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    return root


def assert_same_model(root: Path, reference: Path) -> None:
    np.testing.assert_array_equal(
        np.load(root / "model" / "centroids.npy"), np.load(reference / "model" / "centroids.npy")
    )
    assert_same_encoder(root / "model", reference / "model")


def signal_at_step(process: subprocess.Popen, epoch: int, step: int, signum: int) -> str:
    """Read the job's log until it saved the checkpoint of (epoch, step), then send `signum`;
    returns the log read so far."""
    seen = []
    marker = f"(epoch {epoch}, step {step})"
    for line in process.stderr:
        seen.append(line)
        if "checkpoint saved" in line and marker in line:
            process.send_signal(signum)
            return "".join(seen)
    raise AssertionError(f"the job ended before {marker}:\n{''.join(seen)}")


# -- CheckpointConfig.LocalPath ----------------------------------------------------------------


def test_a_local_path_outside_opt_ml_is_where_checkpoints_go_and_resume_from(tmp_path, straight):
    elsewhere = tmp_path / "spot-checkpoints"  # not created: SageMaker may leave that to us
    config = {"S3Uri": "s3://bucket/prefix", "LocalPath": str(elsewhere)}
    root = make_job(tmp_path / "job", HYPERPARAMETERS, CHANNELS, checkpoint_config=config)
    process = start_job(root, **EVERY_STEP)
    signal_at_step(process, 2, 2, signal.SIGKILL)
    process.communicate(timeout=120)
    assert (elsewhere / FILE_NAME).is_file()
    assert not (root / "checkpoints").exists()

    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert f"resumed from checkpoint {elsewhere / FILE_NAME}" in result.stderr
    assert_same_model(root, straight)


def test_a_local_path_under_opt_ml_follows_the_redirected_root(tmp_path):
    config = {"S3Uri": "s3://bucket/prefix", "LocalPath": "/opt/ml/spot/"}
    root = make_job(
        tmp_path, {**HYPERPARAMETERS, "epochs": "1"}, CHANNELS, checkpoint_config=config
    )
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert (root / "spot" / FILE_NAME).is_file()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"LocalPath": "ckpt"}, "CheckpointConfig.LocalPath='ckpt' is not an absolute path"),
        ({"LocalPath": "FILE/sub"}, "CheckpointConfig.LocalPath='FILE/sub' cannot hold"),
        ("{not json", "checkpointconfig.json (the job's CheckpointConfig) cannot be read"),
    ],
)
def test_a_checkpoint_config_that_cannot_be_honoured_fails_the_job_clearly(
    tmp_path, content, fragment
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = make_job(tmp_path / "job", HYPERPARAMETERS, CHANNELS)
    if isinstance(content, dict):
        content = {k: v.replace("FILE", str(blocker)) for k, v in content.items()}
        fragment = fragment.replace("FILE", str(blocker))
        content = json.dumps(content)
    (root / "input" / "config" / "checkpointconfig.json").write_text(content)
    result = run_job(root)
    assert result.returncode == 1, result.stderr
    failure = (root / "output" / "failure").read_text()
    assert fragment in failure and "Traceback" not in failure
    assert not (root / "model" / "config.json").exists()


# -- between steps, and another job's checkpoint -----------------------------------------------


def test_checkpoints_between_steps_lose_at_most_the_interval_to_a_sigkill(tmp_path, straight):
    # SIGKILL (no handler runs) in the middle of epoch 2: only a checkpoint written between
    # steps can hold that progress; the rerun resumes mid-epoch and ends with the same model.
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    process = start_job(root, **EVERY_STEP)
    signal_at_step(process, 2, 2, signal.SIGKILL)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert len(metric_values(out)["train_loss"]) == 1  # one epoch reported before the kill

    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoint" in result.stderr
    assert len(metric_values(result.stdout)["train_loss"]) == EPOCHS - 1
    assert_same_model(root, straight)


def test_the_default_interval_saves_once_a_minute_not_at_every_step(tmp_path):
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    result = run_job(root)  # seconds long: only the final save
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("checkpoint saved") == 1
    every = make_job(tmp_path / "every", HYPERPARAMETERS, CHANNELS, checkpoints=True)
    process = start_job(every, **EVERY_STEP)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    saved = re.findall(r"checkpoint saved to .* \(epoch (\d+), step (\d+)\)", err)
    steps = [(int(epoch), int(step)) for epoch, step in saved if step != "0"]
    assert steps == [(epoch, step) for epoch in range(1, EPOCHS + 1) for step in range(1, 5)]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hyperparameters": {"lr": "0.01"}}, "lr=0.001 -> 0.01"),
        ({"channels": {"training": {"t.csv": small_csv(20, 6)}}}, "its scaling differs"),
    ],
)
def test_a_checkpoint_of_another_job_is_refused_and_left_alone(tmp_path, change, fragment):
    root = make_job(tmp_path, {**HYPERPARAMETERS, "epochs": "1"}, CHANNELS, checkpoints=True)
    assert run_job(root).returncode == 0
    checkpoint = (root / "checkpoints" / FILE_NAME).read_bytes()
    (root / "model" / "config.json").unlink()

    make_job(
        root,
        {**HYPERPARAMETERS, "epochs": "1", **change.get("hyperparameters", {})},
        change.get("channels", CHANNELS),
    )
    result = run_job(root)
    assert result.returncode == 1, result.stderr
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith(f"checkpoint {root / 'checkpoints' / FILE_NAME} belongs to another")
    assert fragment in failure and "use a new checkpoint location" in failure
    assert (root / "checkpoints" / FILE_NAME).read_bytes() == checkpoint
    assert not (root / "model" / "config.json").exists()


# -- stopping ----------------------------------------------------------------------------------


def test_sigterm_after_an_epoch_writes_a_usable_model_then_a_rerun_completes(tmp_path, straight):
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    process = start_job(root, **EVERY_STEP)
    signal_at_step(process, 2, 2, signal.SIGTERM)
    began = time.monotonic()
    out, err = process.communicate(timeout=120)
    assert time.monotonic() - began < 60  # well inside SageMaker's 120 s
    assert process.returncode == 143, err

    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("Training stopped by SIGTERM after 1 of 3 epochs and ")
    assert "a usable model was written" in failure
    assert "the model written is usable" in err
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    stopped = report["stopped_early"]
    assert stopped["signal"] == "SIGTERM" and stopped["model_written"] is True
    assert (stopped["epochs_completed"], stopped["epochs"]) == (1, EPOCHS)
    assert stopped["steps_into_next_epoch"] >= 2
    model = load(root / "model")  # loads, and predicts
    series, _ = cylinder_bell_funnel(12, seed=9, low=20, high=40)
    labels = model.predict(series)
    assert labels.shape == (12,) and set(labels.tolist()) <= {0, 1, 2}
    assert len(metric_values(out)["train_score"]) == 1
    assert (root / "checkpoints" / FILE_NAME).is_file()

    (root / "output" / "failure").unlink()
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert_same_model(root, straight)
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    assert report["stopped_early"] is None and report["resumed_from_checkpoint"] is True


def test_sigterm_before_the_first_epoch_ends_writes_no_model(tmp_path):
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    process = start_job(root, **EVERY_STEP)
    signal_at_step(process, 1, 2, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    failure = (root / "output" / "failure").read_text()
    assert "before the first epoch ended, so no model was written" in failure
    assert not (root / "model" / "config.json").exists()
    assert (root / "checkpoints" / FILE_NAME).is_file()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_sigterm_to_pid_1_before_torch_is_imported_stops_the_job(tmp_path):
    # In the container the entrypoint is PID 1 of its PID namespace, and the kernel drops a
    # signal sent there from outside unless PID 1 has a handler for it (pid_namespaces(7)).
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    command = ["unshare", "--pid", "--fork", "--kill-child", "--", *train_command()]
    probe = subprocess.run([*command[:5], "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    unshare = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline:
            children = _children(unshare.pid)
            job = children[0] if children else None
            if job is not None and _catches_sigterm(job):
                break
            time.sleep(0.001)
        assert job is not None and _catches_sigterm(job), "the handler never appeared"
        assert not _torch_loaded(job), "the SIGTERM handler was installed only after torch"
        os.kill(job, signal.SIGTERM)
        out, err = unshare.communicate(timeout=120)
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait()
    assert unshare.returncode == 143, err
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("Training stopped by SIGTERM during start-up (before training")
    assert "SIGTERM received" in err and "Traceback" not in err
    assert out == "" and not (root / "model" / "config.json").exists()
