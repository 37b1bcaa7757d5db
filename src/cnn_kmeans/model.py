"""The estimator: `CNNKMeans(config).fit(X)`, then `transform`, `predict`, `distances`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnn_kmeans.clustering import prepare_features
from cnn_kmeans.config import Config
from cnn_kmeans.data import pad_rows
from cnn_kmeans.distributed import World
from cnn_kmeans.encoder import INFERENCE_CELLS, build_encoder
from cnn_kmeans.errors import UserError
from cnn_kmeans.preprocess import Scaler, clean
from cnn_kmeans.progress import Progress, log_epoch, visible
from cnn_kmeans.sweep import choose_k, degenerate_warning, min_cluster_size
from cnn_kmeans.threads import default_threads, process_cores, torch_threads
from cnn_kmeans.trainer import EpochReport, Trainer, as_tensor, encode_series, planned_epochs

log = logging.getLogger(__name__)

# Silhouette scores are computed on at most this many series (seeded sample).
SILHOUETTE_SAMPLE = 10_000
# ... in chunks of pairwise distances of this many MB. scikit-learn's default (1,024 MB) peaked
# ~450 MB higher and ran 3-4x slower on 10,000 series than 64 MB chunks, for the same score
# (benchmarks/bench_silhouette.py).
SILHOUETTE_WORKING_MB = 64
# Nearest-centroid assignment works on blocks of this many rows (bounded float64 temporaries).
ASSIGN_ROWS = 1 << 14
# KMeans fits of at least this many series x clusters get a line before and after (progress).
KMEANS_ANNOUNCE = 100_000
# KMeans runs its 10 restarts on at most this many series (a seeded sample), then Lloyd's
# iterations on all of them from the best restart's centroids. At 10^6 series of 320 features
# (one thread, two runs): 46-56 s instead of 279-291 s for 10 restarts on all, the same inertia;
# assigning all to the sample's centroids without iterating lost 0.01% inertia, MiniBatchKMeans
# 0.9% (`benchmarks/bench_scale.py --kmeans-options`, README, Scale).
KMEANS_SAMPLE = 100_000

SeriesLike = np.ndarray | Sequence[Sequence[float]]


def default_device() -> torch.device:
    """The GPU when one is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(X: SeriesLike) -> tuple[np.ndarray, np.ndarray]:
    """Raw series (NaN-padded 2-D array or a list of rows) -> cleaned (N, L) float32, lengths."""
    if isinstance(X, np.ndarray) and X.ndim == 2:
        values = X.astype(np.float32, copy=False)
    elif isinstance(X, np.ndarray) and X.ndim != 1:
        raise UserError(f"expected a 2-D array of series (N, L), got shape {X.shape}")
    else:
        values = pad_rows([np.asarray(row, dtype=np.float32).ravel() for row in X])
    if len(values) == 0:
        raise UserError("no series given: provide at least one row")
    return clean(values)


@dataclass
class Training:
    """A training run in progress: the trainer and the cleaned, scaled data it trains on."""

    trainer: Trainer
    train: np.ndarray  # (N, L) NaN after each series' end
    lengths: np.ndarray  # (N,)
    valid: np.ndarray | None = None
    valid_lengths: np.ndarray | None = None

    def run(
        self,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Train the remaining epochs (see `Trainer.fit`)."""
        self.trainer.fit(
            self.train, self.lengths, self.valid, self.valid_lengths, on_epoch, should_stop
        )


class CNNKMeans:
    """Dilated causal CNN encoder trained with a triplet loss, then KMeans on its features.

    Fitted attributes end in an underscore: `scaler_`, `encoder_`, `centroids_` (k, D),
    `labels_` (N,) of the training series, `sweep_` (one dict per k tried when `max_clusters` > 0).

    Args:
        config: the hyperparameters.
        device: where to compute (default: the GPU when one is visible).
        world: the data-parallel processes (default: this one alone).
        threads: torch threads while fitting and encoding (restored afterwards). None: torch's
            current count (which honours OMP_NUM_THREADS), lowered to the cores this process
            may use (CPU affinity, cgroup quota; see `cnn_kmeans.threads`).
        progress: log epochs and progress with an ETA on long encodes, KMeans and the k sweep
            (logger `cnn_kmeans`, INFO; to stderr when logging is not configured). False: quiet.
    """

    def __init__(
        self,
        config: Config | None = None,
        device: torch.device | None = None,
        world: World | None = None,
        *,
        threads: int | None = None,
        progress: bool = True,
    ):
        self.config = config or Config()
        self.world = world or World(device=device or default_device())
        self.device = self.world.device
        self.threads = threads
        self.progress = progress

    def _torch_threads(self) -> int:
        return self.threads if self.threads is not None else default_threads(process_cores())

    # -- fitting -------------------------------------------------------------------------------

    def fit(
        self,
        X: SeriesLike,
        X_valid: SeriesLike | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
    ) -> CNNKMeans:
        """Train the encoder on X (validation loss on X_valid if given), then fit KMeans.

        `on_epoch` is called after every epoch (besides the epoch line that `progress` logs).
        """

        def epoch_done(report: EpochReport) -> None:
            if self.progress:
                log_epoch(report)
            if on_epoch is not None:
                on_epoch(report)

        with visible(self.progress), torch_threads(self._torch_threads()):
            training = self.start(X, X_valid)
            training.run(epoch_done)
            self.finish(training)
        return self

    def start(
        self, X: SeriesLike, X_valid: SeriesLike | None = None, *, warm_start: bool = False
    ) -> Training:
        """Prepare a training run: clean and scale the data, build the encoder and its trainer.

        With `warm_start` the fitted encoder and scaler are kept (incremental training: the
        run adds `planned_epochs` passes to the weights it has); otherwise both are fitted anew.
        """
        values, lengths = prepare(X)
        self._check_cluster_count(len(lengths))
        if warm_start:
            if not hasattr(self, "encoder_"):
                raise UserError("warm start needs a fitted model; load one first")
            self.encoder_ = self.encoder_.to(self.device)
        else:
            self.scaler_ = Scaler.fit(self.config.scaling, values)
            self.encoder_ = build_encoder(self.config).to(self.device)
        valid = valid_lengths = None
        if X_valid is not None:
            valid_values, valid_lengths = prepare(X_valid)
            valid = self.scaler_.transform(valid_values)
        log.info(
            "training on %d series (length %d-%d), %d steps per epoch, device %s, "
            "%d torch thread(s)%s",
            len(lengths),
            lengths.min(),
            lengths.max(),
            -(-len(lengths) // self.config.batch_size),
            self.device,
            torch.get_num_threads(),
            _budget_note(self.config, len(lengths)),
        )
        trainer = Trainer(self.encoder_, self.config, self.world)
        return Training(trainer, self.scaler_.transform(values), lengths, valid, valid_lengths)

    def finish(self, training: Training) -> np.ndarray | None:
        """Fit KMeans on the trained encoder's features, prepared as `config.features` asks
        (the preparation is folded into the encoder); returns those features (N, D).

        Data-parallel: every rank encodes its shard, rank 0 gathers them and fits KMeans; the
        other ranks return None.
        """
        features = self.encode(training.train, training.lengths, distributed=True)
        if not self.world.leader:
            return None
        features = prepare_features(self.config.features, self.encoder_, features)
        self.fit_clusters(features)
        return features

    def fit_clusters(self, features: np.ndarray) -> None:
        """Fit KMeans on (N, D) features; with `max_clusters` choose k by `sweep.choose_k`: the
        best silhouette among the k whose clusters all reach `sweep.min_cluster_size`."""
        config = self.config
        self.sweep_: list[dict[str, Any]] = []
        k = config.clusters
        if config.max_clusters:
            top = min(config.max_clusters, len(features) - 1)
            if top < 2:
                raise UserError(
                    f"max-clusters={config.max_clusters} needs at least 3 series; "
                    f"got {len(features)}"
                )
            began = time.perf_counter()
            for done, candidate in enumerate(range(2, top + 1), start=1):
                kmeans = self._kmeans(candidate, features)
                score = silhouette(features, kmeans.labels_, config.seed)
                smallest = int(np.bincount(kmeans.labels_, minlength=candidate).min())
                self.sweep_.append(
                    {
                        "k": candidate,
                        "silhouette": score,
                        "inertia": float(kmeans.inertia_),
                        "smallest": smallest,
                    }
                )
                elapsed = time.perf_counter() - began
                log.info(
                    "k=%d silhouette=%.4f inertia=%.4g smallest cluster %d  (%d/%d)  "
                    "elapsed %.1f s  ETA %.1f s",
                    candidate,
                    score,
                    kmeans.inertia_,
                    smallest,
                    done,
                    top - 1,
                    elapsed,
                    elapsed / done * (top - 1 - done),
                )
            k = choose_k(self.sweep_, len(features))
            if any(row["eligible"] for row in self.sweep_):
                log.info(
                    "chose k=%d (best silhouette among the k whose clusters all hold %d series "
                    "or more)",
                    k,
                    min_cluster_size(len(features)),
                )
            else:
                log.warning("chose k=%d (best silhouette; every k tried has a tiny cluster)", k)
        self.centroids_ = self._kmeans(k, features).cluster_centers_.astype(np.float32)
        self.labels_ = self.assign(features)[0]
        warning = degenerate_warning(np.bincount(self.labels_, minlength=k))
        if warning:
            log.warning("%s", warning)

    def _kmeans(self, k: int, features: np.ndarray) -> Any:
        # scikit-learn is imported only to fit: inference (nearest centroid) never needs it,
        # which keeps ~85 MB out of every serving worker.
        from sklearn.cluster import KMeans

        self._check_cluster_count(len(features), k)
        algorithm, seed = self.config.algorithm, self.config.seed
        # scikit-learn runs the 10 restarts inside one call, so long fits get a line before and
        # after: running the restarts one by one here would reproduce its result only through
        # its private functions (its seeding of each restart), which differ across versions.
        began = time.perf_counter()
        announce = self.progress and len(features) * k >= KMEANS_ANNOUNCE
        sampled = len(features) > KMEANS_SAMPLE
        if announce:
            log.info(
                "KMeans k=%d (%s, 10 restarts%s) on %d x %d features...",
                k,
                algorithm,
                f" on {KMEANS_SAMPLE:,} sampled series, then on all" if sampled else "",
                *features.shape,
            )
        restarts = KMeans(n_clusters=k, algorithm=algorithm, n_init=10, random_state=seed)
        if sampled:
            rows = np.random.default_rng(seed).choice(len(features), KMEANS_SAMPLE, replace=False)
            start = restarts.fit(features[np.sort(rows)]).cluster_centers_
            kmeans = KMeans(
                n_clusters=k, algorithm=algorithm, init=start, n_init=1, random_state=seed
            ).fit(features)
        else:
            kmeans = restarts.fit(features)
        if announce:
            log.info(
                "KMeans k=%d fitted in %.1f s (%d iterations%s, inertia %.4g)",
                k,
                time.perf_counter() - began,
                kmeans.n_iter_,
                " on all" if sampled else "",
                kmeans.inertia_,
            )
        return kmeans

    def _check_cluster_count(self, count: int, k: int | None = None) -> None:
        k = k or (2 if self.config.max_clusters else self.config.clusters)
        if k > count:
            raise UserError(
                f"clusters={k} but the training data has only {count} series; "
                "lower clusters or provide more series"
            )

    # -- inference -----------------------------------------------------------------------------

    def transform(self, X: SeriesLike) -> np.ndarray:
        """Features (N, D) float32 of raw series (D = encoders x output_size)."""
        values, lengths = prepare(X)
        with visible(self.progress), torch_threads(self._torch_threads()):
            return self.encode(self.scaler_.transform(values), lengths)

    def predict(self, X: SeriesLike) -> np.ndarray:
        """Cluster labels (N,) int64 of raw series."""
        return self.assign(self.transform(X))[0]

    def distances(self, X: SeriesLike) -> np.ndarray:
        """Euclidean distances (N, k) float32 from each series' features to each centroid."""
        return self.assign(self.transform(X))[1]

    def assign(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of (N, D) features: labels (N,) int64 and distances (N, k) float32."""
        c = self.centroids_.astype(np.float64)
        c_squared = (c * c).sum(1)[None, :]
        labels = np.empty(len(features), dtype=np.int64)
        distances = np.empty((len(features), len(c)), dtype=np.float32)
        # In blocks of rows: float64 copies of 10^6 features were 5 GB (bench_scale).
        for begin in range(0, len(features), ASSIGN_ROWS):
            f = features[begin : begin + ASSIGN_ROWS].astype(np.float64)
            squared = (f * f).sum(1)[:, None] - 2.0 * f @ c.T + c_squared
            np.maximum(squared, 0.0, out=squared)
            labels[begin : begin + len(f)] = squared.argmin(axis=1)
            distances[begin : begin + len(f)] = np.sqrt(squared)
        return labels, distances

    def score(self, X: SeriesLike) -> float:
        """Silhouette coefficient of the predicted labels on the features of X."""
        features = self.transform(X)
        return silhouette(features, self.assign(features)[0], self.config.seed)

    @property
    def n_clusters_(self) -> int:
        """The number of clusters in use (differs from `clusters` after a k sweep)."""
        return len(self.centroids_)

    def encode(
        self, scaled: np.ndarray, lengths: np.ndarray, *, distributed: bool = False
    ) -> np.ndarray:
        """Features (N, D) of cleaned, scaled series.

        With `distributed` (a collective: every rank must call it) each rank encodes its shard
        and all of them receive every row.
        """
        world = self.world if distributed else World(device=self.device)
        progress = Progress(
            "encoding", len(world.shard(len(lengths))), "series", enabled=self.progress
        )
        features = encode_series(
            self.encoder_,
            as_tensor(scaled, self.device),
            lengths,
            world,
            INFERENCE_CELLS,
            on_batch=progress.update,
        )
        progress.finish()
        return features.cpu().numpy()

    def summary(self) -> dict[str, Any]:
        """What a fitted model is, in plain values (for reports and config.json)."""
        return {
            "clusters": self.n_clusters_,
            "feature_size": int(self.centroids_.shape[1]),
            "sweep": self.sweep_,
        }


def silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Silhouette coefficient on at most `SILHOUETTE_SAMPLE` series; NaN if it is undefined."""
    distinct = len(np.unique(labels))
    if not 2 <= distinct <= len(labels) - 1:
        return float("nan")
    from sklearn import config_context  # see CNNKMeans._kmeans
    from sklearn.metrics import silhouette_score

    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    with config_context(working_memory=SILHOUETTE_WORKING_MB):
        return float(silhouette_score(features, labels, sample_size=sample, random_state=seed))


def _budget_note(config: Config, series: int) -> str:
    """Why a job makes other than `epochs` passes (min-steps or max-steps), for the log."""
    passes = planned_epochs(config, series)
    if passes < config.epochs:
        return f"; {passes} epochs, not {config.epochs}: max-steps={config.max_steps}"
    if passes > config.epochs:
        return f"; {passes} epochs, not {config.epochs}: min-steps={config.min_steps}"
    return ""
