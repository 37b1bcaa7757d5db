"""The model server at SageMaker's limits: health checks under load, timeouts, response size.

A real gunicorn on 127.0.0.1 serving a model slow enough that a maximum-size request keeps a
worker busy for seconds (a wider, deeper encoder than the other tests' tiny one, one torch
thread per worker).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
import torch
from benchmarks.soak_serve import worker_pids

from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import save
from tests.helpers import cylinder_bell_funnel, tiny_config
from tests.integration.test_reliability_serve import raw_request, read_answer
from tests.integration.test_serve import (
    ROWS,
    SERVE,
    Server,
    csv,
    environment,
    free_port,
    sized_body,
)

WORKERS = 2
PAYLOAD_MB = 12
PING_BUDGET_S = 2.0  # SageMaker's: a container must answer /ping within 2 seconds
LABELS = "text/csv;output=labels"  # small answers: the time goes into the inference


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """/opt/ml with a model whose 12 MiB request takes seconds on one core."""
    root = tmp_path_factory.mktemp("opt_ml")
    rows, _ = cylinder_bell_funnel(60, seed=11, low=20, high=60)
    config = tiny_config(epochs=1, filters=32, blocks=4)
    save(CNNKMeans(config, torch.device("cpu")).fit(rows), root / "model")
    return root


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory) -> Path:
    """/opt/ml with a model ~10x slower than `root`'s: a 20 MiB request outlasts a 3 s timeout
    many times over also on a quiet machine, where `root`'s took about 3.5 s (a race)."""
    root = tmp_path_factory.mktemp("opt_ml_slow")
    rows, _ = cylinder_bell_funnel(60, seed=11, low=20, high=60)
    config = tiny_config(epochs=1, filters=96, blocks=8)
    save(CNNKMeans(config, torch.device("cpu")).fit(rows), root / "model")
    return root


def start(request, root: Path, name: str, **env: str) -> Server:
    port = free_port()
    server = Server(SERVE, environment(root, port, **env), port, root.parent / f"{name}.log")
    request.addfinalizer(server.stop)
    server.wait_ready()
    workers = int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1"))
    deadline = time.monotonic() + 60  # /ping answered: one worker is ready, wait for the rest
    while server.log().count("worker ready") < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


@pytest.fixture(scope="module")
def endpoint(request, root) -> Server:
    """A real-time endpoint's server (no SAGEMAKER_BATCH): 2 workers, a 12 MB request limit (a
    maximum-size request keeps a worker busy for seconds), a 0.1 MB response limit."""
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS),
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_MB),
        "CNN_KMEANS_MAX_RESPONSE_MB": "0.1",
    }
    return start(request, root, "endpoint", **env)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def test_ping_answers_within_2_s_while_every_worker_is_busy_with_a_maximum_size_request(
    endpoint,
):
    body, rows = sized_body(PAYLOAD_MB * 2**20)  # the largest request the server accepts
    answers: dict[int, tuple[float, float, int, int]] = {}

    def invoke(i: int) -> None:
        began = time.monotonic()
        answer = endpoint.post(body, Accept=LABELS)
        answers[i] = (began, time.monotonic(), answer.status_code, len(answer.text.splitlines()))

    clients = [threading.Thread(target=invoke, args=(i,)) for i in range(WORKERS)]
    for client in clients:
        client.start()
    time.sleep(0.5)  # the bodies are sent and read
    workers = worker_pids(endpoint.process.pid)
    before = [cpu_seconds(pid) for pid in workers]
    time.sleep(1.0)
    busy = [cpu_seconds(pid) - was for pid, was in zip(workers, before, strict=True)]
    # Every worker computes (an idle one uses next to no CPU): one request went to each.
    assert all(seconds >= 0.05 for seconds in busy), busy
    pings: list[tuple[float, float, int]] = []
    while any(client.is_alive() for client in clients):
        began = time.monotonic()
        status = requests.get(f"{endpoint.url}/ping", timeout=60).status_code
        pings.append((began, time.monotonic() - began, status))
        time.sleep(0.1)
    for client in clients:
        client.join()

    assert [answer[2:] for answer in answers.values()] == [(200, rows)] * WORKERS
    # Pings sent while every request was still running.
    saturated_to = min(answer[1] for answer in answers.values())
    during = [(latency, status) for began, latency, status in pings if began < saturated_to]
    assert during and max(latency for latency, _ in during) < PING_BUDGET_S, during
    assert all(status == 200 for _, status in during)
    assert len(during) >= 3, (pings, answers)  # the requests kept every worker busy for seconds


def test_a_response_above_the_limit_gets_413_saying_what_to_ask_for(endpoint):
    body = csv(ROWS * 40)  # 1,600 rows: about 0.16 MB of features, above the 0.1 MB limit
    answer = endpoint.post(body)
    assert answer.status_code == 413, answer.text[:200]
    assert "output=labels" in answer.text and "send fewer rows" in answer.text
    labels = endpoint.post(body, Accept=LABELS)
    assert labels.status_code == 200 and len(labels.text.splitlines()) == len(ROWS) * 40
    assert endpoint.post(csv(ROWS[:10])).status_code == 200
    assert endpoint.worker_boots() == WORKERS


def test_sagemaker_model_server_timeout_reaches_gunicorn(request, slow_root):
    """An inference longer than SAGEMAKER_MODEL_SERVER_TIMEOUT gets its worker replaced."""
    timeout = 3
    env = {
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(timeout),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
    }
    server = start(request, slow_root, "timeout", **env)
    (first,) = worker_pids(server.process.pid)
    with raw_request(server.port, 10_000) as stalled:
        stalled.sendall(b"1,2,3\n4,")  # and then nothing, for longer than the timeout
        began = time.monotonic()
        status, answer = read_answer(stalled)
    assert status == 408 and b"stopped arriving" in answer  # and its thread is free again
    assert time.monotonic() - began < timeout + 5
    time.sleep(timeout + 2)  # idle for longer than the timeout: an idle worker is kept
    assert server.post(csv(ROWS[:3])).status_code == 200
    assert worker_pids(server.process.pid) == [first]

    body, _ = sized_body(
        20 * 2**20
    )  # tens of seconds of inference on this model, quiet machine too
    began = time.monotonic()
    try:
        status = server.post(body, Accept=LABELS).status_code
    except requests.RequestException:  # the worker was killed under the request
        status = None
    cut_after = time.monotonic() - began
    assert status != 200 and "WORKER TIMEOUT" in server.log(), server.log()[-2000:]
    assert cut_after < timeout + 10, cut_after

    deadline = time.monotonic() + 60  # gunicorn boots a replacement, which serves
    while server.log().count("worker ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.post(csv(ROWS[:3])).status_code == 200
    assert first not in worker_pids(server.process.pid)
