"""The training adapters without a process: hyperparameter strings, metrics, failure mapping."""

from __future__ import annotations

import io
import re

import pytest

from cnn_kmeans.config import Config
from cnn_kmeans.container import hyperparameters, job, train
from cnn_kmeans.container.metrics import METRICS, emit, metric_definitions
from cnn_kmeans.errors import UserError
from tests.integration.opt_ml import make_job


def test_raw_and_json_quoted_forms_are_the_same():
    raw = {"algorithm": "lloyd", "clusters": "3", "lr": "1e-3", "epochs": 7}
    quoted = {"algorithm": '"lloyd"', "clusters": '"3"', "lr": '"1e-3"', "epochs": '"7"'}
    assert hyperparameters.parse(raw) == hyperparameters.parse(quoted)
    assert hyperparameters.parse(raw) == Config(algorithm="lloyd", clusters=3, lr=1e-3, epochs=7)


def test_injected_keys_are_ignored_and_unknown_ones_are_not():
    config = hyperparameters.parse(
        {"_tuning_objective_metric": "valid_score", "sagemaker_program": "x", "clusters": "4"}
    )
    assert config.clusters == 4
    with pytest.raises(UserError, match="unknown hyperparameter 'clusterz'"):
        hyperparameters.parse({"clusterz": "4"})


def test_incremental_config_keeps_the_architecture_and_takes_new_settings():
    previous = Config(blocks=3, filters=8, epochs=50, lr=0.01)
    config = hyperparameters.continued(previous, {"epochs": "5", "blocks": "3"})
    assert (config.blocks, config.filters, config.epochs, config.lr) == (3, 8, 5, 0.001)
    with pytest.raises(UserError, match=r"blocks=4 \(model has 3\); scaling='series'"):
        hyperparameters.continued(previous, {"blocks": "4", "scaling": "series"})
    # defaults filled in by AlgorithmEstimator are not a request to change the architecture
    defaults = {"blocks": "10", "filters": "40", "scaling": "global", "epochs": "2"}
    assert hyperparameters.continued(previous, defaults).blocks == 3


@pytest.mark.parametrize("value", [0.4213, -0.0421, 1.5e-05, -2.5e-7, 12345678.0, 3.0])
def test_metric_lines_round_trip_through_their_regex(value):
    for metric in METRICS:
        out = io.StringIO()
        emit(metric.name, value, out)
        (found,) = re.findall(metric.regex, out.getvalue())
        assert float(found) == pytest.approx(value, rel=1e-5)


def test_non_finite_values_are_not_emitted_and_definitions_cover_every_metric():
    out = io.StringIO()
    emit("valid_score", float("nan"), out)
    assert out.getvalue() == ""
    assert [d["Name"] for d in metric_definitions()] == [m.name for m in METRICS]


def test_a_bug_becomes_an_algorithm_error_with_the_traceback_in_the_log_only(
    tmp_path, monkeypatch, caplog
):
    make_job(tmp_path, {}, {})  # the config files main() reads; job.run() is replaced below
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))

    def broken(env, stop, checkpoints):
        raise KeyError("boom")

    monkeypatch.setattr(job, "run", broken)
    assert train.main(["train"]) == train.EXIT_ALGORITHM_ERROR
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("Algorithm error: KeyError: 'boom'")
    assert "Traceback" not in failure and "Traceback" in caplog.text
