"""The inference handlers (model_fn, input_fn, predict_fn, output_fn) and the Flask app's routes
and error mapping, without a server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_kmeans.container.app import create_app
from cnn_kmeans.container.environment import Layout, ServingSettings
from cnn_kmeans.container.inference import input_fn, model_fn, output_fn, predict_fn
from cnn_kmeans.data import format_csv, pad_rows
from cnn_kmeans.errors import ArtifactError, UserError
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import save
from tests.helpers import cylinder_bell_funnel, tiny_config


@pytest.fixture(scope="module")
def rows() -> list[np.ndarray]:
    rows, _ = cylinder_bell_funnel(60, seed=3, low=20, high=50)
    rows[1][[3, 4]] = np.nan
    return rows


@pytest.fixture(scope="module")
def model_dir(rows, tmp_path_factory) -> Path:
    model = CNNKMeans(tiny_config(epochs=1), device=torch.device("cpu")).fit(rows)
    return save(model, tmp_path_factory.mktemp("artifact") / "model")


@pytest.fixture(scope="module")
def model(model_dir) -> CNNKMeans:
    return model_fn(model_dir, torch.device("cpu"))


def csv_body(rows: list[np.ndarray]) -> bytes:
    lines = (",".join("" if np.isnan(v) else f"{v:.9g}" for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode()


def assert_same_features(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def test_model_fn_loads_the_artifact_and_says_what_is_wrong(model, tmp_path):
    assert model.n_clusters_ == 3 and model.centroids_.shape == (3, 8)
    with pytest.raises(ArtifactError, match=r"lacks config\.json, encoder\.pt, centroids\.npy"):
        model_fn(tmp_path)


def test_handlers_answer_one_csv_line_per_row_like_the_cli(model, rows):
    data = input_fn(csv_body(rows), "text/csv")
    prediction = predict_fn(data, model)
    body, content_type = output_fn(prediction, None)
    assert content_type == "text/csv"
    features = model.transform(pad_rows(rows))
    labels = model.assign(features)[0]
    lines = body.decode().splitlines()
    assert len(lines) == len(rows)
    np.testing.assert_array_equal([int(line.split(",")[0]) for line in lines], labels)
    parsed = np.array([line.split(",")[1:] for line in lines], dtype=np.float32)
    assert_same_features(parsed, features)
    assert body.decode() == format_csv(prediction.labels, prediction.features)


def test_predict_fn_encodes_in_a_few_batches_under_inference_mode(model, rows):
    calls = []
    hook = model.encoder_.register_forward_hook(
        lambda module, args, output: calls.append((len(output), torch.is_inference_mode_enabled()))
    )
    try:
        prediction = predict_fn(pad_rows(rows), model)
    finally:
        hook.remove()
    assert sum(size for size, _ in calls) == len(rows)
    assert len(calls) <= 4 and all(inference for _, inference in calls)
    assert prediction.labels.shape == (60,) and prediction.distances.shape == (60, 3)


def test_a_row_alone_gets_the_label_and_features_it_gets_in_a_batch(model, rows):
    batch = predict_fn(pad_rows(rows), model)
    for i in (0, 1, 17, 59):
        alone = predict_fn(pad_rows([rows[i]]), model)
        assert alone.labels[0] == batch.labels[i]
        assert_same_features(alone.features[0], batch.features[i])


def test_output_fn_choices(model, rows):
    prediction = predict_fn(pad_rows(rows[:5]), model)
    body, content_type = output_fn(prediction, "application/json;output=distances")
    assert content_type == "application/json"
    records = json.loads(body)["predictions"]
    assert [r["label"] for r in records] == prediction.labels.tolist()
    distances = np.array([r["distances"] for r in records], dtype=np.float32)
    np.testing.assert_array_equal(distances, prediction.distances)  # printed to round-trip
    body, content_type = output_fn(prediction, "application/jsonlines", default_output="labels")
    assert content_type == "application/jsonlines"
    assert [json.loads(line) for line in body.splitlines()] == [
        {"label": label} for label in prediction.labels.tolist()
    ]


def settings(tmp_path: Path, **changes) -> ServingSettings:
    return ServingSettings(layout=Layout(tmp_path), workers=3, **changes)


def test_app_routes(model, rows, tmp_path):
    client = create_app(model, settings(tmp_path)).test_client()
    assert client.get("/ping").status_code == 200
    assert client.get("/execution-parameters").get_json() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }
    response = client.post(
        "/invocations",
        data=csv_body(rows[:4]),
        headers={"Content-Type": "text/csv", "Accept": "application/jsonlines;output=labels"},
    )
    assert response.status_code == 200 and response.mimetype == "application/jsonlines"
    assert len(response.data.splitlines()) == 4
    assert client.get("/invocations").status_code == 405
    assert client.get("/nowhere").status_code == 404


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Content-Type": "text/csv"}, b"1,2\n3,oops\n", 400, "line 2, column 2: not a number"),
        ({"Content-Type": "application/json"}, b"[[1, 2]", 400, "line 1, column 8"),
        ({"Content-Type": "text/plain"}, b"1,2\n", 415, "send one of text/csv"),
        ({"Accept": "image/png"}, b"1,2\n", 406, "accept one of text/csv"),
        ({}, b"1," * 600, 413, "above the limit of 1048 bytes"),
    ],
)
def test_app_maps_user_errors_to_4xx_with_the_message(
    model, tmp_path, headers, body, status, message
):
    app = create_app(model, settings(tmp_path, max_payload_mb=0.001))
    response = app.test_client().post("/invocations", data=body, headers=headers)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


class BrokenModel:
    """Stands for a bug inside inference."""

    def transform(self, data: np.ndarray) -> np.ndarray:
        raise RuntimeError("secret internal detail")


def test_a_bug_is_a_generic_500_with_the_traceback_in_the_log_only(tmp_path, caplog):
    client = create_app(BrokenModel(), settings(tmp_path)).test_client()
    with caplog.at_level(logging.ERROR, logger="cnn_kmeans"):
        response = client.post("/invocations", data=b"1,2\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "internal error" in text and "secret" not in text and "Traceback" not in text
    assert "secret internal detail" in caplog.text and "RuntimeError" in caplog.text


def test_advertised_payload_is_never_above_the_limit(model, tmp_path):
    def advertised(mb: float) -> int:
        app = create_app(model, settings(tmp_path, max_payload_mb=mb))
        return app.test_client().get("/execution-parameters").get_json()["MaxPayloadInMB"]

    limits = (100, 6, 2.5, 1.5, 1)
    assert [advertised(mb) for mb in limits] == [6, 6, 2, 1, 1]
    assert all(advertised(mb) <= mb for mb in limits)


@pytest.mark.parametrize("text", ["0.5", "0.999"])
def test_a_payload_limit_batch_transform_cannot_be_told_refuses_to_start(text, tmp_path):
    environ = {"SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_MAX_PAYLOAD_IN_MB": text}
    with pytest.raises(UserError, match=r"below 1 MB.*set 1 or more"):
        ServingSettings.from_environ(environ, cpus=2)


def test_serving_settings_the_app_relies_on(tmp_path):
    default = ServingSettings.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)}, cpus=4)
    assert default.model_dir == tmp_path / "model" and default.host == "0.0.0.0"
    assert default.max_payload_bytes == 6 * 2**20 and default.threads_per_worker == 1
    environ = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    batch = ServingSettings.from_environ(environ, cpus=4)
    assert batch.max_payload_mb == 100 and batch.threads_per_worker == 2  # 0: batch's "no limit"
    gpus = ServingSettings.from_environ({}, cpus=8, gpus=2)
    assert gpus.workers == 2 and gpus.threads_per_worker == 4
    for bad in ("-1", "nan", "inf", "six"):
        with pytest.raises(UserError, match="SAGEMAKER_MAX_PAYLOAD_IN_MB"):
            ServingSettings.from_environ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": bad})
        with pytest.raises(UserError, match="CNN_KMEANS_MAX_RESPONSE_MB"):
            ServingSettings.from_environ({"CNN_KMEANS_MAX_RESPONSE_MB": bad})


def test_real_time_and_batch_transform_defaults(tmp_path):
    # A real-time endpoint: InvokeEndpoint waits 60 s and takes at most 6 MiB back.
    realtime = ServingSettings.from_environ({}, cpus=2)
    assert not realtime.batch and realtime.timeout == 60
    assert realtime.max_response_bytes == 6 * 2**20
    # Batch transform (SageMaker sets SAGEMAKER_BATCH=true): long requests, any response size.
    batch = ServingSettings.from_environ({"SAGEMAKER_BATCH": "true"}, cpus=2)
    assert batch.batch and batch.timeout == 600 and batch.max_response_bytes is None
    # Asynchronous and serverless endpoints look like real-time ones: their users set these.
    asynchronous = ServingSettings.from_environ(
        {
            "CNN_KMEANS_MAX_RESPONSE_MB": "0",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024",
        },
        cpus=2,
    )
    assert asynchronous.max_response_bytes is None and asynchronous.timeout == 3600
    assert asynchronous.max_payload_bytes == 2**30
    serverless = ServingSettings.from_environ({"CNN_KMEANS_MAX_RESPONSE_MB": "4"}, cpus=2)
    assert serverless.max_response_bytes == 4 * 2**20
    capped = ServingSettings.from_environ(
        {"SAGEMAKER_BATCH": "true", "CNN_KMEANS_MAX_RESPONSE_MB": "6"}, cpus=2
    )
    assert capped.max_response_bytes == 6 * 2**20  # what the user sets wins


@pytest.fixture(scope="module")
def wide_model(rows) -> CNNKMeans:
    """A model with the default 320 features: its answers are far larger than its requests."""
    return CNNKMeans(tiny_config(epochs=1, output_size=320), torch.device("cpu")).fit(rows)


def test_a_real_time_response_above_6_mb_is_a_413_saying_what_to_ask_for(wide_model, rows):
    body = csv_body(rows * 34)  # 2,040 short rows: 0.3 MB in, about 7 MB of features out
    realtime = create_app(wide_model, ServingSettings.from_environ({}, cpus=1)).test_client()
    answer = realtime.post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 413
    text = answer.get_data(as_text=True)
    assert "above the limit of 6291456 bytes" in text, text
    assert "Accept: text/csv;output=labels" in text and "send fewer rows" in text
    fitting = int(text.split("about ")[1].split()[0])
    assert 0.8 * 6 * 2**20 < fitting * 321 * 11 < 1.2 * 6 * 2**20  # about 11 bytes a number

    labels = realtime.post(
        "/invocations",
        data=body,
        headers={"Content-Type": "text/csv", "Accept": "text/csv;output=labels"},
    )
    assert labels.status_code == 200 and len(labels.data.splitlines()) == len(rows) * 34
    batch = ServingSettings.from_environ({"SAGEMAKER_BATCH": "true"}, cpus=1)
    answer = (
        create_app(wide_model, batch)
        .test_client()
        .post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    )
    assert answer.status_code == 200 and len(answer.data) > 6 * 2**20


def test_json_documents_one_per_line_are_answered_one_line_each(model, rows):
    """A batch transform MultiRecord body of application/json records (one document a line)."""
    documents = [
        {"instances": [row.tolist() for row in rows[0:3]]},
        [rows[3].tolist()],
        {"instances": [{"features": rows[4].tolist()}, rows[5].tolist()]},
    ]
    lines = [json.dumps(document).replace("NaN", "null") for document in documents]
    client = create_app(model, ServingSettings.from_environ({}, cpus=1)).test_client()
    alone = [
        client.post(
            "/invocations",
            data=line,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        ).get_json()
        for line in lines
    ]
    for body in ("\n".join(lines), "\n".join(lines) + "\n", "\r\n".join(lines)):
        answer = client.post(
            "/invocations",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        out = answer.get_data(as_text=True)
        assert out.endswith("\n") and out.count("\n") == len(lines)
        answers = [json.loads(line) for line in out.splitlines()]
        for got, expected in zip(answers, alone, strict=True):
            got, expected = got["predictions"], expected["predictions"]
            assert [r["label"] for r in got] == [r["label"] for r in expected]
            assert_same_features(
                np.array([r["features"] for r in got]), np.array([r["features"] for r in expected])
            )


def test_serving_threads_per_worker_settings():
    two = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    assert ServingSettings.from_environ(two, cpus=8).threads_per_worker == 4
    ours = ServingSettings.from_environ({**two, "CNN_KMEANS_THREADS": "3"}, cpus=8)
    assert ours.threads_per_worker == 3
    omp = {**two, "OMP_NUM_THREADS": "1"}
    assert ServingSettings.from_environ(omp, cpus=8).threads_per_worker == 1
    nested = {**two, "OMP_NUM_THREADS": "2,1"}  # OpenMP's nested levels: the first counts
    assert ServingSettings.from_environ(nested, cpus=8).threads_per_worker == 2
    both = {**omp, "CNN_KMEANS_THREADS": "3"}
    assert ServingSettings.from_environ(both, cpus=8).threads_per_worker == 3
    with pytest.raises(UserError, match="CNN_KMEANS_THREADS"):
        ServingSettings.from_environ({"CNN_KMEANS_THREADS": "0"})


def test_serving_divides_the_available_cores_by_default(monkeypatch):
    from cnn_kmeans import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 6)  # e.g. a 6-core cgroup quota
    settings = ServingSettings.from_environ({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    assert settings.threads_per_worker == 3
