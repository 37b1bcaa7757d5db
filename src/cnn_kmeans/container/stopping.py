"""SIGTERM: how a training process learns it must stop (standard library only).

SageMaker stops a job (StopTrainingJob, MaxRuntimeInSeconds, a spot interruption) with SIGTERM
to the container's first process, then SIGKILL 120 s later. That process is PID 1 of its PID
namespace, and the kernel drops a signal sent to a namespace's PID 1 that has no handler for
it (pid_namespaces(7)), so the handler is installed first thing in `main()`, before torch,
scikit-learn or the launcher are imported: this module imports nothing heavy for that reason.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from cnn_kmeans.errors import TrainingInterrupted

log = logging.getLogger("cnn_kmeans.train")


class Terminated(BaseException):
    """SIGTERM arrived while the job could not stop at a step boundary (start-up, data reading).

    A BaseException, like KeyboardInterrupt: raised from the signal handler wherever the job
    is, it must not be mistaken for an error by a broad `except Exception` on its way up.
    """


class StopFlag:
    """The SIGTERM handler and what it recorded.

    Until `defer()` it interrupts the job at once (raises Terminated). From `defer()` on it only
    records the request: the training loop polls `is_set()` between steps and stops at a step
    boundary, and the final KMeans and the writing of the model run to their end.
    """

    def __init__(self) -> None:
        self.requested = False
        self.deferred = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        log.warning("SIGTERM received")
        if not self.deferred:
            raise Terminated("stopped by SIGTERM")

    def install(self) -> StopFlag:
        """Make this the process's SIGTERM handler; returns self."""
        signal.signal(signal.SIGTERM, self)
        return self

    def defer(self) -> None:
        """From now on, record SIGTERM instead of interrupting."""
        self.deferred = True

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.requested


class StoppedEarly(TrainingInterrupted):
    """SIGTERM stopped training after at least one epoch; the model was written anyway."""
