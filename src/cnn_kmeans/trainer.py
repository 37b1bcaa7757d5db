"""Optimisation of the encoder with the triplet loss, epoch by epoch, with resumable state."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from cnn_kmeans.config import Config
from cnn_kmeans.distributed import World
from cnn_kmeans.encoder import INFERENCE_CELLS, Encoder, Ensemble, encode_windows, member_seed
from cnn_kmeans.errors import TrainingInterrupted
from cnn_kmeans.loss import (
    TripletObjective,
    Triplets,
    augment_positives,
    sample_triplets,
    triplet_loss,
)
from cnn_kmeans.refine import ClusteringObjective, soft_assignments, target_distribution

__all__ = ["EpochReport", "Trainer", "TrainingInterrupted", "as_tensor"]

log = logging.getLogger(__name__)

# Validation loss is an average over at most this many anchors, always the same ones.
MAX_VALIDATION_ANCHORS = 1024


@dataclass(frozen=True)
class EpochReport:
    """What one finished epoch reports (times in seconds)."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    valid_loss: float | None
    seconds: float
    elapsed: float
    eta: float


def as_tensor(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, L) NaN-padded float array -> float32 tensor on `device`, NaN-padded still.

    On the CPU the array itself when it is float32 and contiguous, not a copy (N x L float32
    more for as long as training or encoding lasts: 600 MB at 10^6 series of 150 values).
    `encode_windows` never reads past a window's end, and a series' steps before its end are
    finite (`preprocess.clean` filled the gaps).
    """
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)


def planned_epochs(config: Config, series: int) -> int:
    """Passes a job makes over `series` training series with each encoder: `epochs`, or more
    when `min_steps` asks for more optimisation steps than `epochs` passes give (small sets),
    or fewer when `max_steps` caps them (large sets). Both budgets end with the pass that
    reaches them, so min-steps = max-steps = S trains ⌈S / steps per pass⌉ passes."""
    steps_per_epoch = math.ceil(series / config.batch_size)
    passes = config.epochs
    if config.max_steps:
        passes = min(passes, math.ceil(config.max_steps / steps_per_epoch))
    return max(passes, math.ceil(config.min_steps / steps_per_epoch))


def total_epochs(config: Config, series: int) -> int:
    """All passes of a job: `planned_epochs` with each of the `encoders`, one encoder after the
    other, then `cluster_epochs` of the clustering stage."""
    return planned_epochs(config, series) * config.encoders + config.cluster_epochs


def encode_series(
    encoder: Encoder | Ensemble,
    series: torch.Tensor,
    lengths: np.ndarray,
    world: World,
    max_cells: int,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Features (N, D) of the whole series of `series` ((N, L), see `encode_windows`), without
    gradients, in batches of at most `max_cells` cells. Data-parallel (a collective): each rank
    encodes its shard (`World.shard`) and every rank receives all the rows."""
    rows = world.shard(len(lengths))
    encoder.eval()
    with torch.inference_mode():
        features = encode_windows(
            encoder,
            series,
            rows,
            np.zeros(len(rows), dtype=np.int64),
            lengths[rows],
            max_cells=max_cells,
            on_batch=on_batch,
        )
        return world.gather_rows(features, len(lengths))


class Trainer:
    """Trains an encoder, or the encoders of an `Ensemble` one after another; `state_dict`
    captures everything needed to resume exactly, even from the middle of an epoch (the epoch's
    shuffled order and the steps already taken).

    Encoder i of an ensemble trains exactly as a one-encoder job with seed `member_seed(i)`
    would: its own optimizer and sampling generator, its `planned_epochs`.
    """

    def __init__(
        self, encoder: Encoder | Ensemble, config: Config, world: World | None = None
    ) -> None:
        self.encoder = encoder
        self.config = config
        self.world = world or World(device=next(encoder.parameters()).device)
        self._use_member(0)
        self.epoch = 0  # epochs completed (over all encoders)
        self.elapsed = 0.0  # seconds spent in completed epochs
        self.order: np.ndarray | None = None  # the current epoch's shuffled anchors
        self.step = 0  # steps taken in the current epoch
        self.loss_sum = 0.0  # sum of loss x anchors over those steps
        # The clustering stage (`cluster_epochs`, see `cnn_kmeans.refine`): its centroids live in
        # `self.objective` once it has begun; `target` is the current epoch's (N, k) target.
        self.staged = False
        self.target: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        """Where the encoder lives."""
        return next(self.encoder.parameters()).device

    def _use_member(self, index: int) -> None:
        """Train encoder `index` of the ensemble from now on (the encoder itself when alone):
        a new objective, optimizer and sampling generator, as a job of its seed has."""
        self.member = index
        encoder = self.encoder.members[index]
        self.objective: torch.nn.Module = TripletObjective(encoder, self.config.negative_drop)
        if self.world.distributed:
            # DDP averages gradients across processes; every rank starts from rank 0's weights.
            devices = [self.world.device] if self.world.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=devices)
        self.optimizer = torch.optim.Adam(encoder.parameters(), lr=self.config.lr)
        self.rng = np.random.default_rng(member_seed(self.config, index))

    def fit(
        self,
        train: np.ndarray,
        train_lengths: np.ndarray,
        valid: np.ndarray | None = None,
        valid_lengths: np.ndarray | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        """Run the remaining epochs up to `total_epochs`: `planned_epochs` (`config.epochs`, or
        more to reach `config.min_steps` steps) with each encoder, then the clustering stage.

        Args:
            train: (N, L) cleaned, scaled series, NaN after each series' end.
            train_lengths: (N,) lengths.
            valid, valid_lengths: the same for the validation set, or None.
            on_epoch: called after every epoch (progress, metrics, checkpoints).
            should_stop: asked before every step; when it returns True, TrainingInterrupted
                is raised with the state at that step boundary.
            on_step: called after every step, at a step boundary (`state_dict` then resumes
                from the next step): checkpoints between epochs' ends.
        """
        series = as_tensor(train, self.device)
        valid_series = None if valid is None else as_tensor(valid, self.device)
        per_encoder = planned_epochs(self.config, len(train_lengths))
        count = len(self.encoder.members)
        epochs = total_epochs(self.config, len(train_lengths))
        while self.epoch < epochs:
            began = time.perf_counter()
            member = min(self.epoch // per_encoder, count - 1)
            if member != self.member and self.order is None:
                log.info(
                    "encoder %d of %d (seed %d)",
                    member + 1,
                    count,
                    member_seed(self.config, member),
                )
                self._use_member(member)
            if self.epoch >= per_encoder * count and self.order is None:
                self._stage_epoch(series, train_lengths)
            train_loss = self.run_epoch(series, train_lengths, should_stop, on_step)
            valid_loss = (
                None if valid_series is None else self.validation_loss(valid_series, valid_lengths)
            )
            seconds = time.perf_counter() - began
            self.epoch += 1
            self.elapsed += seconds
            remaining = epochs - self.epoch
            if on_epoch is not None:
                on_epoch(
                    EpochReport(
                        epoch=self.epoch,
                        epochs=epochs,
                        train_loss=train_loss,
                        valid_loss=valid_loss,
                        seconds=seconds,
                        elapsed=self.elapsed,
                        eta=self.elapsed / self.epoch * remaining,
                    )
                )

    def run_epoch(
        self,
        series: torch.Tensor,
        lengths: np.ndarray,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> float:
        """One pass over the series in shuffled batches (continuing an interrupted pass) with
        the encoder in training; returns the mean loss per anchor."""
        self.encoder.train()
        size = self.config.batch_size
        if self.order is None:
            self.order = self.rng.permutation(len(lengths))
            self.step, self.loss_sum = 0, 0.0
        while self.step < math.ceil(len(self.order) / size):
            if should_stop is not None and self.world.any(should_stop()):
                raise TrainingInterrupted(f"stopped at epoch {self.epoch + 1}, step {self.step}")
            anchors = self.order[self.step * size : (self.step + 1) * size]
            # Every rank draws the same global batch (same generator), then keeps its shard.
            triplets = self._sample(self.rng, lengths, anchors)
            if self.config.positive_augment > 0:
                triplets = augment_positives(self.rng, triplets, self.config.positive_augment)
            loss, weight = self._shard_loss(series, triplets, lengths)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            self.optimizer.step()
            self.loss_sum += loss.item() * len(self.world.shard(len(anchors)))
            self.step += 1
            if on_step is not None:
                on_step()
        (total,) = self.world.sum(self.loss_sum)
        self.order = None
        return total / len(lengths)

    def _sample(
        self, rng: np.random.Generator, lengths: np.ndarray, anchors: np.ndarray
    ) -> Triplets:
        """One step's windows for `anchors`, drawn as the config asks (K negatives, the
        `min-window` and `whole-anchors` levers)."""
        config = self.config
        return sample_triplets(
            rng, lengths, anchors, config.negative_samples, config.min_window, config.whole_anchors
        )

    def _shard_loss(
        self, series: torch.Tensor, triplets: Triplets, lengths: np.ndarray
    ) -> tuple[torch.Tensor, float]:
        """This rank's loss and the weight that makes DDP's gradient average the batch mean."""
        size = triplets.batch_size
        rows = self.world.shard(size)
        weight = len(rows) * self.world.size / size
        if len(rows) == 0:  # a last batch smaller than the world: take part, contribute nothing
            rows, weight = np.arange(1), 0.0
        stage = (lengths, self.target) if self.staged else ()
        return self.objective(series, triplets.subset(rows), *stage), weight

    def _stage_epoch(self, series: torch.Tensor, lengths: np.ndarray) -> None:
        """Before each epoch of the clustering stage: start the stage the first time (centroids
        by KMeans on the features of every training series), then compute the epoch's target
        distribution from the features as they are."""
        features = self._encode_all(series, lengths)
        if not self.staged:
            log.info(
                "clustering stage: %d epochs of the triplet loss + %g x KL(target || soft "
                "assignments to %d centroids)",
                self.config.cluster_epochs,
                self.config.cluster_weight,
                self.config.clusters,
            )
            self._begin_stage(self._initial_centroids(features))
        with torch.no_grad():
            self.target = target_distribution(soft_assignments(features, self._centroids()))

    def _encode_all(self, series: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
        """Features (N, D) of every whole training series, on every rank."""
        features = encode_series(self.encoder, series, lengths, self.world, INFERENCE_CELLS)
        return features.clone()  # a normal tensor (usable by autograd-recording code later)

    def _initial_centroids(self, features: torch.Tensor) -> torch.Tensor:
        """KMeans (10 restarts, the job's seed) on the features, fitted by the leader and sent
        to every rank, so all ranks start from the same centroids."""
        k, size = self.config.clusters, features.shape[1]
        payload = None
        if self.world.leader:
            from sklearn.cluster import KMeans  # only when the stage runs (see model._kmeans)

            kmeans = KMeans(n_clusters=k, n_init=10, random_state=self.config.seed)
            centres = kmeans.fit(features.cpu().numpy()).cluster_centers_
            payload = centres.astype(np.float32).tobytes()
        centres = np.frombuffer(self.world.broadcast_bytes(payload), np.float32).reshape(k, size)
        return torch.from_numpy(centres.copy()).to(self.device)

    def _begin_stage(self, centroids: torch.Tensor) -> None:
        """Switch the objective to the clustering one, its centroids optimised with the encoder."""
        objective = ClusteringObjective(
            self.encoder, centroids, self.config.cluster_weight, self.config.negative_drop
        )
        self.objective = objective
        if self.world.distributed:
            devices = [self.world.device] if self.world.device.type == "cuda" else None
            self.objective = DistributedDataParallel(objective, device_ids=devices)
        self.optimizer.add_param_group({"params": [objective.centroids]})
        self.staged = True

    def _centroids(self) -> torch.Tensor:
        objective = self.objective.module if self.world.distributed else self.objective
        return objective.centroids

    @torch.inference_mode()
    def validation_loss(self, series: torch.Tensor, lengths: np.ndarray) -> float:
        """The loss of the encoder in training on held-out series, with the same sampled windows
        at every call."""
        self.encoder.eval()
        rng = np.random.default_rng([self.config.seed, 1])
        count = min(len(lengths), MAX_VALIDATION_ANCHORS)
        order = rng.permutation(len(lengths))[:count]
        size = self.config.batch_size
        total = 0.0
        for begin in range(0, count, size):
            anchors = order[begin : begin + size]
            triplets = self._sample(rng, lengths, anchors)
            rows = self.world.shard(len(anchors))
            if len(rows):
                encoder = self.encoder.members[self.member]
                loss = triplet_loss(
                    encoder, series, triplets.subset(rows), self.config.negative_drop
                )
                total += loss.item() * len(rows)
        (total,) = self.world.sum(total)
        return total / count

    def state_dict(self) -> dict[str, Any]:
        """Encoders, optimizer, sampling generator and progress (tensors and plain values only)."""
        return {
            "encoder": self.encoder.state_dict(),
            "member": self.member,
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(self.rng),
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "order": None if self.order is None else torch.from_numpy(self.order),
            "step": self.step,
            "loss_sum": self.loss_sum,
            "centroids": self._centroids().detach().clone() if self.staged else None,
            "target": self.target,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.encoder.load_state_dict(state["encoder"])
        member = int(state.get("member", 0))
        if member != self.member:
            self._use_member(member)  # its optimizer, to load its state into
        centroids = state.get("centroids")
        if centroids is not None and not self.staged:
            self._begin_stage(centroids.to(self.device))  # before the optimizer's two groups
        elif centroids is not None:
            with torch.no_grad():
                self._centroids().copy_(centroids)
        self.optimizer.load_state_dict(state["optimizer"])
        target = state.get("target")
        self.target = None if target is None else target.to(self.device)
        self.rng.bit_generator.state = _rng_from_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.elapsed = float(state["elapsed"])
        order = state["order"]
        self.order = None if order is None else order.numpy().astype(np.int64)
        self.step = int(state["step"])
        self.loss_sum = float(state["loss_sum"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's 128-bit integers become strings so the state loads with weights_only=True.
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": state["has_uint32"],
        "uinteger": state["uinteger"],
    }


def _rng_from_state(saved: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": saved["bit_generator"],
        "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
        "has_uint32": saved["has_uint32"],
        "uinteger": saved["uinteger"],
    }
