"""oneDNN's primitive cache, turned off when training on long series to keep memory bounded.

PyTorch's CPU convolutions run on oneDNN, which compiles a primitive for every convolution shape
it meets and keeps up to 1,024 of them (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). A training step pads
its window groups to multiples of `encoder.WIDTH_MULTIPLE`, so training on series of length L
meets about L / 16 widths, each with forward and backward primitives for every layer. On short
series they all fit and are reused every step; on long ones they never stop being new, the cache
fills, and the primitives' memory, allocated between the step's large temporaries, keeps the
heap from shrinking. Measured with `benchmarks/profile_long.py --cache` (default encoder, 100
random walks, one thread, two processes per setting; CPU seconds per step, peak RSS):

- length 1,460, 30 steps: with the cache 4.16 and 3.77 s, 1,948 and 2,213 MB and still growing;
  without it 3.79 and 3.65 s, 1,069 and 1,090 MB, flat from step 15-20;
- length 500, 40 steps: with it 0.89 and 0.94 s (859, 851 MB); without 1.02 and 1.06 s (617,
  609 MB): the cache still buys 15% there;
- length 150, 200 steps: with it 0.28 s (453 MB); without 0.43 s (431 MB).

oneDNN reads the setting once, when the process creates its first primitive, so it is set by the
entrypoints (the CLI, the training job) after reading the data and before training; a process
that has already run a convolution keeps the cache it has. A value the user set is kept.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

import numpy as np

CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
# oneDNN's older name for the same setting, honoured by it too.
LEGACY_CACHE_ENV = "DNNL_PRIMITIVE_CACHE_CAPACITY"
# Series longer than this train with the cache off.
LONG_SERIES = 512

log = logging.getLogger(__name__)


def longest_series(*series: np.ndarray | None) -> int:
    """The width of the widest of `series` (NaN-padded (N, L) arrays; None for an absent
    channel): the length `LONG_SERIES` is compared with."""
    return max((x.shape[1] for x in series if x is not None), default=0)


def limit_primitive_cache(environ: MutableMapping[str, str], *series: np.ndarray | None) -> bool:
    """Turn the primitive cache off in `environ` before training on `series` (NaN-padded
    (N, L) arrays; None for a channel that is absent), and log it.

    Only when a series is longer than `LONG_SERIES` steps, and only when neither name of the
    setting is in `environ` already. Returns whether it set it.
    """
    longest = longest_series(*series)
    if longest <= LONG_SERIES or CACHE_ENV in environ or LEGACY_CACHE_ENV in environ:
        return False
    environ[CACHE_ENV] = "0"
    log.info(
        "series up to %d steps: oneDNN's primitive cache is off (%s=0) to keep training memory "
        "bounded; set it to override",
        longest,
        CACHE_ENV,
    )
    return True
