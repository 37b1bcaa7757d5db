"""Clustering quality: the sample data's clusters are recovered; CBF beats KMeans on raw series."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from cnn_kmeans.config import Config
from cnn_kmeans.data import read_channel
from cnn_kmeans.model import CNNKMeans
from tests.helpers import DATA, cylinder_bell_funnel, read_labels

pytestmark = pytest.mark.slow

MODEST = dict(blocks=6, filters=20, reduced_size=40, output_size=40, epochs=12, clusters=3)


def test_sample_data_clusters_are_recovered():
    model = CNNKMeans(Config(**MODEST)).fit(
        read_channel(DATA / "training"), read_channel(DATA / "validation")
    )
    labels = model.predict(read_channel(DATA / "inference" / "input" / "test.csv"))
    assert adjusted_rand_score(read_labels("test"), labels) >= 0.9


def resampled(rows: list[np.ndarray], length: int = 128) -> np.ndarray:
    """Each series z-normalised and linearly resampled to one common length."""
    out = []
    for row in rows:
        row = (row - row.mean()) / row.std()
        out.append(np.interp(np.linspace(0, len(row) - 1, length), np.arange(len(row)), row))
    return np.array(out)


def test_cbf_features_beat_kmeans_on_raw_series_by_a_clear_margin():
    train, _ = cylinder_bell_funnel(150, seed=1)
    test, truth = cylinder_bell_funnel(150, seed=2)
    raw = KMeans(3, n_init=10, random_state=0).fit(resampled(train))
    raw_ari = adjusted_rand_score(truth, raw.predict(resampled(test)))
    model = CNNKMeans(Config(**MODEST, scaling="series")).fit(train)
    ours = adjusted_rand_score(truth, model.predict(test))
    assert ours >= raw_ari + 0.3, (ours, raw_ari)
