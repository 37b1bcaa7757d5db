"""Hyperparameter declarations: defaults and ranges of the spec, strict validation."""

from __future__ import annotations

import pytest

from cnn_kmeans.config import BY_NAME, HYPERPARAMETERS, Config
from cnn_kmeans.errors import UserError

# SPEC §5: name -> (type, default, allowed, tunable)
SPEC_TABLE = {
    "clusters": (int, 8, "2–1024", True),
    "algorithm": (str, "lloyd", "lloyd, elkan", True),
    "blocks": (int, 10, "1–20", True),
    "filters": (int, 40, "1–1024", True),
    "kernel-size": (int, 3, "2–32", True),
    "reduced-size": (int, 160, "1–1024", True),
    "output-size": (int, 320, "1–4096", True),
    "negative-samples": (int, 10, "1–100", True),
    "lr": (float, 0.001, "1e-06–1", True),
    "batch-size": (int, 10, "1–4096", True),
    "epochs": (int, 100, "1–10000", True),
    "min-steps": (int, 0, "0–10000000", True),
    "max-steps": (int, 1500, "0–10000000", True),
    "scaling": (str, "global", "global, series", True),
    "position": (str, "none", "none, relative", True),
    "pooling": (str, "max", "max, max-mean", True),
    "features": (str, "raw", "raw, standardised, whitened", True),
    "positive-augment": (float, 0.0, "0–1", True),
    "min-window": (float, 0.0, "0–1", True),
    "whole-anchors": (float, 0.0, "0–1", True),
    "negative-drop": (float, 0.0, "0–0.9", True),
    "cluster-epochs": (int, 0, "0–10000", True),
    "cluster-weight": (float, 1.0, "0–100", True),
    "encoders": (int, 1, "1–16", True),
    "seed": (int, 0, "0–2147483647", False),
    "max-clusters": (int, 0, "0–100 (1 is rejected)", False),
}


def test_declarations_match_the_spec():
    got = {hp.name: (hp.kind, hp.default, hp.allowed(), hp.tunable) for hp in HYPERPARAMETERS}
    assert got == SPEC_TABLE
    assert Config().to_dict() == {name: row[1] for name, row in SPEC_TABLE.items()}


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("clusters", "3", 3),
        ("clusters", " 12 ", 12),
        ("epochs", "1e3", 1000),
        ("clusters", 5.0, 5),
        ("lr", "1e-3", 0.001),
        ("lr", "0.5", 0.5),
        ("algorithm", "elkan", "elkan"),
        ("seed", str(2**31 - 1), 2**31 - 1),
    ],
)
def test_strings_and_numbers_are_converted(name, text, value):
    assert BY_NAME[name].check(text) == value


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("clusters", "1", "2–1024"),
        ("clusters", "1025", "2–1024"),
        ("clusters", "2.5", "not a valid int"),
        ("clusters", "three", "not a valid int"),
        ("clusters", True, "not a valid int"),
        ("lr", "0", "1e-06–1"),
        ("lr", "nan", "not a valid float"),
        ("lr", "inf", "not a valid float"),
        ("algorithm", "full", "lloyd, elkan"),
        ("scaling", "minmax", "global, series"),
        ("max-clusters", "1", "1 is rejected"),
        ("seed", "-1", "0–2147483647"),
    ],
)
def test_bad_values_name_the_hyperparameter_value_and_range(name, value, fragment):
    with pytest.raises(UserError) as error:
        Config.from_dict({name: value})
    assert name in str(error.value) and repr(value) in str(error.value)
    assert fragment in str(error.value)


def test_unknown_hyperparameter_is_an_error():
    with pytest.raises(UserError, match="unknown hyperparameter 'cluster'"):
        Config.from_dict({"cluster": 3})


def test_underscore_names_are_accepted_and_replace_revalidates():
    config = Config.from_dict({"kernel_size": "5", "batch-size": "7"})
    assert (config.kernel_size, config.batch_size) == (5, 7)
    with pytest.raises(UserError, match="epochs"):
        config.replace(epochs=0)
