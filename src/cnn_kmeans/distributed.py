"""Data-parallel helpers over an initialised `torch.distributed` process group.

The container layer starts the processes and initialises the group; the core only needs to know
its rank, the world size, and a few collectives: sums, "does anyone want to stop", gathering
rows of features, broadcasting bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


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

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """Whether any process has the flag set."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

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
