"""Write the SageMaker walk-throughs (SPEC §10): `python tools/notebook.py [OUT_V2 [OUT_V3]]`.

One generator, two notebooks that differ only where the SageMaker Python SDK does:
`notebook.ipynb` uses SDK v2 (`Estimator`, `Model`, `HyperparameterTuner`, `Transformer`,
`AlgorithmEstimator`); `notebook_v3.ipynb` uses SDK v3 (`ModelTrainer`, `ModelBuilder`, v3's
`HyperparameterTuner` and `Transformer`, `ModelTrainer(algorithm_name=...)`). The committed
notebooks are what users open; this script is how they are edited (a test checks that they
agree), so the notebooks stay reviewable as plain Python and Markdown.

Every code cell carries one tag (`metadata.tags`) saying what it needs:
- `offline`: nothing but this repository and numpy/matplotlib (reading data, plotting, comparing
  outputs). CI executes these cells, in order, in a Jupyter kernel, against the package's real
  server on 127.0.0.1 (tests/integration/test_notebook_run.py).
- `aws`: AWS credentials and resources (the SDK, boto3). CI checks their SDK names and arguments
  against the installed SDK (tests/unit/test_notebook.py) but never runs them.
- `install`: a `%pip install` line.
An `aws` cell whose results later `offline` cells use lists those names in
`metadata.cnn_kmeans.defines` (the test gives each a local stand-in at that point).
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SDKS = ("v2", "v3")
OUTPUTS = {"v2": "notebook.ipynb", "v3": "notebook_v3.ipynb"}
OFFLINE, AWS, INSTALL = "offline", "aws", "install"
TAGS = (OFFLINE, AWS, INSTALL)
# What each notebook's first code cell installs. Keep v2 and v3 in separate environments: both
# are the one distribution `sagemaker` (README, "The notebooks and the SageMaker SDK").
REQUIREMENTS = {
    "v2": '"sagemaker>=2.190,<3" boto3 numpy matplotlib werkzeug',
    "v3": '"sagemaker>=3.27,<4" boto3 numpy matplotlib werkzeug',
}


@dataclass(frozen=True)
class Cell:
    """A notebook cell: one text, or one per SDK (a dict keyed by SDKS)."""

    kind: str  # "markdown" or "code"
    text: str | dict[str, str]
    tag: str = ""  # code cells: one of TAGS
    defines: tuple[str, ...] = field(default=())

    def source(self, sdk: str) -> str:
        """The cell's text in the notebook of this SDK."""
        text = self.text[sdk] if isinstance(self.text, dict) else self.text
        return textwrap.dedent(text).strip("\n")


def md(text: str | dict[str, str]) -> Cell:
    """A Markdown cell."""
    return Cell("markdown", text)


def code(tag: str, text: str | dict[str, str], defines: tuple[str, ...] = ()) -> Cell:
    """A code cell (`!` and `%` lines are IPython's shell and magic commands)."""
    assert tag in TAGS, tag
    return Cell("code", text, tag, defines)


INTRO = """
# cnn-kmeans on Amazon SageMaker (Python SDK {sdk})

Cluster unlabelled time series with this repository's algorithm, end to end: build and push its
two images, train on the sample data in `data/`, read the metrics, tune, deploy an endpoint and
plot the clusters, run a batch transform and compare it with the endpoint, register the algorithm
resource and train through it, then clean up.

This notebook uses the SageMaker Python SDK **{sdk}**:
{classes}.
{other}
Run it in a fresh environment (a new virtualenv or conda environment, and a kernel of its own):
SDK v2 and v3 are both the package `sagemaker` and cannot live side by side.

Run it from the repository root (this notebook's folder) with AWS credentials that may use
SageMaker, S3 and ECR, and an IAM role SageMaker can assume. Building the images needs Docker and
the AWS CLI; if this kernel has no Docker, run that one command from a machine that does. The jobs
use small CPU instances; the endpoint bills until the clean-up cell deletes it.
"""

# The end of both clean-up cells (commented out: they delete what other runs may share).
LEFTOVERS = """\
sm.delete_algorithm(AlgorithmName=algorithm_name)
# The data and outputs in S3, and the images in ECR:
# !aws s3 rm --recursive s3://{bucket}/{prefix}
# !aws ecr delete-repository --force --region {region} --repository-name cnn-kmeans-training
# !aws ecr delete-repository --force --region {region} --repository-name cnn-kmeans-inference
"""

CELLS: list[Cell] = [
    md(
        {
            "v2": INTRO.format(
                sdk="v2",
                classes="`Estimator`, `Model`, `Predictor`, `HyperparameterTuner`, "
                "`Transformer`, `AlgorithmEstimator`",
                other="`notebook_v3.ipynb` is the same walk-through with SDK v3, the current\n"
                "major version, which has none of these classes.",
            ),
            "v3": INTRO.format(
                sdk="v3",
                classes="`ModelTrainer`, `ModelBuilder`, the `Endpoint`, `EndpointConfig` and "
                "`Model` resources, v3's `HyperparameterTuner` and `Transformer`",
                other="`notebook.ipynb` is the same walk-through with SDK v2.",
            ),
        }
    ),
    code(
        INSTALL,
        {sdk: f"%pip install --quiet {REQUIREMENTS[sdk]}" for sdk in SDKS},
    ),
    code(
        OFFLINE,
        """
        import json
        import sys
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np

        # This repository's package, from its source: its declarations (metrics, the algorithm
        # spec) and its CSV reader need numpy, not torch or scikit-learn.
        sys.path.insert(0, str(Path("src").resolve()))
        from cnn_kmeans.container.metrics import METRICS, metric_definitions
        from cnn_kmeans.data import parse_csv, read_channel
        """,
    ),
    code(
        AWS,
        {
            "v2": """
            import re
            import time

            import boto3
            import sagemaker

            session = sagemaker.Session()
            region = session.boto_region_name
            account = boto3.client("sts").get_caller_identity()["Account"]
            role = sagemaker.get_execution_role()  # elsewhere than SageMaker: your role's ARN
            bucket = session.default_bucket()
            """,
            "v3": """
            import re
            import time

            import boto3
            from sagemaker.core.helper.session_helper import Session, get_execution_role

            session = Session()
            region = session.boto_region_name
            account = boto3.client("sts").get_caller_identity()["Account"]
            role = get_execution_role()  # elsewhere than SageMaker: your role's ARN
            bucket = session.default_bucket()
            """,
        },
    ),
    code(
        AWS,
        """
        prefix = "cnn-kmeans-demo"
        device = "cpu"  # "gpu" builds the GPU images, which also offer GPU instance types
        version = re.search(r'^version = "(.+)"', Path("pyproject.toml").read_text(), re.M).group(1)
        registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
        training_image = f"{registry}/cnn-kmeans-training:{version}-{device}"
        inference_image = f"{registry}/cnn-kmeans-inference:{version}-{device}"
        print(training_image, inference_image, sep="\\n")
        """,
    ),
    md("""
    ## 1. Build and push the images

    `docker/build_push.sh` builds both images on the AWS PyTorch 2.1 Deep Learning Containers,
    creates the ECR repositories if needed and pushes them (a few minutes; the GPU bases are
    large).
    """),
    code(
        AWS,
        """
        !docker/build_push.sh --account {account} --region {region} --devices {device}
        """,
    ),
    md("""
    ## 2. Train on the sample data

    The channels are folders of CSV files, one series per row, no header (`training` is required,
    `validation` adds `valid_loss` and `valid_score`). The sample data has 3 groups of series.
    """),
    code(
        AWS,
        {
            "v2": """
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
                metric_definitions=metric_definitions(),  # the regexes the job's log lines match
                output_path=f"s3://{bucket}/{prefix}/output",
                enable_network_isolation=True,  # as on AWS Marketplace: no network needed
                max_run=3600,
                sagemaker_session=session,
            )
            estimator.fit(channels)
            """,
            "v3": """
            from sagemaker.train import ModelTrainer
            from sagemaker.train.configs import (
                Compute,
                InputData,
                MetricDefinition,
                Networking,
                OutputDataConfig,
                StoppingCondition,
            )

            data_uri = session.upload_data("data", bucket=bucket, key_prefix=f"{prefix}/data")
            channels = [
                InputData(
                    channel_name="training",
                    data_source=f"{data_uri}/training/",
                    content_type="text/csv",
                ),
                InputData(
                    channel_name="validation",
                    data_source=f"{data_uri}/validation/",
                    content_type="text/csv",
                ),
            ]
            model_trainer = ModelTrainer(
                training_image=training_image,
                role=role,
                compute=Compute(instance_type="ml.m5.xlarge", instance_count=1),
                hyperparameters={"clusters": 3, "epochs": 25, "seed": 0},
                output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/{prefix}/output"),
                networking=Networking(enable_network_isolation=True),  # no network needed
                stopping_condition=StoppingCondition(max_runtime_in_seconds=3600),
                sagemaker_session=session,
            ).with_metric_definitions(  # the regexes the job's log lines match
                [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in metric_definitions()]
            )
            model_trainer.train(input_data_config=channels)
            """,
        },
    ),
    md("""
    ## 3. Metrics

    The job prints `train_loss` and `valid_loss` after every epoch, and the silhouette
    coefficients `train_score` and `valid_score` at the end; SageMaker keeps the last value of
    each.
    """),
    code(
        AWS,
        {
            "v2": """
            description = estimator.latest_training_job.describe()
            metrics = description.get("FinalMetricDataList", [])
            final = {m["MetricName"]: m["Value"] for m in metrics}
            """,
            "v3": """
            # The trained job: v3 keeps it in `_latest_training_job` (the SDK's own examples read
            # it there; ModelTrainer has no public accessor as of v3.27).
            training_job = model_trainer._latest_training_job.refresh()
            final = {m.metric_name: m.value for m in training_job.final_metric_data_list or []}
            """,
        },
        defines=("final",),
    ),
    code(
        OFFLINE,
        """
        for metric in METRICS:
            print(f"{metric.name:12} {final.get(metric.name, float('nan')):10.4f}  {metric.help}")
        """,
    ),
    md("""
    ## 4. Tune

    A tuning job maximises `valid_score` (it needs the `validation` channel). The hyperparameters
    not tuned keep the training job's values.
    """),
    code(
        AWS,
        {
            "v2": """
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
            """,
            "v3": """
            from sagemaker.core.parameter import (
                CategoricalParameter,
                ContinuousParameter,
                IntegerParameter,
            )
            from sagemaker.train.tuner import HyperparameterTuner

            tuner = HyperparameterTuner(
                model_trainer=model_trainer,
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
            tuner.tune(inputs=channels)
            print("best training job:", tuner.best_training_job())
            tuner.analytics().dataframe().sort_values("FinalObjectiveValue", ascending=False)
            """,
        },
    ),
    md("""
    ## 5. Deploy, invoke, plot the clusters

    The inference image serves the model of the first training job. A CSV request gets one CSV
    row per series: the cluster label, then the features. `invoke` sends one request and returns
    the answer as text.
    """),
    code(
        AWS,
        {
            "v2": """
            from sagemaker.model import Model
            from sagemaker.predictor import Predictor

            model = Model(
                image_uri=inference_image,
                model_data=estimator.model_data,
                role=role,
                predictor_cls=Predictor,  # bytes in, bytes out
                enable_network_isolation=True,
                sagemaker_session=session,
            )
            predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large")


            def invoke(body, content_type="text/csv", accept="text/csv"):
                \"\"\"The endpoint's answer to one request, as text.\"\"\"
                args = {"ContentType": content_type, "Accept": accept}
                return predictor.predict(body, initial_args=args).decode()
            """,
            "v3": """
            from sagemaker.serve import ModelBuilder

            model_builder = ModelBuilder(
                image_uri=inference_image,  # an image of your own and no inference_spec: the
                s3_model_data_url=training_job.model_artifacts.s3_model_artifacts,  # image serves
                role_arn=role,
                network=Networking(enable_network_isolation=True),
                sagemaker_session=session,
            )
            model = model_builder.build()  # a sagemaker.core.resources.Model
            endpoint = model_builder.deploy(initial_instance_count=1, instance_type="ml.m5.large")


            def invoke(body, content_type="text/csv", accept="text/csv"):
                \"\"\"The endpoint's answer to one request, as text.\"\"\"
                answer = endpoint.invoke(body=body, content_type=content_type, accept=accept).body
                # botocore's stream; already read if the endpoint had a deserializer (ModelBuilder
                # sets one from a schema_builder, which this notebook does not give).
                return (answer.read() if hasattr(answer, "read") else answer).decode()
            """,
        },
        defines=("invoke",),
    ),
    code(
        OFFLINE,
        """
        def split(text):
            \"\"\"Labels and features of output lines `label,f1,...,fD`, with the package's reader.

            Blank lines are skipped: batch transform's AssembleWith=Line adds a line break after
            each mini-batch's answer, which already ends with one.
            \"\"\"
            values = parse_csv(text, "output", skip_blank_lines=True)
            return values[:, 0].astype(int), values[:, 1:]


        # The series as the algorithm reads them: ragged rows, empty cells and the tokens nan, NA
        # and null are missing values (NaN here; rows are NaN-padded to the longest).
        test_csv = Path("data/inference/input/test.csv")
        series = read_channel(test_csv)
        labels, features = split(invoke(test_csv.read_text()))
        print(len(labels), "series of", len(series), "; cluster sizes:", np.bincount(labels))

        truth = np.loadtxt("data/labels/test.csv", dtype=int)  # the generator's groups
        table = np.zeros((truth.max() + 1, labels.max() + 1), dtype=int)
        np.add.at(table, (truth, labels), 1)
        print("rows: true group, columns: cluster\\n", table)
        """,
    ),
    code(
        OFFLINE,
        """
        k = labels.max() + 1
        fig, axes = plt.subplots(1, k, figsize=(5 * k, 3), sharey=True, squeeze=False)
        for cluster, ax in enumerate(axes[0]):
            members = series[labels == cluster]
            ax.set_title(f"cluster {cluster} ({len(members)} series)")
            if not len(members):
                continue
            ax.plot(members.T, color="0.8", linewidth=0.5)  # missing values leave gaps
            steps = np.flatnonzero(~np.isnan(members).all(axis=0))
            ax.plot(steps, np.nanmedian(members[:, steps], axis=0), color="black", linewidth=2)
        plt.show()
        """,
    ),
    md("""
    Other content types and outputs: JSON in and out, and only the labels (`output=labels` on the
    Accept type keeps responses small).
    """),
    code(
        OFFLINE,
        """
        body = json.dumps({"instances": [[0.1, 0.5, 0.9, 1.2], [1.0, None, 0.2]]})
        answer = json.loads(invoke(body, "application/json", "application/json; output=labels"))
        print("labels:", [prediction["label"] for prediction in answer["predictions"]])
        """,
    ),
    md("""
    ## 6. Batch transform, compared with the endpoint

    One output row per input row, in order (`SplitType=Line`, `MultiRecord`, `AssembleWith=Line`;
    CSV in and out).
    """),
    code(
        AWS,
        {
            "v2": """
            transformer = model.transformer(  # creates a second SageMaker model
                instance_count=1,
                instance_type="ml.m5.large",
                strategy="MultiRecord",
                assemble_with="Line",
                accept="text/csv",
                output_path=f"s3://{bucket}/{prefix}/transform",
            )
            inputs = f"{data_uri}/inference/input/"
            transformer.transform(inputs, content_type="text/csv", split_type="Line")
            transformer.wait()
            batch_output = sagemaker.s3.S3Downloader.read_file(
                f"{transformer.output_path}/test.csv.out", sagemaker_session=session
            )
            """,
            "v3": """
            from sagemaker.core.s3 import S3Downloader

            transformer = model_builder.transformer(
                instance_count=1,
                instance_type="ml.m5.large",
                strategy="MultiRecord",
                assemble_with="Line",
                accept="text/csv",
                output_path=f"s3://{bucket}/{prefix}/transform",
            )
            inputs = f"{data_uri}/inference/input/"
            transformer.transform(inputs, content_type="text/csv", split_type="Line", wait=True)
            batch_output = S3Downloader.read_file(
                f"s3://{bucket}/{prefix}/transform/test.csv.out", sagemaker_session=session
            )
            """,
        },
        defines=("batch_output",),
    ),
    code(
        OFFLINE,
        """
        batch_labels, batch_features = split(batch_output)
        print("rows:", len(batch_labels), "for", len(series), "series")
        print("same labels:", np.array_equal(batch_labels, labels))
        print("same features:", np.allclose(batch_features, features, rtol=1e-5, atol=1e-6))
        """,
    ),
    md(
        {
            sdk: f"""
    ## 7. Register the algorithm and train through it

    The CreateAlgorithm request is generated from the package's declarations (hyperparameters
    with types, ranges and defaults; metrics; channels; instance types; content types) and
    validated offline. From a shell: `cnn-kmeans spec --training-image ... --inference-image ...
    --create`. To list it on AWS Marketplace, add `--validation-role ROLE --validation-data
    S3_PREFIX_OF_data/` and `--certify-for-marketplace`.
    {how}
    """
            for sdk, how in (
                ("v2", "SDK v2 trains through it with `AlgorithmEstimator`."),
                (
                    "v3",
                    "SDK v3 has no `AlgorithmEstimator`: `ModelTrainer(algorithm_name=ARN)` "
                    "trains through it.",
                ),
            )
        }
    ),
    code(
        AWS,
        """
        from cnn_kmeans.container.algorithm import build_request
        from cnn_kmeans.container.service_model import validate

        algorithm_name = "cnn-kmeans-demo"
        request = build_request(training_image, inference_image, name=algorithm_name)
        validate(request, "CreateAlgorithm")  # botocore's service model, no call to AWS
        sm = boto3.client("sagemaker", region_name=region)
        algorithm_arn = sm.create_algorithm(**request)["AlgorithmArn"]
        while True:
            status = sm.describe_algorithm(AlgorithmName=algorithm_name)["AlgorithmStatus"]
            if status not in ("Pending", "InProgress"):
                break
            time.sleep(10)
        print(algorithm_arn, status)
        """,
    ),
    code(
        AWS,
        {
            "v2": """
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
            """,
            "v3": """
            s3_output = f"s3://{bucket}/{prefix}/algorithm-output"
            algorithm_trainer = ModelTrainer(
                algorithm_name=algorithm_arn,  # instead of training_image
                role=role,
                compute=Compute(instance_type="ml.m5.xlarge", instance_count=1),
                hyperparameters={"clusters": 3, "epochs": 25},
                output_data_config=OutputDataConfig(s3_output_path=s3_output),
                sagemaker_session=session,
            )
            algorithm_trainer.train(input_data_config=channels)
            """,
        },
    ),
    md("""
    ## 8. Clean up

    The endpoint bills by the hour; the rest costs little but is yours to keep or delete. Both
    the endpoint's model and the batch transform's model are deleted, with the endpoint and its
    endpoint configuration.
    """),
    code(
        AWS,
        {
            "v2": textwrap.dedent("""
            # Model.deploy() and Model.transformer() each created a SageMaker model (model.name is
            # only the last): delete the endpoint's from its endpoint configuration, before the
            # endpoint and that configuration go, then the transformer's.
            predictor.delete_model()
            predictor.delete_endpoint()  # and its endpoint configuration
            transformer.delete_model()
            """)
            + LEFTOVERS,
            "v3": textwrap.dedent("""
            from sagemaker.core.resources import EndpointConfig
            from sagemaker.core.resources import Model as ModelResource

            # Every model the endpoint's configuration names, and the transformer's.
            endpoint_config = EndpointConfig.get(endpoint_config_name=endpoint.endpoint_config_name)
            model_names = {variant.model_name for variant in endpoint_config.production_variants}
            model_names.add(transformer.model_name)
            endpoint.delete()
            endpoint_config.delete()
            for name in sorted(model_names):
                ModelResource.get(model_name=name).delete()
            """)
            + LEFTOVERS,
        },
    ),
]


def build(sdk: str = "v2") -> nbformat.NotebookNode:
    """The notebook of one SDK; cell ids are fixed so that regenerating it changes nothing."""
    cells = []
    for number, cell in enumerate(CELLS, 1):
        source, cell_id = cell.source(sdk), f"cell-{number:02d}"
        if cell.kind == "markdown":
            cells.append(new_markdown_cell(source, id=cell_id))
            continue
        metadata: dict = {"tags": [cell.tag]}
        if cell.defines:
            metadata["cnn_kmeans"] = {"defines": list(cell.defines)}
        cells.append(new_code_cell(source, id=cell_id, metadata=metadata))
    metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return new_notebook(cells=cells, metadata=metadata)


def main(argv: list[str]) -> int:
    """Validate both notebooks and write them (default: notebook.ipynb, notebook_v3.ipynb)."""
    paths = [Path(arg) for arg in argv] + [Path(OUTPUTS[sdk]) for sdk in SDKS[len(argv) :]]
    for sdk, path in zip(SDKS, paths, strict=True):
        notebook = build(sdk)
        nbformat.validate(notebook)
        path.write_text(nbformat.writes(notebook) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
