"""Save and load a model: config.json, encoder.pt (a state_dict), centroids.npy. No pickle."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from cnn_kmeans import __version__
from cnn_kmeans.config import Config
from cnn_kmeans.encoder import build_encoder
from cnn_kmeans.errors import ArtifactError, UserError
from cnn_kmeans.model import CNNKMeans, default_device
from cnn_kmeans.preprocess import Scaler

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ENCODER_FILE = "encoder.pt"
CENTROIDS_FILE = "centroids.npy"
ARTIFACT_FILES = (CONFIG_FILE, ENCODER_FILE, CENTROIDS_FILE)


def save(model: CNNKMeans, directory: str | os.PathLike) -> Path:
    """Write the artifact files into `directory` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "hyperparameters": model.config.to_dict(),
        "scaler": model.scaler_.to_dict(),
        **model.summary(),
    }
    state = {key: value.detach().cpu() for key, value in model.encoder_.state_dict().items()}
    # Serialized in memory first: torch's writer reports a full disk as a RuntimeError with no
    # errno, a plain file write as OSError(ENOSPC), which the training job can explain.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (directory / ENCODER_FILE).write_bytes(buffer.getvalue())
    np.save(directory / CENTROIDS_FILE, model.centroids_, allow_pickle=False)
    # config.json last: a directory with it present is complete.
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return directory


def unreadable(error: Exception) -> str:
    """One line saying why torch.load refused a file (torch's own messages run to paragraphs,
    and for refused objects they suggest turning weights_only off, which would run their code)."""
    # Matched by name: the package never imports pickle (tests/unit/test_project.py).
    if any(kind.__name__ == "UnpicklingError" for kind in type(error).__mro__):
        return "not a file of tensors, or it holds other objects (refused: loading them runs code)"
    text = str(error).strip()
    first = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    return f"the file is damaged or cut short: {first[:200]}"


def load(directory: str | os.PathLike, device: torch.device | None = None) -> CNNKMeans:
    """Load an artifact directory; every problem is an ArtifactError that says what is wrong."""
    directory = Path(directory)
    missing = [name for name in ARTIFACT_FILES if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(
            f"model directory {directory} lacks {', '.join(missing)}; "
            "point it at the output of a cnn-kmeans training run"
        )
    try:
        document = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{directory / CONFIG_FILE} is not valid JSON: {error}") from None
    version = document.get("format_version") if isinstance(document, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory / CONFIG_FILE} has format version {version!r}; this cnn-kmeans "
            f"{__version__} reads version {FORMAT_VERSION}: retrain the model or use the "
            "package version that wrote it"
        )
    try:
        config = Config.from_dict(document["hyperparameters"])
        scaler = Scaler.from_dict(document["scaler"])
    except (KeyError, TypeError, UserError) as error:
        raise ArtifactError(
            f"{directory / CONFIG_FILE} is incomplete or invalid: {error}"
        ) from None
    model = CNNKMeans(config, device or default_device())
    model.scaler_ = scaler
    model.sweep_ = list(document.get("sweep", []))
    # Any failure to decode these files means they are corrupt, whatever the exception type.
    try:
        state = torch.load(directory / ENCODER_FILE, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ArtifactError(
            f"{directory / ENCODER_FILE} is corrupt: {unreadable(error)}; copy the artifact again "
            "or retrain"
        ) from None
    encoder = build_encoder(config)
    try:
        encoder.load_state_dict(state)
    except Exception as error:
        raise ArtifactError(
            f"{directory / ENCODER_FILE} does not match the architecture in {CONFIG_FILE}: {error}"
        ) from None
    try:
        centroids = np.load(directory / CENTROIDS_FILE, allow_pickle=False)
    except Exception as error:
        raise ArtifactError(f"{directory / CENTROIDS_FILE} is corrupt: {error}") from None
    if centroids.ndim != 2 or centroids.shape[1] != encoder.feature_size or len(centroids) < 2:
        raise ArtifactError(
            f"{directory / CENTROIDS_FILE} has shape {centroids.shape}; expected "
            f"(clusters, {encoder.feature_size})"
        )
    model.encoder_ = encoder.to(model.device).eval()
    model.centroids_ = centroids.astype(np.float32, copy=False)
    return model
