"""Reports of a training run and of predictions: report.json, cluster_sizes.csv and PNG plots.

One implementation for the SageMaker training job (its `output/data`) and the command line
(`cnn-kmeans train --report DIR`, `cnn-kmeans predict --report DIR`). The plots show the series
in the units of the data as given (cleaned: gaps interpolated, ends trimmed), never the
internal scaling the encoder sees. matplotlib (the `plot` extra) is imported only to draw.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnn_kmeans.errors import UserError
from cnn_kmeans.sweep import degenerate_warning, min_cluster_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnn_kmeans.trainer import EpochReport

log = logging.getLogger(__name__)

MEMBERS_PLOTTED = 100  # per cluster: enough to see its shape, few enough to draw fast
DPI = 120
PANEL_INCHES = (4.5, 3.2)  # width, height of one cluster's panel: 540 x 384 pixels at DPI
PANEL_COLUMNS = 4
VALUE_LABEL = "value (units of the data)"
TIME_LABEL = "time step"


def require_plotting() -> None:
    """Fail early, before any training, when matplotlib is missing.

    Raises:
        UserError: Saying which extra to install.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            "writing a report needs matplotlib: pip install 'cnn-kmeans[plot]'"
        ) from None


def epoch_record(report: EpochReport) -> dict[str, Any]:
    """One epoch of report.json's `history`."""
    return {"epoch": report.epoch, "train_loss": report.train_loss, "valid_loss": report.valid_loss}


def write_training_report(
    directory: Path,
    summary: dict[str, Any],
    labels: np.ndarray,
    series: np.ndarray,
    seed: int = 0,
) -> list[Path]:
    """Write report.json, cluster_sizes.csv, clusters.png and (after a k sweep) sweep.png.

    report.json is `summary` plus `cluster_sizes`, `min_cluster_size` (the sweep's floor) and
    `warnings` (a cluster below that floor, see `sweep.degenerate_warning`).

    Args:
        directory: where the files go (created if missing).
        summary: plain values (clusters, scores, sweep, history, ...).
        labels: (N,) cluster of each training series.
        series: (N, L) the training series in the data's units, cleaned, NaN-padded.
        seed: for choosing which members to draw.

    Returns:
        The files written.
    """
    clusters = int(summary["clusters"])
    sizes = np.bincount(labels, minlength=clusters)
    warning = degenerate_warning(sizes)
    report = {
        **summary,
        "cluster_sizes": sizes.tolist(),
        "min_cluster_size": min_cluster_size(len(labels)),
        "warnings": [warning] if warning else [],
    }
    written = _write_tables(directory, report, sizes)
    figure = clusters_figure(labels, series, clusters, seed, "training series by cluster")
    written.append(save_figure(figure, directory / "clusters.png"))
    if summary.get("sweep"):
        figure = sweep_figure(summary["sweep"], clusters, min_cluster_size(len(labels)))
        written.append(save_figure(figure, directory / "sweep.png"))
    log.info("report written to %s", directory)
    return written


def write_prediction_report(
    directory: Path,
    labels: np.ndarray,
    distances: np.ndarray,
    series: np.ndarray,
    seed: int = 0,
) -> list[Path]:
    """Write report.json, cluster_sizes.csv and clusters.png of predicted series.

    report.json holds the number of series, the cluster sizes and a summary of each series'
    distance to its own centroid (all series, and per cluster): how far new data lies from
    what the model was trained on.

    Args:
        directory: where the files go (created if missing).
        labels: (N,) predicted clusters.
        distances: (N, k) distances to every centroid.
        series: (N, L) the predicted series in the data's units, cleaned, NaN-padded.
        seed: for choosing which members to draw.
    """
    clusters = distances.shape[1]
    sizes = np.bincount(labels, minlength=clusters)
    own = distances[np.arange(len(labels)), labels].astype(np.float64)
    report = {
        "series": len(labels),
        "clusters": clusters,
        "cluster_sizes": sizes.tolist(),
        "distance_to_own_centroid": _spread(own),
        "per_cluster": [
            {"cluster": k, "size": int(sizes[k]), "distance_to_centroid": _spread(own[labels == k])}
            for k in range(clusters)
        ],
    }
    written = _write_tables(directory, report, sizes)
    figure = clusters_figure(labels, series, clusters, seed, "predicted series by cluster")
    written.append(save_figure(figure, directory / "clusters.png"))
    log.info("report written to %s", directory)
    return written


def _spread(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    low, median, high95, high = np.percentile(values, [0, 50, 95, 100]).tolist()
    return {"min": low, "median": median, "mean": float(values.mean()), "p95": high95, "max": high}


def _write_tables(directory: Path, report: dict[str, Any], sizes: np.ndarray) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "cluster_sizes.csv"]
    written[0].write_text(json.dumps(report, indent=2, allow_nan=False, default=_plain) + "\n")
    written[1].write_text(
        "cluster,size\n" + "".join(f"{k},{n}\n" for k, n in enumerate(sizes.tolist()))
    )
    return written


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _new_figure(width: float, height: float) -> Figure:
    # A Figure without pyplot: no global state, no backend switch in the caller's process (a
    # notebook's inline backend stays as it is); savefig renders with Agg.
    require_plotting()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG at `DPI`."""
    figure.savefig(path, dpi=DPI)
    return path


def clusters_figure(
    labels: np.ndarray, series: np.ndarray, clusters: int, seed: int = 0, title: str = ""
) -> Figure:
    """One panel per cluster: up to `MEMBERS_PLOTTED` members in grey, their median in black.

    Args:
        labels: (N,) cluster of each series.
        series: (N, L) the series in the data's units, NaN after each one's end.
        clusters: the number of clusters (empty ones get an empty panel).
        seed: for choosing which members to draw.
        title: the figure's title.
    """
    columns = min(PANEL_COLUMNS, clusters)
    rows = -(-clusters // columns)
    figure = _new_figure(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.6)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True)
    rng = np.random.default_rng(seed)
    for k, axis in enumerate(axes.ravel()):
        if k >= clusters:
            axis.set_visible(False)
            continue
        members = np.flatnonzero(labels == k)
        axis.set_title(f"cluster {k} ({len(members)} series)", fontsize=10)
        if k % columns == 0:
            axis.set_ylabel(VALUE_LABEL)
        if k + columns >= clusters:  # the lowest panel of its column
            axis.set_xlabel(TIME_LABEL)
            axis.tick_params(labelbottom=True)
        if len(members) == 0:
            continue
        shown = rng.choice(members, size=min(len(members), MEMBERS_PLOTTED), replace=False)
        axis.plot(series[np.sort(shown)].T, color="0.6", linewidth=0.6, alpha=0.5)
        with warnings.catch_warnings():  # steps past every member's end: an all-NaN slice
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(series[members], axis=0)
        axis.plot(median, color="black", linewidth=1.6)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="0.6", linewidth=1, label=f"member series (up to {MEMBERS_PLOTTED})"),
        Line2D([], [], color="black", linewidth=1.6, label="median of the members, per step"),
    ]
    figure.legend(handles=handles, loc="upper right", ncols=2, fontsize=9, frameon=False)
    figure.suptitle(title, x=0.01, ha="left", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight()))
    return figure


def sweep_figure(sweep: list[dict[str, Any]], chosen: int, floor: int) -> Figure:
    """Silhouette, smallest cluster and inertia over k; the chosen k and the size floor marked.

    Args:
        sweep: the model's `sweep_` rows (k, silhouette, inertia, smallest, eligible).
        chosen: the k in use.
        floor: the smallest cluster an eligible k may have (`sweep.min_cluster_size`).
    """
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(14, 4)
    score, small, inertia = figure.subplots(1, 3)
    ks = np.array([row["k"] for row in sweep])
    silhouettes = np.array([row["silhouette"] for row in sweep], dtype=float)
    smallest = np.array([row.get("smallest", floor) for row in sweep])
    eligible = smallest >= floor
    score.plot(ks, silhouettes, color="tab:blue", linewidth=1)
    score.plot(ks[eligible], silhouettes[eligible], "o", color="tab:blue", label="eligible k")
    if not eligible.all():
        score.plot(
            ks[~eligible],
            silhouettes[~eligible],
            "x",
            color="tab:red",
            markersize=8,
            label=f"a cluster below {floor} series",
        )
    score.set(xlabel="k (clusters)", ylabel="silhouette", title="silhouette (higher is better)")
    small.plot(ks, smallest, marker="o", color="tab:green", label="smallest cluster")
    small.axhline(floor, color="tab:red", linestyle=":", label=f"floor: {floor} series")
    small.set(xlabel="k (clusters)", ylabel="series", title="smallest cluster")
    small.yaxis.set_major_locator(MaxNLocator(integer=True))
    inertia.plot(ks, [row["inertia"] for row in sweep], marker="o", color="tab:orange")
    inertia.set(xlabel="k (clusters)", ylabel="inertia", title="inertia (within-cluster SS)")
    for axis in (score, small, inertia):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen k={chosen}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
