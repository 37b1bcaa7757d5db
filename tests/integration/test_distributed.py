"""Data-parallel training through the real entrypoint: 2 gloo processes, 2 hosts, resume."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnn_kmeans.persistence import load
from tests.helpers import cylinder_bell_funnel
from tests.integration import netns
from tests.integration.opt_ml import (
    TINY,
    assert_same_encoder,
    entrypoint_env,
    finish,
    make_job,
    metric_values,
    set_hosts,
    start_job,
    terminate_after,
    train_command,
)

pytestmark = pytest.mark.slow

HYPERPARAMETERS = {**TINY, "epochs": "12", "batch-size": "7"}  # 40 series: a ragged last batch


def training_csv() -> str:
    rows, _ = cylinder_bell_funnel(40, seed=4, low=20, high=40)
    return "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in rows)


CHANNELS = {"training": {"t.csv": training_csv()}, "validation": {"v.csv": training_csv()}}


def free_port() -> int:
    """A free port below the ephemeral range (32768+), so that no client connection made by
    another test can take it between this check and torchrun binding it."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def start(root: Path, **extra: str) -> subprocess.Popen:
    return start_job(root, **{"CNN_KMEANS_MASTER_PORT": str(free_port()), **extra})


def one_process(root: Path) -> subprocess.CompletedProcess:
    """The same job in one process, run to its end."""
    return subprocess.run(
        train_command(),
        env=entrypoint_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def two_processes(root: Path) -> subprocess.Popen:
    return start(root, CNN_KMEANS_PROCESSES_PER_HOST="2")


@pytest.fixture(scope="module")
def two_process_job(tmp_path_factory) -> tuple[Path, str, str, int]:
    root = make_job(tmp_path_factory.mktemp("ddp"), HYPERPARAMETERS, CHANNELS)
    process = two_processes(root)
    out, err = finish(process, timeout=600)
    return root, out, err, process.returncode


def test_two_processes_train_one_model_and_log_each_metric_once_per_epoch(two_process_job):
    root, out, err, code = two_process_job
    assert code == 0, err
    assert "world size 2" in err
    values = metric_values(out)
    assert len(values["train_loss"]) == 12 and len(values["valid_loss"]) == 12
    assert len(values["train_score"]) == 1 and len(values["valid_score"]) == 1
    model = load(root / "model")
    labels = model.predict(cylinder_bell_funnel(9, seed=8, low=20, high=40)[0])
    assert labels.shape == (9,) and set(labels.tolist()) <= {0, 1, 2}
    assert json.loads((root / "output" / "data" / "report.json").read_text())["series"] == 40


def test_two_processes_compute_the_single_process_losses(two_process_job, tmp_path):
    _, out, _, _ = two_process_job
    root = make_job(tmp_path, {**HYPERPARAMETERS, "epochs": "2"}, CHANNELS)
    single = one_process(root)
    assert single.returncode == 0, single.stderr
    # Sharded batches weighted so that DDP's average is the batch mean: the same optimisation.
    np.testing.assert_allclose(
        metric_values(out)["train_loss"][:2], metric_values(single.stdout)["train_loss"], rtol=1e-4
    )


def test_two_hosts_with_their_own_roots(tmp_path):
    """Two "hosts" on loopback: where namespaces are available, test_multihost.py runs the
    same job on hosts shaped like SageMaker's instead."""
    if netns.unavailable() is None:
        pytest.skip("superseded by test_multihost.py (hosts as network namespaces)")
    hosts = ["127.0.0.1", "localhost"]  # two names of this machine: one process per "host"
    port = str(free_port())
    processes = []
    for host in hosts:
        root = make_job(tmp_path / host, {**HYPERPARAMETERS, "epochs": "2"}, CHANNELS)
        set_hosts(root, host, hosts, "lo")  # loopback: no traffic to this machine's address
        processes.append((root, start(root, CNN_KMEANS_MASTER_PORT=port)))
    results = [
        (root, *process.communicate(timeout=600), process.returncode) for root, process in processes
    ]
    for _, _, err, code in results:
        assert code == 0, err
    (leader, out, err, _), (follower, follower_out, _, _) = results
    assert "world size 2" in err and len(metric_values(out)["train_loss"]) == 2
    assert (leader / "model" / "config.json").is_file()
    assert follower_out == "" and not (follower / "model" / "config.json").exists()


def test_two_processes_resume_from_a_checkpoint_to_the_same_model(two_process_job, tmp_path):
    straight = two_process_job[0]
    root = make_job(tmp_path, HYPERPARAMETERS, CHANNELS, checkpoints=True)
    done = terminate_after(two_processes(root), root, epochs=3)
    # Both processes stopped at the same step, fitted KMeans together: a usable model.
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    assert report["stopped_early"]["epochs_completed"] == done >= 3
    assert "a usable model was written" in (root / "output" / "failure").read_text()
    assert load(root / "model").predict(np.array([[0.0, 1.0, 2.0, 1.0, 0.5]])).shape == (1,)

    (root / "output" / "failure").unlink()
    rerun = two_processes(root)
    out, err = finish(rerun, timeout=600)
    assert rerun.returncode == 0, err
    assert "resumed from checkpoint" in err
    assert len(metric_values(out)["train_loss"]) == 12 - done
    assert_same_encoder(root / "model", straight / "model")


# Loaded by every Python process of the job (PYTHONPATH): a worker (torchrun sets LOCAL_RANK)
# aborts if the interpreter's finalization runs, as gloo's threads can make it do at random.
_ABORT_AT_FINALIZATION = """\
import atexit, os
if "LOCAL_RANK" in os.environ:
    atexit.register(os.abort)
"""

# How tearing the process group down failed on torch 2.1 (see train._leave): it blocked with
# the GIL held, so no other thread of the process could run again (PyDLL calls keep the GIL).
_TEARDOWN_HOLDS_THE_GIL = """\
import os
if "LOCAL_RANK" in os.environ:
    import ctypes
    import torch.distributed
    torch.distributed.destroy_process_group = lambda *args, **kwargs: ctypes.PyDLL(None).pause()
"""


def finished_job_with_site(tmp_path: Path, sitecustomize: str) -> tuple[Path, str, str]:
    """A 1-epoch, two-process job whose Python processes all import `sitecustomize` first,
    run to its end (at most 180 s): its root, stdout and stderr. It succeeded."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    root = make_job(tmp_path / "job", {**HYPERPARAMETERS, "epochs": "1"}, CHANNELS)
    process = start(root, CNN_KMEANS_PROCESSES_PER_HOST="2", PYTHONPATH=path)
    out, err = finish(process, timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert "world size 2" in err and len(metric_values(out)["train_loss"]) == 1
    assert (root / "model" / "config.json").is_file()
    assert not (root / "output" / "failure").exists()
    return root, out, err


def test_a_finished_worker_cannot_fail_the_job_while_the_interpreter_tears_down(tmp_path):
    finished_job_with_site(tmp_path, _ABORT_AT_FINALIZATION)


def test_a_process_group_whose_teardown_would_deadlock_cannot_fail_a_finished_job(tmp_path):
    # Both workers meet at the barrier and exit at once: a teardown that would hang holding
    # the GIL is never reached (with it, faulthandler ended a worker after 60 s, code 1).
    _, _, err = finished_job_with_site(tmp_path, _TEARDOWN_HOLDS_THE_GIL)
    assert "Traceback" not in err and "Fatal Python error" not in err


def two_as_one(tmp_path: Path, hyperparameters: dict, announced: str, epochs: int) -> tuple:
    """The job run by two processes and by one: both succeed, the two log `announced`, and they
    report the same loss at each of the `epochs` epochs. Returns the two jobs' roots."""
    two = make_job(tmp_path / "two", hyperparameters, CHANNELS)
    process = two_processes(two)
    out, err = finish(process, timeout=600)
    assert process.returncode == 0, err
    assert announced in err
    one = make_job(tmp_path / "one", hyperparameters, CHANNELS)
    single = one_process(one)
    assert single.returncode == 0, single.stderr
    losses = metric_values(single.stdout)["train_loss"]
    assert len(losses) == epochs
    np.testing.assert_allclose(metric_values(out)["train_loss"], losses, rtol=1e-4)
    return two, one


def test_two_processes_run_the_clustering_stage_as_one_process_does(tmp_path):
    # The stage rebuilds the DDP objective with the centroids, gathers every series' features
    # for its targets and broadcasts the leader's KMeans: the same losses as one process.
    stage = {**HYPERPARAMETERS, "epochs": "2", "cluster-epochs": "2", "cluster-weight": "5"}
    two_as_one(tmp_path, stage, "clustering stage: 2 epochs", 4)


def test_two_processes_train_an_ensemble_as_one_process_does(tmp_path):
    # Each encoder gets its own DDP objective and optimizer when its turn comes: the same losses
    # as one process, over both encoders, and a model with both encoders' features.
    ensemble = {**HYPERPARAMETERS, "epochs": "2", "encoders": "2"}
    two, one = two_as_one(tmp_path, ensemble, "encoder 2 of 2", 4)
    series = cylinder_bell_funnel(9, seed=8, low=20, high=40)[0]
    features = load(two / "model").transform(series)
    assert features.shape == (9, 2 * int(TINY["output-size"]))
    np.testing.assert_allclose(features, load(one / "model").transform(series), atol=1e-4)
