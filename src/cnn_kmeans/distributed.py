"""Data-parallel helpers over an initialised `torch.distributed` process group.

The container layer starts the processes and initialises the group; the core only needs to know
its rank, the world size, and a few collectives: sums, "does anyone want to stop", gathering
rows of features, broadcasting bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

F = TypeVar("F", bound=Callable[..., Any])


def _normal_tensors(method: F) -> F:
    """Run a collective with inference mode off, also when called inside it.

    Collectives write into their tensors in place from the backend's threads, where inference
    mode is off: on torch 2.1 gloo then refuses tensors created in inference mode ("Inplace
    update to inference tensor outside InferenceMode"; seen at the features' all_gather of a
    two-process job). Tensors created here are normal ones; reading inference tensors is fine.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False):
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class World:
    """This process's place among `size` data-parallel processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the process that logs metrics and writes files."""
        return self.rank == 0

    def shard(self, count: int) -> np.ndarray:
        """This rank's positions among `count` items (round robin, so shards differ by <= 1)."""
        return np.arange(self.rank, count, self.size)

    @_normal_tensors
    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    @_normal_tensors
    def any(self, flag: bool) -> bool:
        """Whether any process has the flag set."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    @_normal_tensors
    def gather_rows(self, rows: torch.Tensor, count: int) -> torch.Tensor:
        """All `count` rows, in item order, from each rank's round-robin shard (see `shard`).

        Args:
            rows: (len(shard(count)), ...) this rank's rows.
            count: the number of items over all ranks.

        Returns:
            (count, ...) on every rank.
        """
        if not self.distributed:
            return rows
        longest = -(-count // self.size)
        padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        # Row i of rank r is item r + i * size: interleave the parts back into item order.
        stacked = torch.stack(parts, dim=1).reshape(longest * self.size, *rows.shape[1:])
        return stacked[:count]

    @_normal_tensors
    def broadcast_bytes(self, payload: bytes | None) -> bytes:
        """The leader's bytes, on every process."""
        if not self.distributed:
            return payload or b""
        size = torch.tensor([len(payload or b"")], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.leader and payload:
            buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().numpy().tobytes())

    def barrier(self) -> None:
        """Wait for every process."""
        if self.distributed:
            dist.barrier()
