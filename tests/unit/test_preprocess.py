"""Tests for cnn_kmeans.preprocess: gap interpolation, trimming and scaling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_kmeans.data import Scaler as ReexportedScaler
from cnn_kmeans.data import clean as reexported_clean
from cnn_kmeans.errors import UserError
from cnn_kmeans.preprocess import Scaler, clean

NAN = np.nan


def reference_clean(row: np.ndarray) -> np.ndarray:
    """Per-row reference: trim leading/trailing NaN, np.interp over inner gaps."""
    positions = np.flatnonzero(~np.isnan(row))
    span = np.arange(positions[0], positions[-1] + 1)
    return np.interp(span, positions, row[positions])


def test_reexported_from_data():
    assert ReexportedScaler is Scaler
    assert reexported_clean is clean


def test_interpolates_inner_gaps_exactly():
    values, lengths = clean(np.array([[1, NAN, 3], [4, 5, 6]]))
    np.testing.assert_array_equal(values, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(lengths, [3, 3])
    values, lengths = clean(np.array([[0, NAN, NAN, 3, NAN, 5]]))
    np.testing.assert_array_equal(values, [[0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(lengths, [6])


def test_trims_and_left_aligns():
    raw = np.array(
        [
            [NAN, NAN, 1, NAN, 4, NAN],
            [5, 6, NAN, NAN, NAN, NAN],
            [NAN, NAN, NAN, NAN, NAN, 7],
        ]
    )
    values, lengths = clean(raw)
    assert values.dtype == np.float32
    assert lengths.dtype == np.int64
    np.testing.assert_array_equal(lengths, [3, 2, 1])
    np.testing.assert_array_equal(values, [[1, 2.5, 4], [5, 6, NAN], [7, NAN, NAN]])


def test_matches_per_row_reference_on_random_gaps():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(300, 40)) * 10
    raw[rng.random(raw.shape) < 0.4] = NAN
    raw[np.arange(300), rng.integers(0, 40, size=300)] = 1.0  # every row keeps a value
    raw[:20, 25:] = NAN  # some ragged rows, as parse_csv pads them
    values, lengths = clean(raw.astype(np.float32))
    expected = [reference_clean(row) for row in raw.astype(np.float32)]
    np.testing.assert_array_equal(lengths, [len(row) for row in expected])
    assert values.shape == (300, max(lengths))
    for row, length, want in zip(values, lengths, expected, strict=True):
        np.testing.assert_allclose(row[:length], want, rtol=1e-5, atol=1e-5)
        assert np.isnan(row[length:]).all()


def test_small_blocks_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(50, 30))
    raw[rng.random(raw.shape) < 0.5] = NAN
    raw[:, 7] = 2.0
    whole = clean(raw)
    monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 60)  # two rows per block
    split = clean(raw)
    np.testing.assert_array_equal(whole[0], split[0])
    np.testing.assert_array_equal(whole[1], split[1])


def test_errors_in_later_blocks_name_the_row_in_the_whole_array(monkeypatch):
    monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 4)  # two rows per block
    with pytest.raises(UserError, match=r"^row 5, column 2: infinite value"):
        clean(np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, np.inf]]))
    with pytest.raises(UserError, match=r"^row 4: no values"):
        clean(np.array([[1, 2], [3, 4], [5, 6], [NAN, NAN]]))


def test_the_global_scaler_in_blocks_is_numpys_mean_and_std_and_scales_alike(monkeypatch):
    rng = np.random.default_rng(5)
    raw = (rng.normal(size=(40, 25)) * 3 + 7).astype(np.float32)
    raw[rng.random(raw.shape) < 0.3] = NAN
    data = raw[~np.isnan(raw)].astype(np.float64)
    whole = Scaler.fit("global", raw)
    assert (whole.mean, whole.std) == (data.mean(), data.std())  # one block: exactly numpy
    monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 75)  # three rows per block
    split = Scaler.fit("global", raw)
    assert split.mean == pytest.approx(whole.mean, rel=1e-14)
    assert split.std == pytest.approx(whole.std, rel=1e-14)
    for kind in ("global", "series"):
        scaler = Scaler.fit(kind, raw)
        monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 1 << 21)
        one = scaler.transform(raw)
        monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 75)
        np.testing.assert_array_equal(scaler.transform(raw), one)


def test_cleaning_and_scaling_hold_the_values_plus_a_bounded_working_set(monkeypatch):
    """Issue 16: memory within the data plus a bounded working set. Cleaning and scaling a
    float32 array keep its two results (cleaned, scaled) and block-sized temporaries, never a
    float64 copy or a mask of the whole array."""
    import tracemalloc

    monkeypatch.setattr("cnn_kmeans.preprocess._BLOCK_CELLS", 1 << 14)
    rng = np.random.default_rng(6)
    raw = rng.normal(size=(2000, 1000)).astype(np.float32)  # 8 MB
    raw[:, 900:] = NAN  # padding
    tracemalloc.start()
    try:
        values, _ = clean(raw)
        scaled = Scaler.fit("global", values).transform(values)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scaled.dtype == np.float32
    assert peak < 2 * raw.nbytes + 4 * 2**20


def test_row_without_values_is_named():
    with pytest.raises(UserError, match=r"^row 2: no values"):
        clean(np.array([[1, 2], [NAN, NAN], [3, NAN]]))


def test_infinite_value_is_rejected():
    with pytest.raises(UserError, match=r"^row 1, column 2: infinite value"):
        clean(np.array([[1, np.inf]]))


def test_empty_and_invalid_shapes():
    values, lengths = clean(np.empty((0, 5)))
    assert values.shape == (0, 0)
    assert lengths.shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        clean(np.array([1.0, 2.0]))


def test_global_scaler_uses_valid_values_only():
    values = np.array([[1, 2, 3], [5, NAN, NAN]], dtype=np.float32)
    scaler = Scaler.fit("global", values)
    assert scaler.kind == "global"
    assert scaler.mean == pytest.approx(2.75)
    assert scaler.std == pytest.approx(np.std([1, 2, 3, 5]))
    scaled = scaler.transform(values)
    assert scaled.dtype == np.float32
    assert np.isnan(scaled[1, 1:]).all()
    np.testing.assert_allclose(scaled[0], (np.array([1, 2, 3]) - 2.75) / np.std([1, 2, 3, 5]))
    assert np.nanmean(scaled) == pytest.approx(0, abs=1e-6)
    assert np.nanstd(scaled) == pytest.approx(1, abs=1e-6)


def test_global_scaler_round_trips_through_json():
    scaler = Scaler.fit("global", np.array([[0.1, 0.2, NAN], [0.7, 1e3, -5]]))
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored == scaler
    data = np.array([[3.0, NAN]])
    np.testing.assert_array_equal(restored.transform(data), scaler.transform(data))


@pytest.mark.parametrize("constant", [0.0, 0.1, -7.3])
def test_global_scaler_constant_data_uses_std_one(constant):
    scaler = Scaler.fit("global", np.full((5, 3), constant, dtype=np.float32))
    assert scaler.std == 1.0
    assert (scaler.transform(np.full((1, 3), constant, dtype=np.float32)) == 0).all()


def test_series_scaler_normalises_each_row():
    rng = np.random.default_rng(3)
    values = rng.normal(3, 5, size=(4, 20)).astype(np.float32)
    values[1, 12:] = NAN
    values[2] = 0.1  # constant row
    values[3, 5:] = -2.5  # constant after padding: still constant
    values[3, :5] = -2.5
    values[3, 15:] = NAN
    scaler = Scaler.fit("series", values)
    assert scaler == Scaler("series")
    scaled = scaler.transform(values)
    assert scaled.dtype == np.float32
    for row in scaled[:2]:
        assert np.nanmean(row) == pytest.approx(0, abs=1e-5)
        assert np.nanstd(row) == pytest.approx(1, abs=1e-5)
    assert np.isnan(scaled[1, 12:]).all()
    np.testing.assert_array_equal(scaled[2], np.zeros(20))
    np.testing.assert_array_equal(scaled[3, :15], np.zeros(15))
    assert np.isnan(scaled[3, 15:]).all()
    assert Scaler.from_dict(json.loads(json.dumps(scaler.to_dict()))) == scaler


@pytest.mark.parametrize("kind", ["minmax", "", "Global"])
def test_unknown_scaler_kind(kind):
    with pytest.raises(UserError, match=r"unknown scaler kind .*global, series"):
        Scaler.fit(kind, np.ones((1, 2)))
    with pytest.raises(UserError, match="unknown scaler kind"):
        Scaler(kind)
    with pytest.raises(UserError, match="unknown scaler kind"):
        Scaler.from_dict({"kind": kind, "mean": 0.0, "std": 1.0})


@pytest.mark.parametrize(
    "document",
    [{}, {"mean": 1.0}, {"kind": "global", "std": 0.0}, {"kind": "global", "mean": "x"}, []],
)
def test_malformed_scaler_dict(document):
    with pytest.raises(UserError, match="invalid scaler parameters"):
        Scaler.from_dict(document)


def test_global_scaler_needs_values():
    with pytest.raises(UserError, match="no values"):
        Scaler.fit("global", np.full((2, 2), NAN))
