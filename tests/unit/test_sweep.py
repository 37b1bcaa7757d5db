"""max-clusters: a k with a degenerate (singleton or tiny) cluster is not chosen (issue 17)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.sweep import choose_k, degenerate_warning, min_cluster_size
from tests.helpers import tiny_config


def _two_groups_and_an_outlier(seed: int) -> np.ndarray:
    """Two groups of 50 features 4 apart, and one point 14 away from both: the silhouette alone
    prefers k=3 with the point alone (measured: 0.558-0.592 vs 0.539-0.570 for k=2)."""
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 1, (50, 2))
    second = rng.normal(0, 1, (50, 2)) + np.array([4.0, 0.0])
    return np.vstack([first, second, [[2.0, 14.0]]]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_k_with_a_one_member_cluster_is_not_chosen(seed, caplog):
    features = _two_groups_and_an_outlier(seed)
    model = CNNKMeans(tiny_config(max_clusters=4, seed=seed))
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        model.fit_clusters(features)
    rows = {row["k"]: row for row in model.sweep_}
    # The trap is there: k=3 isolates the outlier and has the best silhouette.
    assert rows[3]["smallest"] == 1 and rows[3]["silhouette"] > rows[2]["silhouette"]
    assert not rows[3]["eligible"] and rows[2]["eligible"]
    assert model.n_clusters_ == 2 and rows[2]["chosen"]
    assert [row["k"] for row in model.sweep_ if row["chosen"]] == [2]
    assert np.bincount(model.labels_).min() >= 45  # the two groups, the outlier in one
    assert "chose k=2" in caplog.text and not any(r.levelname == "WARNING" for r in caplog.records)


def test_when_every_k_is_degenerate_the_best_silhouette_is_kept_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(0, 0.1, (40, 2)), [[100.0, 100.0]]]).astype(np.float32)
    model = CNNKMeans(tiny_config(max_clusters=3))
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        model.fit_clusters(features)
    assert not any(row["eligible"] for row in model.sweep_)
    best = max(model.sweep_, key=lambda row: row["silhouette"])
    assert model.n_clusters_ == best["k"] and best["chosen"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("every k tried has a tiny cluster" in w for w in warnings)
    assert any("fewer than 2 of the 41 series" in w and ": 1" in w for w in warnings)


def test_a_fixed_clusters_value_is_kept_but_a_singleton_is_warned_about(caplog):
    features = _two_groups_and_an_outlier(0)
    model = CNNKMeans(tiny_config(clusters=3))
    with caplog.at_level(logging.WARNING, logger="cnn_kmeans"):
        model.fit_clusters(features)
    assert model.n_clusters_ == 3 and model.sweep_ == []
    assert "1 of 3 clusters hold fewer than 2 of the 101 series" in caplog.text


def test_the_floor_is_two_or_one_percent():
    assert [min_cluster_size(n) for n in (3, 100, 200, 201, 1000, 10_000)] == [
        2,
        2,
        2,
        3,
        10,
        100,
    ]


def test_choose_k_prefers_eligible_rows_and_ignores_undefined_scores():
    sweep = [
        {"k": 2, "silhouette": 0.4, "smallest": 30},
        {"k": 3, "silhouette": float("nan"), "smallest": 20},
        {"k": 4, "silhouette": 0.5, "smallest": 30},
        {"k": 5, "silhouette": 0.9, "smallest": 1},
    ]
    assert choose_k(sweep, 200) == 4
    assert [row["eligible"] for row in sweep] == [True, True, True, False]
    assert [row["chosen"] for row in sweep] == [False, False, True, False]


def test_degenerate_warning_names_the_clusters():
    assert degenerate_warning(np.array([50, 50])) is None
    assert degenerate_warning(np.array([300, 2, 698])) == (
        "1 of 3 clusters hold fewer than 10 of the 1000 series (cluster 1: 2): likely outliers "
        "rather than groups; look at them, or lower the number of clusters"
    )


def _two_classes_and_an_odd_series(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(40):
        t = np.arange(int(rng.integers(40, 60)))
        wave = np.sin(t * (0.2 if i % 2 else 0.9)) + rng.normal(0, 0.1, len(t))
        rows.append(wave.astype(np.float32))
    rows.append(np.sign(np.sin(np.arange(50) * 2.5)).astype(np.float32))  # a square wave
    return rows


def test_a_two_class_set_with_an_odd_series_gets_two_clusters():
    """The issue's case end to end: trained features, an outlier series, max-clusters=5."""
    rows = _two_classes_and_an_odd_series(0)
    model = CNNKMeans(tiny_config(epochs=1, max_clusters=5)).fit(rows)
    best = max(model.sweep_, key=lambda row: row["silhouette"])
    assert best["smallest"] == 1, "the set no longer reproduces the trap: re-plant it"
    assert model.n_clusters_ == 2
    assert np.bincount(model.labels_).min() >= min_cluster_size(len(rows))
    classes = np.arange(41) % 2
    assert len(set(zip(classes[:40].tolist(), model.labels_[:40].tolist(), strict=True))) == 2
