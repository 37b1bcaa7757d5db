"""Several encoders (`encoders`): each its own seed's model, resumable, balanced features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnn_kmeans import persistence
from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder, build_encoder, member_seed
from cnn_kmeans.errors import ArtifactError, TrainingInterrupted, UserError
from cnn_kmeans.model import CNNKMeans, prepare
from cnn_kmeans.trainer import Trainer, total_epochs
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rows, _ = cylinder_bell_funnel(24, seed=6, low=20, high=50)
    return prepare(rows)


def trained(config: Config, data, **fit) -> Trainer:
    trainer = Trainer(build_encoder(config), config)
    trainer.fit(*data, **fit)
    return trainer


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    wanted = expected.state_dict()
    for name, value in actual.state_dict().items():
        torch.testing.assert_close(value, wanted[name], rtol=0, atol=0)


def test_each_encoder_is_the_model_its_own_seed_trains_alone(data):
    config = tiny_config(encoders=3, epochs=2, seed=1, batch_size=5)
    reports = []
    ensemble = trained(config, data, on_epoch=reports.append).encoder
    assert [(r.epoch, r.epochs) for r in reports] == [(e, 6) for e in range(1, 7)]
    assert total_epochs(config, len(data[1])) == 6
    for index, member in enumerate(ensemble.members):
        seed = member_seed(config, index)
        assert seed == 3 + index  # seed x encoders + index: seed 0's encoders are seeds 0, 1, 2
        alone = trained(config.replace(encoders=1, seed=seed), data).encoder
        assert isinstance(alone, Encoder)
        assert_same_weights(member, alone)
    first, second = (m.state_dict()["linear.weight"] for m in ensemble.members[:2])
    assert not torch.equal(first, second)


# Stopped as encoder 2 begins (after encoder 1's 5 steps), and inside encoder 2's first epoch.
@pytest.mark.parametrize("stop_after", [5, 7])
def test_an_ensemble_resumes_to_the_same_weights(data, stop_after):
    config = tiny_config(encoders=2, epochs=1, batch_size=5)  # 24 series: 5 steps per epoch
    straight = trained(config, data)
    steps = []
    cut = Trainer(build_encoder(config), config)
    with pytest.raises(TrainingInterrupted):
        cut.fit(
            *data, should_stop=lambda: len(steps) >= stop_after, on_step=lambda: steps.append(1)
        )
    resumed = Trainer(build_encoder(config.replace(seed=9)), config)  # other weights: all restored
    resumed.load_state_dict(cut.state_dict())
    resumed.fit(*data)
    assert resumed.epoch == straight.epoch == 2
    assert_same_weights(resumed.encoder, straight.encoder)


@pytest.mark.parametrize("features", ["raw", "standardised"])
def test_each_encoders_features_weigh_the_same_and_the_model_round_trips(features, tmp_path):
    rows, _ = cylinder_bell_funnel(30, seed=7, low=20, high=50)
    config = tiny_config(encoders=3, features=features)
    model = CNNKMeans(config, torch.device("cpu"), progress=False).fit(rows)
    f = model.transform(rows).astype(np.float64)
    assert f.shape == (30, 3 * config.output_size) and model.centroids_.shape == (3, 24)
    blocks = f.reshape(30, 3, config.output_size)
    np.testing.assert_allclose(blocks.mean(axis=0), 0.0, atol=1e-5)
    if features == "raw":  # each block scaled as a whole: its shape kept, mean variance 1
        np.testing.assert_allclose(blocks.var(axis=0).mean(axis=1), 1.0, rtol=1e-4)
        assert np.ptp(blocks.var(axis=0), axis=1).min() > 0.01
    else:
        np.testing.assert_allclose(blocks.var(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(model.predict(rows), model.labels_)
    persistence.save(model, tmp_path)
    loaded = persistence.load(tmp_path, torch.device("cpu"))
    np.testing.assert_array_equal(loaded.transform(rows), model.transform(rows))
    np.testing.assert_array_equal(loaded.predict(rows), model.labels_)


def test_an_artifact_whose_encoder_count_disagrees_with_its_weights_is_refused(tmp_path):
    rows, _ = cylinder_bell_funnel(12, seed=2, low=20, high=30)
    model = CNNKMeans(tiny_config(encoders=2, epochs=1), torch.device("cpu"), progress=False)
    persistence.save(model.fit(rows), tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["hyperparameters"]["encoders"] = 3
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="does not match the architecture"):
        persistence.load(tmp_path, torch.device("cpu"))


def test_whitened_features_and_the_clustering_stage_need_one_encoder():
    with pytest.raises(UserError, match=r"features=whitened.*encoders=2"):
        Config(encoders=2, features="whitened")
    with pytest.raises(UserError, match=r"cluster-epochs=3.*encoders=2"):
        Config(encoders=2, cluster_epochs=3)
    assert Config(encoders=2, features="standardised").encoders == 2
