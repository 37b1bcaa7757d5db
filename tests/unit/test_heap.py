"""Fixing malloc's mmap threshold gives large blocks back to the OS when they are freed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cnn_kmeans.heap import map_large_allocations
from cnn_kmeans.onednn import LONG_SERIES

# A fresh process allocates, fills and frees a 24 MB array twice, and reports how much its RSS
# grew. glibc maps the first block, raises its threshold to the block's size when it is freed,
# and takes the second from the heap, which keeps it: ~24 MB more. With the threshold fixed at
# 16 MB both blocks are mapped and unmapped.
PROBE = """
import json, sys
import numpy as np
from cnn_kmeans.heap import map_large_allocations

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

fixed = map_large_allocations(np.zeros((1, int(sys.argv[1]))))
before = rss_mb()
for _ in range(2):
    block = np.ones(3 << 20)
    del block
print(json.dumps({"fixed": fixed, "grew_mb": rss_mb() - before}))
"""


def probe(length: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(length)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc")
def test_after_training_on_long_series_a_freed_large_block_leaves_the_process():
    short, long = probe(LONG_SERIES), probe(LONG_SERIES + 1)
    if short["grew_mb"] < 16:
        pytest.skip(f"this C library keeps no freed 24 MB block ({short}): nothing to fix")
    assert not short["fixed"]
    assert long["fixed"] and long["grew_mb"] < 4


def test_short_series_and_absent_channels_leave_malloc_alone():
    assert not map_large_allocations(np.zeros((3, LONG_SERIES)), None)
    assert not map_large_allocations()
