"""GPU code paths on a machine without GPUs: the launch plan, the backend, serving workers.

The CUDA queries are not faked inside torch: each decision takes the GPU count (or whether
CUDA is there) as an argument at one seam, and these tests pass the values a GPU host has.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cnn_kmeans.container.environment import Layout, ServingSettings, TrainingEnvironment
from cnn_kmeans.container.launch import device_and_backend, plan
from cnn_kmeans.container.serve import ModelServer

HOSTS = ("algo-1", "algo-2", "algo-3")


@pytest.mark.parametrize("host", HOSTS)
def test_four_gpus_on_three_hosts_is_twelve_processes_one_per_gpu(host, tmp_path):
    env = TrainingEnvironment(
        layout=Layout(tmp_path),
        hyperparameters={},
        channels={},
        hosts=HOSTS,
        current_host=host,
        num_gpus=4,
        num_cpus=48,
        environ={"CNN_KMEANS_PROCESSES_PER_HOST": "2"},  # GPUs decide, not this
        network_interface_name="eth0",
        instance_type="ml.p3.8xlarge",
    )
    launch = plan(env)
    assert (launch.processes_per_host, launch.world_size) == (4, 12)
    assert launch.node_rank == HOSTS.index(host) and launch.multi_host
    command = launch.command("10.0.0.1")
    for flag in ("--nnodes=3", "--nproc-per-node=4", f"--node-rank={HOSTS.index(host)}"):
        assert flag in command
    assert "--master-addr=10.0.0.1" in command


def test_backend_is_nccl_on_the_process_gpu_else_gloo_on_the_cpu():
    assert device_and_backend(3, cuda=True) == (torch.device("cuda", 3), "nccl")
    assert device_and_backend(3, cuda=False) == (torch.device("cpu"), "gloo")


def test_serving_workers_default_to_one_per_gpu_sharing_the_cores(tmp_path):
    environ = {"SAGEMAKER_BASE_DIR": str(tmp_path)}
    four = ServingSettings.from_environ(environ, cpus=32, gpus=4)
    assert (four.workers, four.threads_per_worker) == (4, 8)
    one = ServingSettings.from_environ(environ, cpus=4, gpus=1)
    assert (one.workers, one.threads_per_worker) == (1, 4)


def test_each_new_serving_worker_takes_the_gpu_fewest_live_workers_use(tmp_path: Path):
    settings = ServingSettings(layout=Layout(tmp_path), workers=8)
    server = ModelServer(settings, gpus=4)
    arbiter = SimpleNamespace(WORKERS={})
    for pid in range(8):  # the arbiter forks the workers one by one
        worker = SimpleNamespace()
        server._pre_fork(arbiter, worker)
        arbiter.WORKERS[pid] = worker
    assert sorted(w.cnn_kmeans_gpu for w in arbiter.WORKERS.values()) == [0, 0, 1, 1, 2, 2, 3, 3]

    # Two workers on GPU 2 die; their replacements go there, not onto a busier GPU.
    for pid in [pid for pid, w in arbiter.WORKERS.items() if w.cnn_kmeans_gpu == 2]:
        del arbiter.WORKERS[pid]
    replacement = SimpleNamespace(gate=None)
    server._pre_fork(arbiter, replacement)
    assert replacement.cnn_kmeans_gpu == 2
    server._post_fork(arbiter, replacement)  # in the worker: its device
    assert server.device == torch.device("cuda", 2)


def test_without_gpus_serving_workers_use_the_cpu(tmp_path: Path):
    server = ModelServer(ServingSettings(layout=Layout(tmp_path), workers=2), gpus=0)
    worker = SimpleNamespace(gate=None)
    server._pre_fork(SimpleNamespace(WORKERS={}), worker)
    assert not hasattr(worker, "cnn_kmeans_gpu")
    server._post_fork(SimpleNamespace(WORKERS={}), worker)
    assert server.device == torch.device("cpu")
