"""Serving throughput and latency: the real `serve` entrypoint on 127.0.0.1 (not run by CI).

    python benchmarks/bench_serve.py [--rows 1000] [--bulk-requests 2] [--rounds 3]
                                     [--clients 16] [--duration 60] [--workers N]

With default hyperparameters (one epoch on a few series: speed does not depend on training) and
series of length 150, it prints:

1. bulk throughput: as many concurrent clients as workers, each sending `--bulk-requests`
   CSV bodies of `--rows` rows, in series/s, next to in-process `transform` throughput on the
   same rows with the same total torch threads, in alternating rounds (target: the server
   reaches >= 70% of it);
2. latency: `--clients` concurrent clients sending single-row requests for `--duration` s:
   p50/p99 latency, requests/s and errors (target: no errors, p99 <= 5x p50).

The server binds and the clients connect to 127.0.0.1 only; everything is bounded in count or time
and the server is stopped (SIGTERM) at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch

from cnn_kmeans.config import Config
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import save
from cnn_kmeans.threads import available_cores

HOST = "127.0.0.1"
LENGTH = 150


def random_walks(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.normal(size=(count, LENGTH)), axis=1) / 5).astype(np.float32)


def to_csv(rows: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int, workers: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "CNN_KMEANS_"))}
    env.update(SAGEMAKER_BASE_DIR=str(root), SAGEMAKER_BIND_TO_PORT=str(port))
    if workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    command = [sys.executable, "-m", "cnn_kmeans.container.serve", "serve", "--host", HOST]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server's lifetime, closed by exit
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"http://{HOST}:{port}/ping", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"server did not start; see {root / 'server.log'}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def post(session: requests.Session, url: str, body: bytes) -> requests.Response:
    return session.post(url, data=body, headers={"Content-Type": "text/csv"}, timeout=300)


def bulk(url: str, body: bytes, clients: int, requests_each: int) -> tuple[float, int]:
    """Seconds for `clients` concurrent clients to each send `requests_each` bodies; errors."""
    errors = 0

    def client() -> None:
        nonlocal errors
        with requests.Session() as session:
            for _ in range(requests_each):
                if post(session, url, body).status_code != 200:
                    errors += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return time.perf_counter() - began, errors


def latency(url: str, bodies: list[bytes], clients: int, duration: float) -> tuple[list, int]:
    """Single-row requests from `clients` threads for `duration` s: latencies (s), errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client(index: int) -> None:
        nonlocal errors
        with requests.Session() as session:
            i = index
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    ok = post(session, url, bodies[i % len(bodies)]).status_code == 200
                except requests.RequestException:
                    ok = False
                with lock:
                    latencies.append(time.perf_counter() - began)
                    errors += not ok
                i += clients

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, i) for i in range(clients)]:
            future.result()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per bulk request")
    parser.add_argument("--bulk-requests", type=int, default=2, help="bulk requests per client")
    parser.add_argument("--rounds", type=int, default=3, help="server/in-process bulk rounds")
    parser.add_argument("--clients", type=int, default=16, help="single-row clients")
    parser.add_argument("--duration", type=float, default=60.0, help="single-row phase, s")
    parser.add_argument("--workers", type=int, help="default: the server's (one per CPU)")
    args = parser.parse_args()

    rows = random_walks(args.rows, seed=1)
    body = to_csv(rows)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = CNNKMeans(Config(epochs=1), torch.device("cpu")).fit(random_walks(20, seed=0))
        save(model, root / "model")
        port = free_port()
        url = f"http://{HOST}:{port}/invocations"
        process = start_server(root, port, args.workers)
        try:
            workers = requests.get(f"http://{HOST}:{port}/execution-parameters", timeout=5).json()[
                "MaxConcurrentTransforms"
            ]
            cpus = available_cores()  # what the server divides among its workers
            threads = workers * max(1, cpus // workers)  # what the server's workers use in total
            print(f"torch {torch.__version__}; {cpus} CPUs; {workers} workers; {Config()}")

            bulk(url, body, workers, 1)  # warm every worker up
            torch.set_num_threads(threads)
            model.transform(rows)
            # Rounds alternate server and in-process runs, so that noise from other work on the
            # machine hits both alike; the medians are reported.
            served, local, errors = [], [], 0
            for _ in range(args.rounds):
                seconds, failed = bulk(url, body, workers, args.bulk_requests)
                served.append(workers * args.bulk_requests * args.rows / seconds)
                errors += failed
                began = time.perf_counter()
                for _ in range(workers * args.bulk_requests):
                    model.transform(rows)
                local.append(
                    workers * args.bulk_requests * args.rows / (time.perf_counter() - began)
                )
            ratios = np.array(served) / np.array(local)
            print(
                f"bulk: {workers} clients x {args.bulk_requests} requests of {args.rows} rows "
                f"({len(body) / 1e6:.1f} MB) x {args.rounds} rounds: {np.median(served):.0f} "
                f"series/s, {errors} errors; in-process transform with {threads} threads: "
                f"{np.median(local):.0f} series/s; server/in-process {np.median(ratios):.0%} "
                f"(rounds {', '.join(f'{r:.0%}' for r in ratios)}; target >= 70%)"
            )

            singles = [to_csv(rows[i : i + 1]) for i in range(len(rows))]
            times, errors = latency(url, singles, args.clients, args.duration)
            p50, p99 = np.percentile(times, [50, 99]) * 1000
            print(
                f"single rows: {args.clients} clients for {args.duration:.0f} s: "
                f"{len(times)} requests ({len(times) / args.duration:.0f}/s), {errors} errors, "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, p99/p50 {p99 / p50:.1f} (target <= 5)"
            )
        finally:
            stop_server(process)


if __name__ == "__main__":
    main()
