"""Choosing k for `max-clusters`: the best silhouette among the k without degenerate clusters.

The silhouette alone rewards giving an outlier series a cluster of its own: the outlier's score
is 0 (a singleton's, by definition) but the rest of its former cluster becomes tighter, which
can outweigh it (issue 17: k=5 with a one-member cluster chosen on a 2-class set). A k whose
smallest cluster holds fewer than `min_cluster_size(N)` series (2, or 1% of the training set if
more) is therefore not eligible, unless no k in the sweep is; the chosen k is then the best
silhouette of them all, and a warning says so. The floor is small on purpose: with k at most 100
(max-clusters' range), an even split gives every cluster at least 1% of the series, so only a
cluster far below an even share is refused; a real small group of 1% or more stays choosable.
"""

from __future__ import annotations

import math

import numpy as np

MIN_CLUSTER_SHARE = 0.01  # of the training series; with a floor of 2 (no singleton)


def min_cluster_size(count: int) -> int:
    """The smallest cluster an eligible k may have, for `count` training series."""
    return max(2, math.ceil(MIN_CLUSTER_SHARE * count))


def choose_k(sweep: list[dict], count: int) -> int:
    """Mark each sweep row `eligible` and `chosen` (in place) and return the chosen k.

    Args:
        sweep: one row per k tried, with `k`, `silhouette` (NaN when undefined) and `smallest`
            (the size of its smallest cluster).
        count: the number of training series.
    """
    floor = min_cluster_size(count)
    for row in sweep:
        row["eligible"] = bool(row["smallest"] >= floor)
    candidates = [row for row in sweep if row["eligible"]] or sweep

    def score(row: dict) -> float:
        return row["silhouette"] if row["silhouette"] == row["silhouette"] else -math.inf

    best = max(candidates, key=score)  # the first of equal scores: the smallest k
    for row in sweep:
        row["chosen"] = row is best
    return int(best["k"])


def degenerate_warning(sizes: np.ndarray) -> str | None:
    """A warning when a cluster of these sizes (N = their sum) is below the floor, else None."""
    sizes = np.asarray(sizes)
    count = int(sizes.sum())
    floor = min_cluster_size(count)
    tiny = np.flatnonzero(sizes < floor)
    if len(tiny) == 0:
        return None
    listed = ", ".join(f"cluster {k}: {sizes[k]}" for k in tiny.tolist())
    return (
        f"{len(tiny)} of {len(sizes)} clusters hold fewer than {floor} of the {count} series "
        f"({listed}): likely outliers rather than groups; look at them, or lower the number "
        "of clusters"
    )
