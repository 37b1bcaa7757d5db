"""A model saved on one stack loads and predicts the same on the other.

The images run Python 3.10 + torch 2.1 + numpy 1.26 + scikit-learn 1.3; development and CI run
current releases. `make test-stack` runs the suite on the images' stack and points
`CNN_KMEANS_OTHER_PYTHON` at the development interpreter, so this test trains on each stack and
predicts on both (CI runs it; elsewhere it is skipped with that reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DATA

OTHER = os.environ.get("CNN_KMEANS_OTHER_PYTHON", "")
pytestmark = pytest.mark.skipif(
    not OTHER, reason="CNN_KMEANS_OTHER_PYTHON is not set: `make test-stack` runs this test"
)
TINY = ["--blocks", "2", "--filters", "8", "--reduced-size", "16", "--output-size", "8"]
TEST_CSV = DATA / "inference" / "input" / "test.csv"
VERSIONS = (
    "import json, sys, numpy, sklearn, torch; print(json.dumps([sys.version.split()[0], "
    "torch.__version__, numpy.__version__, sklearn.__version__]))"
)


def _cli(python: str, *args: str | Path) -> str:
    result = subprocess.run(
        [python, "-m", "cnn_kmeans.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _predict(python: str, model_dir: Path, out: Path) -> np.ndarray:
    _cli(python, "predict", "--model-dir", model_dir, TEST_CSV, "--output", out)
    return np.loadtxt(out, delimiter=",", dtype=np.float64, ndmin=2)


def test_the_two_stacks_differ():
    """Guards the test below against passing vacuously (the same interpreter twice)."""
    here = subprocess.run([sys.executable, "-c", VERSIONS], capture_output=True, text=True)
    there = subprocess.run([OTHER, "-c", VERSIONS], capture_output=True, text=True)
    here_versions, there_versions = json.loads(here.stdout), json.loads(there.stdout)
    assert here_versions[1].split("+")[0] != there_versions[1].split("+")[0], (
        here_versions,
        there_versions,
    )


@pytest.mark.parametrize("trained_on", ["here", "other"])
def test_a_model_saved_on_one_stack_predicts_the_same_on_the_other(trained_on, tmp_path):
    pythons = {"here": sys.executable, "other": OTHER}
    model_dir = tmp_path / "model"
    _cli(
        pythons[trained_on],
        "train",
        "--train",
        DATA / "training",
        "--model-dir",
        model_dir,
        "--clusters",
        "3",
        "--epochs",
        "1",
        *TINY,
    )
    here = _predict(sys.executable, model_dir, tmp_path / "here.csv")
    other = _predict(OTHER, model_dir, tmp_path / "other.csv")
    assert here.shape == other.shape == (100, 9)
    np.testing.assert_array_equal(here[:, 0], other[:, 0])  # the labels
    # Different torch builds may round the convolutions differently: float32 tolerance (SPEC §6).
    np.testing.assert_allclose(here[:, 1:], other[:, 1:], rtol=1e-5, atol=1e-6)
