"""A clustering stage after triplet training (issue 14's lever; off by default: `cluster-epochs`).

IDEC (Guo, Gao, Liu & Yin, IJCAI 2017), built on DEC (Xie, Girshick & Farhadi, ICML 2016):
each series' features are softly assigned to k trainable centroids by a Student-t kernel, a
sharpened target distribution is computed from those assignments once per epoch, and
`cluster-weight` x KL(target || assignments) is added to the triplet loss, which stays as the
regulariser that keeps the features' local structure (IDEC's point: DEC alone distorts the
space). The centroids start from KMeans on the features at the end of triplet training. The
model's output stays KMeans: it is fitted again on the features after the stage.

Deep time-series clustering comparisons found such clustering losses helped little on average
over pretext losses alone (Lafabregue, Weber, Gançarski & Forestier, Data Mining and Knowledge
Discovery 36, 2022); BENCHMARKS.md reports what the stage did here.
"""

from __future__ import annotations

import numpy as np
import torch

from cnn_kmeans.encoder import Encoder, encode_windows
from cnn_kmeans.loss import Triplets, triplet_loss

# Probabilities are clamped to this before logarithms (a target row can hold exact zeros).
_TINY = 1e-12


def soft_assignments(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """DEC's q: (N, k) rows summing to 1, q_ij ∝ (1 + |z_i - μ_j|²)^-1 (Student's t, one degree
    of freedom)."""
    kernel = 1.0 / (1.0 + torch.cdist(features, centroids).square())
    return kernel / kernel.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC's p: q squared, divided by each cluster's total soft count (so large clusters do not
    absorb the others), rows renormalised. Sharper than q; treated as a constant."""
    weight = q.square() / q.sum(dim=0)
    return weight / weight.sum(dim=1, keepdim=True)


def clustering_loss(target: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(target || q), averaged over rows."""
    p = target.clamp_min(_TINY)
    return (target * (p.log() - q.clamp_min(_TINY).log())).sum(dim=1).mean()


class ClusteringObjective(torch.nn.Module):
    """Triplet loss + weight x KL(target || q) of the anchors' whole series, as one module so
    DistributedDataParallel sees one forward per step and averages the centroids' gradients."""

    def __init__(self, encoder: Encoder, centroids: torch.Tensor, weight: float, drop: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.centroids = torch.nn.Parameter(centroids)
        self.weight = weight
        self.drop = drop

    def forward(
        self,
        series: torch.Tensor,
        triplets: Triplets,
        lengths: np.ndarray,
        target: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of one step's anchors (`target`: the stage's (N, k) target distribution)."""
        anchors = triplets.anchor_index
        whole = encode_windows(
            self.encoder, series, anchors, np.zeros(len(anchors), np.int64), lengths[anchors]
        )
        q = soft_assignments(whole, self.centroids)
        rows = torch.as_tensor(anchors, device=target.device)
        cluster = clustering_loss(target[rows], q)
        return triplet_loss(self.encoder, series, triplets, self.drop) + self.weight * cluster
