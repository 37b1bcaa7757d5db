"""Cleaning (gap interpolation, trimming) and scaling of NaN-padded (N, L) series arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn_kmeans.errors import ArtifactError, UserError

__all__ = ["SCALER_KINDS", "Scaler", "clean"]

SCALER_KINDS = ("global", "series")

# Cells per block of rows in clean() and the Scaler: bounds their int64/float64 temporaries to
# ~10 MB whatever the data. Cleaning and scaling 10^5 x 150 values (60 MB) peaked at 421 MB
# traced (whole-array float64 copies and masks) before blocks; with blocks of 2^21 cells 217 MB,
# of 2^17 123 MB (the two float32 results and the blocks) and 3.5x faster (cache-sized blocks).
_BLOCK_CELLS = 1 << 17


def clean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate inner gaps linearly and trim leading/trailing gaps.

    Args:
        values: (N, L) float array, NaN for missing cells and padding.

    Returns:
        values (N, L') float32, each series left-aligned with NaN after its end, where L' is the
        longest cleaned length; lengths (N,) int64.

    Raises:
        UserError: If a row has no value or holds an infinite value (rows are named 1-based).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D (N, L) array, got shape {values.shape}")
    n, width = values.shape
    if n == 0:
        return np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    # Block by block: the whole array is never copied to float64 (at 10^6 series the copies and
    # masks of the whole array were several times the values).
    blocks = _row_blocks(values)
    first = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    for rows in blocks:
        v = values[rows]
        if np.isinf(v).any():
            row, col = np.argwhere(np.isinf(v))[0]
            raise UserError(
                f"row {rows.start + row + 1}, column {col + 1}: infinite value; use finite numbers "
                "only"
            )
        valid = ~np.isnan(v)
        has_value = valid.any(axis=1)
        if not has_value.all():
            row = rows.start + int(np.argmin(has_value))
            raise UserError(
                f"row {row + 1}: no values (every cell is missing); remove the row or give it at "
                "least one number"
            )
        first[rows] = valid.argmax(axis=1)
        lengths[rows] = width - valid[:, ::-1].argmax(axis=1) - first[rows]
    out = np.empty((n, int(lengths.max())), dtype=np.float32)
    for rows in blocks:
        v = values[rows].astype(np.float64)
        out[rows] = _clean_block(v, ~np.isnan(v), first[rows], lengths[rows], out.shape[1])
    return out, lengths


def _row_blocks(values: np.ndarray) -> list[slice]:
    """Blocks of rows of `_BLOCK_CELLS` cells of a 2-D (or 1-D) array."""
    rows = max(1, _BLOCK_CELLS // max(values.shape[1] if values.ndim == 2 else 1, 1))
    return [slice(start, start + rows) for start in range(0, len(values), rows)]


def _clean_block(
    v: np.ndarray, valid: np.ndarray, first: np.ndarray, lengths: np.ndarray, out_width: int
) -> np.ndarray:
    """clean() on a block of rows: v, valid (B, L); first, lengths (B,); returns (B, out_width)."""
    width = v.shape[1]
    cols = np.arange(width)
    # Index of the nearest valid cell at or before / at or after each position.
    prev = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(valid, cols, width)[:, ::-1], axis=1)[:, ::-1]
    inner_gap = ~valid & (prev >= 0) & (nxt < width)
    prev = np.clip(prev, 0, width - 1)
    nxt = np.clip(nxt, 0, width - 1)
    left = np.take_along_axis(v, prev, axis=1)
    right = np.take_along_axis(v, nxt, axis=1)
    frac = (cols - prev) / np.maximum(nxt - prev, 1)
    with np.errstate(invalid="ignore"):  # NaN outside the series is expected and discarded
        filled = np.where(inner_gap, left + (right - left) * frac, v)
    steps = np.arange(out_width)
    shifted = np.take_along_axis(filled, np.minimum(first[:, None] + steps, width - 1), axis=1)
    shifted[steps >= lengths[:, None]] = np.nan
    return shifted


@dataclass(frozen=True)
class Scaler:
    """Value scaling: "global" (one mean/std fitted on training data) or "series" (per row).

    Attributes:
        kind: "global" or "series".
        mean: Fitted mean (global only).
        std: Fitted standard deviation, never 0 (global only).
    """

    kind: str
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise UserError(
                f"invalid scaler parameters mean={self.mean!r}, std={self.std!r}; the mean must be "
                "finite and the std finite and positive"
            )

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> Scaler:
        """Fit a scaler of this kind on cleaned NaN-padded (N, L) values; NaN cells are ignored."""
        _check_kind(kind)
        if kind == "series":
            return cls("series")
        values = np.asarray(values)

        # Two passes over blocks of rows, each block's values compacted to float64 (the whole
        # array is never copied): on data of one block, exactly numpy's mean and std.
        def blocks():
            for rows in _row_blocks(values):
                block = values[rows]
                data = block[~np.isnan(block)].astype(np.float64)
                if len(data):
                    yield data

        count, total, lowest, highest = 0, 0.0, np.inf, -np.inf
        for data in blocks():
            count, total = count + len(data), total + data.sum()
            lowest, highest = min(lowest, data.min()), max(highest, data.max())
        if count == 0:
            raise UserError("cannot fit the global scaler: the training data holds no values")
        mean = float(total / count)
        std = float(np.sqrt(sum(((data - mean) ** 2).sum() for data in blocks()) / count))
        # Constant data gives std 0 (or rounding noise); 1 keeps values finite and unscaled.
        if not np.isfinite(std) or std == 0 or lowest == highest:
            std = 1.0
        return cls("global", mean=mean, std=std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scale (N, L) values; returns (N, L) float32 with NaN cells (padding) kept NaN."""
        values = np.asarray(values)
        if self.kind == "global" and values.ndim != 2:
            return self._scale(values)
        if values.ndim != 2:
            raise ValueError(f"expected a 2-D (N, L) array, got shape {values.shape}")
        # Block by block into the float32 result: float64 temporaries stay bounded.
        out = np.empty(values.shape, dtype=np.float32)
        for rows in _row_blocks(values):
            out[rows] = self._scale(values[rows])
        return out

    def _scale(self, values: np.ndarray) -> np.ndarray:
        """`transform` of one block."""
        v = np.asarray(values, dtype=np.float64)
        if self.kind == "global":
            return ((v - self.mean) / self.std).astype(np.float32)
        valid = ~np.isnan(v)
        count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
        mean = np.where(valid, v, 0.0).sum(axis=1, keepdims=True) / count
        lowest = np.where(valid, v, np.inf).min(axis=1, keepdims=True)
        highest = np.where(valid, v, -np.inf).max(axis=1, keepdims=True)
        constant = lowest == highest
        # Subtracting the exact common value makes a constant row exactly zero, not rounding noise.
        mean = np.where(constant, lowest, mean)
        std = np.sqrt((np.where(valid, v - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
        std = np.where(constant | ~(std > 0), 1.0, std)
        return ((v - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters, inverse of from_dict."""
        return {"kind": self.kind, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Scaler from to_dict output; raises ArtifactError (a UserError) if it is malformed."""
        try:
            kind, mean, std = d["kind"], float(d.get("mean", 0.0)), float(d.get("std", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(
                f"invalid scaler parameters {d!r}; expected a dict with kind, mean and std"
            ) from exc
        try:
            return cls(kind, mean=mean, std=std)
        except UserError as exc:
            raise ArtifactError(f"invalid scaler parameters in the model artifact: {exc}") from exc


def _check_kind(kind: str) -> None:
    """Raise UserError unless kind is a known scaler kind."""
    if kind not in SCALER_KINDS:
        raise UserError(f"unknown scaler kind {kind!r}; use one of: {', '.join(SCALER_KINDS)}")


def inner_gaps(values: np.ndarray) -> int:
    """Missing cells between each row's first and last value (those `clean` interpolates)."""
    valid = ~np.isnan(np.asarray(values))
    if valid.size == 0:
        return 0
    before = np.maximum.accumulate(valid, axis=1)
    after = np.maximum.accumulate(valid[:, ::-1], axis=1)[:, ::-1]
    return int((before & after & ~valid).sum())
