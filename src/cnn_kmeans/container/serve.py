"""The `serve` entrypoint: gunicorn (no nginx) serving the Flask app, as `docker run IMAGE serve`.

    python -m cnn_kmeans.container.serve [serve] [--model-dir DIR] [--port N] [--host ADDRESS]

Settings are read once, in `main()`, from the SageMaker variables (`SAGEMAKER_BIND_TO_PORT`,
`SAGEMAKER_MODEL_SERVER_WORKERS`, `SAGEMAKER_MODEL_SERVER_TIMEOUT`, `SAGEMAKER_MAX_PAYLOAD_IN_MB`,
`CNN_KMEANS_MAX_RESPONSE_MB`, `CNN_KMEANS_OUTPUT`, `CNN_KMEANS_THREADS`, `SAGEMAKER_BATCH`,
`SAGEMAKER_BASE_DIR`); the flags override them for local runs. The artifact is loaded once in
the master to fail fast with a clear message, then once per worker at its start. The workers are
`worker.InferenceWorker`: threads answer `/ping` while an inference runs, inferences run one at
a time per worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from gunicorn.app.base import BaseApplication

from cnn_kmeans.container import inference
from cnn_kmeans.container.app import create_app
from cnn_kmeans.container.environment import ServingSettings
from cnn_kmeans.container.worker import InferenceGate
from cnn_kmeans.errors import UserError
from cnn_kmeans.threads import available_cores

log = logging.getLogger("cnn_kmeans.serve")

# SIGTERM: workers finish their request within this, so the server is down within 30 s.
GRACEFUL_TIMEOUT_S = 25
# Threads per worker: one inference at a time, the others answer /ping and
# /execution-parameters meanwhile, or read the body of the next request (so a worker holds at
# most this many request bodies). Batch transform sends as many concurrent requests as there are
# workers (MaxConcurrentTransforms) and idle workers accept first (worker.ACCEPT_DEFERRAL_S), so
# two threads would do; four leave room for a worker that got two of them.
THREADS_PER_WORKER = 4
WORKER_CLASS = "cnn_kmeans.container.worker.InferenceWorker"


class ModelServer(BaseApplication):
    """gunicorn configured from ServingSettings; each worker loads the model when it boots."""

    def __init__(self, settings: ServingSettings, gpus: int = 0):
        self.settings = settings
        self.gpus = gpus
        self.device = torch.device("cpu")
        self.gate: InferenceGate | None = None
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options: dict[str, Any] = {
            "bind": f"{settings.host}:{settings.port}",
            "workers": settings.workers,
            "worker_class": WORKER_CLASS,
            "threads": THREADS_PER_WORKER,
            # No keep-alive, as with sync workers: a kept connection would tie a client's next
            # requests to one worker while others idle.
            "keepalive": 0,
            # With InferenceWorker: the longest one inference may run before its worker is
            # replaced.
            "timeout": settings.timeout,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "proc_name": "cnn-kmeans",
            "errorlog": "-",
            "loglevel": "info",
            # gunicorn >= 25.1.0 opens a control socket (`gunicorn.ctl`, its changelog: "Control
            # Interface (gunicornc)", PR #3505): servers sharing a folder would clash, and the
            # container needs none. pyproject pins the major version that has this setting.
            "control_socket_disable": True,
            "pre_fork": self._pre_fork,
            "post_fork": self._post_fork,
        }
        if os.path.isdir("/dev/shm"):
            # Heartbeat files in memory: a slow container disk cannot stall workers into timeouts.
            options["worker_tmp_dir"] = "/dev/shm"
        for key, value in options.items():
            self.cfg.set(key, value)

    def _pre_fork(self, server: Any, worker: Any) -> None:
        """In the master: give the new worker the GPU that the fewest live workers use."""
        if self.gpus:
            used = Counter(getattr(w, "cnn_kmeans_gpu", None) for w in server.WORKERS.values())
            worker.cnn_kmeans_gpu = min(range(self.gpus), key=lambda gpu: used[gpu])

    def _post_fork(self, server: Any, worker: Any) -> None:
        """In the new worker, before it loads the app."""
        gpu = getattr(worker, "cnn_kmeans_gpu", None)
        self.device = torch.device("cuda", gpu) if gpu is not None else torch.device("cpu")
        self.gate = worker.gate

    def load(self) -> Any:
        """Runs in each worker at boot, before it accepts requests."""
        torch.set_num_threads(self.settings.threads_per_worker)
        model = inference.model_fn(self.settings.model_dir, self.device)
        model.threads = self.settings.threads_per_worker  # what each inference computes with
        log.info(
            "worker ready: %d torch thread(s), device %s", torch.get_num_threads(), self.device
        )
        return create_app(model, self.settings, self.gate)


def check_model(settings: ServingSettings) -> None:
    """Load the artifact once in the master, so a bad one stops the start with its message.

    One torch thread, on the CPU: the forked workers must not inherit a thread pool or CUDA.
    """
    torch.set_num_threads(1)
    inference.model_fn(settings.model_dir, torch.device("cpu"))


def run(settings: ServingSettings, gpus: int = 0) -> None:
    """Check the model, then run gunicorn until it is stopped (SIGTERM: graceful)."""
    check_model(settings)
    log.info(
        "serving %s on %s:%d%s: %d worker(s) x %d torch thread(s), timeout %d s, "
        "max payload %g MB, max response %s, default output %s",
        settings.model_dir,
        settings.host,
        settings.port,
        " for batch transform" if settings.batch else "",
        settings.workers,
        settings.threads_per_worker,
        settings.timeout,
        settings.max_payload_mb,
        f"{settings.max_response_mb:g} MB" if settings.max_response_mb else "unlimited",
        settings.output,
    )
    ModelServer(settings, gpus).run()


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cnn_kmeans.container.serve")
    parser.add_argument("command", nargs="?", choices=["serve"], help="ignored (SageMaker's)")
    parser.add_argument("--model-dir", type=Path, help="artifact folder (default: /opt/ml/model)")
    parser.add_argument("--port", type=int, help="default: SAGEMAKER_BIND_TO_PORT or 8080")
    parser.add_argument("--host", help="address to bind (default: 0.0.0.0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: read the settings once, then serve until stopped; non-zero on a bad start."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    gpus = torch.cuda.device_count()
    try:
        settings = ServingSettings.from_environ(os.environ, cpus=available_cores(), gpus=gpus)
        overrides = {"model_dir": args.model_dir, "port": args.port, "host": args.host}
        settings = dataclasses.replace(
            settings, **{key: value for key, value in overrides.items() if value is not None}
        )
        run(settings, gpus)
    except UserError as error:
        log.error("cannot start the model server: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
