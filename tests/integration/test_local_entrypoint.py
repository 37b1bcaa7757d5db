"""The training entrypoint run locally: config files SageMaker always writes may be missing.

SageMaker writes input/config/{resourceconfig,inputdataconfig,hyperparameters}.json; a local
run (README, "Running the training entrypoint locally") gets a default for each missing one,
said in the log, and a failure naming the file for one that cannot be used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn_kmeans.config import Config
from cnn_kmeans.persistence import load
from tests.helpers import cylinder_bell_funnel
from tests.integration.opt_ml import TINY, make_job, metric_values, run_job


def csv_rows(count: int, seed: int, low: int = 20, high: int = 40) -> str:
    rows, _ = cylinder_bell_funnel(count, seed=seed, low=low, high=high)
    return "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in rows)


def job(root: Path, hyperparameters: dict[str, str] | None = None, missing: str = "") -> Path:
    make_job(
        root,
        {**TINY, "epochs": "1"} if hyperparameters is None else hyperparameters,
        {"training": {"a.csv": csv_rows(24, 1)}, "validation": {"v.csv": csv_rows(9, 2)}},
    )
    if missing:
        (root / "input" / "config" / missing).unlink()
    return root


def test_without_resourceconfig_the_job_runs_on_one_host(tmp_path):
    root = job(tmp_path, missing="resourceconfig.json")
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert "resourceconfig.json not found: training on one host (localhost)" in result.stderr
    assert load(root / "model").n_clusters_ == 3
    assert (root / "output" / "data" / "report.json").is_file()
    assert not (root / "output" / "failure").exists()


def test_without_inputdataconfig_the_channels_are_the_data_folders(tmp_path):
    root = job(tmp_path, missing="inputdataconfig.json")
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert "inputdataconfig.json not found: channels are the folders of" in result.stderr
    assert "(training, validation), input mode File" in result.stderr
    values = metric_values(result.stdout)
    assert len(values["valid_loss"]) == 1 and len(values["valid_score"]) == 1  # validation read


def test_without_hyperparameters_every_hyperparameter_is_its_default(tmp_path):
    # Short series, 10 of them: the default architecture trains 100 epochs of one step quickly.
    make_job(tmp_path, {}, {"training": {"a.csv": csv_rows(10, 3, low=12, high=16)}})
    for name in ("hyperparameters.json", "resourceconfig.json", "inputdataconfig.json"):
        (tmp_path / "input" / "config" / name).unlink()
    result = run_job(tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "hyperparameters.json not found: every hyperparameter at its default" in result.stderr
    assert load(tmp_path / "model").config == Config()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("resourceconfig.json", "{hosts: [algo-1]", "is not valid JSON (line 1, column 2"),
        ("resourceconfig.json", '{"current_host": "algo-1"}', 'needs "hosts", a non-empty list'),
        (
            "resourceconfig.json",
            '{"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}',
            "\"current_host\" 'algo-3' is not one of",
        ),
        ("hyperparameters.json", '["epochs", "1"]', "must hold a JSON object, not list"),
        ("inputdataconfig.json", "", "is not valid JSON"),
    ],
)
def test_a_config_file_that_cannot_be_used_is_a_user_error_naming_it(
    tmp_path, name, content, fragment
):
    root = job(tmp_path)
    path = root / "input" / "config" / name
    path.write_text(content)
    result = run_job(root)
    assert result.returncode == 1, result.stderr
    failure = (root / "output" / "failure").read_text()
    assert str(path) in failure and fragment in failure
    assert "Algorithm error" not in failure and "Traceback" not in result.stderr


def test_without_a_config_folder_the_error_says_what_to_set(tmp_path):
    (tmp_path / "input" / "data" / "training").mkdir(parents=True)
    result = run_job(tmp_path)
    assert result.returncode == 1
    failure = json.dumps((tmp_path / "output" / "failure").read_text())
    assert "input/config does not exist" in failure and "SAGEMAKER_BASE_DIR" in failure
