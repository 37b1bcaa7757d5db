"""The CreateAlgorithm request: valid offline, and true to the declarations it is built from."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from cnn_kmeans.config import HYPERPARAMETERS
from cnn_kmeans.container import algorithm
from cnn_kmeans.container.codecs import REQUEST_CONTENT_TYPES, RESPONSE_CONTENT_TYPES
from cnn_kmeans.container.metrics import METRICS
from cnn_kmeans.container.service_model import (
    InvalidRequest,
    input_shape,
    problems,
    python_pattern,
    skipped_problems,
    validate,
)
from cnn_kmeans.errors import UserError

REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
CPU = (f"{REGISTRY}/cnn-kmeans-training:0.1.0-cpu", f"{REGISTRY}/cnn-kmeans-inference:0.1.0-cpu")
GPU = (f"{REGISTRY}/cnn-kmeans-training:0.1.0-gpu", f"{REGISTRY}/cnn-kmeans-inference:0.1.0-gpu")
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
DATA = "s3://my-bucket/cnn-kmeans/data"


@pytest.fixture(scope="module")
def request_() -> dict:
    """A full request: GPU images and a ValidationSpecification."""
    return algorithm.build_request(*GPU, validation_role=ROLE, validation_data=DATA)


def test_request_passes_botocore_and_the_checks_it_skips(request_):
    assert problems(request_, "CreateAlgorithm") == []
    validate(algorithm.build_request(*CPU), "CreateAlgorithm")


def test_every_hyperparameter_matches_its_declaration(request_):
    specs = request_["TrainingSpecification"]["SupportedHyperParameters"]
    assert [spec["Name"] for spec in specs] == [hp.name for hp in HYPERPARAMETERS]
    for hp, spec in zip(HYPERPARAMETERS, specs, strict=True):
        assert spec["IsTunable"] is hp.tunable
        assert spec["IsRequired"] is False  # every one has a default: AWS rejects both
        assert hp.check(spec["DefaultValue"]) == hp.default  # as the job would parse it
        (key, limits), *_ = spec["Range"].items()
        if hp.choices:
            assert (spec["Type"], key) == ("Categorical", "CategoricalParameterRangeSpecification")
            assert tuple(limits["Values"]) == hp.choices
        else:
            kind = {int: "Integer", float: "Continuous"}[hp.kind]
            assert (spec["Type"], key) == (kind, f"{kind}ParameterRangeSpecification")
            assert hp.check(limits["MinValue"]) == hp.low
            assert hp.check(limits["MaxValue"]) == hp.high
        for value in hp.rejected:
            assert str(value) in spec["Description"]


def test_metrics_and_tuning_objectives_come_from_the_metrics_module(request_):
    training = request_["TrainingSpecification"]
    assert training["MetricDefinitions"] == [{"Name": m.name, "Regex": m.regex} for m in METRICS]
    objectives = {
        o["MetricName"]: o["Type"] for o in training["SupportedTuningJobObjectiveMetrics"]
    }
    assert objectives == {m.name: "Maximize" if m.maximize else "Minimize" for m in METRICS}
    assert objectives["valid_score"] == "Maximize"


def test_channels(request_):
    channels = {c["Name"]: c for c in request_["TrainingSpecification"]["TrainingChannels"]}
    assert {name: c["IsRequired"] for name, c in channels.items()} == {
        "training": True,
        "validation": False,
        "model": False,
    }
    for name in ("training", "validation"):
        assert channels[name]["SupportedContentTypes"] == ["text/csv"]
    assert channels["model"]["SupportedContentTypes"] == ["application/x-sagemaker-model"]
    # The modes the container reads (it refuses Pipe); incremental training takes File only.
    for name in ("training", "validation"):
        assert channels[name]["SupportedInputModes"] == ["File", "FastFile"]
    assert channels["model"]["SupportedInputModes"] == ["File"]
    # CompressionType is for Pipe mode only (gzip files are read whatever it says).
    for spec in channels.values():
        assert spec["SupportedCompressionTypes"] == ["None"]


def test_inference_content_types_come_from_the_codecs(request_):
    inference = request_["InferenceSpecification"]
    assert inference["Containers"] == [{"Image": GPU[1]}]
    assert inference["SupportedContentTypes"] == list(REQUEST_CONTENT_TYPES)
    assert inference["SupportedResponseMIMETypes"] == list(RESPONSE_CONTENT_TYPES)


def _gpu_types(types: list[str]) -> list[str]:
    return [t for t in types if t.split(".")[1].startswith(("g", "p"))]


def _instance_lists(request: dict) -> list[list[str]]:
    inference = request["InferenceSpecification"]
    return [
        request["TrainingSpecification"]["SupportedTrainingInstanceTypes"],
        inference["SupportedTransformInstanceTypes"],
        inference["SupportedRealtimeInferenceInstanceTypes"],
    ]


def test_cpu_images_get_cpu_types_and_gpu_images_both():
    cpu, gpu = algorithm.build_request(*CPU), algorithm.build_request(*GPU)
    for cpu_types, gpu_types in zip(_instance_lists(cpu), _instance_lists(gpu), strict=True):
        assert cpu_types and _gpu_types(cpu_types) == []
        assert _gpu_types(gpu_types) and set(cpu_types) < set(gpu_types)
    forced = algorithm.build_request(*CPU, gpu=True)
    assert _instance_lists(forced) == _instance_lists(gpu)
    assert gpu["TrainingSpecification"]["SupportsDistributedTraining"] is True


def test_validation_specification_only_when_asked(request_):
    assert "ValidationSpecification" not in algorithm.build_request(*CPU)
    spec = request_["ValidationSpecification"]
    assert spec["ValidationRole"] == ROLE
    (profile,) = spec["ValidationProfiles"]
    channels = profile["TrainingJobDefinition"]["InputDataConfig"]
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in channels}
    assert uris == {"training": f"{DATA}/training/", "validation": f"{DATA}/validation/"}
    for name, value in profile["TrainingJobDefinition"]["HyperParameters"].items():
        next(hp for hp in HYPERPARAMETERS if hp.name == name).check(value)
    transform = profile["TransformJobDefinition"]
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"{DATA}/inference/input/"
    )
    assert transform["TransformInput"]["SplitType"] == "Line"
    with pytest.raises(UserError, match="both"):
        algorithm.build_request(*CPU, validation_role=ROLE)
    with pytest.raises(UserError, match="ValidationSpecification"):
        algorithm.build_request(*CPU, certify_for_marketplace=True)


def test_extra_checks_catch_what_botocore_lets_through(request_):
    from botocore.validate import ParamValidator

    broken = copy.deepcopy(request_)
    broken["TrainingSpecification"]["SupportedTrainingInstanceTypes"].append("ml.bogus.xlarge")
    broken["AlgorithmName"] = "cnn_kmeans"  # underscores are not allowed
    broken["TrainingSpecification"]["MetricDefinitions"] *= 11  # 44 > 40
    broken["AlgorithmDescription"] = "x" * 1025
    shape = input_shape("CreateAlgorithm")
    assert not ParamValidator().validate(broken, shape).has_errors()
    found = "\n".join(skipped_problems(broken, shape))
    assert "'ml.bogus.xlarge' is not one of" in found
    assert "AlgorithmName: 'cnn_kmeans' does not match" in found
    assert "MetricDefinitions: 44 entries, at most 40" in found
    assert "AlgorithmDescription: 1025 characters, at most 1024" in found
    with pytest.raises(InvalidRequest, match=r"ml\.bogus\.xlarge"):
        validate(broken, "CreateAlgorithm")


def test_botocore_problems_are_reported_too(request_):
    broken = copy.deepcopy(request_)
    del broken["TrainingSpecification"]["TrainingImage"]
    assert "TrainingImage" in "\n".join(problems(broken, "CreateAlgorithm"))


def test_java_unicode_classes_are_translated_or_left_unchecked():
    text = python_pattern(r"[\p{L}\p{M}\p{Z}\p{S}\p{N}\p{P}]*")
    assert text.fullmatch("Clustering – `x` ≥ 1, é") and not text.fullmatch("bell\x07")
    assert python_pattern(r"arn:[\p{Alnum}\-]+:x") is None  # not a one-letter category


def test_main_prints_the_validated_request(capsys, caplog):
    assert algorithm.main(["--training-image", CPU[0], "--inference-image", CPU[1]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == algorithm.build_request(*CPU)
    assert algorithm.main([*_images(CPU), "--name", "bad_name"]) == 2
    assert capsys.readouterr().out == ""
    assert "AlgorithmName: 'bad_name' does not match" in caplog.text


def _images(pair: tuple[str, str]) -> list[str]:
    return ["--training-image", pair[0], "--inference-image", pair[1]]


def test_the_spec_needs_neither_torch_nor_scikit_learn_nor_flask():
    # The notebook installs the package without its dependencies to build the request.
    code = (
        "import sys\n"
        "for name in ('torch', 'sklearn', 'flask', 'gunicorn'): sys.modules[name] = None\n"
        "import cnn_kmeans.container.algorithm, cnn_kmeans.container.metrics\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
