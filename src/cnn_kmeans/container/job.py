"""One training job's work: read the channels, train (checkpointing), fit KMeans, write the
model, the metrics and the report. `train.py` (the entrypoint) imports this module only after
its SIGTERM handler is installed: it pulls in torch and scikit-learn.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cnn_kmeans.container import hyperparameters
from cnn_kmeans.container.checkpoint import Checkpointer, CheckpointSettings
from cnn_kmeans.container.environment import TrainingEnvironment
from cnn_kmeans.container.metrics import emit
from cnn_kmeans.container.stopping import StopFlag, StoppedEarly
from cnn_kmeans.data import read_channel
from cnn_kmeans.distributed import World
from cnn_kmeans.errors import TrainingInterrupted, UserError
from cnn_kmeans.heap import map_large_allocations
from cnn_kmeans.model import SILHOUETTE_SAMPLE, CNNKMeans, default_device, prepare, silhouette
from cnn_kmeans.onednn import limit_primitive_cache
from cnn_kmeans.persistence import ARTIFACT_FILES, CONFIG_FILE, load, save
from cnn_kmeans.preprocess import inner_gaps
from cnn_kmeans.report import epoch_record, write_training_report
from cnn_kmeans.trainer import EpochReport, Trainer, total_epochs

log = logging.getLogger("cnn_kmeans.train")


def run(
    env: TrainingEnvironment,
    stop: StopFlag,
    checkpoints: CheckpointSettings,
    world: World | None = None,
) -> None:
    """Train on the job's channels and write the model, the metrics and the report.

    With a `world` of several processes, every process trains on its shard of each batch and
    rank 0 alone logs metrics and writes the checkpoint, the model and the report.

    Raises:
        TrainingInterrupted: SIGTERM before the first epoch ended (the checkpoint is saved).
        StoppedEarly: SIGTERM after it: the checkpoint, and a model of KMeans fitted on the
            encoder as it stood, were written.
    """
    layout = env.layout
    world = world or World(device=default_device())
    previous = _previous_model(env.channels["model"]) if "model" in env.channels else None
    if previous is not None:
        config = hyperparameters.continued(previous.config, env.hyperparameters)
        # the entrypoint set torch's threads (CNN_KMEANS_THREADS or the available cores)
        model = CNNKMeans(config, world=world, threads=torch.get_num_threads())
        model.scaler_, model.encoder_ = previous.scaler_, previous.encoder_
        log.info("incremental training: continuing the model of the 'model' channel")
    else:
        config = hyperparameters.parse(env.hyperparameters)
        model = CNNKMeans(config, world=world, threads=torch.get_num_threads())
    if "training" not in env.channels:
        raise UserError(
            "the 'training' channel is required: give the job a channel named training with "
            "CSV files of series (one per line)"
        )
    train_raw = read_channel(env.channels["training"])
    valid_raw = read_channel(env.channels["validation"]) if "validation" in env.channels else None
    log.info(
        "%d training series, %d missing cells filled by interpolation%s",
        len(train_raw),
        inner_gaps(train_raw),
        "" if valid_raw is None else f"; {len(valid_raw)} validation series",
    )
    limit_primitive_cache(os.environ, train_raw, valid_raw)
    map_large_allocations(train_raw, valid_raw)
    training = model.start(train_raw, valid_raw, warm_start=previous is not None)
    trainer = training.trainer

    checkpointer = None
    resumed = False
    if checkpoints.directory is not None:
        checkpointer = Checkpointer(
            checkpoints.directory, config, model.scaler_, every_s=checkpoints.every_s
        )
        resumed = checkpointer.restore(trainer, world)
        if not world.leader:
            checkpointer = None  # rank 0 writes the checkpoints
    else:
        log.info("no checkpoint folder (the job has no CheckpointConfig): not checkpointing")
    history: list[dict[str, Any]] = []

    def on_epoch(report: EpochReport) -> None:
        if not world.leader:
            return
        emit("train_loss", report.train_loss)
        if report.valid_loss is not None:
            emit("valid_loss", report.valid_loss)
        log.info(
            "epoch %d/%d: %.2f s, elapsed %.1f s, ETA %.1f s",
            report.epoch,
            report.epochs,
            report.seconds,
            report.elapsed,
            report.eta,
        )
        history.append(epoch_record(report))
        if checkpointer is not None:
            checkpointer.maybe_save(trainer)

    def on_step() -> None:
        if checkpointer is not None:
            checkpointer.maybe_save(trainer)

    # From here SIGTERM is a request: training stops at the next step boundary, and KMeans and
    # the writing of the model run to their end (SageMaker allows 120 s before SIGKILL).
    stop.defer()
    stopped = None
    try:
        trainer.fit(
            training.train,
            training.lengths,
            training.valid,
            training.valid_lengths,
            on_epoch=on_epoch,
            should_stop=stop.is_set,
            on_step=on_step,
        )
    except TrainingInterrupted as interrupted:
        if checkpointer is not None:
            checkpointer.save(trainer)
        if trainer.epoch == 0:
            raise
        stopped = _stopped_early(trainer, total_epochs(config, len(training.lengths)))
        log.warning(
            "%s (%s): fitting KMeans on the encoder as it stands and writing the model",
            interrupted,
            stopped["message"],
        )
    if checkpointer is not None and stopped is None:
        checkpointer.save(trainer)

    features = model.finish(training)
    if features is not None:  # rank 0 writes; the others' part is done
        began = time.perf_counter()
        scores = {"train_score": silhouette(features, model.labels_, config.seed)}
        if valid_raw is not None:
            scores["valid_score"] = model.score(valid_raw)
        log.info(
            "silhouette score%s in %.1f s (on at most %d series each)",
            "s" if len(scores) > 1 else "",
            time.perf_counter() - began,
            SILHOUETTE_SAMPLE,
        )
        for name, value in scores.items():
            emit(name, value)
        save(model, layout.model_dir)
        log.info("model saved to %s", layout.model_dir)
        summary = {
            **model.summary(),
            **{name: _finite_or_none(value) for name, value in scores.items()},
            "series": len(train_raw),
            "hyperparameters": config.to_dict(),
            "incremental": previous is not None,
            "resumed_from_checkpoint": resumed,
            "stopped_early": None if stopped is None else {**stopped, "model_written": True},
            "history": history,
        }
        # The plots show the series in the data's units, not as scaled for the encoder.
        values = prepare(train_raw)[0]
        write_training_report(layout.output_data_dir, summary, model.labels_, values, config.seed)
    if stopped is not None:
        if features is not None:
            log.warning("%s: the model written is usable (see report.json)", stopped["message"])
        raise StoppedEarly(stopped["message"])
    if stop.is_set():
        log.warning("SIGTERM arrived after the last epoch: the model was completed first")


def _stopped_early(trainer: Trainer, epochs: int) -> dict[str, Any]:
    """What report.json says of a job SIGTERM stopped after `trainer.epoch` >= 1 epochs."""
    steps = trainer.step if trainer.order is not None else 0
    return {
        "signal": "SIGTERM",
        "epochs_completed": trainer.epoch,
        "epochs": epochs,
        "steps_into_next_epoch": steps,
        "message": (
            f"stopped by SIGTERM after {trainer.epoch} of {epochs} epochs"
            + (f" and {steps} steps of the next" if steps else "")
        ),
    }


def _finite_or_none(value: float) -> float | None:
    return value if value == value else None


def _previous_model(channel: Path) -> CNNKMeans:
    """The model of the 'model' channel: a model.tar.gz, or the artifact's files."""
    if (channel / CONFIG_FILE).is_file():
        return load(channel)
    archives = sorted(p for p in channel.rglob("*.tar.gz") if p.is_file())
    if not archives:
        raise UserError(
            f"the 'model' channel ({channel}) holds neither a model.tar.gz nor the model files "
            f"({', '.join(ARTIFACT_FILES)}); point it at the output of an earlier training job"
        )
    with tempfile.TemporaryDirectory() as folder:
        _extract_artifact(archives[0], Path(folder))
        return load(folder)


def _extract_artifact(archive: Path, target: Path) -> None:
    # Only the artifact's regular files, by base name: nothing else is written, anywhere.
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in ARTIFACT_FILES:
                    source = tar.extractfile(member)
                    if source is not None:
                        (target / name).write_bytes(source.read())
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UserError(f"{archive} is not a readable model.tar.gz: {error}") from None
