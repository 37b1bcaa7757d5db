"""The torch thread count really reaches torch in every entrypoint (the CLI's train and predict,
the training job; the serving workers are in test_serve.py), the Python API's progress is
visible without logging configured, and same seed + same threads give identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_kmeans import cli
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.threads import available_cores, torch_threads
from tests.helpers import DATA
from tests.integration.opt_ml import TINY, make_job, train_command
from tests.integration.test_train import small_csv

SCRIPT = str(Path(sys.executable).parent / "cnn-kmeans")
TINY_FLAGS = ["--blocks", "2", "--filters", "8", "--reduced-size", "16", "--output-size", "8"]
TEST_CSV = DATA / "inference" / "input" / "test.csv"
# Settings the tests control: removed from the environment the processes inherit.
SCRUBBED = ("OMP_NUM_THREADS", "CNN_KMEANS_THREADS", "MKL_NUM_THREADS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    # Idle OpenMP threads sleep, as the CLI sets: a loaded test machine must not make 2-thread
    # runs crawl (the CLI keeps a value that is set).
    return {**env, "OMP_WAIT_POLICY": "PASSIVE", **extra}


def other_count() -> int:
    """A thread count unlike the default one on this machine (so that ignoring it shows)."""
    return 1 if available_cores() > 1 else 2


def cli_train(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    command = [SCRIPT, "train", "--train", str(DATA / "validation"), "--model-dir"]
    command += [str(tmp_path / "model"), "--clusters", "3", "--epochs", "1", *TINY_FLAGS, *flags]
    result = subprocess.run(
        command, env=clean_env(**env), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def test_cli_train_threads_flag_reaches_torch(tmp_path):
    count = other_count()
    result = cli_train(tmp_path, "--threads", str(count))
    assert f"{count} torch thread(s) (--threads)" in result.stderr
    # logged by the model as training starts, from torch itself
    assert f"device cpu, {count} torch thread(s)" in result.stderr


def test_cli_train_environment_variable_and_omp_num_threads(tmp_path):
    count = other_count()
    result = cli_train(tmp_path, CNN_KMEANS_THREADS=str(count), OMP_NUM_THREADS="3")
    assert f"device cpu, {count} torch thread(s)" in result.stderr  # ours wins over OpenMP's
    result = cli_train(tmp_path, OMP_NUM_THREADS=str(count))
    assert f"{count} torch thread(s) (OMP_NUM_THREADS={count})" in result.stderr
    assert f"device cpu, {count} torch thread(s)" in result.stderr


def test_cli_train_default_is_the_available_cores(tmp_path):
    result = cli_train(tmp_path)
    assert f"{available_cores()} torch thread(s) (available cores)" in result.stderr
    assert f"device cpu, {available_cores()} torch thread(s)" in result.stderr


def test_cli_bad_threads_are_refused(tmp_path):
    command = [SCRIPT, "predict", "--model-dir", str(tmp_path), str(TEST_CSV), "--threads", "0"]
    result = subprocess.run(command, env=clean_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "argument --threads" in result.stderr
    command = command[:-2]
    env = clean_env(CNN_KMEANS_THREADS="many")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "CNN_KMEANS_THREADS='many'" in result.stderr


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("threads")
    cli_train(folder, "--threads", "1")
    return folder / "model"


def test_cli_predict_threads_reach_torch_while_encoding(model_dir, tmp_path, monkeypatch):
    """`cnn-kmeans predict --threads N` in this process: torch's count inside the encoding."""
    count = other_count() + 2  # above the cores too: an explicit count is not lowered
    seen = []
    real_encode = CNNKMeans.encode

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(CNNKMeans, "encode", spy)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it if unset: restored after
    out = tmp_path / "p.csv"
    with torch_threads(None):  # main() sets the process's count: restored after
        arguments = ["predict", "--model-dir", str(model_dir), str(TEST_CSV), "-o", str(out)]
        code = cli.main([*arguments, "--threads", str(count)])
    assert code == 0 and seen == [count]
    assert len(out.read_text().splitlines()) == 100


def test_cli_predict_logs_its_threads(model_dir, tmp_path):
    count = other_count()
    command = [SCRIPT, "predict", "--model-dir", str(model_dir), str(TEST_CSV)]
    command += ["-o", str(tmp_path / "p.csv")]
    env = clean_env(CNN_KMEANS_THREADS=str(count))
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert f"{count} torch thread(s) (CNN_KMEANS_THREADS)" in result.stderr


def run_training_job(tmp_path: Path, **env: str) -> str:
    root = make_job(tmp_path, {**TINY, "epochs": "1"}, {"training": {"t.csv": small_csv(30)}})
    env = {**clean_env(**env), "SAGEMAKER_BASE_DIR": str(root)}
    result = subprocess.run(
        train_command(), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_training_job_threads_from_its_environment(tmp_path):
    count = other_count()
    err = run_training_job(tmp_path / "a", CNN_KMEANS_THREADS=str(count))
    assert f"{count} torch thread(s) (CNN_KMEANS_THREADS)" in err
    assert f"device cpu, {count} torch thread(s)" in err
    err = run_training_job(tmp_path / "b")
    assert f"{available_cores()} torch thread(s) (available cores)" in err
    assert f"device cpu, {available_cores()} torch thread(s)" in err


API_SCRIPT = """
import sys
from cnn_kmeans.model import CNNKMeans
from tests.helpers import cylinder_bell_funnel, tiny_config
rows, _ = cylinder_bell_funnel(30, seed=1, low=20, high=40)
CNNKMeans(tiny_config(epochs=2), threads=1, progress=sys.argv[1] == "on").fit(rows)
"""


@pytest.mark.parametrize("switch", ["on", "off"])
def test_api_user_without_logging_config_sees_epochs_on_stderr_unless_off(switch):
    """Python drops INFO records when logging is not configured: the API makes them visible."""
    result = subprocess.run(
        [sys.executable, "-c", API_SCRIPT, switch],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    if switch == "on":
        assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr
        assert "ETA" in result.stderr and "training on 30 series" in result.stderr
    else:
        assert result.stderr == ""


REPRODUCE = """
import sys, torch
from cnn_kmeans.model import CNNKMeans
from tests.helpers import cylinder_bell_funnel, tiny_config
rows, _ = cylinder_bell_funnel(60, seed=3, low=20, high=60)
first, second = (
    CNNKMeans(tiny_config(epochs=3, seed=5), threads=int(sys.argv[1]), progress=False).fit(rows)
    for _ in range(2)
)
a, b = first.encoder_.state_dict(), second.encoder_.state_dict()
assert a.keys() == b.keys()
print(all(torch.equal(a[k], b[k]) for k in a) and (first.centroids_ == second.centroids_).all())
"""


def test_same_seed_and_same_threads_give_bit_identical_weights():
    """Two threads (reductions split between them), in a process whose idle OpenMP threads
    sleep, so that a loaded test machine does not make it crawl."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-c", REPRODUCE, "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    assert result.stdout.strip() == "True", result.stderr


def test_cli_leaves_the_wait_policy_to_the_user_and_loads_openmp_only_in_main(monkeypatch):
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads: the CLI module must not load torch
    before main() runs, and main() must not change the policy (PASSIVE measured 1.8x slower on
    a quiet machine)."""
    probe = "import sys, cnn_kmeans.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset")  # recorded, so restored after the test
    for preset, expected in ((None, None), ("ACTIVE", "ACTIVE"), ("PASSIVE", "PASSIVE")):
        if preset is None:
            monkeypatch.delenv("OMP_WAIT_POLICY")
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", preset)
        with torch_threads(None):  # main() sets the process's count: restored after
            code = cli.main(["predict", "--model-dir", "/nonexistent", str(TEST_CSV)])
        assert code == 2 and os.environ.get("OMP_WAIT_POLICY") == expected
