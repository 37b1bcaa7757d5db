"""Hyperparameters as SageMaker passes them (strings in hyperparameters.json) -> Config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cnn_kmeans.config import ARCHITECTURE, BY_NAME, Config
from cnn_kmeans.errors import UserError

# Keys SageMaker or the tuning service inject; they are not ours to validate.
IGNORED_KEYS = ("_tuning_objective_metric",)
IGNORED_PREFIXES = ("sagemaker_",)


def user_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The user's hyperparameters: injected keys dropped, JSON-quoted strings unquoted.

    Accepts raw (`lloyd`, `3`) and JSON-quoted (`"lloyd"`, `"3"`) forms, whether or not the
    toolkit already decoded them.
    """
    values = {}
    for key, value in raw.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            continue
        values[key] = _unquote(value)
    return values


def _unquote(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def parse(raw: Mapping[str, Any]) -> Config:
    """Validated Config; unknown names, wrong types and out-of-range values raise UserError."""
    return Config.from_dict(user_hyperparameters(raw))


def continued(previous: Config, raw: Mapping[str, Any]) -> Config:
    """The config of incremental training: the model's architecture (and scaling), and this
    job's hyperparameters (defaults where not given) for everything else, as in any new job.

    Architecture hyperparameters given for this run must equal the previous model's.
    """
    given = user_hyperparameters(raw)
    requested = parse(given)  # validates every given value first
    # A registered algorithm's jobs get every declared default filled in (AlgorithmEstimator
    # does it), so an architecture value equal to its default does not count as given.
    names = {
        name
        for name in (key.replace("_", "-") for key in given)
        if name not in ARCHITECTURE or requested.to_dict()[name] != BY_NAME[name].default
    }
    clashes = [
        f"{name}={requested.to_dict()[name]!r} (model has {previous.to_dict()[name]!r})"
        for name in ARCHITECTURE
        if name in names and requested.to_dict()[name] != previous.to_dict()[name]
    ]
    if clashes:
        raise UserError(
            "incremental training keeps the model's architecture, but these hyperparameters "
            f"differ: {'; '.join(clashes)}; remove them or set them to the model's values"
        )
    merged = requested.to_dict()
    merged.update({name: previous.to_dict()[name] for name in ARCHITECTURE})
    return Config.from_dict(merged)
