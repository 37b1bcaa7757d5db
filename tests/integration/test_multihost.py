"""Multi-host jobs on hosts shaped like SageMaker's: one network + UTS + mount namespace each.

Every host runs the training image's command on its own /opt/ml, with its own
resourceconfig.json (interface `cnk0`), a hostname (`aws`) that resolves to nothing, and the
job's `algo-N` names in its own /etc/hosts (see netns.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.opt_ml import (
    TINY,
    entrypoint_env,
    make_job,
    metric_values,
    set_hosts,
    train_command,
)
from tests.integration.test_distributed import CHANNELS, HYPERPARAMETERS

pytestmark = pytest.mark.slow

HOSTS = ["algo-1", "algo-2"]
# The hosts meet within seconds; the old code, whose gloo bound loopback, waited for its
# 30-minute collective timeout.
JOB_TIMEOUT = 240


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"multi-host namespace tests skipped: {reason}")


def start_host(host: netns.Host, root: Path, **extra: str) -> subprocess.Popen:
    """The training entrypoint on `host`, its output in root/stdout and root/stderr."""
    env = {**entrypoint_env(root), **extra}
    with open(root / "stdout", "w") as out, open(root / "stderr", "w") as err:
        return subprocess.Popen(host.command(train_command()), env=env, stdout=out, stderr=err)


def finish(
    processes: list[subprocess.Popen], hosts: list[netns.Host], roots: list[Path], timeout: float
) -> None:
    """Wait for every host's process; on timeout kill everything in the namespaces and fail
    with the end of each host's log."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        tails = "".join(
            f"\n--- {host.name} (exit {process.poll()}):\n{log_of(root)[-2000:]}"
            for host, process, root in zip(hosts, processes, roots, strict=True)
        )
        pytest.fail(f"the hosts did not finish within {timeout} s{tails}")
    finally:
        for host in hosts:  # torchrun's workers included, whatever their process group
            pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def log_of(root: Path) -> str:
    return (root / "stderr").read_text()


def test_two_hosts_meet_over_the_job_interface_whatever_the_hostname(namespaces, tmp_path):
    with netns.cluster(HOSTS, tmp_path / "etc") as hosts:
        roots, processes = [], []
        for host in hosts:
            root = make_job(tmp_path / host.name, {**HYPERPARAMETERS, "epochs": "2"}, CHANNELS)
            set_hosts(root, host.name, HOSTS, netns.INTERFACE)
            roots.append(root)
            processes.append(start_host(host, root))
        finish(processes, hosts, roots, JOB_TIMEOUT)
        logs = [log_of(root) for root in roots]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log[-3000:]
    leader, follower = roots
    assert f"master {hosts[0].address}" in logs[0] and f"master {hosts[0].address}" in logs[1]
    assert f"GLOO_SOCKET_IFNAME={netns.INTERFACE}" in logs[1]
    assert "world size 2" in logs[0]
    assert len(metric_values((leader / "stdout").read_text())["train_loss"]) == 2
    assert (leader / "model" / "config.json").is_file()
    assert not (follower / "model" / "config.json").exists()


def test_a_host_whose_name_never_resolves_fails_the_job_naming_it(namespaces, tmp_path):
    with netns.cluster(["algo-1"], tmp_path / "etc", unresolvable=["algo-2"]) as hosts:
        root = make_job(tmp_path / "algo-1", TINY, CHANNELS)
        set_hosts(root, "algo-1", HOSTS, netns.INTERFACE)
        began = time.monotonic()
        process = start_host(hosts[0], root, CNN_KMEANS_HOST_WAIT_SECONDS="3")
        finish([process], hosts, [root], 60)
    assert process.returncode == 1, log_of(root)[-3000:]
    assert time.monotonic() - began < 40
    failure = (root / "output" / "failure").read_text()
    assert "'algo-2'" in failure and "did not resolve" in failure
    assert "waiting for host algo-2 to resolve" in log_of(root)
