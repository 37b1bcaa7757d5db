"""Triplet sampling follows the paper; the batched loss equals a per-sample reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn_kmeans.encoder import Encoder
from cnn_kmeans.loss import Triplets, augment_positives, sample_triplets, triplet_loss


def reference_loss(
    encoder: Encoder,
    series: torch.Tensor,
    t: Triplets,
    drop: float = 0.0,
    lengths: np.ndarray | None = None,
) -> torch.Tensor:
    """The loss as the paper writes it: one encoder call per window, no padding (with `drop`,
    each anchor's ⌈drop·K⌉ negatives of largest a·n left out; with a position channel, each
    window's steps at their places in their series of `lengths`)."""

    def encode(i: int, start: int, length: int, b: int | None = None) -> torch.Tensor:
        window = series[i : i + 1, start : start + length]
        if b is not None and t.positive_scale is not None:  # this positive's own values
            noise = torch.as_tensor(t.positive_noise[b, :length])
            window = window * float(t.positive_scale[b]) + float(t.positive_offset[b]) + noise
        if encoder.position:  # the steps' places in the whole series, 0 at its first step
            total = lengths[i]
            places = torch.arange(start, start + length) / max(total - 1, 1)
            window = torch.stack([window, places[None].float()], 1)
        return encoder(window)[0]

    positive_terms, negative_terms = [], []
    for b in range(t.batch_size):
        anchor = encode(t.anchor_index[b], t.anchor_start[b], t.anchor_length[b])
        positive = encode(t.anchor_index[b], t.positive_start[b], t.positive_length[b], b)
        positive_terms.append(-F.logsigmoid(anchor @ positive))
        scores = []
        for k in range(t.negatives):
            i, start, length = (
                t.negative_index[b, k],
                t.negative_start[b, k],
                t.negative_length[b, k],
            )
            scores.append(anchor @ encode(i, start, length))
        kept = sorted(scores, key=lambda score: float(score.detach()))[
            : t.negatives - int(np.ceil(drop * t.negatives))
        ]
        negative_terms += [-F.logsigmoid(-score) for score in kept]
    # -mean_b log σ(a·p) + (1/K) Σ_k -mean_b log σ(-a·n_k) (over the kept negatives)
    return torch.stack(positive_terms).mean() + torch.stack(negative_terms).mean()


def padded(lengths: np.ndarray, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    series = torch.randn(len(lengths), int(lengths.max()), generator=generator)
    series[torch.arange(series.shape[1]) >= torch.as_tensor(lengths)[:, None]] = 0.0
    return series


def check_windows(t: Triplets, lengths: np.ndarray) -> None:
    own = lengths[t.anchor_index]
    assert (t.positive_length >= 1).all() and (t.positive_length <= t.anchor_length).all()
    assert (t.anchor_start >= 0).all() and (t.anchor_start + t.anchor_length <= own).all()
    assert (t.positive_start >= t.anchor_start).all()
    assert (t.positive_start + t.positive_length <= t.anchor_start + t.anchor_length).all()
    negative_own = lengths[t.negative_index]
    expected = np.minimum(t.positive_length[:, None], negative_own)
    assert (t.negative_length == expected).all()
    assert (t.negative_start >= 0).all()
    assert (t.negative_start + t.negative_length <= negative_own).all()


def test_equal_lengths_draw_one_length_pair_per_batch():
    lengths = np.full(30, 50)
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = sample_triplets(rng, lengths, rng.permutation(30)[:8], 4)
        check_windows(t, lengths)
        assert len(set(t.positive_length)) == 1 and len(set(t.anchor_length)) == 1
        assert t.negative_index.shape == (8, 4)


def test_unequal_lengths_bound_every_draw_by_its_own_series():
    lengths = np.random.default_rng(1).integers(1, 60, size=40)
    rng = np.random.default_rng(2)
    seen_lengths = set()
    for _ in range(200):
        t = sample_triplets(rng, lengths, rng.permutation(40)[:10], 5)
        check_windows(t, lengths)
        seen_lengths.update(t.positive_length.tolist())
    assert len(seen_lengths) > 20  # lengths really are drawn per sample


@pytest.mark.parametrize("equal", [True, False])
def test_min_window_bounds_every_window_below(equal):
    lengths = np.full(30, 40) if equal else np.random.default_rng(3).integers(1, 60, size=30)
    rng = np.random.default_rng(4)
    shortest = []
    for _ in range(200):
        t = sample_triplets(rng, lengths, rng.permutation(30)[:8], 4, min_window=0.5)
        check_windows(t, lengths)
        own = lengths[t.anchor_index]
        assert (t.positive_length >= np.ceil(0.5 * own)).all()
        shortest.append((t.positive_length - np.ceil(0.5 * own)).min())
    assert min(shortest) == 0  # the bound is reached, not overshot


def paper_draws(rng: np.random.Generator, lengths: np.ndarray, anchors: np.ndarray, k: int):
    """The paper's sampling written out, draw by draw: (anchor start, anchor length, positive
    start, positive length, negative index)."""
    own = lengths[anchors]
    if lengths.min() == lengths.max():
        positive = np.full(len(anchors), rng.integers(1, own[0] + 1))
        anchor = np.full(len(anchors), rng.integers(positive[0], own[0] + 1))
    else:
        positive = rng.integers(1, own + 1)
        anchor = rng.integers(positive, own + 1)
    start = rng.integers(0, own - anchor + 1)
    positive_start = start + rng.integers(0, anchor - positive + 1)
    return start, anchor, positive_start, positive, rng.integers(0, len(lengths), (len(anchors), k))


@pytest.mark.parametrize("equal", [True, False])
def test_the_levers_at_zero_draw_exactly_as_the_paper(equal):
    """min-window=0 and whole-anchors=0 take the paper's draws from the same generator, so
    jobs and checkpoints from before the levers train the same model."""
    lengths = np.full(30, 40) if equal else np.random.default_rng(3).integers(1, 60, size=30)
    ours, paper = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(20):
        anchors = np.arange(8)
        t = sample_triplets(ours, lengths, anchors, 4, min_window=0.0, whole_anchors=0.0)
        got = (t.anchor_start, t.anchor_length, t.positive_start, t.positive_length)
        expected = paper_draws(paper, lengths, anchors, 4)
        for a, b in zip((*got, t.negative_index), expected, strict=True):
            np.testing.assert_array_equal(a, b)
        paper.integers(0, lengths[t.negative_index] - t.negative_length + 1)  # negative starts


@pytest.mark.parametrize("equal", [True, False])
def test_whole_anchors_are_whole_series_in_about_that_share_of_steps(equal):
    lengths = np.full(30, 40) if equal else np.random.default_rng(3).integers(1, 60, size=30)
    rng = np.random.default_rng(5)
    whole_steps, positives = 0, set()
    for _ in range(400):
        t = sample_triplets(rng, lengths, rng.permutation(30)[:8], 4, whole_anchors=0.5)
        check_windows(t, lengths)
        own = lengths[t.anchor_index]
        whole = (t.anchor_start == 0) & (t.anchor_length == own)
        whole_steps += int(whole.all())
        positives.update(t.positive_length[whole].tolist())
    # Half the steps have every anchor whole (a random window is whole by chance now and then).
    assert 170 <= whole_steps <= 260
    assert len(positives) > 20  # the positives inside whole anchors still take every length
    always = sample_triplets(np.random.default_rng(1), lengths, np.arange(8), 4, whole_anchors=1)
    assert (always.anchor_start == 0).all() and (always.anchor_length == lengths[:8]).all()


def test_sampling_is_reproducible():
    lengths = np.arange(5, 25)
    a = sample_triplets(np.random.default_rng(7), lengths, np.arange(6), 3)
    b = sample_triplets(np.random.default_rng(7), lengths, np.arange(6), 3)
    for name in Triplets.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize(
    ("augment", "drop", "position", "pooling"),
    [
        (0.0, 0.0, False, "max"),
        (0.5, 0.0, False, "max"),
        (0.0, 0.5, False, "max"),
        (0.5, 0.0, True, "max"),
        (0.0, 0.0, False, "max-mean"),
    ],
)
@pytest.mark.parametrize("equal", [True, False])
def test_batched_loss_and_gradients_equal_reference(equal, augment, drop, position, pooling):
    torch.manual_seed(0)
    encoder = Encoder(
        blocks=3,
        filters=6,
        kernel_size=3,
        reduced_size=5,
        output_size=4,
        position=position,
        pooling=pooling,
    )
    rng = np.random.default_rng(3)
    lengths = np.full(12, 33) if equal else rng.integers(1, 40, size=12)
    series = padded(lengths, seed=4)
    t = sample_triplets(rng, lengths, rng.permutation(12)[:6], 3)
    if augment:
        t = augment_positives(rng, t, augment)

    fast = triplet_loss(encoder, series, t, drop)
    fast_grads = torch.autograd.grad(fast, list(encoder.parameters()))
    slow = reference_loss(encoder, series, t, drop, lengths)
    slow_grads = torch.autograd.grad(slow, list(encoder.parameters()))

    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for got, expected in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_augmented_positives_are_drawn_within_their_bounds_and_leave_the_windows():
    lengths = np.arange(5, 45)
    plain = sample_triplets(np.random.default_rng(2), lengths, np.arange(16), 4)
    rng = np.random.default_rng(5)
    t = augment_positives(rng, plain, 0.3)
    assert t.positive_scale.dtype == t.positive_noise.dtype == np.float32
    assert np.all((t.positive_scale >= 0.7) & (t.positive_scale <= 1.3))
    assert np.all(np.abs(t.positive_offset) <= 0.3)
    assert 0.05 < t.positive_noise.std() < 0.1  # N(0, (0.3/4)²)
    assert t.positive_noise.shape[1] >= t.anchor_length.max()  # covers every padded window
    for name in ("anchor_start", "positive_start", "positive_length", "negative_index"):
        np.testing.assert_array_equal(getattr(t, name), getattr(plain, name))
    again = augment_positives(np.random.default_rng(5), plain, 0.3)
    np.testing.assert_array_equal(again.positive_noise, t.positive_noise)
    # A data-parallel shard keeps its rows' draws.
    shard = t.subset(np.array([3, 7]))
    np.testing.assert_array_equal(shard.positive_noise, t.positive_noise[[3, 7]])
    assert plain.subset(np.array([1])).positive_scale is None
