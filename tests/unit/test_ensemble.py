"""Several encoders (`encoders`): their initialisation, their own triplets, balanced features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnn_kmeans import persistence
from cnn_kmeans.config import Config
from cnn_kmeans.encoder import Encoder, build_encoder
from cnn_kmeans.errors import ArtifactError, TrainingInterrupted, UserError
from cnn_kmeans.loss import members_loss, sample_triplets, triplet_loss
from cnn_kmeans.model import CNNKMeans, prepare
from cnn_kmeans.trainer import Trainer, as_tensor
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rows, _ = cylinder_bell_funnel(24, seed=6, low=20, high=50)
    return prepare(rows)


def built(config: Config, seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_encoder(config)


def test_the_first_encoder_is_the_one_trained_alone_and_the_others_start_elsewhere():
    alone, ensemble = built(tiny_config()), built(tiny_config(encoders=3))
    assert isinstance(alone, Encoder) and len(ensemble.members) == 3
    first, second, third = (m.state_dict() for m in ensemble.members)
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(first[name], value, rtol=0, atol=0)
    weight = "network.0.conv1.conv.parametrizations.weight.original1"
    assert not torch.equal(first[weight], second[weight])
    assert not torch.equal(second[weight], third[weight])


def test_each_encoder_learns_from_its_own_triplets_alone(data):
    values, lengths = data
    series = as_tensor(values, torch.device("cpu"))
    ensemble = built(tiny_config(encoders=2))
    rng = np.random.default_rng(0)
    anchors = np.arange(6)
    own = [sample_triplets(rng, lengths, anchors, 3) for _ in range(2)]
    loss = members_loss(ensemble, series, own)
    loss.backward()
    grads = [[p.grad.clone() for p in m.parameters()] for m in ensemble.members]
    expected = []
    for member, triplets in zip(ensemble.members, own, strict=True):
        member.zero_grad()
        alone = triplet_loss(member, series, triplets)
        (alone / 2).backward()
        expected.append(alone.item())
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-6)
    for member, got in zip(ensemble.members, grads, strict=True):
        for grad, parameter in zip(got, member.parameters(), strict=True):
            torch.testing.assert_close(grad, parameter.grad)


def test_training_draws_other_windows_for_each_encoder(data):
    # Two encoders started from the same weights part after one step only if their windows
    # differ: the same windows would give both the same gradient.
    values, lengths = data
    config = tiny_config(encoders=2, epochs=1)
    ensemble = built(config)
    ensemble.members[1].load_state_dict(ensemble.members[0].state_dict())
    trainer = Trainer(ensemble, config)
    steps = []
    with pytest.raises(TrainingInterrupted):
        trainer.fit(
            values, lengths, should_stop=lambda: len(steps) > 0, on_step=lambda: steps.append(1)
        )
    first, second = (m.state_dict() for m in ensemble.members)
    weight = "linear.weight"
    assert not torch.equal(first[weight], second[weight])


def test_an_ensemble_resumes_mid_epoch_to_the_same_weights(data):
    values, lengths = data
    config = tiny_config(encoders=2, epochs=2, batch_size=5)
    straight = Trainer(built(config), config)
    straight.fit(values, lengths)
    cut = Trainer(built(config), config)
    steps = []
    with pytest.raises(TrainingInterrupted):
        cut.fit(
            values, lengths, should_stop=lambda: len(steps) >= 7, on_step=lambda: steps.append(1)
        )
    assert cut.epoch == 1 and cut.step == 2  # inside the second epoch
    resumed = Trainer(built(config, seed=99), config)  # other weights: all of them come back
    resumed.load_state_dict(cut.state_dict())
    resumed.fit(values, lengths)
    for name, value in straight.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("features", ["raw", "standardised"])
def test_each_encoders_features_weigh_the_same_and_the_model_round_trips(data, features, tmp_path):
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


def test_whitened_features_need_one_encoder():
    with pytest.raises(UserError, match=r"features=whitened.*encoders=2"):
        Config(encoders=2, features="whitened")
    assert Config(encoders=2, features="standardised").encoders == 2


def test_an_ensembles_encoders_share_the_recomputation_budget():
    # All members' training graphs live until the step's one backward pass, so each member
    # counts them all when it decides whether to recompute (bounded memory for any `encoders`).
    alone, ensemble = built(tiny_config()), built(tiny_config(encoders=3))
    assert ensemble.members[1].activation_bytes(1000) == 3 * alone.activation_bytes(1000)
    assert ensemble.activation_bytes(1000) == 3 * alone.activation_bytes(1000)
