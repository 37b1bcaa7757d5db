"""Bounded load and soak of the real `serve` entrypoint on 127.0.0.1, bad traffic mixed in.

    python benchmarks/soak_serve.py [--duration 300] [--requests 1000000] [--clients 4]
                                    [--workers 2] [--bad-fraction 0.2] [--seed 0] [--json FILE]

A tiny model (one epoch on random walks) is served by gunicorn with `--workers` workers and a
2 MB request limit. `--clients` threads send, until `--requests` requests or `--duration`
seconds (whichever comes first), a random mix of good CSV/JSON/JSON Lines bodies of 1, 10, 100
and 1000 series (length 50-150, picked 4:3:2:1, small ones being the common case) and, with
probability `--bad-fraction`, a user mistake (wrong or missing Content-Type, a body cut mid-row
or mid-number, a header line, invalid UTF-8, random bytes, an unacceptable Accept, a body above
the limit). Every answer is checked: good bodies get 200 and the labels of the in-process model
(`inference.input_fn` + `predict_fn`), bad ones their 4xx, and no error body holds a traceback
or a filesystem path. It prints requests, errors, latency percentiles per size, the RSS of each
worker (from /proc) before and after, and how many workers gunicorn booted (more than
`--workers`: one died).

The server binds and the clients connect to 127.0.0.1 only; everything is bounded in count and
time and the server is stopped with SIGTERM at the end. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import torch

from cnn_kmeans.config import Config
from cnn_kmeans.container import inference
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import save

HOST = "127.0.0.1"
SIZES = (1, 10, 100, 1000)
WEIGHTS = {1: 4.0, 10: 3.0, 100: 2.0, 1000: 1.0}  # small requests are the common ones
LIMIT_MB = 2.0
CSV, JSON, JSONL = "text/csv", "application/json", "application/jsonlines"


@dataclass(frozen=True)
class Case:
    """One request to send, and what the answer must be."""

    name: str
    body: bytes
    headers: dict[str, str]
    status: int
    labels: tuple[int, ...] | None = None  # the in-process labels of a good request
    weight: float = 1.0  # how often it is picked, relative to the others of its kind


@dataclass
class LoadResult:
    """What a load run saw: counts per case, latencies (s) per case, the first few errors."""

    sent: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_case: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    first_errors: list[str] = field(default_factory=list)
    error_bodies: int = 0  # 4xx bodies checked for tracebacks and paths


def random_series(count: int, seed: int) -> list[np.ndarray]:
    """Random walks of lengths 50-150."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 151, size=count)
    return [(np.cumsum(rng.normal(size=n)) / 5).astype(np.float32) for n in lengths]


def to_csv(rows: Sequence[np.ndarray]) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


def tiny_model(seed: int = 0) -> CNNKMeans:
    config = Config(blocks=2, filters=8, reduced_size=16, output_size=8, epochs=1, clusters=3)
    rows = random_series(60, seed)
    width = max(len(row) for row in rows)
    data = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        data[i, : len(row)] = row
    return CNNKMeans(config, torch.device("cpu")).fit(data)


def expected_labels(model: CNNKMeans, body: bytes, content_type: str) -> tuple[int, ...]:
    """What the server must answer: the same handlers, in process."""
    prediction = inference.predict_fn(inference.input_fn(body, content_type), model)
    return tuple(int(label) for label in prediction.labels)


def make_cases(model: CNNKMeans, limit_bytes: int, seed: int = 1) -> tuple[list[Case], list[Case]]:
    """Good requests (sizes x formats) with their labels, and user mistakes with their status."""
    good = []
    for size in SIZES:
        rows = random_series(size, seed + size)
        lists = [[round(float(v), 6) for v in row] for row in rows]
        bodies = {
            CSV: to_csv(rows),
            JSON: json.dumps({"instances": lists}).encode(),
            JSONL: "".join(json.dumps(row) + "\n" for row in lists).encode(),
        }
        for content_type, body in bodies.items():
            labels = expected_labels(model, body, content_type)
            name = f"{size} rows {content_type.split('/')[1]}"
            headers = {"Content-Type": content_type}
            good.append(Case(name, body, headers, 200, labels, WEIGHTS[size]))
        # No Content-Type at all: read as CSV, SageMaker's default for batch transform.
        name = f"{size} rows csv, no Content-Type"
        good.append(Case(name, bodies[CSV], {}, 200, good[-3].labels, WEIGHTS[size] / 3))
    small = to_csv(random_series(3, seed))
    json_body = json.dumps([[1.5, 2.5, 3.5], [4.5, 5.5]]).encode()
    bad = [
        Case("wrong Content-Type", small, {"Content-Type": "text/plain"}, 415),
        Case("unknown charset", small, {"Content-Type": "text/csv; charset=rot13"}, 415),
        Case("JSON without Content-Type (read as CSV)", json_body, {}, 400),
        Case("JSON cut mid-row", json_body[:-9], {"Content-Type": JSON}, 400),
        Case("CSV cut mid-number", b"1.5,2.5\n3.5,4e", {"Content-Type": CSV}, 400),
        Case("CSV header line", b"t0,t1\n1,2\n", {"Content-Type": CSV}, 400),
        Case("invalid UTF-8", b"1,2\n3,\xff\xfe\n", {"Content-Type": CSV}, 400),
        Case("random bytes", bytes(range(256)) * 4, {"Content-Type": CSV}, 400),
        Case("JSON Lines blank line", b"[1]\n\n[2]\n", {"Content-Type": JSONL}, 400),
        Case("unacceptable Accept", small, {"Content-Type": CSV, "Accept": "image/png"}, 406),
        Case("above the limit", b"1\n" * (limit_bytes // 2 + 1), {"Content-Type": CSV}, 413),
    ]
    return good, bad


def check_answer(case: Case, answer: requests.Response, secrets: Sequence[str]) -> str | None:
    """None if the answer is right, else what is wrong."""
    if answer.status_code != case.status:
        return f"{case.name}: status {answer.status_code}, expected {case.status}: {answer.text}"
    if case.status != 200:
        leaked = [s for s in ("Traceback", 'File "', ".py", *secrets) if s in answer.text]
        return f"{case.name}: the error body shows {leaked}: {answer.text}" if leaked else None
    labels = tuple(int(line.split(",")[0]) for line in answer.text.splitlines())
    if case.labels is not None and labels != case.labels:
        return f"{case.name}: labels differ from the in-process model"
    return None


def run_load(
    url: str,
    good: Sequence[Case],
    bad: Sequence[Case],
    *,
    clients: int,
    max_requests: int,
    duration_s: float,
    bad_fraction: float,
    seed: int = 0,
    secrets: Sequence[str] = (),
) -> LoadResult:
    """`clients` threads send random cases until `max_requests` are sent or `duration_s` pass."""
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    if result.sent >= max_requests:
                        return
                    result.sent += 1
                pool = bad if bad and rng.random() < bad_fraction else good
                weights = np.array([c.weight for c in pool])
                case = pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
                began = time.perf_counter()
                try:
                    answer = session.post(
                        f"{url}/invocations", data=case.body, headers=case.headers, timeout=60
                    )
                    problem = check_answer(case, answer, secrets)
                except requests.RequestException as error:
                    problem = f"{case.name}: {type(error).__name__}: {error}"
                    session.close()  # a fresh connection for the next request
                elapsed = time.perf_counter() - began
                with lock:
                    result.by_case[case.name] += 1
                    result.latencies[case.name].append(elapsed)
                    result.error_bodies += case.status != 200
                    if problem:
                        result.errors += 1
                        if len(result.first_errors) < 10:
                            result.first_errors.append(problem)

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + 120)
    result.seconds = time.monotonic() - began
    return result


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and p99.9 in milliseconds."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "p99.9": float("nan")}
    ms = np.asarray(values) * 1000
    return {
        name: float(np.percentile(ms, q)) for name, q in (("p50", 50), ("p99", 99), ("p99.9", 99.9))
    }


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the master's child processes, from /proc."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The `serve` entrypoint on 127.0.0.1, its output in a log file; stop() always ends it."""

    def __init__(self, root: Path, workers: int, limit_mb: float = LIMIT_MB):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = root / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "CNN_"))}
        env.update(
            SAGEMAKER_BASE_DIR=str(root),
            SAGEMAKER_BIND_TO_PORT=str(self.port),
            SAGEMAKER_MODEL_SERVER_WORKERS=str(workers),
            SAGEMAKER_MAX_PAYLOAD_IN_MB=str(limit_mb),
        )
        command = [sys.executable, "-m", "cnn_kmeans.container.serve", "serve", "--host", HOST]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def boots(self) -> int:
        return self.log().count("Booting worker with pid")

    def wait_ready(self, workers: int, limit_s: float = 120) -> None:
        """Until every worker has loaded the model."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.log().count("worker ready") >= workers:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def warm_up(url: str, cases: Sequence[Case], rounds: int = 3) -> None:
    """Each case a few times, so allocator pools and caches reach their steady size."""
    with requests.Session() as session:
        for _ in range(rounds):
            for case in cases:
                session.post(f"{url}/invocations", data=case.body, headers=case.headers, timeout=60)


def soak(args: argparse.Namespace) -> dict:
    """Train a tiny model, serve it, warm up, load it, measure; returns the figures."""
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="cnn-kmeans-soak-") as folder:
        root = Path(folder)
        model = tiny_model(args.seed)
        save(model, root / "model")
        good, bad = make_cases(model, int(LIMIT_MB * 2**20), args.seed + 1)
        server = ServerProcess(root, args.workers)
        try:
            server.wait_ready(args.workers)
            warm_up(server.url, good + bad)
            pids = worker_pids(server.process.pid)
            before = {pid: rss_mib(pid) for pid in pids}
            result = run_load(
                server.url,
                good,
                bad,
                clients=args.clients,
                max_requests=args.requests,
                duration_s=args.duration,
                bad_fraction=args.bad_fraction,
                seed=args.seed,
                secrets=(folder,),
            )
            after = {pid: rss_mib(pid) for pid in worker_pids(server.process.pid)}
            boots = server.boots()
        finally:
            server.stop()
    by_size = defaultdict(list)
    for case in good:
        by_size[case.name.split(" rows")[0] + " rows"] += result.latencies.get(case.name, [])
    return {
        "requests": result.sent,
        "good": sum(result.by_case[c.name] for c in good),
        "bad": sum(result.by_case[c.name] for c in bad),
        "errors": result.errors,
        "first_errors": result.first_errors,
        "seconds": round(result.seconds, 1),
        "clients": args.clients,
        "workers": args.workers,
        "latency_ms": percentiles([t for c in good for t in result.latencies.get(c.name, [])]),
        "latency_ms_by_size": {size: percentiles(times) for size, times in by_size.items()},
        "rss_mib_before": {str(pid): round(rss, 1) for pid, rss in before.items()},
        "rss_mib_after": {str(pid): round(rss, 1) for pid, rss in after.items()},
        "workers_booted": boots,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--requests", type=int, default=1_000_000, help="at most this many")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--bad-fraction", type=float, default=0.2, help="share of bad requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = soak(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if figures["errors"] or figures["workers_booted"] != args.workers else 0


if __name__ == "__main__":
    sys.exit(main())
