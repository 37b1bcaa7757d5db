"""The inference handlers, in SageMaker's shape: model_fn, input_fn, predict_fn, output_fn.

They know content types and the model, not HTTP: the Flask app calls them in order, and tests
call them directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from cnn_kmeans.container import codecs
from cnn_kmeans.errors import UserError
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.outputs import output_values
from cnn_kmeans.persistence import load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Per input row, in order: labels (N,) int64, features (N, D) and distances (N, k) float32.

    `documents`: the request's rows per JSON document (`codecs.Batch.documents`), or None.
    """

    labels: np.ndarray
    features: np.ndarray
    distances: np.ndarray
    documents: tuple[int, ...] | None = None


def model_fn(model_dir: str | os.PathLike, device: torch.device | None = None) -> CNNKMeans:
    """Load the model artifact (GPU when visible unless `device` says otherwise).

    Raises:
        ArtifactError: If the artifact is missing, corrupt or of an unknown format version.
    """
    model = load(model_dir, device)
    log.info(
        "loaded model from %s: %d clusters, %d features, device %s",
        model_dir,
        model.n_clusters_,
        model.centroids_.shape[1],
        model.device,
    )
    return model


def input_fn(body: bytes, content_type: str | None) -> codecs.Batch:
    """Decode a request body into raw series (N, L) float32 (NaN: missing or padding).

    Raises:
        UserError: A malformed body (400); its subclasses for an unsupported type (415).
    """
    return codecs.decode_batch(body, content_type)


def predict_fn(data: codecs.Batch | np.ndarray, model: CNNKMeans) -> Prediction:
    """Labels, features and centroid distances of every row of data (N, L).

    The model encodes the whole request in length-bucketed batches under inference mode; rows
    never go through the encoder one at a time. A multi-document JSON body is encoded as one
    batch too; its documents are only split again in `output_fn`.
    """
    batch = data if isinstance(data, codecs.Batch) else codecs.Batch(data)
    features = model.transform(batch.values)
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        # Values of extreme magnitude can overflow the encoder: tell the user which row.
        row = int(np.argmin(finite)) + 1
        raise UserError(
            f"row {row}: the model's features are not finite; the values are too large for "
            "this model, rescale the series to smaller magnitudes"
        )
    labels, distances = model.assign(features)
    return Prediction(labels, features, distances, batch.documents)


def output_fn(
    prediction: Prediction, accept: str | None, default_output: str = "features"
) -> tuple[bytes, str]:
    """Encode a prediction for an Accept header; returns (body, content type).

    Args:
        prediction: what predict_fn returned.
        accept: the request's Accept header (None: CSV).
        default_output: `features`, `labels` or `distances` when Accept has no `output` parameter.

    Raises:
        NotAcceptable: If no supported type is acceptable (406).
    """
    choice = codecs.negotiate(accept, default_output)
    values = output_values(choice.output, prediction.features, prediction.distances)
    body = codecs.encode_response(prediction.labels, values, choice, prediction.documents)
    return body, choice.media_type
