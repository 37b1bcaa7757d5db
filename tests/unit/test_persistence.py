"""Artifacts: config.json + encoder.pt (state_dict) + centroids.npy, no pickle, clear failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnn_kmeans.errors import ArtifactError
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import FORMAT_VERSION, load, save
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def series() -> list[np.ndarray]:
    return cylinder_bell_funnel(15, seed=2, low=10, high=40)[0]


@pytest.fixture(scope="module")
def fitted(series) -> CNNKMeans:
    return CNNKMeans(tiny_config(epochs=1, scaling="series")).fit(series)


def test_round_trip_gives_identical_outputs(fitted, series, tmp_path):
    save(fitted, tmp_path)
    loaded = load(tmp_path)
    np.testing.assert_array_equal(loaded.transform(series), fitted.transform(series))
    np.testing.assert_array_equal(loaded.predict(series), fitted.predict(series))
    assert loaded.config == fitted.config and loaded.scaler_ == fitted.scaler_


def test_a_model_with_a_position_channel_round_trips(series, tmp_path):
    model = CNNKMeans(tiny_config(epochs=1, position="relative")).fit(series)
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.encoder_.position and loaded.encoder_.network[0].conv1.conv.in_channels == 2
    np.testing.assert_array_equal(loaded.transform(series), model.transform(series))
    np.testing.assert_array_equal(loaded.predict(series), model.predict(series))


def test_a_model_that_pools_max_and_mean_round_trips(series, tmp_path):
    model = CNNKMeans(tiny_config(epochs=1, pooling="max-mean")).fit(series)
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.encoder_.pooling == "max-mean"
    assert loaded.encoder_.linear.in_features == 2 * loaded.config.reduced_size
    np.testing.assert_array_equal(loaded.transform(series), model.transform(series))
    np.testing.assert_array_equal(loaded.predict(series), model.predict(series))


def test_files_load_without_pickle(fitted, tmp_path):
    save(fitted, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "centroids.npy",
        "config.json",
        "encoder.pt",
    ]
    state = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    centroids = np.load(tmp_path / "centroids.npy", allow_pickle=False)
    assert centroids.shape == (3, 8)
    document = json.loads((tmp_path / "config.json").read_text())
    assert document["format_version"] == FORMAT_VERSION
    assert document["hyperparameters"]["scaling"] == "series"
    assert document["scaler"]["kind"] == "series" and "package_version" in document


def test_unknown_format_version_is_refused_clearly(fitted, tmp_path):
    save(fitted, tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"format version 99.*reads version 1"):
        load(tmp_path)


@pytest.mark.parametrize("name", ["config.json", "encoder.pt", "centroids.npy"])
def test_missing_file_is_named(fitted, tmp_path, name):
    save(fitted, tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(ArtifactError, match=f"lacks {name}"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("encoder.pt", b"not a torch file", "encoder.pt is corrupt"),
        ("centroids.npy", b"\x93NUMPY garbage", "centroids.npy is corrupt"),
        ("config.json", b"{not json", "not valid JSON"),
    ],
)
def test_corrupt_file_is_an_artifact_error(fitted, tmp_path, name, content, fragment):
    save(fitted, tmp_path)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ArtifactError, match=fragment):
        load(tmp_path)


def test_weights_of_another_architecture_are_refused(fitted, tmp_path):
    save(fitted, tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["hyperparameters"]["filters"] = 9
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="does not match the architecture"):
        load(tmp_path)
