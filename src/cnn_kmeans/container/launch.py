"""Data-parallel training processes: PyTorch's launcher (torchrun) on every host of the job.

SageMaker's `AlgorithmEstimator` has no `distribution` argument, so the entrypoint launches the
workers itself: one process per GPU (one per host without GPUs, unless
`CNN_KMEANS_PROCESSES_PER_HOST` asks for more), on every host of resourceconfig.json, the
first host being the rendezvous master. Before a multi-host launch every host waits for the
others' names and binds gloo/NCCL to the job's network interface (see network.py); the master
is given to torchrun by address, so nothing depends on the container's hostname.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from cnn_kmeans.container import network
from cnn_kmeans.container.environment import TrainingEnvironment
from cnn_kmeans.distributed import World
from cnn_kmeans.errors import UserError
from cnn_kmeans.threads import OMP_ENV, THREADS_ENV, available_cores

log = logging.getLogger(__name__)

PROCESSES_ENV = "CNN_KMEANS_PROCESSES_PER_HOST"
PORT_ENV = "CNN_KMEANS_MASTER_PORT"
DEFAULT_PORT = 29500
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # KMeans on rank 0 can keep the others waiting


@dataclass(frozen=True)
class LaunchPlan:
    """Where this host's processes sit in the job's world."""

    hosts: tuple[str, ...]
    node_rank: int
    processes_per_host: int
    master_port: int
    interface: str = "eth0"
    instance_type: str = "local"
    host_wait_seconds: float = network.DEFAULT_WAIT_SECONDS

    @property
    def multi_host(self) -> bool:
        """Whether the job spans several hosts."""
        return len(self.hosts) > 1

    @property
    def current_host(self) -> str:
        """This host's name in resourceconfig.json."""
        return self.hosts[self.node_rank]

    @property
    def world_size(self) -> int:
        """Processes over all hosts."""
        return len(self.hosts) * self.processes_per_host

    def command(self, master_addr: str = "127.0.0.1") -> list[str]:
        """torchrun for this host, starting `python -m cnn_kmeans.container.train worker`.

        Args:
            master_addr: the first host's address (loopback on a one-host job). An address,
                not a name: torchrun's static rendezvous hands it to every worker as
                MASTER_ADDR (torch 2.1 and 2.13 alike), so no process resolves it again.
        """
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={len(self.hosts)}",
            f"--nproc-per-node={self.processes_per_host}",
            f"--node-rank={self.node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={self.master_port}",
            "--max-restarts=0",
            "--module",
            "cnn_kmeans.container.train",
            "worker",
        ]


def plan(env: TrainingEnvironment) -> LaunchPlan:
    """The launch plan of this host."""
    if env.current_host not in env.hosts:
        raise UserError(f"current host {env.current_host!r} is not among hosts {env.hosts}")
    processes = env.num_gpus or _count(env.environ, PROCESSES_ENV, 1)
    return LaunchPlan(
        hosts=tuple(env.hosts),
        node_rank=list(env.hosts).index(env.current_host),
        processes_per_host=processes,
        master_port=_count(env.environ, PORT_ENV, DEFAULT_PORT),
        interface=env.network_interface_name,
        instance_type=env.instance_type,
        host_wait_seconds=network.wait_seconds(env.environ),
    )


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if not text:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise UserError(f"{name}={text!r} must be a positive integer")
    return int(text)


def supervise(launch: LaunchPlan, environ: Mapping[str, str]) -> tuple[int, bool]:
    """Run torchrun for this host and wait; SIGTERM is passed on to it (and so to the workers).

    A multi-host job first waits for every host's name and sets the interface variables.

    Returns:
        torchrun's exit code, and whether SIGTERM arrived.

    Raises:
        UserError: A host's name did not resolve in time (network.wait_for_hosts).
    """
    log.info(
        "launching %d processes on host %d of %d (world size %d)",
        launch.processes_per_host,
        launch.node_rank + 1,
        len(launch.hosts),
        launch.world_size,
    )
    environ, master_addr = dict(environ), "127.0.0.1"
    if not environ.get(THREADS_ENV) and not environ.get(OMP_ENV):
        # The host's cores shared among its processes (torchrun alone would give each worker
        # OMP_NUM_THREADS=1 when there are several, and all of the host's cores when one).
        environ[THREADS_ENV] = str(max(1, available_cores() // launch.processes_per_host))
    if launch.multi_host:
        # Before the forwarding handler: a SIGTERM during this wait (up to 15 minutes) meets the
        # entrypoint's own handler and stops the job at once.
        addresses = network.wait_for_hosts(launch.hosts, launch.host_wait_seconds)
        master_addr = addresses[launch.hosts[0]]
        settings = network.communication_env(
            environ,
            interface=launch.interface,
            current_host=launch.current_host,
            instance_type=launch.instance_type,
        )
        log.info(
            "hosts resolved (%s); master %s; %s",
            ", ".join(f"{host}={address}" for host, address in addresses.items()),
            master_addr,
            " ".join(f"{name}={value}" for name, value in sorted(settings.items())),
        )
        environ |= settings
    process: subprocess.Popen | None = None
    terminated = []

    def forward(signum: int, frame: Any) -> None:
        terminated.append(signum)
        if process is not None:
            process.send_signal(signal.SIGTERM)

    # The handler goes in before torchrun starts, and a SIGTERM that arrives while it starts is
    # passed on once it runs: no moment in which the signal is dropped.
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        process = subprocess.Popen(launch.command(master_addr), env=environ)
        if terminated:
            process.send_signal(signal.SIGTERM)
        code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, bool(terminated)


def device_and_backend(local_rank: int, cuda: bool) -> tuple[torch.device, str]:
    """A worker's device and process-group backend: its own GPU and NCCL, else the CPU and gloo.

    torchrun starts one process per GPU (`plan`), so LOCAL_RANK is the GPU's index.
    """
    if cuda:
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


def join(environ: Mapping[str, str]) -> World:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    import torch.distributed as dist

    device, backend = device_and_backend(int(environ["LOCAL_RANK"]), torch.cuda.is_available())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), device=device)
