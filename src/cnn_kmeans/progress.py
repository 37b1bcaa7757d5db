"""Progress lines with an ETA for long work, in the style of the epoch lines, through `logging`.

Lines go to the `cnn_kmeans.progress` logger at INFO, at most one every `EVERY_S` seconds per
task (plus the task's last line once one was written), so short work stays silent. The CLI and
the training job configure logging themselves; an API user who has not gets them on stderr (see
`visible`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

from cnn_kmeans.trainer import EpochReport

log = logging.getLogger("cnn_kmeans.progress")

EVERY_S = 10.0  # at most one line per task this often (the tests lower it)


class Progress:
    """Counts `done` out of `total` items of one task and logs throttled lines with an ETA.

    A line reads `encoding 4096/70000 series (6%)  1234 series/s  elapsed 3.3 s  ETA 53.4 s`.
    """

    def __init__(self, what: str, total: int, unit: str, *, enabled: bool = True):
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.began = self.last = time.perf_counter()
        self.done = 0
        self.lines = 0

    def update(self, count: int) -> None:
        """Record `count` more items done; log a line if `EVERY_S` passed since the last."""
        self.done += count
        now = time.perf_counter()
        if self.enabled and now - self.last >= EVERY_S and self.done < self.total:
            self.last = now
            self._line(now)

    def finish(self) -> float:
        """The task ended: log its last line if it logged any; returns the elapsed seconds."""
        now = time.perf_counter()
        if self.enabled and self.lines:
            self._line(now)
        return now - self.began

    def _line(self, now: float) -> None:
        elapsed = now - self.began
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.lines += 1
        log.info(
            "%s %d/%d %s (%d%%)  %.0f %s/s  elapsed %.1f s  ETA %.1f s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100 * self.done // max(self.total, 1),
            rate,
            self.unit,
            elapsed,
            eta,
        )


def log_epoch(report: EpochReport) -> None:
    """The line every finished epoch logs (the CLI's and the API's)."""
    valid = "" if report.valid_loss is None else f"  valid_loss {report.valid_loss:.4f}"
    log.info(
        "epoch %d/%d  train_loss %.4f%s  %.2f s/epoch  elapsed %.1f s  ETA %.1f s",
        report.epoch,
        report.epochs,
        report.train_loss,
        valid,
        report.seconds,
        report.elapsed,
        report.eta,
    )


@contextlib.contextmanager
def visible(enabled: bool = True) -> Iterator[None]:
    """Inside the block, make the package's INFO lines reach stderr if logging is unconfigured.

    With no handler anywhere on the way to the root logger, Python drops INFO records: an API
    user who never configured logging would see no progress. A configured application decides
    itself (its handlers and levels apply unchanged).
    """
    package = logging.getLogger("cnn_kmeans")
    if not enabled or package.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
