"""The encoder: exact architecture, exact causal convolutions, batch-independent features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn_kmeans.encoder import (
    PADDING_WASTE,
    CausalBlock,
    CausalConv,
    Encoder,
    encode_windows,
    length_buckets,
    padded_width,
)


def make_encoder(blocks: int = 3, **kwargs) -> Encoder:
    torch.manual_seed(0)
    args = dict(filters=6, kernel_size=3, reduced_size=5, output_size=4) | kwargs
    return Encoder(blocks, **args).eval()


def test_architecture_follows_the_paper():
    encoder = make_encoder(blocks=3, filters=6, reduced_size=5)
    blocks = list(encoder.network)
    assert all(isinstance(b, CausalBlock) for b in blocks)
    assert [b.conv1.dilation for b in blocks] == [1, 2, 4, 8]
    assert [b.conv1.conv.in_channels for b in blocks] == [1, 6, 6, 6]
    assert [b.conv2.conv.out_channels for b in blocks] == [6, 6, 6, 5]
    # 1x1 residual convolutions exactly where the channel count changes
    assert [b.residual is not None for b in blocks] == [True, False, False, True]
    assert encoder.linear.in_features == 5 and encoder.linear.out_features == 4
    names = [name for name, _ in encoder.named_parameters()]
    assert any("parametrizations.weight.original0" in n for n in names)  # new weight_norm API


def test_one_block_still_uses_filters():
    blocks = list(make_encoder(blocks=1, filters=7, reduced_size=3).network)
    assert [(b.conv1.conv.in_channels, b.conv2.conv.out_channels) for b in blocks] == [
        (1, 7),
        (7, 3),
    ]
    assert [b.conv1.dilation for b in blocks] == [1, 2]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("dilation", [1, 2, 8, 64])
@pytest.mark.parametrize("kernel_size", [2, 3, 5])
def test_causal_conv_equals_zero_padded_convolution(length, dilation, kernel_size):
    torch.manual_seed(1)
    conv = CausalConv(3, 4, kernel_size, dilation)
    x = torch.randn(2, 3, length)
    full = (kernel_size - 1) * dilation
    expected = F.conv1d(F.pad(x, (full, 0)), conv.conv.weight, conv.conv.bias, dilation=dilation)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-6)


def test_outputs_never_look_ahead():
    encoder = make_encoder(blocks=4)
    x = torch.randn(1, 50)
    y = x.clone()
    y[0, 30:] = torch.randn(20)
    hidden_x = encoder.network(x[:, None])
    hidden_y = encoder.network(y[:, None])
    torch.testing.assert_close(hidden_x[..., :30], hidden_y[..., :30])
    assert not torch.allclose(hidden_x[..., 30:], hidden_y[..., 30:])


def test_features_do_not_depend_on_batch_companions_or_padding():
    encoder = make_encoder(blocks=5)
    short = torch.randn(23)
    alone = encoder(short[None])
    batch = torch.randn(3, 90) * 5  # longer companions
    batch[1, :23] = short
    batch[1, 23:] = 1e3  # padding content must not matter
    lengths = torch.tensor([90, 23, 61])
    together = encoder(batch, lengths)
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-6)
    # companions' features are also their own
    torch.testing.assert_close(together[2], encoder(batch[2:3, :61])[0], rtol=1e-5, atol=1e-6)


def reference_conv(conv: CausalConv, h: torch.Tensor) -> torch.Tensor:
    """A plain zero-padded causal convolution using every tap."""
    full = (conv.kernel_size - 1) * conv.dilation
    out = F.conv1d(F.pad(h, (full, 0)), conv.conv.weight, conv.conv.bias, dilation=conv.dilation)
    return F.leaky_relu(out, 0.01)


def test_deep_encoder_on_short_series_equals_plain_causal_network():
    encoder = make_encoder(blocks=20)  # dilations up to 2^20 on series of 10 points
    x = torch.randn(2, 10)
    h = x[:, None]
    for block in encoder.network:
        y = reference_conv(block.conv2, reference_conv(block.conv1, h))
        h = y + (h if block.residual is None else block.residual(h))
    expected = encoder.linear(h.amax(dim=2))
    torch.testing.assert_close(encoder(x), expected, rtol=1e-4, atol=1e-5)


def test_training_groups_have_the_same_sizes_step_after_step():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500)
    assert sorted(np.concatenate(length_buckets(lengths, groups=4)).tolist()) == list(range(500))
    for lengths in (np.array([150] * 10 + [40] * 110), rng.integers(1, 151, size=120)):
        assert [len(g) for g in length_buckets(lengths, groups=3)] == [40, 40, 40]


SPREADS = {
    "AllGestureWiimoteX-like": np.random.default_rng(0).integers(11, 386, size=2000),
    "GesturePebbleZ1-like": np.random.default_rng(1).integers(29, 362, size=172),
    "long and short": np.random.default_rng(2).integers(1, 3000, size=300),
    "equal": np.full(1000, 150),
    "one": np.array([7]),
}


@pytest.mark.parametrize("name", SPREADS)
def test_inference_groups_are_few_full_and_pad_little(name):
    lengths, budget = SPREADS[name], 8192
    groups = length_buckets(lengths, max_cells=budget)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    left = np.ones(len(lengths), dtype=bool)  # series not in this group or an earlier one
    shapes = set()
    for group in groups:
        count, width = len(group), int(padded_width(lengths[group].max()))
        shapes.add((count, width))
        own = int(padded_width(lengths[group]).sum())
        # Power-of-two counts; within the cell budget (memory) and the padding bound.
        assert count & (count - 1) == 0
        assert count == 1 or count * width <= budget
        assert own >= (1 - PADDING_WASTE) * count * width
        # Made longest first, and never less than half as large as the bounds allow: the next
        # `count` longest series left would break one of them (tiny batches are slow).
        left[group] = False
        assert lengths[left].max(initial=0) <= lengths[group].min()
        following = np.sort(lengths[left])[::-1][:count]
        if len(following) == count:
            together = own + int(padded_width(following).sum())
            assert 2 * count * width > budget or together < (1 - PADDING_WASTE) * 2 * count * width
    # Few shapes, so oneDNN reuses its compiled convolutions: at most two counts per width.
    assert len(shapes) <= 2 * len({width for _, width in shapes})


def with_places(window: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """(1, n) values of a window cut at `start` from a series of `total` steps -> (1, 2, n) with
    the position channel: each step's place in that series, 0 at its first step, 1 at its last."""
    places = torch.arange(start, start + window.shape[1]) / max(total - 1, 1)
    return torch.stack([window, places[None].float()], 1)


@pytest.mark.parametrize("position", [False, True])
@pytest.mark.parametrize("pooling", ["max", "max-mean"])
def test_encode_windows_matches_one_window_at_a_time(position, pooling):
    encoder = make_encoder(blocks=3, position=position, pooling=pooling)
    rng = np.random.default_rng(1)
    series = torch.randn(6, 40)
    totals = rng.integers(20, 41, size=6)  # the series' own lengths
    index = rng.integers(0, 6, size=30)
    length = rng.integers(1, 20, size=30)
    start = rng.integers(0, totals[index] - length + 1)
    with torch.no_grad():
        got = encode_windows(encoder, series, index, start, length, groups=3, totals=totals[index])
        windows = [
            series[i : i + 1, s : s + n] for i, s, n in zip(index, start, length, strict=True)
        ]
        if position:
            cuts = zip(windows, start, index, strict=True)
            windows = [with_places(w, s, totals[i]) for w, s, i in cuts]
        expected = torch.cat([encoder(w) for w in windows])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_position_channel_tells_the_same_pattern_apart_by_where_it_was_cut():
    # Series 1 holds series 0's first 20 steps at steps 40-59: without a position channel the
    # two windows are the same input; with it they differ by their places (0-0.2 vs 0.4-0.6).
    series = torch.randn(2, 100)
    series[1, 40:60] = series[0, :20]
    windows = (np.array([0, 1]), np.array([0, 40]), np.array([20, 20]))
    with torch.no_grad():
        plain = encode_windows(make_encoder(), series, *windows, totals=np.array([100, 100]))
        placed = encode_windows(
            make_encoder(position=True), series, *windows, totals=np.array([100, 100])
        )
    torch.testing.assert_close(plain[0], plain[1])
    assert (placed[0] - placed[1]).abs().max() > 1e-3


@pytest.mark.parametrize("position", [False, True])
@pytest.mark.parametrize("pooling", ["max", "max-mean"])
def test_inference_batches_of_mixed_widths_give_each_series_its_own_features(position, pooling):
    # Dilations up to 128 on lengths 1-300: groups merge widths across the lengths where a
    # convolution's taps change, and every series must still get the features it gets alone
    # (with a position channel: its steps from 0 at the first to 1 at its own last).
    encoder = make_encoder(blocks=7, position=position, pooling=pooling)
    lengths = np.random.default_rng(3).integers(1, 301, size=120)
    series = torch.randn(120, 300).masked_fill(
        torch.arange(300) >= torch.tensor(lengths)[:, None], 0
    )
    groups = length_buckets(lengths, max_cells=2048)
    assert max(len(set(padded_width(lengths[g]))) for g in groups) >= 3  # widths merge
    with torch.inference_mode():
        got = encode_windows(
            encoder, series, np.arange(120), np.zeros(120, dtype=np.int64), lengths, max_cells=2048
        )
        alone = [series[i : i + 1, :n] for i, n in enumerate(lengths)]
        if position:
            alone = [with_places(w, 0, n) for w, n in zip(alone, lengths, strict=True)]
        alone = torch.cat([encoder(w) for w in alone])
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-6)


def test_max_mean_pooling_reads_each_channels_maximum_and_mean_over_the_series_own_steps():
    # The linear layer set to copy its inputs: the features are the pooled values themselves,
    # each channel's maximum and then its mean, over the steps before the series' end only
    # (what lies after it is large and must count in neither).
    encoder = make_encoder(blocks=2, reduced_size=3, output_size=6, pooling="max-mean")
    with torch.no_grad():
        encoder.linear.weight.copy_(torch.eye(6))
        encoder.linear.bias.zero_()
        x, lengths = torch.randn(3, 25), torch.tensor([25, 9, 1])
        x[1, 9:] = 50.0
        x[2, 1:] = -50.0
        got = encoder(x, lengths)
        for row, n in enumerate(lengths.tolist()):
            h = encoder.network(x[row : row + 1, :n].unsqueeze(1))[0]
            torch.testing.assert_close(got[row, :3], h.max(dim=1).values)
            torch.testing.assert_close(got[row, 3:], h.mean(dim=1))


def test_max_pooling_cannot_tell_how_long_a_pattern_lasts_and_max_mean_can():
    # The same pulse held for 10 steps or for 30, both longer than the receptive field (7 steps):
    # every channel reaches the same maximum, so the paper's pooling gives both series one
    # feature vector; the mean tells them apart.
    x = torch.zeros(2, 60)
    x[0, 10:20] = 1.0
    x[1, 10:40] = 1.0
    encoder = make_encoder(blocks=1, kernel_size=2, pooling="max")
    with torch.no_grad():
        # Non-negative weights and no biases: each channel is largest on the plateau.
        for parameter in encoder.network.parameters():
            parameter.abs_()
        for block in encoder.network:
            for conv in (block.conv1.conv, block.conv2.conv):
                conv.bias.zero_()
        both = make_encoder(blocks=1, kernel_size=2, pooling="max-mean")
        both.network.load_state_dict(encoder.network.state_dict())
        plain, pooled = encoder(x), both(x)
    torch.testing.assert_close(plain[0], plain[1])
    assert (pooled[0] - pooled[1]).abs().max() > 1e-3


def test_recomputing_blocks_in_backward_gives_the_same_gradients_bit_for_bit():
    encoder = make_encoder(blocks=4).train()
    x, lengths = torch.randn(5, 30), torch.tensor([30, 12, 7, 30, 1])
    grads = {}
    for recompute in (False, True):
        encoder.zero_grad()
        encoder(x, lengths, recompute=recompute).square().sum().backward()
        grads[recompute] = [p.grad.clone() for p in encoder.parameters()]
    for plain, recomputed in zip(grads[False], grads[True], strict=True):
        assert torch.equal(recomputed, plain)


def test_a_recomputing_forward_keeps_one_input_per_run_of_blocks_not_one_per_block(monkeypatch):
    """Seven blocks in runs of three (and the last block alone): autograd keeps the activations
    entering blocks 3, 6 and the last one, and nothing else of activation size."""
    from cnn_kmeans import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "RECOMPUTE_RUN", 3)
    encoder = make_encoder(blocks=7, filters=6).train()
    x, lengths = torch.randn(4, 64), torch.tensor([64, 30, 64, 5])
    activation = 4 * 6 * 64 * x.element_size()
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        features = encoder(x, lengths, recompute=True)
    assert sorted(kept.values()).count(activation) == 3
    assert max(kept.values()) == activation
    features.square().sum().backward()  # the runs recompute
    assert all(p.grad is not None for p in encoder.parameters())


def test_a_training_step_recomputes_its_blocks_only_past_the_activation_budget(monkeypatch):
    """A step whose estimated activations fit RECOMPUTE_ABOVE_BYTES keeps them for the backward
    pass; one byte less and it keeps only the blocks' inputs (a fraction of the memory, measured
    on what autograd saves), for the same gradients bit for bit."""
    from cnn_kmeans import encoder as encoder_module

    encoder = make_encoder(blocks=3).train()
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 41, size=24)
    series = torch.randn(24, 40)
    index, start = np.arange(24), np.zeros(24, dtype=np.int64)
    buckets = length_buckets(lengths, groups=3)
    cells = sum(len(g) * padded_width(int(lengths[g].max())) for g in buckets)
    estimate = encoder.activation_bytes(cells)
    saved, grads = {}, {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    for budget in (estimate, estimate - 1):
        monkeypatch.setattr(encoder_module, "RECOMPUTE_ABOVE_BYTES", budget)
        kept: dict[int, int] = {}
        encoder.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            features = encode_windows(encoder, series, index, start, lengths)
        features.square().sum().backward()
        saved[budget], grads[budget] = sum(kept.values()), [p.grad for p in encoder.parameters()]
    assert saved[estimate] > 0.5 * estimate  # the estimate is of the right size
    assert saved[estimate - 1] < saved[estimate] / 3
    assert all(torch.equal(a, b) for a, b in zip(*grads.values(), strict=True))
