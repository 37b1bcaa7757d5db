"""Progress lines with an ETA (on by default, `progress=False` silences them), and the threads
the Python API computes with."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cnn_kmeans import model as model_module
from cnn_kmeans import progress
from cnn_kmeans.model import CNNKMeans
from tests.helpers import cylinder_bell_funnel, tiny_config

ROWS, _ = cylinder_bell_funnel(60, seed=3, low=20, high=60)


@pytest.fixture
def every_line(monkeypatch):
    """Progress lines at every update (a run "long enough"), KMeans announced at any size."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(model_module, "KMEANS_ANNOUNCE", 0)
    monkeypatch.setattr(model_module, "INFERENCE_CELLS", 256)  # many batches to count


@pytest.fixture(scope="module")
def fitted() -> CNNKMeans:
    return CNNKMeans(tiny_config(epochs=1), threads=1, progress=False).fit(ROWS)


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("cnn_kmeans")]


def test_encoding_logs_progress_with_an_eta(fitted, every_line, caplog):
    fitted.progress = True
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        fitted.transform(ROWS)
    lines = [m for m in messages(caplog) if m.startswith("encoding ")]
    assert len(lines) >= 3
    assert all(" series/s " in m and "ETA " in m and f"/{len(ROWS)} series (" in m for m in lines)
    assert lines[-1].startswith(f"encoding {len(ROWS)}/{len(ROWS)} series (100%)")


def test_progress_false_silences_and_features_are_bit_identical(fitted, every_line, caplog):
    fitted.progress = True
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        loud = fitted.transform(ROWS)
    assert messages(caplog)
    caplog.clear()
    fitted.progress = False
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        quiet = fitted.transform(ROWS)
    assert messages(caplog) == []
    assert loud.tobytes() == quiet.tobytes()


def test_fit_logs_epochs_kmeans_and_the_sweep_with_etas(every_line, caplog):
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        model = CNNKMeans(tiny_config(epochs=2, max_clusters=4), threads=1).fit(ROWS)
    lines = messages(caplog)
    epochs = [m for m in lines if m.startswith("epoch ")]
    assert [m.split()[1] for m in epochs] == ["1/2", "2/2"] and all("ETA" in m for m in epochs)
    sweep = [m for m in lines if m.startswith("k=") and "silhouette=" in m]
    assert len(sweep) == 3 and all("ETA" in m for m in sweep) and "(3/3)" in sweep[-1]
    kmeans = [m for m in lines if m.startswith("KMeans k=")]
    assert len(kmeans) == 2 * (3 + 1)  # before and after each fit: 3 sweep fits, the final one
    assert any(m.startswith("encoding ") for m in lines)
    assert model.n_clusters_ in (2, 3, 4)


def test_fit_with_progress_false_logs_no_progress_and_gives_the_same_model(every_line, caplog):
    with caplog.at_level(logging.INFO, logger="cnn_kmeans"):
        quiet = CNNKMeans(tiny_config(epochs=2), threads=1, progress=False).fit(ROWS)
    assert not [r for r in caplog.records if r.name == "cnn_kmeans.progress"]
    assert not [m for m in messages(caplog) if m.startswith(("epoch ", "KMeans", "encoding"))]
    loud = CNNKMeans(tiny_config(epochs=2), threads=1).fit(ROWS)
    np.testing.assert_array_equal(quiet.centroids_, loud.centroids_)
    np.testing.assert_array_equal(quiet.labels_, loud.labels_)


def other_thread_count() -> int:
    """A count unlike torch's current one (so that ignoring the setting shows)."""
    return 1 if torch.get_num_threads() > 1 else 2


def test_api_threads_reach_torch_during_training_and_encoding_then_are_restored(monkeypatch):
    want, before = other_thread_count(), torch.get_num_threads()
    seen = []
    real_encode = CNNKMeans.encode

    def spy(self, *args, **kwargs):
        seen.append(("encode", torch.get_num_threads()))
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(CNNKMeans, "encode", spy)
    model = CNNKMeans(tiny_config(epochs=2), threads=want, progress=False)
    model.fit(ROWS, on_epoch=lambda report: seen.append(("epoch", torch.get_num_threads())))
    model.transform(ROWS[:5])
    assert seen == [("epoch", want), ("epoch", want), ("encode", want), ("encode", want)]
    assert torch.get_num_threads() == before
