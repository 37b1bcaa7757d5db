"""The clustering stage (`cluster-epochs`): DEC's assignments and target, the KL loss, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder
from cnn_kmeans.errors import TrainingInterrupted, UserError
from cnn_kmeans.model import CNNKMeans, prepare
from cnn_kmeans.refine import clustering_loss, soft_assignments, target_distribution
from cnn_kmeans.trainer import Trainer, total_epochs
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rows, _ = cylinder_bell_funnel(24, seed=5, low=20, high=50)
    return prepare(rows)


def test_soft_assignments_are_students_t_kernels_normalised_per_series():
    features = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    centroids = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    q = soft_assignments(features, centroids)
    # |z - mu|^2: row 0: 1, 18; row 1: 5, 4  ->  kernels 1/2, 1/19 and 1/6, 1/5.
    expected = torch.tensor([[1 / 2, 1 / 19], [1 / 6, 1 / 5]])
    torch.testing.assert_close(q, expected / expected.sum(1, keepdim=True))


def test_the_target_sharpens_each_row_and_discounts_large_clusters():
    q = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.3, 0.7]])
    p = target_distribution(q)
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    # By hand: cluster totals 2.1 and 1.9; row 0: 0.36/2.1 vs 0.16/1.9, renormalised.
    row0 = torch.tensor([0.36 / 2.1, 0.16 / 1.9])
    torch.testing.assert_close(p[0], row0 / row0.sum())
    assert p[3, 1] > q[3, 1] and p[0, 0] > q[0, 0]  # each row more confident
    same = torch.full((4, 2), 0.5)
    torch.testing.assert_close(target_distribution(same), same)  # nothing to sharpen


def test_the_clustering_loss_pulls_features_towards_the_targets_centroid():
    centroids = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    # A series nearer centroid 0, one near each centroid (a lone row's target is its own q).
    features = torch.tensor([[1.5, 0.5], [0.2, 0.0], [3.9, 0.1]], requires_grad=True)
    q = soft_assignments(features, centroids)
    assert clustering_loss(q.detach(), q).item() == pytest.approx(0.0, abs=1e-7)
    target = target_distribution(q.detach())
    loss = clustering_loss(target, q)
    assert loss.item() > 0
    loss.backward()
    moved = features.detach() - 0.5 * features.grad
    assert torch.dist(moved[0], centroids[0]) < torch.dist(features[0].detach(), centroids[0])
    assert torch.dist(moved[2], centroids[1]) < torch.dist(features[2].detach(), centroids[1])


def test_cluster_epochs_need_a_fixed_k():
    with pytest.raises(UserError, match="max-clusters"):
        Config(cluster_epochs=2, max_clusters=5)
    assert Config(cluster_epochs=2).cluster_weight == 1.0


def fitted_trainer(config: Config, data, *, stop_at: int | None = None) -> Trainer:
    """Trained from the same seeded initialisation; with `stop_at`, stopped before that many
    steps (counted over the whole run) and resumed in a new trainer from its state."""
    values, lengths = data
    torch.manual_seed(0)
    trainer = Trainer(Encoder.from_config(config), config)
    if stop_at is None:
        trainer.fit(values, lengths)
        return trainer
    steps = iter(range(10**6))
    with pytest.raises(TrainingInterrupted):
        trainer.fit(values, lengths, should_stop=lambda: next(steps) >= stop_at)
    torch.manual_seed(1)  # another initialisation: the state must overwrite all of it
    resumed = Trainer(Encoder.from_config(config), config)
    resumed.load_state_dict(trainer.state_dict())
    resumed.fit(values, lengths)
    return resumed


def assert_same_weights(a: Trainer, b: Trainer) -> None:
    for name, tensor in a.encoder.state_dict().items():
        torch.testing.assert_close(b.encoder.state_dict()[name], tensor, rtol=0, atol=0)


def test_the_stage_adds_its_epochs_after_the_triplet_epochs_and_leaves_those_unchanged(data):
    values, lengths = data
    config = tiny_config(batch_size=5, epochs=2, cluster_epochs=2)
    assert total_epochs(config, len(lengths)) == 4
    staged = fitted_trainer(config, data)
    steps = next(iter(staged.optimizer.state.values()))["step"]
    assert staged.epoch == 4 and int(steps) == 4 * math.ceil(24 / 5)
    assert staged.state_dict()["centroids"].shape == (3, 8)
    # Stopped at the stage's first step, the encoder is the plain 2-epoch one: a run with the
    # stage follows the default trajectory up to its last triplet epoch.
    values, lengths = data
    torch.manual_seed(0)
    cut = Trainer(Encoder.from_config(config), config)
    steps = iter(range(10**6))
    with pytest.raises(TrainingInterrupted):
        cut.fit(values, lengths, should_stop=lambda: next(steps) >= 2 * 5)
    assert cut.epoch == 2
    assert_same_weights(fitted_trainer(config.replace(cluster_epochs=0), data), cut)
    assert cut.state_dict()["centroids"] is not None  # the stage had begun: centroids fitted


@pytest.mark.parametrize("stop_at", [10, 17])  # at the stage's start, and inside its 2nd epoch
def test_a_run_stopped_in_the_stage_resumes_to_the_same_model(data, stop_at):
    config = tiny_config(batch_size=5, epochs=2, cluster_epochs=2)
    straight = fitted_trainer(config, data)
    resumed = fitted_trainer(config, data, stop_at=stop_at)
    assert_same_weights(straight, resumed)
    torch.testing.assert_close(
        resumed.state_dict()["centroids"], straight.state_dict()["centroids"], rtol=0, atol=0
    )


def test_the_stage_sharpens_the_assignments_beyond_what_triplet_training_does(data):
    values, lengths = data
    # The tiny encoder's features are close together (norm ~0.7), where the Student-t kernel
    # is flat: a larger learning rate lets 30 steps show the stage's pull.
    config = tiny_config(batch_size=5, epochs=2, cluster_epochs=6, cluster_weight=5.0, lr=0.01)
    staged = fitted_trainer(config, data)
    control = fitted_trainer(config.replace(cluster_weight=0.0), data)  # same passes, no KL
    series = torch.from_numpy(values)

    def confidence(trainer: Trainer) -> float:
        centroids = trainer.state_dict()["centroids"]
        q = soft_assignments(trainer._encode_all(series, lengths), centroids)
        return q.max(dim=1).values.mean().item()

    assert confidence(staged) > confidence(control) + 0.02  # measured: 0.463 vs 0.425


def test_a_model_with_the_stage_trains_it_then_fits_kmeans_on_its_final_features(data):
    from sklearn.cluster import KMeans

    rows, _ = cylinder_bell_funnel(24, seed=5, low=20, high=50)
    config = tiny_config(epochs=1, cluster_epochs=1)
    model = CNNKMeans(config, progress=False).fit(rows)
    plain = CNNKMeans(config.replace(cluster_epochs=0), progress=False).fit(rows)
    features = model.transform(rows)
    assert not np.array_equal(features, plain.transform(rows))  # the stage ran in `fit`
    refit = KMeans(n_clusters=3, n_init=10, random_state=config.seed).fit(features)
    np.testing.assert_allclose(model.centroids_, refit.cluster_centers_, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(rows), model.assign(features)[0])
