"""The `serve` entrypoint as SageMaker runs it: a real gunicorn on 127.0.0.1, real HTTP.

Servers are started once per module (a fixture with a finalizer stops each with SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from cnn_kmeans.data import parse_csv
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import load, save
from cnn_kmeans.threads import available_cores
from tests.helpers import cylinder_bell_funnel, tiny_config

HOST = "127.0.0.1"
WORKERS = 2
LIMIT = 6 * 2**20  # the default request size limit, 6 MiB
JSON = "application/json"
SERVE = [sys.executable, "-m", "cnn_kmeans.container.serve", "serve", "--host", HOST]
CLI = str(Path(sys.executable).parent / "cnn-kmeans")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """A server process started by a test, its log in a file."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log: Path):
        self.port, self.log_path = port, log
        self.url = f"http://{HOST}:{port}"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {limit} s:\n{self.log()}")

    def post(self, body: bytes | str, content_type: str | None = "text/csv", **headers):
        headers = {"Content-Type": content_type, **headers}
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=60)

    def stop(self) -> int:
        """SIGTERM; returns the exit code (killed if not down within 30 s, then the test fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"still running 30 s after SIGTERM:\n{self.log()}") from None
        return self.process.returncode

    def worker_boots(self) -> int:
        return self.log().count("Booting worker with pid")


def environment(root: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "CNN_KMEANS_"))}
    env.pop("OMP_NUM_THREADS", None)  # the workers' threads are the tests' to set
    return {**env, "SAGEMAKER_BASE_DIR": str(root), "SAGEMAKER_BIND_TO_PORT": str(port), **extra}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder laid out like /opt/ml with a tiny trained model in model/."""
    root = tmp_path_factory.mktemp("opt_ml")
    rows, _ = cylinder_bell_funnel(60, seed=11, low=20, high=60)
    save(CNNKMeans(tiny_config(epochs=1), torch.device("cpu")).fit(rows), root / "model")
    return root


@pytest.fixture(scope="module")
def model(root) -> CNNKMeans:
    return load(root / "model", torch.device("cpu"))


def start(request, root: Path, command: list[str], name: str, **env: str) -> Server:
    port = free_port()
    log = root.parent / f"{name}.log"
    server = Server(command, environment(root, port, **env), port, log)
    request.addfinalizer(server.stop)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def server(request, root) -> Server:
    """The entrypoint as in an endpoint: port from SAGEMAKER_BIND_TO_PORT, 2 workers."""
    return start(request, root, SERVE, "server", SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS))


@pytest.fixture(scope="module")
def batch_server(request, root) -> Server:
    """The entrypoint as in batch transform: SAGEMAKER_BATCH, a 20 MB limit, labels-only output."""
    env = {
        "SAGEMAKER_BATCH": "true",  # what SageMaker sets in a transform job's container
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
    }
    return start(request, root, SERVE, "batch", CNN_KMEANS_OUTPUT="labels", **env)


def series(count: int, seed: int) -> list[list[str]]:
    """Ragged rows of CSV cells, with empty cells inside and trailing empty fields on some."""
    rows, _ = cylinder_bell_funnel(count, seed=seed, low=20, high=60)
    cells = [[f"{v:.6g}" for v in row] for row in rows]
    for i, row in enumerate(cells):
        if i % 3 == 1:
            row[4] = row[5] = ""
        if i % 4 == 2:
            row.extend(["", ""])
    return cells


ROWS = series(40, seed=12)


def csv(rows: list[list[str]], newline: str = "\n", final: bool = True) -> str:
    return newline.join(",".join(row) for row in rows) + (newline if final else "")


def expected(model: CNNKMeans, body: str) -> tuple[np.ndarray, np.ndarray]:
    features = model.transform(parse_csv(body))
    return model.assign(features)[0], features


def parse_answer(text: str) -> tuple[np.ndarray, np.ndarray]:
    lines = text.splitlines()
    labels = np.array([int(line.split(",")[0]) for line in lines])
    return labels, np.array([line.split(",")[1:] for line in lines], dtype=np.float32)


def assert_same(actual: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]):
    np.testing.assert_array_equal(actual[0], reference[0])
    scale = float(np.abs(reference[1]).max())
    np.testing.assert_allclose(actual[1], reference[1], rtol=1e-5, atol=1e-5 * scale)


def test_ping_answers_within_2_s_once_ready(server):
    for _ in range(5):
        assert requests.get(f"{server.url}/ping", timeout=2).status_code == 200


def test_the_port_is_sagemaker_bind_to_port(server):
    assert "--port" not in SERVE
    assert f"Listening at: http://{HOST}:{server.port}" in server.log()


def wait_for_lines(server: Server, line: str, count: int, limit: float = 60) -> int:
    deadline = time.monotonic() + limit
    while server.log().count(line) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.log().count(line)


def test_each_worker_loads_the_model_at_start_with_its_share_of_the_cores(server):
    threads = max(1, available_cores() // WORKERS)
    ready = f"worker ready: {threads} torch thread(s), device cpu"
    # the first worker to be ready answered /ping
    assert wait_for_lines(server, ready, WORKERS) == WORKERS


@pytest.fixture(scope="module")
def threads_server(request, root) -> Server:
    """Two workers told their torch threads: not the share of the cores they would take."""
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS), "CNN_KMEANS_THREADS": "3"}
    return start(request, root, SERVE, "threads", **env)


def test_cnn_kmeans_threads_reach_torch_in_every_worker_and_its_inference_thread(threads_server):
    assert wait_for_lines(threads_server, "worker ready: 3 torch thread(s)", WORKERS) == WORKERS
    assert "x 3 torch thread(s)" in threads_server.log()  # the master's summary
    for _ in range(2 * WORKERS):  # each inference thread reports once, at its start
        assert threads_server.post(csv(ROWS)).status_code == 200
    assert wait_for_lines(threads_server, "inference thread: 3 torch thread(s)", 1) >= 1
    assert "inference thread: 1 torch thread(s)" not in threads_server.log()


def test_execution_parameters(server):
    answer = requests.get(f"{server.url}/execution-parameters", timeout=5)
    assert answer.json() == {
        "MaxConcurrentTransforms": WORKERS,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


@pytest.mark.parametrize(
    "body",
    [
        csv(ROWS),
        csv(ROWS, "\r\n"),
        csv(ROWS, final=False),
        csv(ROWS[:1]),
        csv(ROWS[5:6], final=False),
    ],
    ids=["lf", "crlf", "no-final-newline", "single-row", "single-row-no-newline"],
)
def test_n_csv_rows_in_give_n_rows_out_in_order(server, model, body):
    answer = server.post(body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert_same(parse_answer(answer.text), expected(model, body))


def test_same_answer_alone_in_a_batch_in_every_format_and_from_the_cli(server, root, tmp_path):
    body = csv(ROWS)
    batch = parse_answer(server.post(body).text)
    for i in (0, 1, 2, 17, 39):  # gaps, trailing empty fields, plain rows
        alone = parse_answer(server.post(csv([ROWS[i]])).text)
        assert_same(alone, (batch[0][i : i + 1], batch[1][i : i + 1]))

    instances = [[float(c) if c else None for c in row] for row in ROWS]
    as_json = server.post(json.dumps({"instances": instances}), "application/json", Accept=JSON)
    records = as_json.json()["predictions"]
    assert as_json.headers["Content-Type"].startswith(JSON) and len(records) == len(ROWS)
    assert_same(([r["label"] for r in records], [r["features"] for r in records]), batch)

    lines = "".join(json.dumps(row) + "\n" for row in instances)
    as_jsonl = server.post(lines, "application/jsonlines", Accept="application/jsonlines")
    records = [json.loads(line) for line in as_jsonl.text.splitlines()]
    assert_same(([r["label"] for r in records], [r["features"] for r in records]), batch)

    (tmp_path / "in.csv").write_text(body)
    cli = subprocess.run(
        [CLI, "predict", "--model-dir", root / "model", tmp_path / "in.csv", "-o", tmp_path / "o"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert_same(parse_answer((tmp_path / "o").read_text()), batch)


def test_output_choice_through_the_accept_parameter(server, model):
    body = csv(ROWS[:6])
    labels, features = expected(model, body)
    answer = server.post(body, Accept="text/csv; output=labels")
    assert answer.text == "".join(f"{label}\n" for label in labels)
    answer = server.post(body, Accept=f"{JSON}; output=distances")
    distances = np.array([r["distances"] for r in answer.json()["predictions"]], np.float32)
    np.testing.assert_allclose(distances, model.assign(features)[1], rtol=1e-5, atol=1e-6)
    answer = server.post(body, Accept="application/jsonlines;output=features")
    assert len(json.loads(answer.text.splitlines()[0])["features"]) == 8


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/csv"),
        ("*/*", "text/csv"),
        ("text/csv;q=0.2, application/json;q=0.8", JSON),
        ("application/jsonlines;q=0.5, image/png", "application/jsonlines"),
        ("text/csv;q=0, */*", JSON),
    ],
)
def test_accept_negotiation_honours_q_values(server, accept, content_type):
    answer = server.post(csv(ROWS[:2]), Accept=accept)  # None: no Accept header at all
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(content_type)


BAD_REQUESTS = [
    ("text/csv", {}, "1,2,3\n4,abc,6\n", 400, "line 2, column 2: not a number: 'abc'"),
    ("text/csv", {}, "time,value\n1,2\n", 400, "looks like a header"),
    ("text/csv", {}, "1,2\n\n3,4\n", 400, "line 2, column 1: blank line"),
    ("text/csv", {}, "1,2\n3,inf\n", 400, "line 2, column 2: infinite value"),
    ("text/csv", {}, "1,2\n,,\n", 400, "line 2, column 1: row has no values"),
    ("text/csv", {}, b"1,2\n3,\xff\n", 400, "line 2, column 2: invalid UTF-8"),
    ("text/csv", {}, "", 400, "no rows"),
    (JSON, {}, '{"instances": [[1, 2], [3, ', 400, "line 1, column 28: invalid JSON"),
    (JSON, {}, '[[1, 2], [3, "x"]]', 400, "instance 2, value 2: not a number"),
    (JSON, {}, "", 400, "request body: the body is empty"),
    (JSON, {}, " \r\n", 400, "request body: the body is empty"),
    ("application/jsonlines", {}, "[1]\n\n[2]\n", 400, "line 2, column 1: blank line"),
    ("text/plain", {}, "1,2\n", 415, "unsupported Content-Type 'text/plain'"),
    ("text/csv; charset=klingon", {}, "1,2\n", 415, "unsupported charset 'klingon'"),
    ("text/csv", {"Accept": "image/png"}, "1,2\n", 406, "accept one of text/csv"),
    ("text/csv", {"Accept": "text/csv;output=all"}, "1,2\n", 406, "unknown output='all'"),
]


@pytest.mark.parametrize(("content_type", "headers", "body", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_gets_its_4xx_and_the_server_keeps_serving(
    server, content_type, headers, body, status, message
):
    answer = server.post(body, content_type, **headers)
    assert answer.status_code == status
    assert message in answer.text and "Traceback" not in answer.text
    good = server.post(csv(ROWS[:3]))
    assert good.status_code == 200 and len(good.text.splitlines()) == 3
    assert server.worker_boots() == WORKERS  # no worker died and was replaced


def sized_body(size: int) -> tuple[bytes, int]:
    """A CSV body of exactly `size` bytes (spaces around cells are allowed); returns its rows."""
    block = csv(ROWS).encode()
    body = block * (size // len(block))
    rows = len(ROWS) * (size // len(block))
    rest = size - len(body)
    if rest:
        body += b"1" + b" " * (rest - 2) + b"\n"
        rows += 1
    return body, rows


def test_a_6_mb_body_is_accepted(server):
    body, rows = sized_body(LIMIT)
    answer = server.post(body, Accept="text/csv;output=labels")
    assert answer.status_code == 200 and len(answer.text.splitlines()) == rows


def test_a_body_above_the_limit_gets_413_before_it_is_read(server):
    # Only headers are sent: the answer cannot wait for the body.
    with socket.create_connection((HOST, server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /invocations HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head and (chunk := sock.recv(65536)):
            head += chunk
    assert head.startswith(b"HTTP/1.1 413"), head

    body, _ = sized_body(LIMIT + 1)
    answer = server.post(body)  # the whole body sent: the client still gets the 413
    assert answer.status_code == 413 and "above the limit of 6291456 bytes" in answer.text
    chunks = (body[i : i + 2**20] for i in range(0, len(body), 2**20))
    answer = server.post(chunks)  # chunked: no Content-Length, counted while read
    assert answer.status_code == 413 and "more than 6291456 bytes" in answer.text
    assert server.post(csv(ROWS[:3])).status_code == 200
    assert server.worker_boots() == WORKERS


def test_batch_transform_multi_record_bodies_above_6_mb(batch_server, model):
    body, rows = sized_body(7 * 2**20)
    answer = batch_server.post(body, Accept="text/csv")
    assert answer.status_code == 200
    labels = answer.text.splitlines()  # CNN_KMEANS_OUTPUT=labels: one label per line
    assert len(labels) == rows
    head = body[: body.index(b"\n", 200_000) + 1].decode()
    np.testing.assert_array_equal(
        [int(label) for label in labels[: head.count("\n")]], expected(model, head)[0]
    )
    params = requests.get(f"{batch_server.url}/execution-parameters", timeout=5).json()
    assert params["MaxConcurrentTransforms"] == 1 and params["BatchStrategy"] == "MULTI_RECORD"
    assert batch_server.post(sized_body(20 * 2**20 + 1)[0]).status_code == 413


def mini_batches(data: bytes, max_payload: int) -> list[bytes]:
    """A file's records as batch transform sends them with SplitType=Line and MultiRecord: split
    at newlines, consecutive whole records (with their newlines) up to max_payload bytes each."""
    batches, current = [], b""
    for record in data.splitlines(keepends=True):
        if current and len(current) + len(record) > max_payload:
            batches.append(current)
            current = b""
        current += record
    return [*batches, current]


@pytest.mark.parametrize("final_newline", [True, False])
def test_batch_transform_json_documents_one_per_line_give_one_line_each(
    batch_server, final_newline
):
    instances = [[float(c) if c else None for c in row] for row in ROWS]
    documents = [
        {"instances": instances[i : i + 1 + i % 3]} if i % 2 else instances[i : i + 1]
        for i in range(len(instances) - 3)
    ]
    data = "\n".join(json.dumps(document) for document in documents).encode()
    data += b"\n" if final_newline else b""
    headers = {"Accept": JSON}
    out = b""  # AssembleWith=Line: the answers, one after the other, each ending in a newline
    for body in mini_batches(data, 2000):
        answer = batch_server.post(body, JSON, **headers)
        assert answer.status_code == 200, answer.text
        assert answer.content.count(b"\n") == body.count(b"\n") + (not body.endswith(b"\n"))
        out += answer.content
    lines = out.decode().splitlines()
    assert len(lines) == len(documents) and out.endswith(b"\n")
    for document, line in zip(documents, lines, strict=True):
        alone = batch_server.post(json.dumps(document), JSON, **headers).json()
        assert json.loads(line) == alone  # CNN_KMEANS_OUTPUT=labels: exact
        rows = document["instances"] if isinstance(document, dict) else document
        assert len(alone["predictions"]) == len(rows)


def test_accept_output_overrides_cnn_kmeans_output(batch_server, model):
    body = csv(ROWS[:4])
    answer = batch_server.post(body, Accept="text/csv;output=features")
    assert_same(parse_answer(answer.text), expected(model, body))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("missing", "model directory {root}/model lacks config.json, encoder.pt, centroids.npy"),
        ("corrupt", "{root}/model/encoder.pt is corrupt"),
        ("setting", "SAGEMAKER_MODEL_SERVER_WORKERS='many' must be a positive integer"),
    ],
)
def test_a_missing_or_corrupt_artifact_fails_the_start(root, tmp_path, damage, reason):
    broken = tmp_path / "opt_ml"
    if damage != "missing":
        (broken / "model").mkdir(parents=True)
        for name in ("config.json", "centroids.npy", "encoder.pt"):
            (broken / "model" / name).write_bytes((root / "model" / name).read_bytes())
    if damage == "corrupt":
        (broken / "model" / "encoder.pt").write_bytes(b"not a torch file")
    env = environment(broken, free_port())
    if damage == "setting":
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = "many"
    result = subprocess.run(
        SERVE, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert f"cannot start the model server: {reason.format(root=broken)}" in result.stderr
    assert "Booting worker" not in result.stderr


def test_cli_serve_runs_the_same_server_and_sigterm_stops_it(request, root, model):
    port = free_port()
    command = [CLI, "serve", "--model-dir", str(root / "model"), "--port", str(port)]
    server = Server(command, environment(root, 1), port, root.parent / "cli.log")
    request.addfinalizer(server.stop)
    server.wait_ready()
    assert f"Listening at: http://127.0.0.1:{port}" in server.log()  # loopback by default
    body = csv(ROWS[:5])
    assert_same(parse_answer(server.post(body).text), expected(model, body))
    assert server.stop() == 0
    assert "Shutting down: Master" in server.log()
