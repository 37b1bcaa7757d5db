"""The `cnn-kmeans` console script end to end: train, predict, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_kmeans.data import read_channel
from cnn_kmeans.persistence import load
from tests.helpers import DATA

SCRIPT = str(Path(sys.executable).parent / "cnn-kmeans")  # the installed console script
TINY = ["--blocks", "2", "--filters", "8", "--reduced-size", "16", "--output-size", "8"]
TEST_CSV = DATA / "inference" / "input" / "test.csv"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    model_dir = tmp_path_factory.mktemp("cli") / "model"
    result = run(
        "train",
        "--train",
        DATA / "training",
        "--validation",
        DATA / "validation",
        "--model-dir",
        model_dir,
        "--clusters",
        "3",
        "--epochs",
        "2",
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    return model_dir, result


def test_train_reports_progress_and_where_the_model_went(trained):
    model_dir, result = trained
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "centroids.npy",
        "config.json",
        "encoder.pt",
    ]
    lines = result.stderr.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("ETA" in e and "valid_loss" in e for e in epochs)
    assert f"model saved to {model_dir}" in result.stderr
    sizes = next(line for line in lines if line.startswith("training cluster sizes"))
    assert sum(int(part.split(": ")[1]) for part in sizes.split(": ", 1)[1].split(", ")) == 160


def test_predict_writes_one_row_per_input_row_matching_the_python_api(trained, tmp_path):
    model_dir, _ = trained
    out = tmp_path / "predictions.csv"
    result = run("predict", "--model-dir", model_dir, TEST_CSV, "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"written to {out}" in result.stderr and "cluster sizes: " in result.stderr
    rows = np.loadtxt(out, delimiter=",", ndmin=2)
    assert rows.shape == (100, 1 + 8)
    model = load(model_dir)
    features = model.transform(read_channel(TEST_CSV))
    np.testing.assert_array_equal(rows[:, 0].astype(int), model.assign(features)[0])
    np.testing.assert_array_equal(rows[:, 1:].astype(np.float32), features)  # round-trips
    assert all(line.split(",")[0].isdigit() for line in out.read_text().splitlines())


def test_predict_to_stdout(trained, tmp_path):
    model_dir, _ = trained
    out = tmp_path / "p.csv"
    run("predict", "--model-dir", model_dir, TEST_CSV, "-o", out)
    result = run("predict", "--model-dir", model_dir, TEST_CSV)
    assert result.returncode == 0 and result.stdout == out.read_text()


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--clusters", "1", "2–1024"),
        ("--algorithm", "full", "lloyd, elkan"),
        ("--lr", "abc", "1e-06–1"),
        ("--max-clusters", "1", "1 is rejected"),
    ],
)
def test_bad_flag_names_the_flag_and_the_range(flag, value, fragment, tmp_path):
    result = run("train", "--train", DATA / "training", "--model-dir", tmp_path, flag, value)
    assert result.returncode == 2
    assert f"argument {flag}" in result.stderr and fragment in result.stderr


def test_bad_csv_names_file_line_and_column_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,five,6\n")
    result = run("train", "--train", bad, "--model-dir", tmp_path / "m", "--clusters", "2")
    assert result.returncode == 2
    assert "bad.csv: line 2, column 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_missing_model_is_a_clear_error(tmp_path):
    result = run("predict", "--model-dir", tmp_path / "nothing", TEST_CSV)
    assert result.returncode == 2 and "lacks config.json" in result.stderr


def test_spec_prints_a_create_algorithm_request_built_from_the_declarations():
    import json

    from cnn_kmeans.config import HYPERPARAMETERS

    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cnn-kmeans-{}:0.1.0-cpu"
    result = run(
        "spec",
        "--training-image",
        image.format("training"),
        "--inference-image",
        image.format("inference"),
    )
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    training = request["TrainingSpecification"]
    assert [h["Name"] for h in training["SupportedHyperParameters"]] == [
        hp.name for hp in HYPERPARAMETERS
    ]
    assert training["TrainingImage"] == image.format("training")
    assert training["SupportsDistributedTraining"] is True
