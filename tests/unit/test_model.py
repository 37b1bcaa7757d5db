"""The estimator: shapes, reproducibility, batch independence, clustering, training length."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from cnn_kmeans.data import read_channel
from cnn_kmeans.encoder import Encoder
from cnn_kmeans.errors import UserError
from cnn_kmeans.model import CNNKMeans, prepare
from cnn_kmeans.trainer import Trainer, as_tensor, planned_epochs
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def ragged() -> list[np.ndarray]:
    rows, _ = cylinder_bell_funnel(24, seed=5, low=20, high=50)
    rows[3][[2, 5, 6]] = np.nan  # inner gaps
    rows[4][:3] = np.nan  # a leading gap
    return rows


@pytest.fixture(scope="module")
def fitted(ragged) -> CNNKMeans:
    return CNNKMeans(tiny_config(epochs=2)).fit(ragged)


def test_outputs_have_one_row_per_series(fitted, ragged):
    features = fitted.transform(ragged)
    assert features.shape == (24, 8) and features.dtype == np.float32
    labels = fitted.predict(ragged)
    assert labels.shape == (24,) and set(labels.tolist()) <= {0, 1, 2}
    assert fitted.distances(ragged).shape == (24, 3)
    np.testing.assert_array_equal(fitted.labels_, labels)


def test_same_seed_same_model_other_seed_other_model(ragged, fitted):
    again = CNNKMeans(tiny_config(epochs=2)).fit(ragged)
    np.testing.assert_array_equal(again.transform(ragged), fitted.transform(ragged))
    np.testing.assert_array_equal(again.centroids_, fitted.centroids_)
    other = CNNKMeans(tiny_config(epochs=2, seed=1)).fit(ragged)
    assert not np.allclose(other.transform(ragged), fitted.transform(ragged))


def test_fitting_does_not_disturb_the_global_torch_generator(ragged):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    CNNKMeans(tiny_config(epochs=1)).fit(ragged)
    torch.testing.assert_close(torch.rand(3), expected)


def test_features_do_not_depend_on_the_other_series_in_the_request(fitted, ragged):
    together = fitted.transform(ragged)
    for i in (0, 3, 4, 17):
        alone = fitted.transform([ragged[i]])
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-5, atol=1e-6)


def test_ragged_lists_and_nan_padded_arrays_are_the_same_input(fitted, ragged):
    width = max(len(r) for r in ragged)
    array = np.full((len(ragged), width + 3), np.nan, dtype=np.float32)
    for i, row in enumerate(ragged):
        array[i, : len(row)] = row
    np.testing.assert_array_equal(fitted.transform(array), fitted.transform(ragged))


def test_leading_gaps_are_trimmed_not_encoded(fitted, ragged):
    row = ragged[4]
    trimmed = row[~np.isnan(row)]
    np.testing.assert_allclose(
        fitted.transform([row]), fitted.transform([trimmed]), rtol=1e-6, atol=1e-7
    )


def test_assign_is_kmeans_predict():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 16)).astype(np.float32)
    kmeans = KMeans(n_clusters=7, n_init=3, random_state=0).fit(features)
    model = CNNKMeans(tiny_config())
    model.centroids_ = kmeans.cluster_centers_.astype(np.float32)
    queries = rng.normal(size=(500, 16)).astype(np.float32)
    labels, distances = model.assign(queries)
    np.testing.assert_array_equal(labels, kmeans.predict(queries))
    expected = np.linalg.norm(queries[:, None, :] - model.centroids_[None], axis=2)
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-5)


def test_more_clusters_than_series_is_a_user_error(ragged):
    with pytest.raises(UserError, match="clusters=30 but the training data has only 24 series"):
        CNNKMeans(tiny_config(clusters=30)).fit(ragged)


def test_max_clusters_sweeps_k_and_keeps_the_best_silhouette(ragged):
    model = CNNKMeans(tiny_config(epochs=1, max_clusters=5)).fit(ragged)
    assert [row["k"] for row in model.sweep_] == [2, 3, 4, 5]
    best = max(model.sweep_, key=lambda row: row["silhouette"])
    assert model.n_clusters_ == best["k"]
    assert model.summary()["clusters"] == best["k"]


def _planted_groups(k: int, per: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """k groups of series far apart (levels 20 apart, a frequency each), lengths 30-59."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for group in range(k):
        for _ in range(per):
            t = np.arange(int(rng.integers(30, 60)))
            wave = np.sin(t * (group + 1) * 0.3) + rng.normal(0, 0.1, len(t))
            rows.append((20.0 * group + wave).astype(np.float32))
            labels.append(group)
    return rows, np.array(labels)


def _reference_silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Rousseeuw's silhouette from its definition: mean of (b - a) / max(a, b) over points."""
    distances = np.sqrt(((features[:, None, :] - features[None, :, :]) ** 2).sum(-1))
    scores = []
    for i, own in enumerate(labels):
        same = (labels == own) & (np.arange(len(labels)) != i)
        if not same.any():  # a singleton's silhouette is 0
            scores.append(0.0)
            continue
        a = distances[i, same].mean()
        b = min(distances[i, labels == other].mean() for other in set(labels) - {own})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


@pytest.mark.parametrize("seed", [0, 1])
def test_max_clusters_finds_a_planted_k(seed):
    rows, planted = _planted_groups(4, 10, seed)
    model = CNNKMeans(tiny_config(epochs=1, max_clusters=7, seed=seed)).fit(rows)
    assert model.n_clusters_ == 4
    # The groups themselves, whatever the label numbers.
    pairs = set(zip(planted.tolist(), model.labels_.tolist(), strict=True))
    assert len(pairs) == 4
    # The sweep's score of the chosen k is the silhouette of those clusters, computed apart.
    chosen = next(row for row in model.sweep_ if row["k"] == 4)
    reference = _reference_silhouette(model.transform(rows).astype(np.float64), model.labels_)
    assert chosen["silhouette"] == pytest.approx(reference, abs=1e-5)
    assert all(row["silhouette"] < chosen["silhouette"] for row in model.sweep_ if row["k"] != 4)


def test_an_epoch_is_ceil_n_over_batch_size_steps(ragged):
    config = tiny_config(batch_size=5, epochs=3)
    values, lengths = prepare(ragged)
    trainer = Trainer(Encoder.from_config(config), config)
    reports = []
    trainer.fit(values, lengths, on_epoch=reports.append)
    adam_steps = next(iter(trainer.optimizer.state.values()))["step"]
    assert int(adam_steps) == 3 * math.ceil(24 / 5)
    assert [r.epoch for r in reports] == [1, 2, 3] and reports[-1].eta == 0.0
    assert all(r.valid_loss is None and r.train_loss > 0 for r in reports)


@pytest.mark.parametrize(
    "epochs, min_steps, max_steps, passes",
    [
        (2, 23, 0, 5),  # min-steps adds passes until its budget is reached
        (3, 10, 0, 3),
        (2, 0, 0, 2),
        (6, 0, 12, 3),  # max-steps removes passes: the one that reaches 12 steps is the last
        (6, 0, 10, 2),
        (3, 0, 40, 3),  # a cap above `epochs` passes changes nothing
        (6, 12, 12, 3),  # both at S: the pass that reaches S
        (6, 23, 10, 5),  # min-steps above the cap wins: a floor the user asked for
        (6, 0, 2, 1),  # a cap below one pass: one pass
    ],
)
def test_the_step_budgets_set_the_passes(ragged, epochs, min_steps, max_steps, passes):
    values, lengths = prepare(ragged)  # 24 series in batches of 5: 5 steps per pass
    config = tiny_config(batch_size=5, epochs=epochs, min_steps=min_steps, max_steps=max_steps)
    assert planned_epochs(config, len(lengths)) == passes
    trainer = Trainer(Encoder.from_config(config), config)
    reports = []
    trainer.fit(values, lengths, on_epoch=reports.append)
    adam_steps = next(iter(trainer.optimizer.state.values()))["step"]
    assert int(adam_steps) == passes * 5
    assert [r.epoch for r in reports] == list(range(1, passes + 1))
    assert {r.epochs for r in reports} == {passes} and reports[-1].eta == 0.0


def test_a_capped_job_trains_exactly_the_first_passes_of_the_uncapped_one(ragged):
    # What lets a benchmark read a max-steps run off a longer run's checkpoint at those passes.
    values, lengths = prepare(ragged)  # 5 steps per pass: max-steps=10 is 2 of the 6 passes
    trainers = []
    for config in (
        tiny_config(batch_size=5, epochs=6, max_steps=10),
        tiny_config(batch_size=5, epochs=2),
    ):
        torch.manual_seed(0)
        trainer = Trainer(Encoder.from_config(config), config)
        trainer.fit(values, lengths)
        trainers.append(trainer)
    capped, short = (t.encoder.state_dict() for t in trainers)
    for name, tensor in short.items():
        torch.testing.assert_close(capped[name], tensor, rtol=0, atol=0)


def test_the_log_says_when_a_step_budget_changes_the_epochs(ragged, caplog):
    caplog.set_level(logging.INFO)
    CNNKMeans(tiny_config(batch_size=5, epochs=6, max_steps=10)).fit(ragged)
    assert "; 2 epochs, not 6: max-steps=10" in caplog.text
    caplog.clear()
    CNNKMeans(tiny_config(batch_size=5, epochs=2, min_steps=23)).fit(ragged)
    assert "; 5 epochs, not 2: min-steps=23" in caplog.text
    caplog.clear()
    CNNKMeans(tiny_config(batch_size=5, epochs=2, max_steps=40)).fit(ragged)
    assert "steps per epoch" in caplog.text and "epochs, not" not in caplog.text


def test_validation_loss_uses_the_same_windows_every_time(ragged):
    config = tiny_config()
    values, lengths = prepare(ragged)
    trainer = Trainer(Encoder.from_config(config), config)
    series = as_tensor(values, torch.device("cpu"))
    first = trainer.validation_loss(series, lengths)
    assert trainer.validation_loss(series, lengths) == first
    trainer.run_epoch(series, lengths)
    after = trainer.validation_loss(series, lengths)
    assert after != first  # other weights, other loss
    other = Trainer(Encoder.from_config(config), config)
    other.rng = np.random.default_rng(99)  # the training generator plays no part
    other.encoder.load_state_dict(trainer.encoder.state_dict())
    assert other.validation_loss(series, lengths) == after


def test_training_resumes_exactly_from_a_trainer_state(ragged):
    config = tiny_config(epochs=2)
    values, lengths = prepare(ragged)
    torch.manual_seed(0)
    straight = Trainer(Encoder.from_config(config), config)
    straight.fit(values, lengths)

    torch.manual_seed(0)
    first = Trainer(Encoder.from_config(config), config.replace(epochs=1))
    first.fit(values, lengths)
    resumed = Trainer(Encoder.from_config(config), config)
    resumed.load_state_dict(first.state_dict())
    resumed.fit(values, lengths)
    assert resumed.epoch == 2
    for name, tensor in straight.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(
    "lever",
    [
        {"positive_augment": 0.4},
        {"min_window": 0.5},
        {"whole_anchors": 1.0},
        {"negative_drop": 0.3},
        {"position": "relative"},
        {"pooling": "max-mean"},
    ],
    ids=lambda lever: next(iter(lever)),
)
def test_a_training_lever_changes_training_and_still_resumes_exactly(ragged, lever):
    """Each lever reaches the trainer (its weights differ from the paper's) and a job stopped
    after an epoch resumes to the same weights."""
    values, lengths = prepare(ragged)

    def trained(config, *, stop_after: int = 0) -> Trainer:
        torch.manual_seed(0)
        if not stop_after:
            trainer = Trainer(Encoder.from_config(config), config)
        else:
            first = Trainer(Encoder.from_config(config), config.replace(epochs=stop_after))
            first.fit(values, lengths)
            trainer = Trainer(Encoder.from_config(config), config)
            trainer.load_state_dict(first.state_dict())
        trainer.fit(values, lengths)
        return trainer

    config = tiny_config(epochs=2, **lever)
    straight, resumed = trained(config), trained(config, stop_after=1)
    plain = trained(tiny_config(epochs=2))
    for name, tensor in straight.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[name], tensor, rtol=0, atol=0)
    weights = straight.encoder.state_dict()
    assert any(not torch.equal(plain.encoder.state_dict()[n], w) for n, w in weights.items())


def test_sample_data_is_ragged_with_gaps(sample_dir):
    raw = read_channel(sample_dir / "training")
    assert raw.shape[0] == 160
    finite = np.isfinite(raw)
    first = finite.argmax(axis=1)
    last = raw.shape[1] - 1 - finite[:, ::-1].argmax(axis=1)
    steps = np.arange(raw.shape[1])
    inside = (steps >= first[:, None]) & (steps <= last[:, None])
    assert (inside & ~finite).any(axis=1).sum() > 50  # many rows have inner gaps
    assert (first > 0).sum() > 5  # some start with a gap
    assert len(set(last - first)) > 30  # lengths vary


def test_encoding_every_series_makes_no_copy_of_them(fitted):
    """A job encodes all its series at the end of training: at 10^6 series a copy of the
    scaled values is 600 MB more at the peak (benchmarks/bench_scale.py)."""
    import tracemalloc

    rows, _ = cylinder_bell_funnel(600, seed=9, low=150, high=200)
    scaled, lengths = prepare(rows)
    zero_filled = fitted.encode(np.nan_to_num(scaled), lengths)
    tracemalloc.start()  # numpy's allocations are traced; torch's are not
    features = fitted.encode(scaled, lengths)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < scaled.nbytes / 4, f"{peak:,} bytes allocated for {scaled.nbytes:,} of series"
    np.testing.assert_array_equal(features, zero_filled)
