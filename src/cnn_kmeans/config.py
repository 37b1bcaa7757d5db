"""Hyperparameters: declared once, used for parsing, validation, CLI flags, docs and the spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cnn_kmeans.errors import UserError


@dataclass(frozen=True)
class Hyperparameter:
    """The declaration of one hyperparameter (name as users spell it, with hyphens)."""

    name: str
    kind: type  # int, float or str
    default: Any
    help: str
    tunable: bool = True
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    rejected: tuple[Any, ...] = ()  # values inside [low, high] that are still not allowed

    @property
    def field(self) -> str:
        """The attribute name on `Config` (underscores)."""
        return self.name.replace("-", "_")

    def allowed(self) -> str:
        """Human description of the allowed values, used in error messages and docs."""
        if self.choices:
            return ", ".join(self.choices)
        text = f"{_fmt(self.low)}–{_fmt(self.high)}"
        if self.rejected:
            text += f" ({', '.join(_fmt(v) for v in self.rejected)} is rejected)"
        return text

    def check(self, value: Any) -> Any:
        """Return `value` converted to this type, or raise UserError naming the hyperparameter."""
        try:
            converted = _convert(self.kind, value)
        except (TypeError, ValueError):
            raise UserError(
                f"hyperparameter {self.name}={value!r} is not a valid {self.kind.__name__}; "
                f"allowed: {self.allowed()}"
            ) from None
        ok = (
            converted in self.choices
            if self.choices
            else (self.low <= converted <= self.high and converted not in self.rejected)
        )
        if not ok:
            raise UserError(
                f"hyperparameter {self.name}={value!r} is out of range; allowed: {self.allowed()}"
            )
        return converted


def _fmt(v: float | None) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _convert(kind: type, value: Any) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                as_float = float(text)  # accepts "1e3"; rejects junk with ValueError
                if not as_float.is_integer():
                    raise
                return int(as_float)
        return int(value)
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(value)
    return number


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("clusters", int, 8, "number of clusters", low=2, high=1024),
    Hyperparameter("algorithm", str, "lloyd", "KMeans algorithm", choices=("lloyd", "elkan")),
    Hyperparameter(
        "blocks",
        int,
        10,
        "blocks of `filters` channels (one final block of `reduced-size` follows)",
        low=1,
        high=20,
    ),
    Hyperparameter("filters", int, 40, "channels of all but the last block", low=1, high=1024),
    Hyperparameter("kernel-size", int, 3, "kernel of the causal convolutions", low=2, high=32),
    Hyperparameter("reduced-size", int, 160, "channels of the last block", low=1, high=1024),
    Hyperparameter("output-size", int, 320, "number of features", low=1, high=4096),
    Hyperparameter("negative-samples", int, 10, "negatives per anchor", low=1, high=100),
    Hyperparameter("lr", float, 0.001, "Adam learning rate", low=1e-6, high=1.0),
    Hyperparameter(
        "batch-size",
        int,
        10,
        "anchor series per optimisation step (global, across all processes)",
        low=1,
        high=4096,
    ),
    Hyperparameter("epochs", int, 100, "passes over the training series", low=1, high=10000),
    Hyperparameter(
        "min-steps",
        int,
        0,
        "when >0: at least this many optimisation steps; the job makes "
        "max(epochs, ⌈min-steps / ⌈N / batch-size⌉⌉) passes (the paper: 1,500 steps whatever N)",
        low=0,
        high=10_000_000,
    ),
    Hyperparameter(
        "max-steps",
        int,
        1500,
        "when >0: at most this many optimisation steps, rounded up to a whole pass; the job "
        "makes min(epochs, ⌈max-steps / ⌈N / batch-size⌉⌉) passes (min-steps wins if it asks "
        "for more; 0: every pass of epochs). The paper: 1,500 steps whatever N; epochs=100 "
        "gives 100 x ⌈N / batch-size⌉",
        low=0,
        high=10_000_000,
    ),
    Hyperparameter(
        "scaling",
        str,
        "global",
        "internal scaling: one mean/std over all training values, or each series z-normalised",
        choices=("global", "series"),
    ),
    Hyperparameter(
        "position",
        str,
        "none",
        "a second input channel with each step's place in its series, t / (L - 1) from 0 at the "
        "first step to 1 at the last, so features can tell where a pattern occurs (the paper: "
        "none)",
        choices=("none", "relative"),
    ),
    Hyperparameter(
        "pooling",
        str,
        "max",
        "how each channel is pooled over a series' length before the final linear layer: its "
        "maximum (the paper), or its maximum and its mean side by side (max-mean: how much of "
        "the series a pattern fills, as ROCKET's proportion of positive values, beside whether "
        "it occurs)",
        choices=("max", "max-mean"),
    ),
    Hyperparameter(
        "features",
        str,
        "raw",
        "features before KMeans: as the encoder gives them, standardised, or whitened (PCA, 90% "
        "of the variance); fitted on the training series and folded into the encoder",
        choices=("raw", "standardised", "whitened"),
    ),
    Hyperparameter(
        "positive-augment",
        float,
        0.0,
        "when >0 (a): each positive window is scaled by U[1-a, 1+a], shifted by U[-a, a] and "
        "jittered by N(0, (a/4)²) in internal units, for amplitude, offset and noise invariance",
        low=0.0,
        high=1.0,
    ),
    Hyperparameter(
        "min-window",
        float,
        0.0,
        "when >0 (f): every triplet window of a series of length L is at least ⌈f·L⌉ long (the "
        "paper: 1), so training sees windows closer to the whole series that are clustered",
        low=0.0,
        high=1.0,
    ),
    Hyperparameter(
        "whole-anchors",
        float,
        0.0,
        "when >0 (p): each step, with probability p, every anchor is its whole series (the "
        "windows that are clustered) and its positive a window of it (the paper: random windows)",
        low=0.0,
        high=1.0,
    ),
    Hyperparameter(
        "negative-drop",
        float,
        0.0,
        "when >0 (d): each anchor's ⌈d·K⌉ nearest negatives are left out of the loss, the "
        "likeliest to share its cluster (the paper: all K count)",
        low=0.0,
        high=0.9,
    ),
    Hyperparameter(
        "cluster-epochs",
        int,
        0,
        "when >0: a clustering stage of this many more passes after the triplet epochs (IDEC: "
        "the triplet loss + cluster-weight x KL divergence sharpening soft assignments to "
        "centroids started by KMeans); KMeans is then fitted again. Needs max-clusters=0",
        low=0,
        high=10000,
    ),
    Hyperparameter(
        "cluster-weight",
        float,
        1.0,
        "weight of the clustering stage's KL divergence against the triplet loss",
        low=0.0,
        high=100.0,
    ),
    Hyperparameter(
        "encoders",
        int,
        1,
        "encoders trained one after another, each as a job of its own seed (seed x encoders + "
        "i) would train it; the features are theirs concatenated, each encoder's scaled to unit "
        "mean variance over the training series. Training takes `encoders` times as long",
        low=1,
        high=16,
    ),
    Hyperparameter(
        "seed",
        int,
        0,
        "seeds sampling, init and KMeans",
        tunable=False,
        low=0,
        high=2**31 - 1,
    ),
    Hyperparameter(
        "max-clusters",
        int,
        0,
        "when >0: score every k in 2..max-clusters on the learned features and use, instead "
        "of `clusters`, the k with the best silhouette among those whose smallest cluster "
        "holds at least max(2, 1% of the series) (any k if none does)",
        tunable=False,
        low=0,
        high=100,
        rejected=(1,),
    ),
)

BY_NAME: dict[str, Hyperparameter] = {hp.name: hp for hp in HYPERPARAMETERS}

# Hyperparameters that fix the encoder's shape: an artifact can only be trained further with them.
ARCHITECTURE = (
    "blocks",
    "filters",
    "kernel-size",
    "reduced-size",
    "output-size",
    "scaling",
    "position",
    "pooling",
    "encoders",
)


@dataclass(frozen=True)
class Config:
    """All hyperparameters, validated. Field names are the hyperparameter names with underscores."""

    clusters: int = 8
    algorithm: str = "lloyd"
    blocks: int = 10
    filters: int = 40
    kernel_size: int = 3
    reduced_size: int = 160
    output_size: int = 320
    negative_samples: int = 10
    lr: float = 0.001
    batch_size: int = 10
    epochs: int = 100
    min_steps: int = 0
    max_steps: int = 1500
    scaling: str = "global"
    position: str = "none"
    pooling: str = "max"
    features: str = "raw"
    positive_augment: float = 0.0
    min_window: float = 0.0
    whole_anchors: float = 0.0
    negative_drop: float = 0.0
    cluster_epochs: int = 0
    cluster_weight: float = 1.0
    encoders: int = 1
    seed: int = 0
    max_clusters: int = 0

    def __post_init__(self) -> None:
        for hp in HYPERPARAMETERS:
            object.__setattr__(self, hp.field, hp.check(getattr(self, hp.field)))
        if self.cluster_epochs and self.max_clusters:
            raise UserError(
                f"cluster-epochs={self.cluster_epochs} clusters around `clusters` centroids and "
                f"max-clusters={self.max_clusters} chooses k after training: set one of them to 0"
            )
        if self.encoders > 1 and self.cluster_epochs:
            raise UserError(
                f"cluster-epochs={self.cluster_epochs} trains one encoder's features; with "
                f"encoders={self.encoders} set one of them to its default (0 or 1)"
            )
        if self.encoders > 1 and self.features == "whitened":
            raise UserError(
                f"features=whitened mixes all features, but with encoders={self.encoders} each "
                "encoder's features are prepared on their own: use features=raw or standardised, "
                "or encoders=1"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """Build from hyperparameter names (hyphens or underscores); unknown names are an error."""
        kwargs = {}
        for key, value in values.items():
            hp = BY_NAME.get(key.replace("_", "-"))
            if hp is None:
                raise UserError(f"unknown hyperparameter {key!r}; known: {', '.join(BY_NAME)}")
            kwargs[hp.field] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameter names (hyphens) to values."""
        return {hp.name: getattr(self, hp.field) for hp in HYPERPARAMETERS}

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_declarations() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Config)}
    declared = {hp.field: hp.default for hp in HYPERPARAMETERS}
    if fields != declared:  # pragma: no cover - guards edits to this file
        raise RuntimeError(f"Config fields {fields} differ from declarations {declared}")


_check_declarations()


def markdown_table() -> str:
    """The README's hyperparameter table, generated from the declarations."""
    lines = [
        "| name | type | default | allowed | tunable | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for hp in HYPERPARAMETERS:
        lines.append(
            f"| {hp.name} | {hp.kind.__name__} | {hp.default} | {hp.allowed()} | "
            f"{'yes' if hp.tunable else 'no'} | {hp.help} |"
        )
    return "\n".join(lines)
