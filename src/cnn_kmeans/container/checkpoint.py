"""Training checkpoints for managed spot training: save periodically and on SIGTERM, resume.

A checkpoint is one torch file of tensors and plain values (loaded with weights_only=True): the
trainer's state (encoder, optimizer, sampling generator, position inside the epoch) plus the
hyperparameters and scaler it belongs to. It is written to a temporary name and renamed, so a
kill mid-write never leaves a torn checkpoint behind.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
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


class Checkpointer:
    """Saves and restores a trainer's state in a checkpoint folder."""

    def __init__(self, directory: Path, config: Config, scaler: Scaler, every_s: float = 60.0):
        self.path = Path(directory) / FILE_NAME
        self.config = config
        self.scaler = scaler
        self.every_s = every_s
        self.last_save = time.monotonic()

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
        self.last_save = time.monotonic()
        log.info(
            "checkpoint saved to %s (epoch %d, step %d)",
            self.path,
            trainer.epoch + (trainer.order is not None),
            trainer.step if trainer.order is not None else 0,
        )

    def maybe_save(self, trainer: Trainer) -> None:
        """Save if the last save is older than `every_s` seconds."""
        if time.monotonic() - self.last_save >= self.every_s:
            self.save(trainer)

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
            "resumed from checkpoint %s: %d of %d epochs done",
            self.path,
            trainer.epoch,
            self.config.epochs,
        )
        return True
