"""Serving throughput and latency: the real `serve` entrypoint on 127.0.0.1 (not run by CI).

    python benchmarks/bench_serve.py [--rows 1000] [--bulk-requests 3] [--rounds 5]
                                     [--clients 16] [--duration 60] [--workers N]
                                     [--write-readme README.md]

With default hyperparameters (one epoch on a few series: speed does not depend on training) and
series of length 150, it prints:

1. bulk throughput: as many concurrent clients as the server has workers, each sending
   `--bulk-requests` CSV bodies of `--rows` rows, in series/s, against an in-process baseline of
   the same layout: as many processes as workers, each with the workers' torch thread count,
   each working through the same share of rows (a fresh `spawn`ed process that loads the saved
   model as a worker does). Two baselines: the model alone (`transform` of the parsed rows) and
   the request handler without HTTP (decode the CSV body, `predict_fn`, encode the CSV response).
   Server and baselines alternate over `--rounds` rounds (the order flips every round, so drift
   in the machine's load hits all alike); min/median/max over rounds are reported (target: the
   server reaches >= 70% of the model-alone baseline);
2. latency: `--clients` concurrent clients sending single-row requests for `--duration` s:
   p50/p99 latency, requests/s and errors (target: no errors, p99 <= 5x p50).

The server binds and the clients connect to 127.0.0.1 only; everything is bounded in count or time
and the server (SIGTERM) and the baseline processes are stopped at the end. About 2.5 minutes with
the defaults. `--write-readme` puts the figures in README's `bench_serve` block with the date
and the load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch

from bench_common import git_commit, machine_line, write_block
from cnn_kmeans.config import Config
from cnn_kmeans.container.inference import input_fn, output_fn, predict_fn
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import load, save

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


def baseline_process(conn: Any, model_dir: str, body_path: str, threads: int) -> None:
    """One in-process baseline process: load the model as a worker does, then run commands
    `(mode, repeats)` from `conn` and answer with the seconds taken, until None."""
    torch.set_num_threads(threads)
    model = load(model_dir, torch.device("cpu"))
    body = Path(body_path).read_bytes()
    rows = input_fn(body, "text/csv").values
    conn.send("ready")
    while (command := conn.recv()) is not None:
        mode, repeats = command
        began = time.perf_counter()
        for _ in range(repeats):
            if mode == "transform":
                model.transform(rows)
            else:  # the handler: what a worker does for a request, without HTTP
                output_fn(predict_fn(input_fn(body, "text/csv"), model), "text/csv")
        conn.send(time.perf_counter() - began)


class Baseline:
    """`processes` baseline processes (spawned: no inherited torch state), run in lockstep."""

    def __init__(self, processes: int, model_dir: Path, body_path: Path, threads: int):
        context = multiprocessing.get_context("spawn")
        self.conns, self.processes = [], []
        for _ in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=baseline_process,
                args=(theirs, str(model_dir), str(body_path), threads),
                daemon=True,
            )
            process.start()
            self.conns.append(mine)
            self.processes.append(process)
        for conn in self.conns:
            conn.recv()

    def run(self, mode: str, repeats: int) -> float:
        """Wall seconds until every process has done `repeats` passes of `mode`."""
        began = time.perf_counter()
        for conn in self.conns:
            conn.send((mode, repeats))
        for conn in self.conns:
            conn.recv()
        return time.perf_counter() - began

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def worker_threads(log_path: Path, workers: int) -> int:
    """The torch threads per worker that the server's workers logged at their start."""
    found = re.findall(r"worker ready: (\d+) torch thread", log_path.read_text())
    if len(found) < workers or len(set(found)) != 1:
        raise SystemExit(f"expected {workers} equal 'worker ready' lines in {log_path}: {found}")
    return int(found[0])


def spread(values: list[float], fmt: str) -> str:
    """min / median / max of values, each formatted with `fmt`."""
    return " / ".join(format(v, fmt) for v in (min(values), np.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per bulk request")
    parser.add_argument("--bulk-requests", type=int, default=3, help="bulk requests per client")
    parser.add_argument("--rounds", type=int, default=5, help="server/in-process bulk rounds")
    parser.add_argument("--clients", type=int, default=16, help="single-row clients")
    parser.add_argument("--duration", type=float, default=60.0, help="single-row phase, s")
    parser.add_argument("--workers", type=int, help="default: the server's (one per CPU)")
    parser.add_argument("--write-readme", type=Path, help="replace the bench_serve block here")
    args = parser.parse_args()

    began, load_before = time.monotonic(), os.getloadavg()
    rows = random_walks(args.rows, seed=1)
    body = to_csv(rows)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = CNNKMeans(Config(epochs=1), torch.device("cpu")).fit(random_walks(20, seed=0))
        save(model, root / "model")
        (root / "body.csv").write_bytes(body)
        port = free_port()
        url = f"http://{HOST}:{port}/invocations"
        process = start_server(root, port, args.workers)
        baseline = None
        try:
            workers = requests.get(f"http://{HOST}:{port}/execution-parameters", timeout=5).json()[
                "MaxConcurrentTransforms"
            ]
            bulk(url, body, workers, 2)  # warm every worker up (and let each log its start)
            threads = worker_threads(root / "server.log", workers)
            baseline = Baseline(workers, root / "model", root / "body.csv", threads)
            baseline.run("transform", 1)
            baseline.run("handler", 1)
            total = workers * args.bulk_requests * args.rows
            served, alone, handled, errors = [], [], [], 0
            for round_ in range(args.rounds):
                order = ("server", "transform", "handler")
                for what in order if round_ % 2 == 0 else order[::-1]:
                    if what == "server":
                        seconds, failed = bulk(url, body, workers, args.bulk_requests)
                        served.append(total / seconds)
                        errors += failed
                    else:
                        seconds = baseline.run(what, args.bulk_requests)
                        (alone if what == "transform" else handled).append(total / seconds)
            versus_alone = list(np.array(served) / np.array(alone))
            versus_handler = list(np.array(served) / np.array(handled))
            bulk_text = (
                f"Bulk: {workers} clients × {args.bulk_requests} requests of {args.rows:,} rows "
                f"({len(body) / 1e6:.1f} MB, CSV features back) against {workers} workers × "
                f"{threads} torch thread(s), {args.rounds} rounds (min / median / max): server "
                f"{spread(served, ',.0f')} series/s, {errors} errors. The same layout in "
                f"process ({workers} processes × {threads} thread(s), each its share): the model "
                f"alone (transform) {spread(alone, ',.0f')} series/s, the handler without HTTP "
                f"(decode, predict, encode the response) {spread(handled, ',.0f')} series/s. "
                f"Server / model alone: **{spread(versus_alone, '.0%')}** (target ≥ 70%); "
                f"server / handler: {spread(versus_handler, '.0%')}."
            )
            print(bulk_text)

            singles = [to_csv(rows[i : i + 1]) for i in range(len(rows))]
            times, errors = latency(url, singles, args.clients, args.duration)
            p50, p99 = np.percentile(times, [50, 99]) * 1000
            latency_text = (
                f"Single rows: {args.clients} clients for {args.duration:.0f} s: "
                f"{len(times):,} requests ({len(times) / args.duration:.0f}/s), {errors} errors, "
                f"p50 **{p50:.0f} ms**, p99 **{p99:.0f} ms** (p99/p50 {p99 / p50:.1f}, target ≤ 5)."
            )
            print(latency_text)
        finally:
            if baseline is not None:
                baseline.close()
            stop_server(process)
    note = (
        f"{machine_line(load_before, os.getloadavg())}; "
        f"{(time.monotonic() - began) / 60:.1f} min; torch {torch.__version__}, {git_commit()}. "
        "Generated by `python benchmarks/bench_serve.py --write-readme README.md`."
    )
    print(note)
    if args.write_readme:
        write_block(args.write_readme, "bench_serve", f"{bulk_text}\n\n{latency_text}\n\n{note}")


if __name__ == "__main__":
    main()
