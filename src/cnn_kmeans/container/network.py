"""How the hosts of a multi-host job find each other, whatever the container's hostname.

Inside SageMaker, `gethostname()` is not the job's `algo-N` name (the PyTorch DLC's
`start_with_right_hostname.sh` + `changehostname.c`, aws/deep-learning-containers
scripts/docker/pytorch, exist to work around that: it returns "aws" there). Whatever depends
on it breaks: gloo binds the address the hostname resolves to and falls back to loopback when
it does not resolve (ProcessGroupGloo::createDefaultDevice, torch 2.1 to 2.13), so every host
advertises 127.0.0.1 and the hosts never meet. So this module:

- waits for every host's name to resolve, as the toolkit does before it launches anything
  (sagemaker_training.entry_point._wait_hostname_resolution: up to 15 minutes, exponential
  back-off capped at 30 s), and fails naming the host that never resolved;
- binds gloo and NCCL to `network_interface_name` of resourceconfig.json (GLOO_SOCKET_IFNAME,
  NCCL_SOCKET_IFNAME, as the toolkit's torch_distributed/mpi runners do for NCCL), overriding
  the DLC's `/etc/nccl.conf` (`NCCL_SOCKET_IFNAME=^docker0`, which lets NCCL pick `lo`): NCCL
  reads that file only for variables the environment does not set;
- gives NCCL the job's host name as its host identity (NCCL_HOSTID, read by NCCL's
  getHostHash) rather than hostname + boot id;
- on EFA instance types sets what the toolkit sets (sagemaker_training/__init__.py
  SM_EFA_NCCL_INSTANCES / SM_EFA_RDMA_INSTANCES, mpi.py and torch_distributed.py).

A variable the user already set is never overridden.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from cnn_kmeans.errors import UserError

log = logging.getLogger(__name__)

WAIT_ENV = "CNN_KMEANS_HOST_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 15 * 60  # the toolkit's _dns_lookup: stop_max_delay=15 minutes
FIRST_DELAY = 0.1  # the toolkit's back-off: 0.1 s doubling, at most 30 s between lookups
MAX_DELAY = 30.0

# The toolkit's lists (sagemaker-training 5.x, sagemaker_training/__init__.py). It sets
# FI_PROVIDER=efa on the first and FI_EFA_USE_DEVICE_RDMA=1 (+ RDMAV_FORK_SAFE=1 in its torchrun
# runner) on the second. NCCL_PROTO=simple ("handle the out-of-order data delivery from EFA",
# mpi.py) is set here on EFA types only, as its MPI and smdataparallel runners do; its torchrun
# runner sets it everywhere, which only slows NCCL where EFA is absent. Instance types added to
# SageMaker after that release are not listed: set these variables in the job's Environment.
EFA_INSTANCES = frozenset(
    {
        "ml.g4dn.8xlarge",
        "ml.g4dn.12xlarge",
        "ml.g5.48xlarge",
        "ml.p3dn.24xlarge",
        "ml.p4d.24xlarge",
        "ml.p4de.24xlarge",
        "ml.p5.48xlarge",
        "ml.trn1.32xlarge",
        "ml.p6e-gb200.36xlarge",
    }
)
EFA_RDMA_INSTANCES = frozenset(
    {"ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.trn1.32xlarge", "ml.p6e-gb200.36xlarge"}
)


def resolve(host: str) -> str:
    """The IPv4 address of `host` (the interfaces gloo and NCCL bind are IPv4 in SageMaker)."""
    return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def wait_for_hosts(
    hosts: Sequence[str],
    timeout: float,
    *,
    lookup: Callable[[str], str] = resolve,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Each host's address, waiting for names that do not resolve yet (the cluster's DNS
    records appear as its instances boot).

    Raises:
        UserError: A host's name did not resolve within `timeout` seconds.
    """
    deadline = clock() + timeout
    addresses: dict[str, str] = {}
    for host in hosts:
        delay = FIRST_DELAY
        while host not in addresses:
            try:
                addresses[host] = lookup(host)
            except OSError as error:
                if clock() + delay > deadline:
                    raise UserError(
                        f"host {host!r} of resourceconfig.json did not resolve to an address "
                        f"within {timeout:g} s ({error}): the job's instances could not find "
                        "each other; run the job again"
                    ) from None
                log.info("waiting for host %s to resolve (%s)", host, error)
                sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
    return addresses


def wait_seconds(environ: Mapping[str, str]) -> float:
    """How long to wait for the hosts' names: `CNN_KMEANS_HOST_WAIT_SECONDS`, else 15 min."""
    text = environ.get(WAIT_ENV)
    if not text:
        return DEFAULT_WAIT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UserError(f"{WAIT_ENV}={text!r} must be a positive number of seconds")
    return value


def communication_env(
    environ: Mapping[str, str],
    *,
    interface: str,
    current_host: str,
    instance_type: str,
    interfaces: Sequence[str] | None = None,
) -> dict[str, str]:
    """The variables gloo and NCCL need on this host, for those the user did not set.

    Args:
        environ: the job's environment (a variable set there is kept).
        interface: resourceconfig.json's `network_interface_name`.
        current_host: this host's `algo-N` name.
        instance_type: resourceconfig.json's `current_instance_type`.
        interfaces: this host's network interfaces (default: `socket.if_nameindex()`).
    """
    present = [name for _, name in socket.if_nameindex()] if interfaces is None else interfaces
    wanted = {"NCCL_HOSTID": current_host}
    if interface in present:
        wanted |= {"GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface}
    else:  # local mode, where resourceconfig.json may name no interface: the toolkit says eth0
        log.warning(
            "network interface %r of resourceconfig.json is not among this host's interfaces "
            "(%s): gloo and NCCL choose their own; set GLOO_SOCKET_IFNAME/NCCL_SOCKET_IFNAME "
            "if the hosts cannot connect",
            interface,
            ", ".join(present),
        )
    if instance_type in EFA_INSTANCES:
        wanted |= {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple"}
    if instance_type in EFA_RDMA_INSTANCES:
        wanted |= {"FI_EFA_USE_DEVICE_RDMA": "1", "RDMAV_FORK_SAFE": "1"}
    return {name: value for name, value in wanted.items() if not environ.get(name)}
