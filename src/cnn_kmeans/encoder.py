"""The dilated causal CNN encoder of Franceschi et al. (2019), with masked max pooling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from cnn_kmeans.config import Config

NEGATIVE_SLOPE = 0.01
# Batches are padded to a multiple of this many steps (exact: causal convolutions, masked
# pooling). Recurring shapes let the allocator reuse blocks and oneDNN pick vectorised kernels:
# measured 25% faster steps and 60 MB less peak memory at the default hyperparameters.
WIDTH_MULTIPLE = 16
# A training step encodes its B anchors, B positives and B x K negatives in this many groups of
# equal count. Every step then has the same batch sizes (only widths vary), so oneDNN keeps half
# as many compiled convolutions and the allocator reuses same-sized blocks: at the defaults the
# steady-state peak RSS fell from ~640 to ~460 MB for ~10% longer equal-length steps (a group
# per distinct length, 10 anchors + 110 others, gave twice the shapes and a fragmented heap).
TRAINING_GROUPS = 3
# A training step keeps its blocks' activations for the backward pass while they fit in this many
# bytes (estimated by `Encoder.activation_bytes`); a larger step keeps only the inputs of runs of
# blocks (`RECOMPUTE_RUN`) and recomputes them in the backward pass, for the same gradients bit
# for bit. At the defaults the activations are ~7 KB per padded time step, so every step at
# length 150 fits (recomputing made them 1.36x slower: 0.27 vs 0.20 CPU s, for 442 vs 553 MB
# peak RSS), while at length 1,460 a step's activations reach 1.3 GB and most steps recompute
# (benchmarks/profile_long.py).
RECOMPUTE_ABOVE_BYTES = 256 << 20
# A recomputing step keeps the input of every run of this many blocks (the last, widest block is
# a run of its own) and recomputes a run at a time: fewer inputs kept than one per block, for
# the same gradients bit for bit and the same recomputation. Three blocks: ~sqrt(10) at the
# default 10, so the kept inputs and one run's recomputed activations are both small beside the
# last (widest) block's. With `heap.map_large_allocations` it took the peak at length 1,460 from
# ~1.1 GB to ~0.9 GB (see there; `benchmarks/profile_long.py --memory`).
RECOMPUTE_RUN = 3
# An inference batch may pad its series by at most this share of its cells beyond their own
# padded widths (see `length_buckets`). Grouping by exact width made many tiny batches on spread
# lengths (GesturePebbleZ1: 48 groups for 304 series, 0.60x the time steps/s of equal lengths;
# AllGestureWiimoteX 0.63x); merging widths within 10/20/30% gave 0.84/0.85/0.91x and
# 0.81/0.82/0.88x (benchmarks/bench_lengths.py, CPU time, interleaved); at 25%, 0.93x and 0.92x
# (13 and 26 groups): fewer, fuller batches outweigh the padding they add.
PADDING_WASTE = 0.25


# Inference batches hold at most this many time steps (series x padded length): bounds memory,
# and on CPU batches of this size also encode fastest (measured: 1<<14 beats 1<<16 by 1.6x;
# 1<<13 encodes as fast and its smaller temporaries keep the peak RSS ~40 MB lower).
INFERENCE_CELLS = 1 << 13


class CausalConv(nn.Module):
    """A weight-normalised dilated convolution that only looks at the present and the past.

    Padding is added on the left only. Taps whose offset reaches past the start of every series
    (offset >= length) could only read that padding, so they are dropped: the result is exactly
    that of a zero-padded causal convolution, with at most `length - 1` columns of padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.conv = weight_norm(conv)

    def left_padding(self, length: int) -> int:
        """Columns of zeros this convolution needs in front of a series of `length` steps."""
        return (self._taps(length) - 1) * self.dilation

    def _taps(self, length: int) -> int:
        return min(self.kernel_size, (length - 1) // self.dilation + 1)

    def forward(self, x: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, C_in, L) -> (B, C_out, L).

        With `length` given, x is already left-padded: (B, C_in, left_padding(length) + length).
        """
        if length is None:
            length = x.shape[-1]
            pad = self.left_padding(length)
            if pad:
                x = F.pad(x, (pad, 0))
        taps = self._taps(length)
        weight = self.conv.weight[:, :, self.kernel_size - taps :]
        return F.conv1d(x, weight, self.conv.bias, dilation=self.dilation if taps > 1 else 1)


class CausalBlock(nn.Module):
    """Two causal convolutions with LeakyReLU, plus a residual (1x1 conv if channels change)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv1 = CausalConv(in_channels, out_channels, kernel_size, dilation)
        self.conv2 = CausalConv(out_channels, out_channels, kernel_size, dilation)
        self.residual = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L) -> (B, C_out, L)."""
        length = x.shape[-1]
        # conv2's left padding goes on before the activation (which keeps zeros at zero), in
        # place, so autograd keeps one tensor for both instead of an activation and its copy.
        y = F.pad(self.conv1(x), (self.conv2.left_padding(length), 0))
        y = F.leaky_relu(y, NEGATIVE_SLOPE, inplace=True)
        y = F.leaky_relu(self.conv2(y, length), NEGATIVE_SLOPE, inplace=True)
        return y + (x if self.residual is None else self.residual(x))


class Encoder(nn.Module):
    """Univariate series of any length -> fixed-size features.

    With `position`, each step also carries its place in the series as a second channel: max
    pooling over time keeps which patterns occur but not where, and the triplet windows at random
    offsets teach the encoder that where does not matter, so classes told apart by where an event
    happens (BME's begin, middle and end; GunPoint's timing) fold together. A position input is
    the usual answer (the positional encodings of Transformers: Vaswani et al., NeurIPS 2017);
    the causal convolutions see it as one more channel. Issue 14's lever, off by default: it
    helped where the classes differ by timing and hurt where one event happens anywhere (CBF),
    BENCHMARKS.md's "Levers that retrain".

    With `pooling="max-mean"`, each channel's mean over the series' steps joins its maximum:
    the maximum says whether a pattern occurs, the mean how much of the series it fills (ROCKET
    pools each kernel's output both ways, its maximum and its proportion of positive values:
    Dempster, Petitjean & Webb, 2020; MiniRocket keeps the proportion alone). Issue 14's lever,
    off by default ("max" is the paper's encoder): on the nine cheapest sets of the suite it lost
    on average, BENCHMARKS.md's "Levers that retrain".

    `blocks` blocks of `filters` channels with dilations 1, 2, ..., 2^(blocks-1), one final block of
    `reduced_size` channels with dilation 2^blocks, max pooling over each series' true length,
    then a linear layer to `output_size` features.
    """

    def __init__(
        self,
        blocks: int,
        filters: int,
        kernel_size: int,
        reduced_size: int,
        output_size: int,
        position: bool = False,
        pooling: str = "max",
    ):
        super().__init__()
        # With `position`, a second input channel holds each step's place in its series (see
        # `encode_windows`).
        self.position = position
        layers = []
        channels = 2 if position else 1
        for i in range(blocks):
            layers.append(CausalBlock(channels, filters, kernel_size, 2**i))
            channels = filters
        layers.append(CausalBlock(channels, reduced_size, kernel_size, 2**blocks))
        self.network = nn.Sequential(*layers)
        # With "max-mean", the linear layer reads each channel's maximum and then its mean.
        self.pooling = pooling
        pooled = 2 * reduced_size if pooling == "max-mean" else reduced_size
        self.linear = nn.Linear(pooled, output_size)
        # Channels of every block's output: autograd keeps ~3 float32 tensors of each per time
        # step (measured ~7 KB per step at the defaults, 12 bytes x 560 channels = 6.7 KB).
        self.activation_channels = filters * blocks + reduced_size

    @property
    def feature_size(self) -> int:
        """Features per series (`output_size`)."""
        return self.linear.out_features

    @property
    def members(self) -> list[Encoder]:
        """The encoders whose features make this one's: itself (see `Ensemble`)."""
        return [self]

    def recompute_runs(self) -> list[nn.Module]:
        """The runs of blocks a recomputing forward checkpoints (see `RECOMPUTE_RUN`)."""
        body = len(self.network) - 1
        runs = [
            self.network[i : min(i + RECOMPUTE_RUN, body)] for i in range(0, body, RECOMPUTE_RUN)
        ]
        return [*runs, self.network[body]]

    def activation_bytes(self, cells: int) -> int:
        """Estimated bytes a training forward keeps for the backward pass over `cells` padded
        time steps (series x padded width) without recomputation."""
        return 12 * self.activation_channels * cells

    @classmethod
    def from_config(cls, config: Config) -> Encoder:
        """The encoder a `Config` describes."""
        return cls(
            config.blocks,
            config.filters,
            config.kernel_size,
            config.reduced_size,
            config.output_size,
            position=config.position == "relative",
            pooling=config.pooling,
        )

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, *, recompute: bool = False
    ) -> torch.Tensor:
        """Encode a batch.

        Args:
            x: (B, L) series, left-aligned, or (B, 2, L) with `position`: the series and each
                step's place in it (see `encode_windows`); values after a series' end must be
                finite (they are never read by the causal convolutions at valid positions and
                are masked out of the pooling).
            lengths: (B,) true lengths, or None when every series has length L.
            recompute: when gradients are recorded, keep only the input of each run of blocks
                (`recompute_runs`) and recompute the run in the backward pass (see
                `RECOMPUTE_ABOVE_BYTES`).

        Returns:
            (B, output_size) features.
        """
        h = x.unsqueeze(1) if x.dim() == 2 else x
        if recompute and torch.is_grad_enabled():
            for run in self.recompute_runs():
                h = checkpoint(run, h, use_reentrant=False)
        else:
            h = self.network(h)
        padding = None
        if lengths is not None:
            padding = (torch.arange(h.shape[-1], device=h.device) >= lengths[:, None])[:, None, :]
        mean = None
        if self.pooling == "max-mean":
            # Over each series' own steps: the padding after its end is left out of the sum.
            if padding is None:
                mean = h.mean(dim=2)
            else:
                mean = h.masked_fill(padding, 0.0).sum(dim=2) / lengths[:, None].to(h.dtype)
        if padding is not None:
            h = h.masked_fill(padding, float("-inf"))
        # max (not amax): its backward keeps only the argmax indices, not all of h.
        pooled = h.max(dim=2).values
        return self.linear(pooled if mean is None else torch.cat([pooled, mean], dim=1))


class Ensemble(nn.Module):
    """Several encoders of the same shape, each trained as a one-encoder job of its own seed
    would be (`member_seed`; `trainer.Trainer` trains them one after another); a series'
    features are theirs concatenated (`encoders` x `output_size`).

    Diversity among encoders is what ensembles of deep clusterings draw on (RandomNet: Li, Xi &
    Lin, 2024, ensembles of clusterings from untrained networks across the UCR archive); issue 14's
    lever, off by default: BENCHMARKS.md reports what it did here.
    """

    def __init__(self, members: list[Encoder]):
        super().__init__()
        self.encoders = nn.ModuleList(members)

    @property
    def members(self) -> list[Encoder]:
        """The encoders, in the order of their features."""
        return list(self.encoders)

    @property
    def position(self) -> bool:
        """Whether the members read a position channel (all or none do)."""
        return self.encoders[0].position

    @property
    def feature_size(self) -> int:
        """Features per series: every member's, concatenated."""
        return sum(member.feature_size for member in self.encoders)

    def activation_bytes(self, cells: int) -> int:
        """See `Encoder.activation_bytes`: the members run one after the other."""
        return self.encoders[0].activation_bytes(cells)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, *, recompute: bool = False
    ) -> torch.Tensor:
        """(B, feature_size): each member's features (see `Encoder.forward`), concatenated."""
        return torch.cat([m(x, lengths, recompute=recompute) for m in self.encoders], dim=1)


def member_seed(config: Config, index: int) -> int:
    """The seed of encoder `index` of `config.encoders` (`seed` itself for one encoder): the
    encoders of seed s are the one-encoder models of seeds s x encoders + index."""
    return (config.seed * config.encoders + index) % 2**31


def build_encoder(config: Config) -> Encoder | Ensemble:
    """The untrained encoder a `Config` describes: one `Encoder` initialised from `seed`, or an
    `Ensemble` of `encoders` of them, each initialised from its `member_seed` (the global torch
    generator is left as it was)."""
    members = []
    for index in range(config.encoders):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed(config, index))
            members.append(Encoder.from_config(config))
    return members[0] if len(members) == 1 else Ensemble(members)


def padded_width(length: np.ndarray | int) -> np.ndarray | int:
    """The width a window of `length` steps is padded to in a batch."""
    return -(-length // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


def length_buckets(
    lengths: np.ndarray, *, groups: int = 0, max_cells: int = 0, waste: float = PADDING_WASTE
) -> list:
    """Group windows of similar length so each group pads little.

    Args:
        lengths: (M,) window lengths.
        groups: when > 0, this many groups of equal count (sizes differ by at most one) of the
            sorted lengths (training steps).
        max_cells: when > 0, groups for inference over many series, made longest first: a group
            takes the longest series left, then the next longest ones while its size (count x
            padded width) stays within this budget (bounds memory) and the padding it adds to its
            series' own padded widths stays within `waste` of its cells. Counts are powers of two
            (the largest that fits), so calls after calls meet few batch shapes and oneDNN reuses
            its compiled convolutions.
        waste: see `max_cells`.

    Returns:
        A list of index arrays into `lengths`.
    """
    if not max_cells or not len(lengths):
        order = np.argsort(lengths, kind="stable")
        return [g for g in np.array_split(order, max(1, groups)) if len(g)]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    widths = padded_width(lengths[order])
    # cells[k] = own padded cells of the k longest series; a group [i, i + k) is within the waste
    # bound when cells[i + k] - cells[i] >= (1 - waste) * k * widths[i]. Its mean width only
    # falls as k grows, so the counts that pass form a prefix. Padding on the right is exact:
    # causal convolutions never read past a position, and pooling is masked to each length.
    cells = np.concatenate([[0], np.cumsum(widths)])
    chunks = []
    i = 0
    while i < len(order):
        width = int(widths[i])
        count = np.arange(1, min(max(1, max_cells // width), len(order) - i) + 1)
        fits = cells[i + count] - cells[i] >= (1.0 - waste) * width * count
        size = 1 << (int(fits.sum()).bit_length() - 1)
        chunks.append(order[i : i + size])
        i += size
    return chunks


def encode_windows(
    encoder: Encoder | Ensemble,
    series: torch.Tensor,
    index: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    *,
    groups: int = TRAINING_GROUPS,
    max_cells: int = 0,
    transform: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    totals: np.ndarray | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Encode the windows series[index[i], start[i] : start[i] + length[i]].

    Windows are grouped by length (see `length_buckets`), each group is gathered into one padded
    batch and encoded in one call; the result is in the order of the windows.

    Args:
        encoder: the encoder (or an ensemble of them).
        series: (N, L) left-aligned series on the encoder's device; what follows each series'
            end (zeros, NaN) is never read: every step past a window's end is zeroed.
        index, start, length: (M,) int64 window descriptions (length >= 1).
        groups, max_cells: see `length_buckets`.
        transform: optional (scale (M,), offset (M,), noise (M, W)) float32: window i is encoded
            as x * scale[i] + offset[i] + noise[i, :width] over its own steps (zero after its
            end, as every window); W must cover every window's padded width.
        totals: (M,) int64 lengths of the windows' whole series, for an encoder with a position
            channel: step t of a series of length T is at (t / (T - 1)) (0 when T = 1), so a
            window carries the places it was cut from. None: each window is its whole series.
        on_batch: called with the number of windows of each batch once it is encoded (progress).

    Returns:
        (M, feature_size) features.
    """
    device = series.device
    # Written in place, group by group: a list of small results kept between the groups' large
    # temporary activations would pin the heap and grow it by about a batch per call.
    features = series.new_empty((len(length), encoder.feature_size))
    buckets = length_buckets(length, groups=groups, max_cells=max_cells)
    widths = [int(padded_width(int(length[group].max()))) for group in buckets]
    recompute = False
    if encoder.training and torch.is_grad_enabled():
        cells = sum(len(group) * width for group, width in zip(buckets, widths, strict=True))
        recompute = encoder.activation_bytes(cells) > RECOMPUTE_ABOVE_BYTES
    for group, width in zip(buckets, widths, strict=True):
        lengths = torch.as_tensor(length[group], device=device)
        steps = torch.arange(width, device=device)
        columns = torch.as_tensor(start[group], device=device)[:, None] + steps
        columns = columns.clamp_(max=series.shape[1] - 1)
        rows = torch.as_tensor(index[group], device=device)
        batch = series[rows[:, None], columns]
        if transform is not None:
            scale, offset, noise = (torch.as_tensor(a[group], device=device) for a in transform)
            batch = batch * scale[:, None] + offset[:, None] + noise[:, :width]
        after = steps >= lengths[:, None]
        batch = batch.masked_fill(after, 0.0)
        if encoder.position:
            whole = (length if totals is None else totals)[group]
            batch = torch.stack([batch, _places(columns, whole, after)], 1)
        features[rows.new_tensor(group)] = encoder(batch, lengths, recompute=recompute)
        if on_batch is not None:
            on_batch(len(group))
    return features


def _places(columns: torch.Tensor, whole: np.ndarray, after: torch.Tensor) -> torch.Tensor:
    """The position channel of a batch (see `encode_windows`): each step's column over the last
    column of its whole series (`whole` steps long), zero where `after` (past the window's end),
    like the values."""
    last = torch.as_tensor(whole, device=columns.device).sub(1).clamp_(min=1).to(torch.float32)
    return (columns.to(torch.float32) / last[:, None]).masked_fill_(after, 0.0)
