"""Run notebook.ipynb's deploy, batch transform and clean-up cells with SDK v2 against moto.

Run by the Python of runs/sdk-v2 (SDK v2 and moto, pinned in tools/sdk/v2.txt), never by the
project's: `python tests/notebook_cleanup.py notebook.ipynb`. moto stands in for SageMaker, S3
and IAM inside this process (botocore never sends a request); the test also runs it in an empty
network namespace. Prints JSON: the SageMaker models, endpoints and endpoint configurations that
exist after each cell, and the algorithms the clean-up deleted.

The cells are the notebook's own; what earlier cells define (the session, role, image, the
trained model's S3 URI, the bucket) is set here. `time.sleep` is a no-op, since moto finishes
jobs at once and the SDK would poll every 30 s.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import types


def cells(path: str) -> dict[str, str]:
    """The deploy ("invoke"), batch transform ("batch_output") and clean-up (last aws) cells."""
    with open(path) as file:
        notebook = json.load(file)
    aws = [c for c in notebook["cells"] if "aws" in c.get("metadata", {}).get("tags", [])]
    by_name = {}
    for cell in aws:
        for name in cell["metadata"].get("cnn_kmeans", {}).get("defines", []):
            by_name[name] = "".join(cell["source"])
    return {
        "deploy": by_name["invoke"],
        "transform": by_name["batch_output"],
        "clean-up": "".join(aws[-1]["source"]),
    }


def main(argv: list[str]) -> int:
    (path,) = argv
    import boto3
    from moto import mock_aws

    time.sleep = lambda seconds: None
    report: dict = {"after": {}, "deleted_algorithms": []}
    with mock_aws(), contextlib.redirect_stdout(sys.stderr):
        import sagemaker

        boto = boto3.Session(region_name="us-east-1")
        boto.client("s3").create_bucket(Bucket="demo-bucket")
        # What the transform job would have written, for the cell's download.
        key = "cnn-kmeans-demo/transform/test.csv.out"
        boto.client("s3").put_object(Bucket="demo-bucket", Key=key, Body=b"0,0.5\n")
        role = boto.client("iam").create_role(RoleName="demo", AssumeRolePolicyDocument="{}")
        sm = boto.client("sagemaker")
        # moto has no DeleteAlgorithm: record the call.
        sm.delete_algorithm = lambda **kwargs: report["deleted_algorithms"].append(kwargs)
        namespace = {
            "sagemaker": sagemaker,
            "session": sagemaker.Session(boto_session=boto),
            "role": role["Role"]["Arn"],
            "region": "us-east-1",
            "bucket": "demo-bucket",
            "prefix": "cnn-kmeans-demo",
            "data_uri": "s3://demo-bucket/cnn-kmeans-demo/data",
            "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cnn-kmeans:0-cpu",
            "estimator": types.SimpleNamespace(model_data="s3://demo-bucket/model.tar.gz"),
            "sm": sm,
            "algorithm_name": "cnn-kmeans-demo",
        }
        for name, source in cells(path).items():
            exec(compile(source, f"{path} ({name} cell)", "exec"), namespace)
            report["after"][name] = {
                "models": [m["ModelName"] for m in sm.list_models()["Models"]],
                "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
                "endpoint_configs": [
                    c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]
                ],
            }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
