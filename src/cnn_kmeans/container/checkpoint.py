"""Training checkpoints for managed spot training: save periodically and on SIGTERM, resume.

A checkpoint is one torch file of tensors and plain values (loaded with weights_only=True): the
trainer's state (encoder, optimizer, sampling generator, position inside the epoch) plus the
hyperparameters and scaler it belongs to. It is written to a temporary name and renamed, so a
kill mid-write never leaves a torn checkpoint behind.

Where: a training job's `CheckpointConfig.LocalPath` (default `/opt/ml/checkpoints`) reaches the
container only as `/opt/ml/input/config/checkpointconfig.json`, `{"LocalPath": ..., "S3Uri":
...}`, written when the job has a CheckpointConfig. Neither the SageMaker API reference nor the
developer guide documents that file; AWS's own sagemaker-debugger reads it there
(awslabs/sagemaker-debugger, smdebug/core/config_constants.py: DEFAULT_CHECKPOINT_CONFIG_FILE,
CHECKPOINT_DIR_KEY = "LocalPath"; smdebug/core/state_store.py), and logs of real jobs without a
CheckpointConfig show smdebug's "The checkpoint config file
/opt/ml/input/config/checkpointconfig.json does not exist". The training toolkit
(aws/sagemaker-training-toolkit) exposes no checkpoint path or variable at all. So, defensively:
the file, when present, decides (its LocalPath is honoured, created if missing, and a file we
cannot read or a path we cannot write fails the job with the reason); without it, the default
folder is used when it exists, as before. Checkpointing is never skipped silently.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from cnn_kmeans.config import Config
from cnn_kmeans.distributed import World
from cnn_kmeans.errors import UserError
from cnn_kmeans.persistence import unreadable
from cnn_kmeans.preprocess import Scaler
from cnn_kmeans.trainer import Trainer

log = logging.getLogger(__name__)

FILE_NAME = "cnn-kmeans-checkpoint.pt"
FORMAT_VERSION = 1
CONFIG_FILE = "checkpointconfig.json"  # in /opt/ml/input/config; see the module docstring
DEFAULT_LOCAL_PATH = PurePosixPath("/opt/ml/checkpoints")
INTERVAL_ENV = "CNN_KMEANS_CHECKPOINT_INTERVAL_S"
DEFAULT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class CheckpointSettings:
    """Where checkpoints go (None: checkpointing is off) and how often they are written."""

    directory: Path | None
    every_s: float = DEFAULT_INTERVAL_S

    @classmethod
    def from_job(
        cls, root: Path, config_dir: Path, environ: Mapping[str, str]
    ) -> CheckpointSettings:
        """Read `checkpointconfig.json` and `CNN_KMEANS_CHECKPOINT_INTERVAL_S`.

        Args:
            root: the folder standing for /opt/ml (SAGEMAKER_BASE_DIR): a LocalPath under
                /opt/ml is taken relative to it, so a redirected root behaves like /opt/ml.
            config_dir: `input/config`.
            environ: the process environment.
        """
        return cls(_local_path(root, config_dir / CONFIG_FILE), _interval(environ))


def _local_path(root: Path, config_file: Path) -> Path | None:
    default = root / DEFAULT_LOCAL_PATH.relative_to("/opt/ml")
    if not config_file.exists():
        return default if default.is_dir() else None
    try:
        config = json.loads(config_file.read_text())
        local = config.get("LocalPath") or str(DEFAULT_LOCAL_PATH)
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(
            f"{config_file} (the job's CheckpointConfig) cannot be read ({error}), so the job "
            "cannot tell where to write its checkpoints; run it again, or without checkpoints"
        ) from None
    path = PurePosixPath(str(local))
    if not path.is_absolute():
        raise UserError(
            f"CheckpointConfig.LocalPath={local!r} is not an absolute path; give an absolute "
            "one such as /opt/ml/checkpoints, or leave it out"
        )
    # Under /opt/ml: relative to the (possibly redirected) root, like every other path.
    inside = path.is_relative_to("/opt/ml")
    directory = root / path.relative_to("/opt/ml") if inside else Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):  # no test file: the folder syncs to S3
            raise PermissionError(f"{directory} is not writable")
    except OSError as error:
        raise UserError(
            f"CheckpointConfig.LocalPath={local!r} cannot hold checkpoints ({error}); give a "
            "writable folder, or leave LocalPath out (default /opt/ml/checkpoints)"
        ) from None
    return directory


def _interval(environ: Mapping[str, str]) -> float:
    text = environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UserError(f"{INTERVAL_ENV}={text!r} must be a number of seconds, 0 or more")
    return value


class Checkpointer:
    """Saves and restores a trainer's state in a checkpoint folder."""

    def __init__(
        self,
        directory: Path,
        config: Config,
        scaler: Scaler,
        every_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(directory) / FILE_NAME
        self.config = config
        self.scaler = scaler
        self.every_s = every_s
        self.clock = clock
        self.last_save = clock()

    def save(self, trainer: Trainer) -> None:
        """Write the trainer's state now."""
        state = {
            "format_version": FORMAT_VERSION,
            "hyperparameters": self.config.to_dict(),
            "scaler": self.scaler.to_dict(),
            "trainer": trainer.state_dict(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        buffer = io.BytesIO()  # in memory first: a full disk is then an OSError(ENOSPC)
        torch.save(state, buffer)
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, self.path)
        self.last_save = self.clock()
        log.info(
            "checkpoint saved to %s (epoch %d, step %d)",
            self.path,
            trainer.epoch + (trainer.order is not None),
            trainer.step if trainer.order is not None else 0,
        )

    def maybe_save(self, trainer: Trainer) -> bool:
        """Save if the last save is older than `every_s` seconds; returns whether it did."""
        if self.clock() - self.last_save < self.every_s:
            return False
        self.save(trainer)
        return True

    def restore(self, trainer: Trainer, world: World | None = None) -> bool:
        """Load the checkpoint into the trainer if there is one; returns whether it did.

        Data-parallel: rank 0 reads the file and sends it to every process (on a multi-host
        job only the leader's checkpoint folder is certain to hold it).
        """
        world = world or World()
        payload = self.path.read_bytes() if world.leader and self.path.is_file() else None
        payload = world.broadcast_bytes(payload)
        if not payload:
            return False
        try:
            state: dict[str, Any] = torch.load(
                io.BytesIO(payload), map_location="cpu", weights_only=True
            )
        except Exception as error:  # a checkpoint that cannot be decoded is unusable
            raise UserError(
                f"checkpoint {self.path} cannot be read ({unreadable(error)}); delete it or use a "
                "new checkpoint location"
            ) from None
        if state.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"checkpoint {self.path} has format version {state.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}; use a new checkpoint location"
            )
        saved = state["hyperparameters"]
        current = self.config.to_dict()
        differ = [f"{k}={saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v]
        if differ or state["scaler"] != self.scaler.to_dict():
            what = "; ".join(differ) or "the training data (its scaling differs)"
            raise UserError(
                f"checkpoint {self.path} belongs to another job ({what}); resume with the same "
                "hyperparameters and data, or use a new checkpoint location"
            )
        trainer.load_state_dict(state["trainer"])
        log.info(
            "resumed from checkpoint %s: %d epoch(s) and %d step(s) done",
            self.path,
            trainer.epoch,
            trainer.step,
        )
        return True
