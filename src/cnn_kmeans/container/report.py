"""The training job's report in output/data: JSON and CSV figures, PNG plots of the clusters."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MEMBERS_PLOTTED = 100  # per cluster: enough to see its shape, few enough to draw fast


def write_report(
    directory: Path,
    summary: dict[str, Any],
    labels: np.ndarray,
    series: np.ndarray,
    seed: int = 0,
) -> list[Path]:
    """Write report.json, cluster_sizes.csv, clusters.png and (after a k sweep) sweep.png.

    Args:
        directory: output/data.
        summary: plain values for report.json (clusters, scores, sweep, history, ...).
        labels: (N,) cluster of each training series.
        series: (N, L) the training series as the encoder saw them (scaled), NaN-padded.
        seed: for choosing which members to draw.

    Returns:
        The files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    clusters = int(summary["clusters"])
    sizes = np.bincount(labels, minlength=clusters)
    report = {**summary, "cluster_sizes": sizes.tolist()}
    written = [directory / "report.json", directory / "cluster_sizes.csv"]
    written[0].write_text(json.dumps(report, indent=2, allow_nan=False, default=_plain) + "\n")
    written[1].write_text(
        "cluster,size\n" + "".join(f"{k},{n}\n" for k, n in enumerate(sizes.tolist()))
    )
    written.append(plot_clusters(directory / "clusters.png", labels, series, clusters, seed))
    if summary.get("sweep"):
        written.append(plot_sweep(directory / "sweep.png", summary["sweep"], clusters))
    log.info("report written to %s", directory)
    return written


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _pyplot():
    # Imported when drawing only: matplotlib is heavy and needs no display (Agg).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_clusters(
    path: Path, labels: np.ndarray, series: np.ndarray, clusters: int, seed: int
) -> Path:
    """One panel per cluster: members in grey, their median (per time step) in black."""
    plt = _pyplot()
    columns = min(4, clusters)
    rows = -(-clusters // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False, sharex=True
    )
    rng = np.random.default_rng(seed)
    for k, axis in enumerate(axes.ravel()):
        if k >= clusters:
            axis.set_visible(False)
            continue
        members = np.flatnonzero(labels == k)
        axis.set_title(f"cluster {k} ({len(members)} series)", fontsize=9)
        if len(members) == 0:
            continue
        shown = rng.choice(members, size=min(len(members), MEMBERS_PLOTTED), replace=False)
        axis.plot(series[shown].T, color="0.6", linewidth=0.5, alpha=0.5)
        with warnings.catch_warnings():  # steps past every member's end: an all-NaN slice
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(series[members], axis=0)
        axis.plot(median, color="black", linewidth=1.5)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def plot_sweep(path: Path, sweep: list[dict[str, float]], chosen: int) -> Path:
    """Silhouette and inertia over k, the chosen k marked."""
    plt = _pyplot()
    ks = [row["k"] for row in sweep]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(ks, [row["silhouette"] for row in sweep], marker="o")
    left.set(xlabel="k", ylabel="silhouette", title="silhouette (higher is better)")
    right.plot(ks, [row["inertia"] for row in sweep], marker="o", color="tab:orange")
    right.set(xlabel="k", ylabel="inertia", title="inertia")
    for axis in (left, right):
        axis.axvline(chosen, color="black", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
