"""The report's files and plots: labelled axes in the data's units, a legend, a readable size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_kmeans import report
from cnn_kmeans.data import pad_rows

pytest.importorskip("matplotlib")


def _series(count: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    rows = [1000.0 + 50.0 * label + rng.normal(0, 5, int(rng.integers(20, 40))) for label in labels]
    return pad_rows([r.astype(np.float32) for r in rows]), labels


def test_clusters_figure_labels_its_axes_and_has_a_legend():
    series, labels = _series()
    figure = report.clusters_figure(labels, series, 3, title="training series by cluster")
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert len(visible) == 3
    assert all(axis.get_xlabel() == report.TIME_LABEL for axis in visible)
    assert visible[0].get_ylabel() == report.VALUE_LABEL
    assert [axis.get_title() for axis in visible] == [f"cluster {k} (10 series)" for k in range(3)]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "member series (up to 100)",
        "median of the members, per step",
    ]
    # The values drawn are the series given: the data's units, not a scaled copy.
    drawn = np.concatenate([line.get_ydata() for line in visible[2].get_lines()])
    drawn = drawn[np.isfinite(drawn)]
    assert drawn.min() > 1050 and drawn.max() < 1150


def test_sweep_figure_marks_the_chosen_k_and_the_ineligible_ones():
    sweep = [
        {"k": 2, "silhouette": 0.5, "inertia": 10.0, "smallest": 40},
        {"k": 3, "silhouette": 0.6, "inertia": 6.0, "smallest": 1},
        {"k": 4, "silhouette": 0.4, "inertia": 5.0, "smallest": 1},
    ]
    figure = report.sweep_figure(sweep, chosen=2, floor=2)
    score, small, inertia = figure.axes
    assert (score.get_xlabel(), score.get_ylabel()) == ("k (clusters)", "silhouette")
    assert (small.get_ylabel(), inertia.get_ylabel()) == ("series", "inertia")
    labels = [text.get_text() for text in score.get_legend().get_texts()]
    assert labels == ["eligible k", "a cluster below 2 series", "chosen k=2"]
    assert "floor: 2 series" in [t.get_text() for t in small.get_legend().get_texts()]


def test_training_report_files_warnings_and_png_sizes(tmp_path):
    import matplotlib.image

    series, labels = _series(40)
    labels[-1] = 3  # a one-member cluster
    sweep = [{"k": 4, "silhouette": 0.3, "inertia": 1.0, "smallest": 1}]
    written = report.write_training_report(
        tmp_path, {"clusters": 4, "sweep": sweep}, labels, series
    )
    assert [p.name for p in written] == [
        "report.json",
        "cluster_sizes.csv",
        "clusters.png",
        "sweep.png",
    ]
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["cluster_sizes"] == [13, 13, 13, 1] and document["min_cluster_size"] == 2
    assert document["warnings"] == [
        "1 of 4 clusters hold fewer than 2 of the 40 series (cluster 3: 1): likely outliers "
        "rather than groups; look at them, or lower the number of clusters"
    ]
    height, width = matplotlib.image.imread(tmp_path / "clusters.png").shape[:2]
    assert (width, height) == (4 * 540, 384 + 72)  # 4 panels of 4.5 x 3.2 in at 120 dpi
    height, width = matplotlib.image.imread(tmp_path / "sweep.png").shape[:2]
    assert (width, height) == (14 * 120, 4 * 120)


def test_prediction_report_summarises_sizes_and_distances(tmp_path):
    series, labels = _series(6)
    distances = np.array(
        [[0.5, 3, 4], [2, 1.0, 4], [2, 3, 2.0], [1.5, 3, 4], [2, 3.0, 4], [2, 3, 4.0]],
        dtype=np.float32,
    )
    report.write_prediction_report(tmp_path, labels, distances, series)
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["series"] == 6 and document["cluster_sizes"] == [2, 2, 2]
    assert document["distance_to_own_centroid"]["max"] == 4.0
    assert document["distance_to_own_centroid"]["min"] == 0.5
    assert document["per_cluster"][0] == {
        "cluster": 0,
        "size": 2,
        "distance_to_centroid": {"min": 0.5, "median": 1.0, "mean": 1.0, "p95": 1.45, "max": 1.5},
    }
    assert (tmp_path / "clusters.png").stat().st_size > 10_000
