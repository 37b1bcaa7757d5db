"""Each notebook's SageMaker SDK names and arguments exist in that SDK, installed, offline.

notebook.ipynb against SDK v2 and notebook_v3.ipynb against SDK v3, each in its own virtualenv
(runs/sdk-v2, runs/sdk-v3: `make sdk-venvs`, which `make test` runs first). tests/sdk_names.py
does the checking inside that virtualenv, and tests/notebook_cleanup.py runs the v2 clean-up
against moto there; both run in an empty network namespace (no interface but a down loopback),
so neither the SDK nor its telemetry can reach AWS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from tools.notebook import OUTPUTS, SDKS

from tests.helpers import REPO

CHECKER = REPO / "tests" / "sdk_names.py"
CLEANUP = REPO / "tests" / "notebook_cleanup.py"
# What each walk-through must use (train, tune, deploy, invoke, transform, the algorithm
# resource, clean-up): the checker must have resolved and checked each of these.
REQUIRED = {
    "v2": [
        "sagemaker.estimator.Estimator()",
        "sagemaker.estimator.Estimator.fit()",
        "sagemaker.tuner.HyperparameterTuner()",
        "sagemaker.tuner.HyperparameterTuner.fit()",
        "sagemaker.model.Model()",
        "sagemaker.model.Model.deploy()",
        "sagemaker.base_predictor.Predictor.predict()",
        "sagemaker.model.Model.transformer()",
        "sagemaker.transformer.Transformer.transform()",
        "sagemaker.algorithm.AlgorithmEstimator()",
        "sagemaker.algorithm.AlgorithmEstimator.fit()",
        "sagemaker.base_predictor.Predictor.delete_model()",
        "sagemaker.base_predictor.Predictor.delete_endpoint()",
        "sagemaker.transformer.Transformer.delete_model()",
    ],
    "v3": [
        "sagemaker.train.model_trainer.ModelTrainer()",
        "sagemaker.train.model_trainer.ModelTrainer.train()",
        "sagemaker.train.model_trainer.ModelTrainer.with_metric_definitions()",
        "sagemaker.train.tuner.HyperparameterTuner()",
        "sagemaker.train.tuner.HyperparameterTuner.tune()",
        "sagemaker.serve.model_builder.ModelBuilder()",
        "sagemaker.serve.model_builder.ModelBuilder.build()",
        "sagemaker.serve.model_builder.ModelBuilder.deploy()",
        "sagemaker.core.resources.Endpoint.invoke()",
        "sagemaker.serve.model_builder.ModelBuilder.transformer()",
        "sagemaker.core.transformer.Transformer.transform()",
        "sagemaker.core.resources.Endpoint.delete()",
        "sagemaker.core.resources.EndpointConfig.delete()",
        "sagemaker.core.resources.Model.delete()",
    ],
}


def sdk_python(sdk: str) -> str:
    python = REPO / "runs" / f"sdk-{sdk}" / "bin" / "python"
    if not (python.parent.parent / ".installed").exists():
        pytest.fail(f"no SDK {sdk} virtualenv at {python.parent.parent}: run `make sdk-venvs`")
    return str(python)


def isolated() -> list[str]:
    """The command prefix of an empty network namespace (as root, or in a user namespace)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to run the SDK without a network"
    return [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]


def run(sdk: str, script, notebook: str, *args: str, home) -> dict:
    """A script's JSON report, run by the SDK's Python without a network."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no ~/.aws, no SDK config of the user's
        "AWS_DEFAULT_REGION": "us-east-1",  # v3 builds boto3 clients at import (no call is made)
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "AWS_ACCESS_KEY_ID": "testing",  # moto's (tests/notebook_cleanup.py); nothing is sent
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    command = [*isolated(), sdk_python(sdk), str(script), str(REPO / notebook), *args]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_names_and_arguments_exist_in_the_installed_sdk(sdk, tmp_path):
    report = run(sdk, CHECKER, OUTPUTS[sdk], sdk, home=tmp_path)
    assert report["version"].split(".")[0] == sdk[1:], report["version"]
    assert report["network"] == ["lo"]
    assert report["errors"] == []
    missing = [name for name in REQUIRED[sdk] if name not in report["checked"]]
    assert not missing, f"not resolved, so not checked: {missing}"


def test_the_v2_notebook_fails_on_sdk_v3(tmp_path):
    """What a user who starts today with `pip install sagemaker` would hit: caught here."""
    report = run("v3", CHECKER, OUTPUTS["v2"], "v3", home=tmp_path)
    assert any("sagemaker.estimator" in error for error in report["errors"]), report["errors"]


def test_the_v2_clean_up_leaves_no_model_endpoint_or_configuration(tmp_path):
    """The deploy, batch transform and clean-up cells, run with SDK v2 against moto: deploy()
    and transformer() each create a model, and the clean-up deletes both, the endpoint and its
    configuration, and the algorithm. (SDK v3's resources do not load moto's DescribeModel
    answer, so notebook_v3.ipynb's clean-up is checked by name and order only.)"""
    report = run("v2", CLEANUP, OUTPUTS["v2"], home=tmp_path)
    after = report["after"]
    assert [len(after["deploy"][kind]) for kind in ("models", "endpoints")] == [1, 1]
    assert len(after["transform"]["models"]) == 2
    assert after["clean-up"] == {"models": [], "endpoints": [], "endpoint_configs": []}
    assert report["deleted_algorithms"] == [{"AlgorithmName": "cnn-kmeans-demo"}]
