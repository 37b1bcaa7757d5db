"""Write notebook.ipynb, the SageMaker walk-through (SPEC §10): `python tools/notebook.py OUT`.

The committed notebook is what users open; this script is how it is edited (a test checks that
the two agree), so the notebook stays reviewable as plain Python and Markdown.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def md(text: str) -> tuple[str, str]:
    """A Markdown cell."""
    return ("markdown", text)


def code(text: str) -> tuple[str, str]:
    """A code cell (`!` and `%` lines are IPython's shell and magic commands)."""
    return ("code", text)


CELLS: list[tuple[str, str]] = [
    md("""
# cnn-kmeans on Amazon SageMaker

Cluster unlabelled time series with this repository's algorithm, end to end: build and push its
two images, train on the sample data in `data/`, read the metrics, tune, deploy an endpoint and
plot the clusters, run a batch transform and compare it with the endpoint, register the algorithm
resource and train through `AlgorithmEstimator`, then clean up.

Run it from the repository root (this notebook's folder) with AWS credentials that may use
SageMaker, S3 and ECR, and an IAM role SageMaker can assume. Building the images needs Docker and
the AWS CLI; if this kernel has no Docker, run that one command from a machine that does. The jobs
use small CPU instances; the endpoint bills until the clean-up cell deletes it.
"""),
    code("""
%pip install --quiet "sagemaker>=2.190,<3" matplotlib werkzeug
"""),
    code("""
import csv
import re
import sys
import time
from pathlib import Path

import boto3
import matplotlib.pyplot as plt
import numpy as np
import sagemaker

# This repository's package, for its declarations only (metric definitions, the algorithm
# spec): they need neither torch nor scikit-learn, so there is nothing heavy to install.
sys.path.insert(0, str(Path("src").resolve()))
from cnn_kmeans.container.metrics import METRICS, metric_definitions

session = sagemaker.Session()
region = session.boto_region_name
account = boto3.client("sts").get_caller_identity()["Account"]
role = sagemaker.get_execution_role()  # elsewhere than SageMaker: your role's ARN as a string
bucket = session.default_bucket()
prefix = "cnn-kmeans-demo"
device = "cpu"  # "gpu" builds the GPU images, which also offer GPU instance types
version = re.search(r'^version = "(.+)"', Path("pyproject.toml").read_text(), re.M).group(1)
registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
training_image = f"{registry}/cnn-kmeans-training:{version}-{device}"
inference_image = f"{registry}/cnn-kmeans-inference:{version}-{device}"
print(training_image, inference_image, sep="\\n")
"""),
    md("""
## 1. Build and push the images

`docker/build_push.sh` builds both images on the AWS PyTorch 2.1 Deep Learning Containers, creates
the ECR repositories if needed and pushes them (a few minutes; the GPU bases are large).
"""),
    code("""
!docker/build_push.sh --account {account} --region {region} --devices {device}
"""),
    md("""
## 2. Train on the sample data

The channels are folders of CSV files, one series per row, no header (`training` is required,
`validation` adds `valid_loss` and `valid_score`). The sample data has 3 groups of series.
"""),
    code("""
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput

data_uri = session.upload_data("data", bucket=bucket, key_prefix=f"{prefix}/data")
channels = {
    "training": TrainingInput(f"{data_uri}/training/", content_type="text/csv"),
    "validation": TrainingInput(f"{data_uri}/validation/", content_type="text/csv"),
}
estimator = Estimator(
    image_uri=training_image,
    role=role,
    instance_count=1,
    instance_type="ml.m5.xlarge",
    hyperparameters={"clusters": 3, "epochs": 25, "seed": 0},
    metric_definitions=metric_definitions(),  # the regexes the training job's log lines match
    output_path=f"s3://{bucket}/{prefix}/output",
    enable_network_isolation=True,  # as on AWS Marketplace: the job never needs the network
    max_run=3600,
    sagemaker_session=session,
)
estimator.fit(channels)
"""),
    md("""
## 3. Metrics

The job prints `train_loss` and `valid_loss` after every epoch, and the silhouette coefficients
`train_score` and `valid_score` at the end; SageMaker keeps the last value of each.
"""),
    code("""
description = estimator.latest_training_job.describe()
final = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", [])}
for metric in METRICS:
    print(f"{metric.name:12} {final.get(metric.name, float('nan')):10.4f}  {metric.help}")
"""),
    md("""
## 4. Tune

A tuning job maximises `valid_score` (it needs the `validation` channel). The hyperparameters not
tuned keep the estimator's values.
"""),
    code("""
from sagemaker.tuner import (
    CategoricalParameter,
    ContinuousParameter,
    HyperparameterTuner,
    IntegerParameter,
)

tuner = HyperparameterTuner(
    estimator,
    objective_metric_name="valid_score",
    objective_type="Maximize",
    hyperparameter_ranges={
        "lr": ContinuousParameter(0.0001, 0.01, scaling_type="Logarithmic"),
        "output-size": IntegerParameter(16, 320),
        "scaling": CategoricalParameter(["global", "series"]),
    },
    metric_definitions=metric_definitions(),
    max_jobs=6,
    max_parallel_jobs=2,
)
tuner.fit(channels)
print("best training job:", tuner.best_training_job())
tuner.analytics().dataframe().sort_values("FinalObjectiveValue", ascending=False)
"""),
    md("""
## 5. Deploy, invoke, plot the clusters

The inference image serves the model of the first training job. A CSV request gets one CSV row
per series: the cluster label, then the features.
"""),
    code("""
from sagemaker.deserializers import CSVDeserializer
from sagemaker.model import Model
from sagemaker.predictor import Predictor
from sagemaker.serializers import CSVSerializer

model = Model(
    image_uri=inference_image,
    model_data=estimator.model_data,
    role=role,
    predictor_cls=Predictor,
    enable_network_isolation=True,
    sagemaker_session=session,
)
predictor = model.deploy(
    initial_instance_count=1,
    instance_type="ml.m5.large",
    serializer=CSVSerializer(),
    deserializer=CSVDeserializer(),
)
"""),
    code("""
def read_series(path):
    \"\"\"The rows of a CSV of series (rows may differ in length; empty cells are missing).\"\"\"
    with open(path, newline="") as file:
        return [np.array([float(x) if x else np.nan for x in row]) for row in csv.reader(file)]


def split(rows):
    \"\"\"Labels and features from output rows `label,f1,...,fD`.\"\"\"
    labels = np.array([int(row[0]) for row in rows])
    return labels, np.array([[float(x) for x in row[1:]] for row in rows])


test_csv = Path("data/inference/input/test.csv")
series = read_series(test_csv)
labels, features = split(predictor.predict(test_csv.read_text()))
print(len(labels), "series; cluster sizes:", np.bincount(labels))

truth = np.loadtxt("data/labels/test.csv", dtype=int)  # the generator's groups, for comparison
print("rows: true group, columns: cluster\\n", np.histogram2d(truth, labels, bins=(3, 3))[0])
"""),
    code("""
k = labels.max() + 1
fig, axes = plt.subplots(1, k, figsize=(5 * k, 3), sharey=True)
for cluster, ax in zip(range(k), np.atleast_1d(axes), strict=True):
    members = [s for s, label in zip(series, labels, strict=True) if label == cluster]
    if not members:
        continue
    width = max(len(s) for s in members)
    padded = np.full((len(members), width), np.nan)
    for i, s in enumerate(members):
        padded[i, : len(s)] = s
        ax.plot(s, color="0.8", linewidth=0.5)
    ax.plot(np.nanmedian(padded, axis=0), color="black", linewidth=2)
    ax.set_title(f"cluster {cluster} ({len(members)} series)")
plt.show()
"""),
    md("""
Other content types and outputs: JSON in and out, and only the labels (`output=labels` on the
Accept type keeps responses small).
"""),
    code("""
runtime = boto3.client("sagemaker-runtime", region_name=region)
response = runtime.invoke_endpoint(
    EndpointName=predictor.endpoint_name,
    ContentType="application/json",
    Accept="application/json; output=labels",
    Body='{"instances": [[0.1, 0.5, 0.9, 1.2], [1.0, null, 0.2]]}',
)
print(response["Body"].read().decode())
"""),
    md("""
## 6. Batch transform, compared with the endpoint

One output row per input row, in order (`SplitType=Line`, `MultiRecord`, `AssembleWith=Line`).
"""),
    code("""
transformer = model.transformer(
    instance_count=1,
    instance_type="ml.m5.large",
    strategy="MultiRecord",
    assemble_with="Line",
    accept="text/csv",
    output_path=f"s3://{bucket}/{prefix}/transform",
)
transformer.transform(f"{data_uri}/inference/input/", content_type="text/csv", split_type="Line")
transformer.wait()
out = sagemaker.s3.S3Downloader.read_file(
    f"{transformer.output_path}/test.csv.out", sagemaker_session=session
)
batch_labels, batch_features = split(csv.reader(out.splitlines()))
print("same labels:", np.array_equal(batch_labels, labels))
print("same features:", np.allclose(batch_features, features, rtol=1e-5, atol=1e-6))
"""),
    md("""
## 7. Register the algorithm and train through `AlgorithmEstimator`

The CreateAlgorithm request is generated from the package's declarations (hyperparameters with
types, ranges and defaults; metrics; channels; instance types; content types) and validated
offline. From a shell: `cnn-kmeans spec --training-image ... --inference-image ... --create`. To
list it on AWS Marketplace, add `--validation-role ROLE --validation-data S3_PREFIX_OF_data/`
and `--certify-for-marketplace`.
"""),
    code("""
from cnn_kmeans.container.algorithm import build_request
from cnn_kmeans.container.service_model import validate

algorithm_name = "cnn-kmeans-demo"
request = build_request(training_image, inference_image, name=algorithm_name)
validate(request, "CreateAlgorithm")  # botocore's service model, no call to AWS
sm = boto3.client("sagemaker", region_name=region)
algorithm_arn = sm.create_algorithm(**request)["AlgorithmArn"]
while (status := sm.describe_algorithm(AlgorithmName=algorithm_name)["AlgorithmStatus"]) in (
    "Pending",
    "InProgress",
):
    time.sleep(10)
print(algorithm_arn, status)
"""),
    code("""
from sagemaker.algorithm import AlgorithmEstimator

algorithm_estimator = AlgorithmEstimator(
    algorithm_arn=algorithm_arn,
    role=role,
    instance_count=1,
    instance_type="ml.m5.xlarge",
    hyperparameters={"clusters": 3, "epochs": 25},
    output_path=f"s3://{bucket}/{prefix}/algorithm-output",
    sagemaker_session=session,
)
algorithm_estimator.fit(channels)
"""),
    md("""
## 8. Clean up

The endpoint bills by the hour; the rest costs little but is yours to keep or delete.
"""),
    code("""
predictor.delete_endpoint()
model.delete_model()
sm.delete_algorithm(AlgorithmName=algorithm_name)
# The data and outputs in S3, and the images in ECR:
# !aws s3 rm --recursive s3://{bucket}/{prefix}
# !aws ecr delete-repository --force --region {region} --repository-name cnn-kmeans-training
# !aws ecr delete-repository --force --region {region} --repository-name cnn-kmeans-inference
"""),
]


def build() -> nbformat.NotebookNode:
    """The notebook; cell ids are fixed so that regenerating it changes nothing."""
    cells = []
    for number, (kind, text) in enumerate(CELLS, 1):
        source = textwrap.dedent(text).strip("\n")
        make = new_markdown_cell if kind == "markdown" else new_code_cell
        cells.append(make(source, id=f"cell-{number:02d}"))
    metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return new_notebook(cells=cells, metadata=metadata)


def main(argv: list[str]) -> int:
    """Validate the notebook and write it to argv[0] (default: notebook.ipynb)."""
    path = Path(argv[0] if argv else "notebook.ipynb")
    notebook = build()
    nbformat.validate(notebook)
    path.write_text(nbformat.writes(notebook) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
