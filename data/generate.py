"""Generate the sample channels: three clusters of synthetic series (seeded, reproducible).

    python data/generate.py            # rewrites the CSV files beside this script

Cluster 0 is a noisy sine wave, cluster 1 a flat line with one raised plateau, cluster 2 a
noisy ramp with a sharp drop. Rows have different lengths (some padded with trailing empty
fields), some cells are missing (empty, `nan`, `NA`, `null`), including leading and trailing
gaps. The true labels go to `labels/` (not a channel: training reads every file of a channel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPLITS = {  # name: (path of the channel file, number of series, seed)
    "train": ("training/train.csv", 160, 1),
    "valid": ("validation/valid.csv", 100, 2),
    "test": ("inference/input/test.csv", 100, 3),
}
MISSING_TOKENS = ("", "nan", "NA", "null")


def make_series(label: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """One series of the given cluster, (length,) float64."""
    t = np.linspace(0.0, 1.0, length)
    if label == 0:
        cycles = rng.uniform(2.5, 3.5)
        values = np.sin(2 * np.pi * (cycles * t + rng.uniform()))
    elif label == 1:
        begin = rng.uniform(0.15, 0.45)
        end = begin + rng.uniform(0.25, 0.4)
        values = np.where((t >= begin) & (t <= end), 1.5, -0.5)
    else:
        drop = rng.uniform(0.6, 0.85)
        values = np.where(t < drop, 3.0 * t / drop - 1.5, -1.5)
    scale = rng.uniform(0.8, 1.2)
    return scale * values + rng.normal(0.0, 0.2, length)


def make_split(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """CSV lines and labels for one split."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % 3)
    lines = []
    for label in labels:
        values = make_series(int(label), int(rng.integers(60, 141)), rng)
        cells = [f"{v:.4f}" for v in values]
        for i in np.flatnonzero(rng.random(len(cells)) < 0.03):
            cells[i] = MISSING_TOKENS[rng.integers(len(MISSING_TOKENS))]
        if rng.random() < 0.1:  # a gap at the start: the series starts at its first value
            gap = int(rng.integers(1, 4))
            cells[:gap] = [""] * gap
        if rng.random() < 0.2:  # trailing empty fields, as spreadsheets write ragged rows
            cells += [""] * int(rng.integers(1, 20))
        lines.append(",".join(cells))
    return lines, labels


def main() -> None:
    """Write every split and its labels."""
    for name, (path, count, seed) in SPLITS.items():
        lines, labels = make_split(count, seed)
        target = HERE / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n")
        label_file = HERE / "labels" / f"{name}.csv"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("\n".join(str(v) for v in labels) + "\n")
        print(f"wrote {target.relative_to(HERE)} ({count} series)")


if __name__ == "__main__":
    main()
