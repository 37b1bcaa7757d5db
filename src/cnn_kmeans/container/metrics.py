"""Metric lines SageMaker scrapes from the log: one format, and the regexes that match it."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TextIO

# A number as `format_value` prints it: sign, digits, point, exponent (e.g. -0.0421, 1.5e-05).
NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"


@dataclass(frozen=True)
class Metric:
    """A metric the training job logs."""

    name: str
    help: str
    maximize: bool  # the direction a tuning job should take

    @property
    def regex(self) -> str:
        """The MetricDefinitions regex: the value is the first group."""
        return rf"{self.name}: ({NUMBER})"


METRICS: tuple[Metric, ...] = (
    Metric("train_loss", "triplet loss on the training series, after every epoch", False),
    Metric(
        "valid_loss",
        "triplet loss on the validation series (fixed windows), after every epoch",
        False,
    ),
    Metric("train_score", "silhouette coefficient of the training clusters, at the end", True),
    Metric(
        "valid_score", "silhouette coefficient of the validation series' clusters, at the end", True
    ),
)
BY_NAME = {metric.name: metric for metric in METRICS}


def metric_definitions() -> list[dict[str, str]]:
    """`MetricDefinitions` for CreateAlgorithm / an Estimator."""
    return [{"Name": metric.name, "Regex": metric.regex} for metric in METRICS]


def format_value(value: float) -> str:
    """Up to 6 significant digits; exponent notation for very small or large values."""
    return f"{value:.6g}"


def emit(name: str, value: float, stream: TextIO | None = None) -> None:
    """Print `name: value` on its own line, flushed at once; non-finite values are not metrics."""
    if name not in BY_NAME:
        raise KeyError(f"undeclared metric {name!r}")
    if not math.isfinite(value):
        return
    out = stream or sys.stdout
    out.write(f"{name}: {format_value(value)}\n")
    out.flush()


def markdown_table() -> str:
    """The README's metric table, generated from the declarations."""
    lines = ["| metric | regex (MetricDefinitions) | tuning | meaning |", "|---|---|---|---|"]
    for metric in METRICS:
        direction = "Maximize" if metric.maximize else "Minimize"
        lines.append(f"| {metric.name} | `{metric.regex}` | {direction} | {metric.help} |")
    return "\n".join(lines)
