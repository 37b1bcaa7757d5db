"""How many threads torch computes with: the cores this process may really use, or what is asked.

torch's default is every core the machine has, whatever the process's CPU affinity or its
container's CPU quota. OpenMP threads that outnumber the free cores spin and thrash: on a
2-core machine with one other busy process, 10 epochs at GunPoint's shape took 231 s with the
default and 11.9 s with one thread (issue 17). `available_cores` counts what the process may
use; the entrypoints read the settings (`threads_setting`) once, in `main()`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from cnn_kmeans.errors import UserError

# torch is imported inside the functions that use it: importing this module must not load
# OpenMP, so that OpenMP settings in the environment (OMP_WAIT_POLICY) still apply when it loads.

THREADS_ENV = "CNN_KMEANS_THREADS"
OMP_ENV = "OMP_NUM_THREADS"


def available_cores(
    root: Path | str = "/", *, affinity: int | None = None, cpu_count: int | None = None
) -> int:
    """Cores this process may use: min(CPU affinity, cgroup CPU quota, os.cpu_count()), >= 1.

    A fractional quota rounds down (1.5 cores -> 1): a second thread would only get half a
    core and stall the first at every synchronisation.

    Hand-written rather than joblib's `cpu_count` (which scikit-learn brings): that one rounds a
    quota up, reads only the cgroup at the mount's root, and has no seam for tests.

    Args:
        root: the file system root under which `/proc/self/cgroup` and `/sys/fs/cgroup` are
            read (tests point it at fake files).
        affinity, cpu_count: the CPUs in the affinity mask and the machine's CPU count; by
            default the process's own.
    """
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            affinity = os.cpu_count() or 1
    counts = [affinity, cpu_count or os.cpu_count() or 1]
    quota = cgroup_cpu_quota(Path(root))
    if quota is not None:
        counts.append(math.floor(quota))
    return max(1, min(counts))


def cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota (cores, possibly fractional) of this process's cgroup, or None if none.

    cgroup v2 (`cpu.max`: "QUOTA PERIOD" or "max PERIOD") and v1 (`cpu.cfs_quota_us`, -1 for
    none, over `cpu.cfs_period_us`). The smallest quota of the process's cgroup and its
    ancestors counts; the cgroup file system's own root is read too, since inside a container
    it is the container's cgroup while /proc/self/cgroup may name the host's path.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # v2: "0::/path"
            for folder in _levels(root / "sys/fs/cgroup", path):
                quotas.append(_v2_quota(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in {controllers, "cpu"}:
                for folder in _levels(root / "sys/fs/cgroup" / mount, path):
                    quotas.append(_v1_quota(folder))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _levels(mount: Path, path: str) -> list[Path]:
    """The cgroup folder of `path` under `mount` and each of its ancestors up to `mount`."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(path: Path) -> float | None:
    text = _read(path)
    if not text:
        return None
    quota, _, period = text.partition(" ")
    try:
        return None if quota == "max" else int(quota) / int(period or 100_000)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def threads_setting(
    requested: int | None, environ: Mapping[str, str], cores: int
) -> tuple[int | None, str]:
    """The torch thread count an entrypoint should set, and where it comes from (for the log).

    First match wins: `requested` (a --threads flag), `CNN_KMEANS_THREADS`, `OMP_NUM_THREADS`
    (returns None: torch already took it when it loaded, and it is left alone), `cores`.

    Raises:
        UserError: CNN_KMEANS_THREADS is not a positive integer.
    """
    if requested is not None:
        return requested, "--threads"
    text = environ.get(THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{THREADS_ENV}={text!r} must be a positive integer (torch threads)")
        return int(text), THREADS_ENV
    if environ.get(OMP_ENV, "").strip():
        return None, f"{OMP_ENV}={environ[OMP_ENV].strip()}"
    return cores, "available cores"


def set_threads(count: int | None) -> int:
    """Give torch `count` intra-op threads (None: leave them); returns the count torch uses."""
    import torch

    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[int]:
    """Compute with `count` torch threads inside the block, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield set_threads(count)
    finally:
        set_threads(previous)


def default_threads(cores: int | None = None) -> int:
    """The API's default: torch's current count, lowered to the available cores.

    torch's current count already reflects OMP_NUM_THREADS (read when torch loads) and any
    `torch.set_num_threads` of the caller; only a count above the cores this process may use is
    lowered (pass `threads=` to force one).
    """
    import torch

    return min(torch.get_num_threads(), cores or available_cores())


@functools.cache
def process_cores() -> int:
    """`available_cores()` of this process, read once (the API asks at every call)."""
    return available_cores()
