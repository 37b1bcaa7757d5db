"""The training job's entrypoint: `python -m cnn_kmeans.container.train [train]`.

What SageMaker runs as `docker run IMAGE train`: read /opt/ml (root redirected by
SAGEMAKER_BASE_DIR), train, write the model, the metrics, the report; on any failure exit
non-zero with the reason in output/failure.

The SIGTERM handler is the first thing `main()` does, and this module imports only the standard
library and modules that do the same, so that no stop request is lost while torch loads (see
`stopping.py`): everything heavy is imported after it.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from cnn_kmeans.container.environment import Layout, TrainingEnvironment, root_from
from cnn_kmeans.container.stopping import StopFlag, StoppedEarly, Terminated
from cnn_kmeans.errors import TrainingInterrupted, UserError

if TYPE_CHECKING:
    from cnn_kmeans.container.checkpoint import CheckpointSettings
    from cnn_kmeans.container.launch import LaunchPlan

log = logging.getLogger("cnn_kmeans.train")

EXIT_USER_ERROR = 1
EXIT_ALGORITHM_ERROR = 2
# 128 + SIGTERM, what a process killed by it reports. Also the code of a job that SIGTERM
# stopped after writing a model from the epochs it had: SageMaker gives a stopped job the status
# Stopped (secondary status MaxRuntimeExceeded or Stopped) whatever the exit code, while
# outside a stop (a spot interruption, a local run, a pipeline step) 0 would present a model of
# fewer epochs than asked for as a finished job: the model is written, the code says "stopped".
EXIT_TERMINATED = 143
FAILURE_LIMIT = 1024  # SageMaker shows this many characters of output/failure


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job (or, with `worker`, one data-parallel process of it); returns the exit code."""
    stop = StopFlag().install()  # first: see stopping.py
    args = _arguments(sys.argv[1:] if argv is None else argv)
    worker = args == ["worker"]  # started by torchrun (see launch.py)
    local_leader = not worker or os.environ.get("LOCAL_RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if local_leader else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    layout = Layout(root_from(os.environ))
    # Every process of a host sees the same error; the host's first process reports it.
    fail = (lambda message: _fail(layout, message)) if local_leader else (lambda message: None)
    try:
        if args and not worker:
            raise UserError(f"unexpected arguments {args}; the training image takes only 'train'")
        env = TrainingEnvironment.from_toolkit(os.environ)
        from cnn_kmeans import threads  # imports torch: after the SIGTERM handler

        count, source = threads.threads_setting(None, os.environ, threads.available_cores())
        log.info("%d torch thread(s) (%s)", threads.set_threads(count), source)
        from cnn_kmeans.container import launch
        from cnn_kmeans.container.checkpoint import CheckpointSettings

        checkpoints = CheckpointSettings.from_job(layout.root, layout.config_dir, env.environ)
        if worker:
            _run_worker(env, stop, checkpoints)
        else:
            launch_plan = launch.plan(env)
            if launch_plan.world_size == 1:
                from cnn_kmeans.container import job

                job.run(env, stop, checkpoints)
            else:
                return _supervise(launch_plan, env, layout)
    except Terminated:
        fail(
            "Training stopped by SIGTERM during start-up (before training began), so no model "
            "was written; a job restarted with the same checkpoint location resumes from the "
            "last checkpoint"
        )
        return EXIT_TERMINATED
    except TrainingInterrupted as error:
        fail(_stopped_message(error))
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


def _arguments(argv: Sequence[str]) -> list[str]:
    """The entrypoint's arguments: SageMaker passes the literal word `train`, which selects
    nothing here."""
    args = list(argv)
    return args[1:] if args[:1] == ["train"] else args


def _stopped_message(error: TrainingInterrupted) -> str:
    if isinstance(error, StoppedEarly):
        return (
            f"Training {error}; a usable model was written (KMeans fitted on the encoder at "
            "that point; report.json says stopped_early). A job restarted with the same "
            "checkpoint location resumes from the last checkpoint"
        )
    return (
        f"Training stopped by SIGTERM ({error}) before the first epoch ended, so no model was "
        "written; a job restarted with the same checkpoint location resumes from the last "
        "checkpoint"
    )


def _run_worker(env: TrainingEnvironment, stop: StopFlag, checkpoints: CheckpointSettings) -> None:
    from cnn_kmeans.container import job, launch

    world = launch.join(env.environ)
    try:
        job.run(env, stop, checkpoints, world)
    except StoppedEarly:
        _leave(world)  # every rank took part in writing the model: leave together
        raise
    _leave(world)


def _leave(world) -> None:
    """Wait until every rank's work is done; the worker then exits without tearing the process
    group down (see _exit_worker).

    Rank 0 is done writing when everyone passes the barrier, so no rank exits (and no host's
    torchrun reports success) before the model is written. The group is deliberately not
    destroyed: on torch 2.1 (the images' stack) `destroy_process_group` can deadlock. The last
    Python reference to the group is dropped with the GIL held (torch bound ProcessGroup without
    releasing the GIL in its destructor until pytorch/pytorch#154976, 2025), and
    ~ProcessGroupGloo then waits for gloo's worker thread, which may at that moment be freeing
    the barrier's finished work, whose tensors are Python objects: it waits for the GIL. Seen in
    a two-host job: the rank hung until faulthandler ended it with code 1, failing its host,
    while the other host's torchrun waited 300 s in its exit barrier. A process that exits with
    os._exit has nothing to tear down: the kernel closes its sockets, after the barrier's last
    message went out.
    """
    world.barrier()


def _supervise(launch_plan: LaunchPlan, env: TrainingEnvironment, layout: Layout) -> int:
    from cnn_kmeans.container import launch

    # SIGTERM keeps interrupting until supervise() installs its handler, which passes it on.
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


def _exit_worker(code: int) -> NoReturn:
    """End a data-parallel worker now, without the interpreter's finalization.

    A worker past its last barrier has nothing left to do, but at finalization
    gloo's threads can still reach for the GIL of a dying interpreter and abort the process
    (SIGABRT, "terminate called without an active exception": seen once in CI on a rank that
    had finished, which failed its host and left the other host waiting for it). Everything the
    worker wrote is flushed first; os._exit skips only the teardown.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if _arguments(sys.argv[1:]) == ["worker"]:
        _exit_worker(exit_code)
    sys.exit(exit_code)
