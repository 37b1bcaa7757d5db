"""Triplet sampling over random subseries and the triplet loss (Franceschi et al., 2019)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnn_kmeans.encoder import Encoder, encode_windows, padded_width


@dataclass(frozen=True)
class Triplets:
    """Sampled windows for B anchors and K negatives each; all arrays int64.

    Windows are (series index, start, length). Anchors and positives are (B,), negatives (B, K).
    With `augment_positives`, the positives' values are also transformed: x * scale + offset +
    noise (scale and offset (B,), noise (B, W) float32, W at least every window's padded width).
    """

    anchor_index: np.ndarray
    anchor_start: np.ndarray
    anchor_length: np.ndarray
    positive_start: np.ndarray
    positive_length: np.ndarray
    negative_index: np.ndarray
    negative_start: np.ndarray
    negative_length: np.ndarray
    anchor_total: np.ndarray  # (B,) the anchor series' whole lengths (a position channel's scale)
    negative_total: np.ndarray  # (B, K) the negative series' whole lengths
    positive_scale: np.ndarray | None = None
    positive_offset: np.ndarray | None = None
    positive_noise: np.ndarray | None = None

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
        return Triplets(
            **{
                name: None if getattr(self, name) is None else getattr(self, name)[rows]
                for name in self.__dataclass_fields__
            }
        )


def sample_triplets(
    rng: np.random.Generator,
    lengths: np.ndarray,
    anchors: np.ndarray,
    negatives: int,
    min_window: float = 0.0,
    whole_anchors: float = 0.0,
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
        min_window: f in [0, 1]: positive (hence anchor) windows at least ⌈f·L⌉ long, L the
            anchor's length; 0 draws exactly as the paper does.
        whole_anchors: p in [0, 1]: with probability p (one draw per step) every anchor is its
            whole series, the windows that are clustered, and the positive a window of it;
            0 draws exactly as the paper does.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    own = lengths[anchors]
    size = len(anchors)
    shortest = np.maximum(1, np.ceil(min_window * own).astype(np.int64))
    if lengths.min() == lengths.max():
        positive_length = np.full(size, rng.integers(shortest[0], own[0] + 1), dtype=np.int64)
        anchor_length = np.full(size, rng.integers(positive_length[0], own[0] + 1), np.int64)
    else:
        positive_length = rng.integers(shortest, own + 1)
        anchor_length = rng.integers(positive_length, own + 1)
    if whole_anchors > 0 and rng.random() < whole_anchors:
        anchor_length = own.copy()
    anchor_start = rng.integers(0, own - anchor_length + 1)
    positive_start = anchor_start + rng.integers(0, anchor_length - positive_length + 1)
    negative_index = rng.integers(0, len(lengths), size=(size, negatives))
    negative_total = lengths[negative_index]
    negative_length = np.minimum(positive_length[:, None], negative_total)
    negative_start = rng.integers(0, negative_total - negative_length + 1)
    return Triplets(
        anchor_index=np.asarray(anchors, dtype=np.int64),
        anchor_start=anchor_start,
        anchor_length=anchor_length,
        positive_start=positive_start,
        positive_length=positive_length,
        negative_index=negative_index,
        negative_start=negative_start,
        negative_length=negative_length,
        anchor_total=own,
        negative_total=negative_total,
    )


def augment_positives(rng: np.random.Generator, triplets: Triplets, strength: float) -> Triplets:
    """The triplets with their positives' values to be scaled, shifted and jittered.

    Invariances in the positive pairs are what contrastive time-series encoders that cluster well
    add to cropping (TS-TCC's weak view is jitter and scaling: Eldele et al., IJCAI 2021; TS2Vec
    crops and masks: Yue et al., AAAI 2022). The paper's triplets only crop; this is issue 14's
    lever, off by default. Drawn from the training generator, so resumed runs stay identical.

    Args:
        rng: the sampling generator (drawn from only when this is called).
        triplets: the step's windows.
        strength: a in (0, 1]: scale ~ U[1-a, 1+a], offset ~ U[-a, a], noise ~ N(0, (a/4)²).
    """
    size = triplets.batch_size
    width = int(padded_width(int(triplets.anchor_length.max())))
    scale = rng.uniform(1.0 - strength, 1.0 + strength, size).astype(np.float32)
    offset = rng.uniform(-strength, strength, size).astype(np.float32)
    noise = (rng.standard_normal((size, width)) * (strength / 4)).astype(np.float32)
    return dataclasses.replace(
        triplets, positive_scale=scale, positive_offset=offset, positive_noise=noise
    )


class TripletObjective(torch.nn.Module):
    """The loss as a module, so DistributedDataParallel sees one forward per step (the encoder
    itself runs several times per step, once per length bucket)."""

    def __init__(self, encoder: Encoder, drop: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.drop = drop

    def forward(self, series: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        """See `triplet_loss`."""
        return triplet_loss(self.encoder, series, triplets, self.drop)


def triplet_loss(
    encoder: Encoder, series: torch.Tensor, triplets: Triplets, drop: float = 0.0
) -> torch.Tensor:
    """-mean log σ(a·p) + (1/K) Σ_k -mean log σ(-a·n_k), all windows encoded in a few batched calls.

    With `drop` (d in [0, 1)), each anchor's ⌈d·K⌉ negatives nearest to it (largest a·n) are left
    out of the negative term (at least one is kept): with k clusters about 1/k of random
    negatives share the anchor's cluster, and the nearest are the likeliest to (false-negative
    cancellation: Huynh et al., WACV 2022). 0 is the paper's loss.

    Args:
        encoder: the encoder.
        series: (N, L) left-aligned series on the encoder's device (see `encode_windows`).
        triplets: the sampled windows.

    Returns:
        The scalar loss.
    """
    t = triplets
    size, negatives = t.batch_size, t.negatives
    index = np.concatenate([t.anchor_index, t.anchor_index, t.negative_index.ravel()])
    start = np.concatenate([t.anchor_start, t.positive_start, t.negative_start.ravel()])
    length = np.concatenate([t.anchor_length, t.positive_length, t.negative_length.ravel()])
    affine = None
    if t.positive_scale is not None:
        # Identity for anchors and negatives; the positives' draws in rows B..2B-1.
        scale = np.ones(len(length), np.float32)
        offset = np.zeros(len(length), np.float32)
        noise = np.zeros((len(length), t.positive_noise.shape[1]), np.float32)
        scale[size : 2 * size] = t.positive_scale
        offset[size : 2 * size] = t.positive_offset
        noise[size : 2 * size] = t.positive_noise
        affine = (scale, offset, noise)
    totals = None  # read by a position channel only
    if encoder.position:
        totals = np.concatenate([t.anchor_total, t.anchor_total, t.negative_total.ravel()])
    features = encode_windows(
        encoder, series, index, start, length, transform=affine, totals=totals
    )
    anchor = features[:size]
    positive = features[size : 2 * size]
    negative = features[2 * size :].view(size, negatives, -1)
    positive_term = -F.logsigmoid((anchor * positive).sum(dim=1)).mean()
    scores = (anchor[:, None, :] * negative).sum(dim=2)  # (B, K)
    terms = -F.logsigmoid(-scores)
    if drop > 0:
        keep = max(1, negatives - math.ceil(drop * negatives))
        farthest = scores.detach().argsort(dim=1)[:, :keep]
        terms = terms.gather(1, farthest)
    negative_term = terms.mean()
    return positive_term + negative_term
