"""Large allocations mapped from the OS, not carved from the heap, when training on long series.

glibc's malloc serves a request above its mmap threshold with a mapping of its own, unmapped on
free, and smaller ones from the heap. The threshold starts at 128 KB and rises to the size of
every mapped block that is freed (up to 32 MB), so after a few steps on long series every
activation comes from the heap, between small long-lived blocks (the optimiser's, oneDNN's), and
the heap keeps growing with the largest steps seen. A fixed threshold (`mallopt(M_MMAP_THRESHOLD)`
also stops the adjustment) keeps blocks above it out of the heap. At length 150 a step's largest
activation is ~4 MB, so nothing changes there. `benchmarks/profile_long.py --memory` (default
encoder, 100 random walks of length 1,460, one thread, oneDNN's cache off as the job runs, 30
steps, two processes per setting, load average 3, 2026-12-05): with this threshold at 16 MB and
the encoder's recomputation in runs of blocks (`encoder.RECOMPUTE_RUN`) the peak RSS was 934 and
896 MB, flat from step 15, at 4.08 and 4.45 CPU s/step; with malloc's default and one block per
run 1,086 and 1,109 MB at 4.13 and 4.29 s. Lower thresholds (4 MB, 1 MB; tried once in a
scratch run) kept less, but every step then paid markedly more CPU time for fresh zeroed pages.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

from cnn_kmeans.onednn import LONG_SERIES, longest_series

# glibc's malloc.h: M_MMAP_THRESHOLD.
M_MMAP_THRESHOLD = -3
LARGE_BYTES = 16 << 20

log = logging.getLogger(__name__)


def map_large_allocations(*series: np.ndarray | None, threshold: int = LARGE_BYTES) -> bool:
    """Before training on `series` (NaN-padded (N, L) arrays; None for an absent channel), fix
    this process's mmap threshold at `threshold` bytes when a series is longer than
    `LONG_SERIES` steps. Process-wide and permanent. Returns whether it was set (False on a C
    library without glibc's `mallopt`, e.g. macOS's, where nothing changes)."""
    longest = longest_series(*series)
    if longest <= LONG_SERIES:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not mallopt(M_MMAP_THRESHOLD, threshold):
        return False
    log.info(
        "series up to %d steps: allocations above %d MB are mapped from the OS (not the heap)",
        longest,
        threshold >> 20,
    )
    return True
