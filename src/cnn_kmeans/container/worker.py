"""The gunicorn worker of the model server: threads for health checks, one inference at a time.

SageMaker gives `/ping` 2 seconds, also while batch transform keeps every worker busy with
multi-second requests (`MaxConcurrentTransforms` = workers). A sync worker serves one request at
a time, so its `/ping` waited behind the inference. This worker is gunicorn's threaded worker
(`gthread`) with three changes, so that it keeps what the sync worker did right:

- **One inference at a time** (`InferenceGate`): a free thread answers `/ping` and
  `/execution-parameters` at once, while the CPU or GPU work of `/invocations` runs on the
  worker's one inference thread, serialised, with the torch threads of the worker's share of
  the cores, as before.
- **`timeout` bounds each inference**, as gunicorn's sync worker bounds each request: the
  heartbeat the arbiter checks stops at the start of the running inference, so one that runs
  longer than `timeout` gets the worker killed and replaced (gthread alone heartbeats from its
  main loop, which never blocks, so a stuck inference would never be noticed).
- **Idle workers get the work**: every worker polls the shared socket, and a busy worker's main
  thread is free to accept, so work would pile up behind one inference while another worker
  idles. A worker waits `ACCEPT_DEFERRAL_S` per request it has in progress before accepting, so
  an idle worker takes a new connection first, else the least busy one; when every worker is
  busy, the connection (often a ping) is accepted that much later. Requests are counted from
  their acceptance (gthread's `nr_conns`; without keep-alive one connection is one request):
  counting them only once the app saw them let one worker take two requests that arrived
  together while the other stayed idle (measured).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gunicorn.workers.gthread import ThreadWorker

# Per request in progress: long enough for an idle worker (woken by the same connection) to
# accept first, short against the 2 s ping budget and a request's latency. Every accept of a
# busy worker waits this long, so it caps a saturated worker's request rate: at 50 ms (cap
# 0.5 s), 16 clients sending single rows to 2 workers got 26 requests/s (p50 613 ms); at 10 ms
# (cap 50 ms), 118/s (p50 134 ms), same run of benchmarks/bench_serve.py on a quiet machine.
ACCEPT_DEFERRAL_S = 0.01
MAX_DEFERRAL_S = 0.05

T = TypeVar("T")

log = logging.getLogger("cnn_kmeans.serve")


class InferenceGate:
    """One inference thread per worker process: inferences run there, one after the other.

    One thread rather than a lock around the request threads: the memory an inference allocates
    and frees then stays in one malloc arena, as in a sync worker, instead of one per request
    thread (measured with the lock: +15-17 MiB per worker over a 2-minute soak; sync: +0-3).
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.running_since: float | None = None  # time.monotonic() at the running inference's start

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """function(*args) on the inference thread, after the inferences queued before it."""
        with self._lock:  # created in the worker process, at its first request
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    1, thread_name_prefix="inference", initializer=_report_threads
                )
        return self._executor.submit(self._timed, function, *args).result()

    def _timed(self, function: Callable[..., T], *args: Any) -> T:
        self.running_since = time.monotonic()
        try:
            return function(*args)
        finally:
            self.running_since = None


def _report_threads() -> None:
    # What torch computes with on this thread: it takes the count the worker set at boot when
    # the thread first computes (torch's lazy per-thread OpenMP initialisation); logged to check.
    import torch

    log.info("inference thread: %d torch thread(s)", torch.get_num_threads())


class InferenceWorker(ThreadWorker):
    """gunicorn's gthread worker with an `InferenceGate` (see the module docstring).

    Configured by `worker_class = "cnn_kmeans.container.worker.InferenceWorker"`; the app finds
    the gate as `worker.gate` (the `post_fork` hook hands it over).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = InferenceGate()

    def notify(self) -> None:
        """Heartbeat; during an inference, dated back to its start."""
        super().notify()
        started = self.gate.running_since
        if started is not None:
            # In the heartbeat's own clock (whichever gunicorn uses): now minus the elapsed time.
            stamp = self.tmp.last_update() - (time.monotonic() - started)
            os.utime(self.tmp.fileno(), (stamp, stamp))

    def accept(self, listener: Any) -> None:
        """Accept a connection; a busy worker first leaves it to an idle or less busy one."""
        if self.nr_conns:
            time.sleep(min(MAX_DEFERRAL_S, ACCEPT_DEFERRAL_S * self.nr_conns))
        super().accept(listener)
