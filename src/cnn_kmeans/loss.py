"""Triplet sampling over random subseries and the triplet loss (Franceschi et al., 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnn_kmeans.encoder import Encoder, encode_windows


@dataclass(frozen=True)
class Triplets:
    """Sampled windows for B anchors and K negatives each; all arrays int64.

    Windows are (series index, start, length). Anchors and positives are (B,), negatives (B, K).
    """

    anchor_index: np.ndarray
    anchor_start: np.ndarray
    anchor_length: np.ndarray
    positive_start: np.ndarray
    positive_length: np.ndarray
    negative_index: np.ndarray
    negative_start: np.ndarray
    negative_length: np.ndarray

    @property
    def batch_size(self) -> int:
        """B."""
        return len(self.anchor_index)

    @property
    def negatives(self) -> int:
        """K."""
        return self.negative_index.shape[1]

    def subset(self, rows: np.ndarray) -> Triplets:
        """The triplets of some anchors (a data-parallel shard)."""
        return Triplets(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})


def sample_triplets(
    rng: np.random.Generator, lengths: np.ndarray, anchors: np.ndarray, negatives: int
) -> Triplets:
    """Draw the windows of one optimisation step, as in the paper's code.

    For each anchor series x of length L: a positive length l_pos in [1, L], an anchor length in
    [l_pos, L], the anchor window at a random offset, the positive window inside it, and
    `negatives` windows of length l_pos from series drawn from the whole set. When every series
    has the same length one l_pos and one anchor length serve the whole batch (as in the paper);
    otherwise each draw is bounded by its own series' length (a negative series shorter than l_pos
    gives a window of its whole length).

    Args:
        rng: the sampling generator.
        lengths: (N,) lengths of all series (negatives are drawn among them).
        anchors: (B,) indices of the anchor series.
        negatives: K.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    own = lengths[anchors]
    size = len(anchors)
    if lengths.min() == lengths.max():
        positive_length = np.full(size, rng.integers(1, own[0] + 1), dtype=np.int64)
        anchor_length = np.full(size, rng.integers(positive_length[0], own[0] + 1), np.int64)
    else:
        positive_length = rng.integers(1, own + 1)
        anchor_length = rng.integers(positive_length, own + 1)
    anchor_start = rng.integers(0, own - anchor_length + 1)
    positive_start = anchor_start + rng.integers(0, anchor_length - positive_length + 1)
    negative_index = rng.integers(0, len(lengths), size=(size, negatives))
    negative_length = np.minimum(positive_length[:, None], lengths[negative_index])
    negative_start = rng.integers(0, lengths[negative_index] - negative_length + 1)
    return Triplets(
        anchor_index=np.asarray(anchors, dtype=np.int64),
        anchor_start=anchor_start,
        anchor_length=anchor_length,
        positive_start=positive_start,
        positive_length=positive_length,
        negative_index=negative_index,
        negative_start=negative_start,
        negative_length=negative_length,
    )


class TripletObjective(torch.nn.Module):
    """The loss as a module, so DistributedDataParallel sees one forward per step (the encoder
    itself runs several times per step, once per length bucket)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, series: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        """See `triplet_loss`."""
        return triplet_loss(self.encoder, series, triplets)


def triplet_loss(encoder: Encoder, series: torch.Tensor, triplets: Triplets) -> torch.Tensor:
    """-mean log σ(a·p) + (1/K) Σ_k -mean log σ(-a·n_k), all windows encoded in a few batched calls.

    Args:
        encoder: the encoder.
        series: (N, L) left-aligned series, zero after each series' end, on the encoder's device.
        triplets: the sampled windows.

    Returns:
        The scalar loss.
    """
    t = triplets
    size, negatives = t.batch_size, t.negatives
    index = np.concatenate([t.anchor_index, t.anchor_index, t.negative_index.ravel()])
    start = np.concatenate([t.anchor_start, t.positive_start, t.negative_start.ravel()])
    length = np.concatenate([t.anchor_length, t.positive_length, t.negative_length.ravel()])
    features = encode_windows(encoder, series, index, start, length)
    anchor = features[:size]
    positive = features[size : 2 * size]
    negative = features[2 * size :].view(size, negatives, -1)
    positive_term = -F.logsigmoid((anchor * positive).sum(dim=1)).mean()
    negative_term = -F.logsigmoid(-(anchor[:, None, :] * negative).sum(dim=2)).mean()
    return positive_term + negative_term
