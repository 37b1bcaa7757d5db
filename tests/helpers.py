"""Test helpers: the shipped sample data, small configurations, a harder synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_kmeans.config import Config

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def read_labels(split: str) -> np.ndarray:
    """The generator's true labels of a sample split ('train', 'valid' or 'test')."""
    return np.loadtxt(DATA / "labels" / f"{split}.csv", dtype=np.int64)


def tiny_config(**changes) -> Config:
    """A small, fast encoder for tests."""
    base = dict(blocks=2, filters=8, reduced_size=16, output_size=8, epochs=2, clusters=3)
    return Config(**{**base, **changes})


def cylinder_bell_funnel(
    count: int, seed: int, low: int = 64, high: int = 128, noise: float = 1.0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Cylinder-bell-funnel series (Saito, 1994) of random lengths in [low, high], with labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    rows = []
    for label in labels:
        length = int(rng.integers(low, high + 1))
        t = np.arange(length)
        a = int(rng.integers(length // 8, length // 4))
        b = a + int(rng.integers(length // 4, 3 * length // 4))
        inside = (t >= a) & (t <= b)
        amplitude = 6.0 + rng.normal()
        shape = np.ones(length)
        if label == 1:
            shape = (t - a) / max(b - a, 1)
        elif label == 2:
            shape = (b - t) / max(b - a, 1)
        rows.append((amplitude * shape * inside + rng.normal(0, noise, length)).astype(np.float32))
    return rows, labels
