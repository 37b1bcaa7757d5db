"""The training entrypoint on a temporary /opt/ml, as SageMaker runs it."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnn_kmeans.persistence import load
from tests.helpers import DATA, cylinder_bell_funnel
from tests.integration.opt_ml import (
    TINY,
    assert_same_encoder,
    make_job,
    metric_values,
    run_job,
    start_job,
    terminate_after,
)

TRAIN_CSV = (DATA / "training" / "train.csv").read_text()
VALID_CSV = (DATA / "validation" / "valid.csv").read_text()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_csv(count: int = 30, seed: int = 0, scale: float = 1.0, offset: float = 0.0) -> str:
    rows, _ = cylinder_bell_funnel(count, seed=seed, low=20, high=40)
    return "".join(",".join(f"{v * scale + offset:.4f}" for v in row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def full_job(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = make_job(
        tmp_path_factory.mktemp("opt_ml"),
        {
            **TINY,
            "epochs": "3",
            "algorithm": '"elkan"',
            "_tuning_objective_metric": "valid_score",
            "sagemaker_container_log_level": "20",
        },
        {"training": {"train.csv": TRAIN_CSV}, "validation": {"part/valid.csv": VALID_CSV}},
    )
    return root, run_job(root)


def test_job_writes_the_model_and_succeeds(full_job):
    root, result = full_job
    assert result.returncode == 0, result.stderr
    assert not (root / "output" / "failure").exists()
    model = load(root / "model")
    assert model.config.algorithm == "elkan" and model.n_clusters_ == 3


def test_metric_lines_match_the_exported_regexes(full_job):
    _, result = full_job
    values = metric_values(result.stdout)
    assert len(values["train_loss"]) == 3 and len(values["valid_loss"]) == 3
    assert len(values["train_score"]) == 1 and len(values["valid_score"]) == 1
    assert -1 <= values["valid_score"][0] <= 1
    # every stdout line is a metric line: nothing else is mistaken for one
    assert sum(len(v) for v in values.values()) == len(result.stdout.splitlines())


def test_start_is_logged_with_data_shape_steps_and_device(full_job):
    _, result = full_job
    assert "160 training series, 477 missing cells filled by interpolation" in result.stderr
    assert "length 60-140), 16 steps per epoch, device cpu" in result.stderr
    assert "epoch 3/3" in result.stderr and "ETA" in result.stderr


def test_report_and_plots(full_job):
    root, _ = full_job
    data = root / "output" / "data"
    report = json.loads((data / "report.json").read_text())
    assert report["clusters"] == 3 and sum(report["cluster_sizes"]) == 160
    assert set(report) >= {"train_score", "valid_score", "history", "hyperparameters"}
    assert (data / "cluster_sizes.csv").read_text().startswith("cluster,size\n0,")
    assert (data / "clusters.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (data / "sweep.png").exists()


def test_job_without_validation_logs_no_validation_metrics(tmp_path):
    root = make_job(
        tmp_path,
        {**TINY, "epochs": "2", "max-clusters": '"4"'},
        {"training": {"a.csv": small_csv(20, 1), "b/c.csv": small_csv(20, 2)}},
    )
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    values = metric_values(result.stdout)
    assert values["valid_loss"] == [] and values["valid_score"] == []
    assert len(values["train_loss"]) == 2
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    assert [row["k"] for row in report["sweep"]] == [2, 3, 4]
    eligible = [row for row in report["sweep"] if row["eligible"]] or report["sweep"]
    best = max(eligible, key=lambda r: r["silhouette"])
    assert best["chosen"] and report["clusters"] == best["k"]
    assert report["min_cluster_size"] == 2 and "warnings" in report
    assert (root / "output" / "data" / "sweep.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (
        json.loads((root / "model" / "config.json").read_text())["clusters"] == report["clusters"]
    )
    assert result.stderr.count(" silhouette=") == 3  # one log line per k


@pytest.mark.parametrize(
    ("hyperparameters", "channels", "fragments"),
    [
        ({}, {"training": {"x.csv": "1,2,3\n4,abc,6\n"}}, ["x.csv: line 2, column 2", "abc"]),
        ({}, {"training": {"h.csv": "a,b,c\n1,2,3\n"}}, ["looks like a header"]),
        ({}, {"training": {}}, ["no files found"]),
        ({}, {"training": {"i.csv": "1,2\n3,inf\n"}}, ["line 2, column 2", "infinite"]),
        ({}, {"training": {"e.csv": "1,2\n,,\n3,4\n"}}, ["line 2", "no values"]),
        ({"clusters": "50"}, {"training": {"t.csv": small_csv(10)}}, ["clusters=50", "10 series"]),
        ({"clusters": "1"}, {"training": {"t.csv": small_csv(10)}}, ["clusters=1", "2–1024"]),
        ({"lr": "fast"}, {"training": {"t.csv": small_csv(10)}}, ["lr='fast'", "float"]),
        ({"cluster": "3"}, {"training": {"t.csv": small_csv(10)}}, ["unknown hyperparameter"]),
        ({}, {"validation": {"v.csv": small_csv(10)}}, ["'training' channel is required"]),
    ],
)
def test_user_errors_fail_the_job_with_a_specific_reason(
    tmp_path, hyperparameters, channels, fragments
):
    root = make_job(tmp_path, {"epochs": "1", **hyperparameters}, channels)
    result = run_job(root)
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert not failure.startswith("Algorithm error")
    for fragment in fragments:
        assert fragment in failure
    assert "Traceback" not in failure and not (root / "model" / "config.json").exists()


def model_archive(model_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def test_incremental_training_continues_from_the_given_weights(tmp_path, full_job):
    previous, first = full_job
    archive = model_archive(previous / "model")
    channels = {
        "training": {"train.csv": TRAIN_CSV},
        "model": {"model.tar.gz": archive},
    }
    root = make_job(tmp_path / "next", {"epochs": "1", "clusters": "3"}, channels)
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    continued = metric_values(result.stdout)["train_loss"][0]
    from_scratch = metric_values(first.stdout)["train_loss"][0]  # same seed, same data
    assert continued < from_scratch
    assert load(root / "model").config.blocks == 2  # the previous architecture is kept

    # Other data (another level and spread): the model's scaler is kept, not refitted, so that
    # the continued encoder sees inputs scaled as it was trained to.
    other = make_job(
        tmp_path / "other",
        {"epochs": "1", "clusters": "3"},
        {
            "training": {"t.csv": small_csv(30, 3, scale=50.0, offset=200.0)},
            "model": channels["model"],
        },
    )
    assert run_job(other).returncode == 0
    kept, before = (
        load(other / "model").scaler_.to_dict(),
        load(previous / "model").scaler_.to_dict(),
    )
    assert kept == before

    clash = make_job(tmp_path / "clash", {"epochs": "1", "filters": "16"}, channels)
    result = run_job(clash)
    assert result.returncode == 1
    assert "filters=16 (model has 8)" in (clash / "output" / "failure").read_text()


def test_sigterm_checkpoints_and_a_rerun_resumes_to_the_same_model(tmp_path):
    hyperparameters = {**TINY, "epochs": "60", "batch-size": "5"}
    channels = {"training": {"t.csv": small_csv(40, 3)}}
    straight = make_job(tmp_path / "straight", hyperparameters, channels)
    assert run_job(straight).returncode == 0

    root = make_job(tmp_path / "spot", hyperparameters, channels, checkpoints=True)
    done = terminate_after(start_job(root), root, epochs=5)

    (root / "output" / "failure").unlink()
    result = run_job(root)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoint" in result.stderr
    assert len(metric_values(result.stdout)["train_loss"]) == 60 - done
    np.testing.assert_array_equal(
        np.load(root / "model" / "centroids.npy"), np.load(straight / "model" / "centroids.npy")
    )
    assert_same_encoder(root / "model", straight / "model")
