"""Wall time of a training job through the entrypoint vs the core called directly (not in CI).

    python benchmarks/bench_train.py [--epochs 20] [--repeats 2]

Both run in fresh processes on the sample data with the same hyperparameters: the core script
reads the channels, fits, scores and saves; the entrypoint does the same on a temporary /opt/ml
and also writes metrics, the report and its plots. Target: at most 10% more wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

CORE = """
import sys
from cnn_kmeans.config import Config
from cnn_kmeans.data import read_channel
from cnn_kmeans.model import CNNKMeans
from cnn_kmeans.persistence import save
config = Config.from_dict({k: v for k, v in (a.split("=") for a in sys.argv[2:])})
valid = read_channel(sys.argv[1] + "/validation")
model = CNNKMeans(config).fit(read_channel(sys.argv[1] + "/training"), valid)
model.score(valid)
save(model, sys.argv[1] + "/core-model")
"""


def layout(root: Path, hyperparameters: dict[str, str]) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    channels = {"training": "training", "validation": "validation"}
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"TrainingInputMode": "File"} for name in channels})
    )
    (config / "resourceconfig.json").write_text('{"current_host": "algo-1", "hosts": ["algo-1"]}')
    for name, folder in channels.items():
        shutil.copytree(DATA / folder, root / "input" / "data" / name)


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    hyperparameters = {"clusters": "3", "epochs": str(args.epochs)}
    core_times, entry_times = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            layout(root, hyperparameters)
            env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root)}
            pairs = [f"{k}={v}" for k, v in hyperparameters.items()]
            core_times.append(
                timed([sys.executable, "-c", CORE, str(root / "input" / "data"), *pairs], env)
            )
            entry_times.append(
                timed([sys.executable, "-m", "cnn_kmeans.container.train", "train"], env)
            )
    core, entry = statistics.median(core_times), statistics.median(entry_times)
    print(f"hyperparameters {hyperparameters}, sample data, {args.repeats} repeats (median)")
    print(f"core directly:   {core:6.1f} s")
    print(f"entrypoint:      {entry:6.1f} s  ({(entry / core - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
