"""Feature preparation before KMeans: the maps, and their folding into the encoder."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cnn_kmeans import model as model_module
from cnn_kmeans.clustering import affine_map, fold_into
from cnn_kmeans.model import CNNKMeans
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    # Correlated features of very different spreads, one of them constant.
    base = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) * [1, 10, 100, 0.1, 1, 5]
    return np.column_stack([base + 3.0, np.full(200, 7.0)]).astype(np.float32)


def test_raw_is_no_map(features):
    assert affine_map("raw", features) is None


def test_standardised_features_have_zero_mean_unit_variance(features):
    matrix, mean = affine_map("standardised", features)
    prepared = (features - mean) @ matrix.T
    np.testing.assert_allclose(prepared.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(prepared[:, :-1].std(axis=0), 1, rtol=1e-5)
    np.testing.assert_allclose(prepared[:, -1], 0, atol=1e-5)  # constant: centred, not blown up


def test_whitened_features_are_uncorrelated_unit_variance_and_keep_90_percent(features):
    matrix, mean = affine_map("whitened", features)
    prepared = (features - mean) @ matrix.T
    count = int((np.abs(matrix).sum(axis=1) > 0).sum())
    centred = features - features.mean(axis=0)
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    share = np.cumsum(variance) / variance.sum()
    assert count == int(np.argmax(share >= 0.9)) + 1  # the fewest components reaching 90%
    covariance = np.cov(prepared[:, :count], rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(count), atol=1e-4)
    np.testing.assert_array_equal(prepared[:, count:], 0)


def test_folding_into_the_linear_layer_gives_the_prepared_features():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 4)
    h = torch.randn(50, 5)
    before = linear(h).detach().numpy()
    matrix, mean = affine_map("whitened", before)
    fold_into(linear, matrix, mean)
    np.testing.assert_allclose(
        linear(h).detach().numpy(), (before - mean) @ matrix.T, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("kind", ["standardised", "whitened"])
def test_a_fitted_model_predicts_in_the_prepared_space(kind):
    rows, _ = cylinder_bell_funnel(30, seed=3, low=40, high=60)
    raw = CNNKMeans(tiny_config(epochs=1)).fit(rows)
    model = CNNKMeans(tiny_config(epochs=1, features=kind)).fit(rows)
    matrix, mean = affine_map(kind, raw.transform(rows))
    expected = (raw.transform(rows) - mean) @ matrix.T
    # Same seed, same training: the prepared model's features are the raw model's, prepared.
    np.testing.assert_allclose(model.transform(rows), expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(model.labels_, model.predict(rows))
    assert not np.allclose(model.transform(rows), raw.transform(rows), atol=1e-2)


def blobs(count: int, seed: int = 0) -> np.ndarray:
    """`count` float32 features in 4 separated Gaussian blobs of sizes 1:2:3:4, shuffled."""
    from sklearn.datasets import make_blobs

    sizes = [count * share // 10 for share in (1, 2, 3)]
    sizes.append(count - sum(sizes))
    features, _ = make_blobs(sizes, n_features=8, center_box=(-15, 15), random_state=seed)
    return features.astype(np.float32)


def test_kmeans_up_to_the_sample_size_is_scikit_learns_ten_restarts_on_all():
    from sklearn.cluster import KMeans

    features = blobs(500)
    model = CNNKMeans(tiny_config(clusters=4, seed=3), torch.device("cpu"), progress=False)
    model.fit_clusters(features)
    expected = KMeans(4, n_init=10, random_state=3).fit(features).cluster_centers_
    np.testing.assert_array_equal(model.centroids_, expected.astype(np.float32))


def test_kmeans_past_the_sample_size_restarts_on_a_sample_then_converges_on_all(
    monkeypatch, caplog
):
    """Issue 16: 10 restarts on a seeded sample, then Lloyd's iterations on every series: the
    centroids are the means of all their series (a sample's means are not), the inertia is that of
    10 restarts on all, and the same seed gives the same model."""
    from sklearn.cluster import KMeans

    monkeypatch.setattr(model_module, "KMEANS_SAMPLE", 300)
    monkeypatch.setattr(model_module, "KMEANS_ANNOUNCE", 0)
    features = blobs(6000, seed=1)
    fits = []
    for _ in range(2):
        model = CNNKMeans(tiny_config(clusters=4, seed=5), torch.device("cpu"))
        with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
            model.fit_clusters(features)
        fits.append(model.centroids_)
    assert "10 restarts on 300 sampled series, then on all" in caplog.text
    np.testing.assert_array_equal(fits[0], fits[1])
    labels = model.labels_
    means = np.stack([features[labels == c].astype(np.float64).mean(0) for c in range(4)])
    np.testing.assert_allclose(model.centroids_, means, atol=1e-4)

    def inertia(centroids: np.ndarray) -> float:
        return float(((features[:, None, :] - centroids[None]) ** 2).sum(-1).min(1).sum())

    on_all = KMeans(4, n_init=10, random_state=5).fit(features).cluster_centers_
    assert inertia(model.centroids_) <= inertia(on_all) * 1.001


def test_the_silhouette_of_many_series_works_in_bounded_memory_with_scikit_learns_score():
    """At the sample size scikit-learn's default working memory (1 GB) holds the whole 10,000 x
    10,000 distance matrix (800 MB); the model's chunks keep the peak near SILHOUETTE_WORKING_MB."""
    import tracemalloc

    from sklearn.metrics import silhouette_score

    from cnn_kmeans.model import SILHOUETTE_SAMPLE, silhouette

    features = blobs(SILHOUETTE_SAMPLE, seed=2)
    labels = np.random.default_rng(0).integers(0, 4, len(features))
    tracemalloc.start()
    try:
        score = silhouette(features, labels, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * model_module.SILHOUETTE_WORKING_MB * 2**20
    assert score == pytest.approx(silhouette_score(features, labels), rel=1e-6)


def test_assigning_many_series_works_in_blocks_with_the_same_answer(monkeypatch):
    """Labels and distances of blocks of rows equal those of one block, and the peak holds the
    answer plus a block's float64 temporaries, not float64 copies of all the features."""
    import tracemalloc

    features = blobs(40_000, seed=3)  # 1.3 MB of float32 features
    model = CNNKMeans(tiny_config(clusters=4, seed=0), torch.device("cpu"), progress=False)
    model.fit_clusters(features[:2000])
    monkeypatch.setattr(model_module, "ASSIGN_ROWS", len(features))
    whole = model.assign(features)
    monkeypatch.setattr(model_module, "ASSIGN_ROWS", 1000)
    tracemalloc.start()
    try:
        labels, distances = model.assign(features)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(labels, whole[0])
    np.testing.assert_array_equal(distances, whole[1])
    answer = labels.nbytes + distances.nbytes
    assert peak < answer + features.nbytes // 4
