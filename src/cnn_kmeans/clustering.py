"""Feature preparation before KMeans, folded into the encoder's last layer.

KMeans weighs every feature direction by its spread. The `features` hyperparameter chooses how
the learned features are prepared before KMeans is fitted:

- `raw`: as the encoder gives them (the paper);
- `standardised`: each feature centred and scaled to unit variance over the training series;
- `whitened`: projected on the principal components that explain 90% of the training variance,
  each scaled to unit variance (the remaining output features are zero). Random-kernel
  clusterers reduce their features with PCA before KMeans for the same reason (R-Clustering,
  Marco-Blanco & Cuevas, Data Mining and Knowledge Discovery 38, 2024).

Both are affine maps f -> A (f - mean), so they are folded into the encoder's final linear
layer: the artifact keeps its format and size, and every output (`transform`, `predict`, batch
transform, endpoints) is in the prepared space without a second code path.

With several encoders (`encoders`, an `Ensemble`) each encoder's block of features is prepared on
its own and folded into its own final layer; `raw` then still scales each block to unit mean
variance, so that every encoder weighs the same in KMeans' distances whatever the spread its
training gave it.
"""

from __future__ import annotations

import numpy as np
import torch

FEATURE_KINDS = ("raw", "standardised", "whitened")
# Share of the training features' variance the whitened components keep.
WHITENED_VARIANCE = 0.9
# Feature spreads below this are treated as constant (left unscaled instead of blown up).
_TINY = 1e-8


def affine_map(kind: str, features: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The map that prepares (N, D) training features: (A (D, D), mean (D,)), or None for raw.

    Prepared features are (features - mean) @ A.T.
    """
    if kind == "raw":
        return None
    f = features.astype(np.float64)
    mean = f.mean(axis=0)
    centred = f - mean
    size = f.shape[1]
    if kind == "standardised":
        std = centred.std(axis=0)
        return np.diag(1.0 / np.where(std > _TINY, std, 1.0)), mean
    if kind != "whitened":
        raise ValueError(f"unknown feature preparation {kind!r}")
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(len(f) - 1, 1)
    kept = variance > _TINY * max(variance.max(initial=0.0), _TINY)
    total = variance[kept].sum()
    count = int(np.searchsorted(np.cumsum(variance[kept]) / total, WHITENED_VARIANCE) + 1)
    count = min(count, int(kept.sum())) if total > 0 else 0
    matrix = np.zeros((size, size))
    matrix[:count] = components[:count] / np.sqrt(variance[:count])[:, None]
    return matrix, mean


def fold_into(linear: torch.nn.Linear, matrix: np.ndarray, mean: np.ndarray) -> None:
    """Make `linear` output A (linear(h) - mean) instead of linear(h) (in place)."""
    with torch.no_grad():
        a = torch.from_numpy(matrix)
        weight = a @ linear.weight.detach().cpu().double()
        bias = a @ (linear.bias.detach().cpu().double() - torch.from_numpy(mean))
        linear.weight.copy_(weight.to(linear.weight))
        linear.bias.copy_(bias.to(linear.bias))


def balanced_map(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map (A, mean) that centres (N, D) features and scales them all by one factor to a
    mean variance of 1 (an ensemble member's block under `raw`: its shape kept, its weight
    equal to the others')."""
    f = features.astype(np.float64)
    mean = f.mean(axis=0)
    spread = float(np.sqrt(f.var(axis=0).mean())) if len(f) else 0.0
    return np.eye(f.shape[1]) / (spread if spread > _TINY else 1.0), mean


def prepare_features(kind: str, encoder: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """Fit the preparation on (N, D) training features, fold it into the final layer of the
    encoder (of each member of an ensemble, on its own block of features), and return the
    prepared features (what the folded encoder now gives for the same series)."""
    members = encoder.members
    if len(members) > 1 and kind == "whitened":
        raise ValueError("whitened features mix the members' blocks; they cannot be folded")
    blocks = np.split(features, len(members), axis=1)
    prepared = []
    for member, block in zip(members, blocks, strict=True):
        fitted = affine_map(kind, block)
        if fitted is None and len(members) > 1:
            fitted = balanced_map(block)
        if fitted is None:
            return features
        matrix, mean = fitted
        fold_into(member.linear, matrix, mean)
        prepared.append(((block.astype(np.float64) - mean) @ matrix.T).astype(np.float32))
    return np.concatenate(prepared, axis=1)
