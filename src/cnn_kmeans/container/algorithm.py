"""The CreateAlgorithm request (SageMaker algorithm resource), built from the declarations.

    cnn-kmeans spec --training-image URI --inference-image URI [--name NAME]
        [--validation-role ARN --validation-data S3URI] [--create]
    python -m cnn_kmeans.container.algorithm (same arguments)

Hyperparameters come from `config.HYPERPARAMETERS`, metrics and tuning objectives from
`metrics.METRICS`, content types from `codecs`: one declaration, no copy to drift. The request is
printed as JSON after validating it offline against botocore's service model; only `--create`
calls AWS.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from cnn_kmeans.config import HYPERPARAMETERS, Hyperparameter
from cnn_kmeans.container import metrics
from cnn_kmeans.container.codecs import CSV, REQUEST_CONTENT_TYPES, RESPONSE_CONTENT_TYPES
from cnn_kmeans.container.environment import FILE_INPUT_MODES
from cnn_kmeans.container.service_model import validate
from cnn_kmeans.errors import UserError

log = logging.getLogger("cnn_kmeans.algorithm")

DEFAULT_NAME = "cnn-kmeans"
DESCRIPTION = (
    "Clustering of unlabelled time series: a dilated causal CNN encoder trained by a triplet loss "
    "over random subseries (Franceschi et al., NeurIPS 2019), then KMeans on the learned "
    "features. Input: CSV, one series per row, rows of any length, missing values allowed. "
    "Output per series: the cluster label and the features."
)
MODEL_CONTENT_TYPE = "application/x-sagemaker-model"

# Instance types: CPU images run on CPU types only; GPU images (CUDA 12.1 training / 11.8
# inference builds of torch 2.1) on CPU types too, since torch falls back to the CPU.
CPU_TRAINING = ("ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge")
CPU_TRAINING += ("ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.c5.9xlarge")
GPU_TRAINING = ("ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g4dn.4xlarge", "ml.g4dn.12xlarge")
GPU_TRAINING += ("ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.4xlarge", "ml.g5.12xlarge")
GPU_TRAINING += ("ml.p3.2xlarge", "ml.p3.8xlarge", "ml.p3.16xlarge", "ml.p4d.24xlarge")
CPU_TRANSFORM = ("ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge")
CPU_TRANSFORM += ("ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge")
GPU_TRANSFORM = ("ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge", "ml.g5.2xlarge")
GPU_TRANSFORM += ("ml.p3.2xlarge",)
CPU_REALTIME = ("ml.t2.medium", "ml.c5.large", *CPU_TRANSFORM)
GPU_REALTIME = GPU_TRANSFORM

# The sample data's hyperparameters (README quick start) for the validation training job.
VALIDATION_HYPERPARAMETERS = {"clusters": "3", "epochs": "25"}
VALIDATION_INSTANCE = "ml.m5.xlarge"  # a type in both CPU lists, so valid for any image


def hyperparameter_spec(hp: Hyperparameter) -> dict[str, Any]:
    """One `HyperParameterSpecification`: type, range, default (a string), tunability."""
    if hp.choices:
        kind, key, bounds = "Categorical", "CategoricalParameterRangeSpecification", None
        limits: dict[str, Any] = {"Values": list(hp.choices)}
    else:
        kind = "Integer" if hp.kind is int else "Continuous"
        key = f"{kind}ParameterRangeSpecification"
        bounds = (_text(hp.low), _text(hp.high))
        limits = {"MinValue": bounds[0], "MaxValue": bounds[1]}
    description = hp.help if not hp.rejected else f"{hp.help} (allowed: {hp.allowed()})"
    return {
        "Name": hp.name,
        "Description": description,
        "Type": kind,
        "Range": {key: limits},
        "IsTunable": hp.tunable,
        # Every hyperparameter has a default, so none is required (AWS rejects both together).
        "IsRequired": False,
        "DefaultValue": _text(hp.default),
    }


def _text(value: Any) -> str:
    """How SageMaker passes a value: a string our parser reads back to the same value."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def channel(
    name: str,
    description: str,
    required: bool,
    content_type: str,
    input_modes: Sequence[str] = FILE_INPUT_MODES,
) -> dict[str, Any]:
    """One `ChannelSpecification`: the input modes the container reads, no channel compression.

    `CompressionType` is "used only in Pipe input mode. In File mode, leave this field unset or
    set it to None" (API reference, Channel), and the container refuses Pipe mode, so "None" is
    the only type declared. Gzip-compressed files are still read in File and FastFile modes:
    the reader recognises them by their magic bytes, whatever the channel says. (Whether AWS
    rejects a File-mode job with CompressionType Gzip against this list, or ignores the field,
    cannot be checked offline; either way the files are read.)
    """
    return {
        "Name": name,
        "Description": description,
        "IsRequired": required,
        "SupportedContentTypes": [content_type],
        "SupportedCompressionTypes": ["None"],
        "SupportedInputModes": list(input_modes),
    }


CHANNELS = (
    channel("training", "CSV series, one per row, no header (required)", True, CSV),
    channel("validation", "CSV series: adds valid_loss and valid_score", False, CSV),
    # "To use a model for incremental training, choose File input mode" (API reference, Channel).
    channel("model", "a model.tar.gz to train further", False, MODEL_CONTENT_TYPE, ("File",)),
)


def build_request(
    training_image: str,
    inference_image: str,
    *,
    name: str = DEFAULT_NAME,
    gpu: bool | None = None,
    validation_role: str | None = None,
    validation_data: str | None = None,
    certify_for_marketplace: bool = False,
) -> dict[str, Any]:
    """The CreateAlgorithm request; `gpu` None means "infer from the training image's URI".

    Raises:
        UserError: For a ValidationSpecification asked for with only one of its two inputs.
    """
    gpu = "gpu" in training_image.lower() if gpu is None else gpu
    request: dict[str, Any] = {
        "AlgorithmName": name,
        "AlgorithmDescription": DESCRIPTION,
        "TrainingSpecification": {
            "TrainingImage": training_image,
            "SupportedHyperParameters": [hyperparameter_spec(hp) for hp in HYPERPARAMETERS],
            "SupportedTrainingInstanceTypes": list(CPU_TRAINING + GPU_TRAINING * gpu),
            "SupportsDistributedTraining": True,
            "MetricDefinitions": metrics.metric_definitions(),
            "TrainingChannels": list(CHANNELS),
            "SupportedTuningJobObjectiveMetrics": [
                {"Type": "Maximize" if m.maximize else "Minimize", "MetricName": m.name}
                for m in metrics.METRICS
            ],
        },
        "InferenceSpecification": {
            "Containers": [{"Image": inference_image}],
            "SupportedTransformInstanceTypes": list(CPU_TRANSFORM + GPU_TRANSFORM * gpu),
            "SupportedRealtimeInferenceInstanceTypes": list(CPU_REALTIME + GPU_REALTIME * gpu),
            "SupportedContentTypes": list(REQUEST_CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(RESPONSE_CONTENT_TYPES),
        },
        "CertifyForMarketplace": certify_for_marketplace,
    }
    if (validation_role is None) != (validation_data is None):
        raise UserError("give both --validation-role and --validation-data, or neither")
    if validation_role is not None and validation_data is not None:
        request["ValidationSpecification"] = validation_spec(validation_role, validation_data)
    elif certify_for_marketplace:
        raise UserError(
            "--certify-for-marketplace needs a ValidationSpecification: give --validation-role "
            "and --validation-data"
        )
    return request


def validation_spec(role: str, data: str) -> dict[str, Any]:
    """Train on the sample data and batch-transform its inference input, as listing requires.

    `data` is an S3 prefix holding a copy of the repository's `data/` folder; the jobs' outputs
    go under `<data>/validation-output/`.
    """
    data = data.rstrip("/")
    training = {
        "TrainingInputMode": "File",
        "HyperParameters": dict(VALIDATION_HYPERPARAMETERS),
        "InputDataConfig": [
            _s3_channel(name, f"{data}/{name}/") for name in ("training", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": f"{data}/validation-output/training/"},
        "ResourceConfig": {
            "InstanceType": VALIDATION_INSTANCE,
            "InstanceCount": 1,
            "VolumeSizeInGB": 10,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    transform = {
        "MaxPayloadInMB": 6,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{data}/inference/input/"}
            },
            "ContentType": CSV,
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": f"{data}/validation-output/transform/",
            "Accept": CSV,
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": VALIDATION_INSTANCE, "InstanceCount": 1},
    }
    return {
        "ValidationRole": role,
        "ValidationProfiles": [
            {
                "ProfileName": "sample-data",
                "TrainingJobDefinition": training,
                "TransformJobDefinition": transform,
            }
        ],
    }


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "ContentType": CSV,
        "CompressionType": "None",
        "InputMode": "File",
    }


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cnn-kmeans spec",
        description="Print the CreateAlgorithm request (JSON), validated offline.",
    )
    parser.add_argument("--training-image", required=True, help="training image URI (ECR)")
    parser.add_argument("--inference-image", required=True, help="inference image URI (ECR)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"AlgorithmName ({DEFAULT_NAME})")
    parser.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offer GPU instance types (default: when the training image URI contains 'gpu')",
    )
    parser.add_argument("--validation-role", help="IAM role ARN for the validation jobs")
    parser.add_argument("--validation-data", help="S3 prefix holding a copy of data/")
    parser.add_argument("--certify-for-marketplace", action="store_true")
    parser.add_argument("--create", action="store_true", help="call CreateAlgorithm (boto3)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the request; with --create, also create the algorithm. Returns the exit code."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        request = build_request(
            args.training_image,
            args.inference_image,
            name=args.name,
            gpu=args.gpu,
            validation_role=args.validation_role,
            validation_data=args.validation_data,
            certify_for_marketplace=args.certify_for_marketplace,
        )
        validate(request, "CreateAlgorithm")
    except UserError as error:
        log.error("error: %s", error)
        return 2
    sys.stdout.write(json.dumps(request, indent=2) + "\n")
    if args.create:
        import boto3  # only here: nothing else in this module talks to AWS

        arn = boto3.client("sagemaker").create_algorithm(**request)["AlgorithmArn"]
        log.info("created %s", arn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
