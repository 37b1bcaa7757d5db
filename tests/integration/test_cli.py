"""The `cnn-kmeans` console script end to end: train, predict, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_kmeans.data import read_channel
from cnn_kmeans.outputs import OUTPUT_CHOICES
from cnn_kmeans.persistence import load
from tests.helpers import DATA, cylinder_bell_funnel

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


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("swept")
    args = ["--max-clusters", "4", "--epochs", "1", *TINY]
    result = run(
        "train", "--train", DATA / "training", "--model-dir", folder / "model", *args,
        "--report", folder / "report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "model", folder / "report", result


def test_train_report_writes_the_jobs_report_and_prints_the_sweep(swept):
    model_dir, report_dir, result = swept
    assert sorted(p.name for p in report_dir.iterdir()) == [
        "cluster_sizes.csv",
        "clusters.png",
        "report.json",
        "sweep.png",
    ]
    report = json.loads((report_dir / "report.json").read_text())
    model = load(model_dir)
    assert report["clusters"] == model.n_clusters_ and sum(report["cluster_sizes"]) == 160
    assert set(report) >= {"train_score", "history", "hyperparameters", "warnings", "sweep"}
    assert [row["k"] for row in report["sweep"]] == [2, 3, 4]
    chosen = [row["k"] for row in report["sweep"] if row["chosen"]]
    assert chosen == [model.n_clusters_]
    # The sweep's scores, one line per k, the chosen one marked.
    lines = result.stderr.splitlines()
    table = lines[lines.index("max-clusters sweep (k: silhouette, smallest cluster):") + 1 :][:3]
    for line, row in zip(table, report["sweep"], strict=True):
        assert line.split()[:5] == [
            f"k={row['k']}",
            "silhouette",
            f"{row['silhouette']:.4f}",
            "smallest",
            str(row["smallest"]),
        ]
        assert line.endswith("(chosen)") == row["chosen"]
    assert f"report written to {report_dir}" in result.stderr


def test_predict_report_sizes_and_distances_of_the_new_series(swept, tmp_path):
    model_dir, _, _ = swept
    out = tmp_path / "labels.csv"
    result = run(
        "predict", "--model-dir", model_dir, TEST_CSV, "--columns", "labels", "-o", out,
        "--report", tmp_path / "report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels = np.loadtxt(out, dtype=np.int64)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    model = load(model_dir)
    assert report["series"] == 100 and report["clusters"] == model.n_clusters_
    assert report["cluster_sizes"] == np.bincount(labels, minlength=model.n_clusters_).tolist()
    own = model.distances(read_channel(TEST_CSV)).min(axis=1)
    assert report["distance_to_own_centroid"]["max"] == pytest.approx(own.max(), rel=1e-6)
    assert (tmp_path / "report" / "clusters.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("columns", OUTPUT_CHOICES)
def test_predict_columns_are_the_servers_csv_answer_byte_for_byte(trained, tmp_path, columns):
    from cnn_kmeans.container import inference

    model_dir, _ = trained
    out = tmp_path / "p.csv"
    result = run("predict", "--model-dir", model_dir, TEST_CSV, "--columns", columns, "-o", out)
    assert result.returncode == 0, result.stderr
    # The serving code path in this process: the handlers the Flask app calls, in order.
    model = inference.model_fn(model_dir)
    batch = inference.input_fn(TEST_CSV.read_bytes(), "text/csv")
    body, media_type = inference.output_fn(
        inference.predict_fn(batch, model), f"text/csv;output={columns}"
    )
    assert media_type == "text/csv"
    assert out.read_text() == body.decode()
    assert (
        len(out.read_text().splitlines()[0].split(","))
        == {
            "features": 1 + 8,
            "labels": 1,
            "distances": 1 + 3,
        }[columns]
    )


def test_the_report_plots_the_series_in_the_units_of_the_data(tmp_path, monkeypatch):
    """The training report of `train --report` draws the values as given, not as scaled."""
    from cnn_kmeans import cli, report

    rows, _ = cylinder_bell_funnel(30, seed=3, low=20, high=40)
    data = tmp_path / "data.csv"
    data.write_text("".join(",".join(f"{1000 + 10 * v:.3f}" for v in r) + "\n" for r in rows))
    figures = []

    def keep(figure, path):
        figures.append(figure)
        return real_save(figure, path)

    real_save = report.save_figure
    monkeypatch.setattr(report, "save_figure", keep)
    args = ["--train", str(data), "--model-dir", str(tmp_path / "m"), "--clusters", "3"]
    code = cli.main(["train", *args, "--epochs", "1", *TINY, "--report", str(tmp_path / "r")])
    assert code == 0
    (clusters,) = figures
    drawn = np.concatenate([line.get_ydata() for axis in clusters.axes for line in axis.lines])
    drawn = drawn[np.isfinite(drawn)]
    values = np.concatenate(rows) * 10 + 1000
    assert drawn.min() >= values.min() - 0.01 and drawn.max() <= values.max() + 0.01
    assert drawn.max() - drawn.min() > 0.5 * (values.max() - values.min())
