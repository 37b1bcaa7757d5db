"""The training job's entrypoint: `python -m cnn_kmeans.container.train [train]`.

What SageMaker runs as `docker run IMAGE train`: read /opt/ml (root redirected by
SAGEMAKER_BASE_DIR), train, write the model, the metrics, the report; on any failure exit
non-zero with the reason in output/failure.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn_kmeans.container import hyperparameters, launch
from cnn_kmeans.container.checkpoint import Checkpointer
from cnn_kmeans.container.environment import Layout, TrainingEnvironment, root_from
from cnn_kmeans.container.metrics import emit
from cnn_kmeans.container.report import write_report
from cnn_kmeans.data import read_channel
from cnn_kmeans.distributed import World
from cnn_kmeans.errors import UserError
from cnn_kmeans.model import CNNKMeans, default_device, silhouette
from cnn_kmeans.persistence import ARTIFACT_FILES, CONFIG_FILE, load, save
from cnn_kmeans.preprocess import inner_gaps
from cnn_kmeans.trainer import EpochReport, TrainingInterrupted

log = logging.getLogger("cnn_kmeans.train")

EXIT_USER_ERROR = 1
EXIT_ALGORITHM_ERROR = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a process killed by it would report
FAILURE_LIMIT = 1024  # SageMaker shows this many characters of output/failure


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop (which stops at a step boundary instead).

    A BaseException, like KeyboardInterrupt: raised from the signal handler wherever the job
    is, it must not be mistaken for an error by a broad `except Exception` on its way up."""


class StopFlag:
    """Set by SIGTERM. While training runs the trainer polls it between steps; otherwise the
    signal interrupts the job at once."""

    def __init__(self) -> None:
        self.requested = False
        self.training = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        log.warning("SIGTERM received")
        if not self.training:
            raise Terminated("stopped by SIGTERM")

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.requested


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job (or, with `worker`, one data-parallel process of it); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["train"]:  # SageMaker passes the literal word; it selects nothing here
        args = args[1:]
    worker = args == ["worker"]  # started by torchrun (see launch.py)
    local_leader = not worker or os.environ.get("LOCAL_RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if local_leader else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    layout = Layout(root_from(os.environ))
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop)
    # Every process of a host sees the same error; the host's first process reports it.
    fail = (lambda message: _fail(layout, message)) if local_leader else (lambda message: None)
    try:
        if args and not worker:
            raise UserError(f"unexpected arguments {args}; the training image takes only 'train'")
        env = TrainingEnvironment.from_toolkit(os.environ)
        if worker:
            _run_worker(env, stop)
        else:
            launch_plan = launch.plan(env)
            if launch_plan.world_size == 1:
                run(env, stop)
            else:
                return _supervise(launch_plan, env, layout)
    except (Terminated, TrainingInterrupted) as error:
        fail(
            f"Training stopped by SIGTERM ({error}); a job restarted with the same checkpoint "
            "location resumes from the last checkpoint"
        )
        return EXIT_TERMINATED
    except UserError as error:
        log.error("%s", error)
        fail(str(error))
        return EXIT_USER_ERROR
    except Exception as error:  # a bug: the reason for the user, the traceback in the log
        if disk_full := _disk_full(error):
            log.error("%s", disk_full)
            fail(disk_full)
            return EXIT_USER_ERROR
        log.exception("algorithm error")
        fail(f"Algorithm error: {type(error).__name__}: {error}")
        return EXIT_ALGORITHM_ERROR
    return 0


def _run_worker(env: TrainingEnvironment, stop: StopFlag) -> None:
    import torch.distributed as dist

    world = launch.join(env.environ)
    run(env, stop, world)
    # Rank 0 is done writing when everyone passes this barrier: the processes then leave the
    # group together (a rank tearing gloo down alone can abort with SIGABRT).
    world.barrier()
    dist.destroy_process_group()


def _supervise(launch_plan: launch.LaunchPlan, env: TrainingEnvironment, layout: Layout) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # supervise() passes SIGTERM on instead
    code, terminated = launch.supervise(launch_plan, env.environ)
    if code == 0:
        return 0
    # The workers died without saying why, or the first process only reports the SIGTERM that
    # torchrun sent it after another process failed: the log has the reason.
    failure = layout.failure_file.read_text() if layout.failure_file.exists() else ""
    if not failure or (not terminated and "SIGTERM" in failure):
        _fail(layout, f"Algorithm error: a training process exited with code {code}; see the log")
    return EXIT_TERMINATED if terminated else code


def _disk_full(error: Exception) -> str | None:
    """The message for a write that failed because the volume is full, else None."""
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    what = error.filename or "the model, a checkpoint or the report"
    return (
        f"No space left on device writing {what}: the training job's storage volume is full; "
        "give the job a larger volume (VolumeSizeInGB of its ResourceConfig) and run it again"
    )


def _fail(layout: Layout, message: str) -> None:
    try:
        layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
        layout.failure_file.write_text(message[:FAILURE_LIMIT] + "\n")
    except OSError:
        log.exception("cannot write %s", layout.failure_file)


def run(env: TrainingEnvironment, stop: StopFlag, world: World | None = None) -> None:
    """Train on the job's channels and write the model, the metrics and the report.

    With a `world` of several processes, every process trains on its shard of each batch and
    rank 0 alone logs metrics and writes the checkpoint, the model and the report.
    """
    layout = env.layout
    world = world or World(device=default_device())
    previous = _previous_model(env.channels["model"]) if "model" in env.channels else None
    if previous is not None:
        config = hyperparameters.continued(previous.config, env.hyperparameters)
        model = CNNKMeans(config, world=world)
        model.scaler_, model.encoder_ = previous.scaler_, previous.encoder_
        log.info("incremental training: continuing the model of the 'model' channel")
    else:
        config = hyperparameters.parse(env.hyperparameters)
        model = CNNKMeans(config, world=world)
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
    training = model.start(train_raw, valid_raw, warm_start=previous is not None)

    checkpointer = None
    resumed = False
    if layout.checkpoint_dir.is_dir():
        checkpointer = Checkpointer(layout.checkpoint_dir, config, model.scaler_)
        resumed = checkpointer.restore(training.trainer, world)
        if not world.leader:
            checkpointer = None  # rank 0 writes the checkpoints
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
        history.append(
            {
                "epoch": report.epoch,
                "train_loss": report.train_loss,
                "valid_loss": report.valid_loss,
            }
        )
        if checkpointer is not None:
            checkpointer.maybe_save(training.trainer)

    stop.training = True
    try:
        training.run(on_epoch, should_stop=stop.is_set)
    except TrainingInterrupted:
        if checkpointer is not None:
            checkpointer.save(training.trainer)
        raise
    finally:
        stop.training = False
    if checkpointer is not None:
        checkpointer.save(training.trainer)

    features = model.finish(training)
    if features is None:  # not rank 0: its part is done
        return
    scores = {"train_score": silhouette(features, model.labels_, config.seed)}
    if valid_raw is not None:
        scores["valid_score"] = model.score(valid_raw)
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
        "history": history,
    }
    write_report(layout.output_data_dir, summary, model.labels_, training.train, config.seed)


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


if __name__ == "__main__":
    sys.exit(main())
