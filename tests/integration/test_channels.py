"""Channel settings through the training entrypoint: input modes and S3 distribution."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time

import pytest

from tests.integration.opt_ml import (
    TINY,
    entrypoint_env,
    finish,
    make_job,
    run_job,
    set_hosts,
    train_command,
)
from tests.integration.test_distributed import CHANNELS, training_csv

# Inside a private mount namespace: make input/data read-only (as a FastFile mount is), check
# that a write is refused, then run the command.
READ_ONLY = (
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
    '! touch "$1/training/.probe" 2>/dev/null && shift && exec "$@"'
)


def test_fastfile_channels_are_read_from_a_read_only_tree(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only bind mount needs root and unshare (CI runs as root)")
    compressed = gzip.compress(training_csv().encode())  # gzip files, CompressionType None
    channels = {
        "training": {"part-1.csv": training_csv(), "nested/part-2.csv.gz": compressed},
        "validation": {"v.csv.gz": compressed},
    }
    root = make_job(tmp_path, {**TINY, "epochs": "2"}, channels, input_mode="FastFile")
    data = root / "input" / "data"
    isolated = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh"]
    done = subprocess.run(
        [*isolated, str(data), *train_command()],
        env=entrypoint_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "80 training series" in done.stderr and "40 validation series" in done.stderr
    assert (root / "model" / "config.json").is_file()


def test_a_pipe_mode_channel_fails_naming_the_input_mode(tmp_path):
    root = make_job(tmp_path, TINY, CHANNELS, input_mode="Pipe")
    # Pipe mode gives FIFOs named <channel>_<epoch> instead of the channel's folder.
    for name in CHANNELS:
        shutil.rmtree(root / "input" / "data" / name)
        os.mkfifo(root / "input" / "data" / f"{name}_0")
    done = run_job(root, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    failure = (root / "output" / "failure").read_text()
    assert "channel 'training' uses input mode Pipe" in failure
    assert "File or FastFile" in failure
    assert not (root / "model" / "config.json").exists()


def test_a_sharded_channel_on_two_hosts_fails_at_once(tmp_path):
    root = make_job(tmp_path, TINY, CHANNELS, distribution="ShardedByS3Key")
    # Two names of this machine: nothing is looked up beyond /etc/hosts, no traffic leaves lo.
    set_hosts(root, "localhost", ["localhost", "127.0.0.1"], "lo")
    began = time.monotonic()
    process = subprocess.Popen(
        train_command(),
        env={**entrypoint_env(root), "CNN_KMEANS_HOST_WAIT_SECONDS": "5"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    _, err = finish(process, 60, hint=" (it should fail at once: the hosts were left to diverge)")
    assert process.returncode == 1, err[-3000:]
    assert time.monotonic() - began < 60
    failure = (root / "output" / "failure").read_text()
    assert "'training' is ShardedByS3Key on a job of 2 instances" in failure
    assert "FullyReplicated" in failure
