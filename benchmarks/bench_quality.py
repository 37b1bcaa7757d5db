"""Quality on real UCR data: the encoder's fidelity to the paper and clustering vs baselines.

Not run by CI. Needs the `bench` extra (aeon: the UCR files it ships and its k-Shape):

    pip install -c constraints.txt -e '.[bench]'
    python benchmarks/bench_quality.py run --dataset GunPoint --seeds 0 1 2 --out /tmp/bq
    python benchmarks/bench_quality.py report --out /tmp/bq --write BENCHMARKS.md

`run` trains one model per seed on the TRAIN split (≈1,500 optimisation steps at the default
hyperparameters, as the paper), then on the TEST split:

- fidelity (seed 0 only, as the paper publishes one figure): test accuracy of an RBF SVM fitted
  on the train features, C chosen as in the paper's code;
- clustering (every seed): NMI and ARI vs the classes of our predicted labels (k = number of
  classes), beside KMeans on the raw series and k-Shape with the same seed. Variants of our
  KMeans step that need no retraining (L2-normalised features) are scored on the same models.

Each (data set, seed) is written to its own JSON file so that runs can go in parallel processes
and `report` merges whatever finished into the markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import numpy as np

# The paper's figures for K=10 negatives, 1,500 steps (Franceschi et al., 2019, table S3).
PAPER_ACCURACY = {
    "GunPoint": 0.980,
    "ArrowHead": 0.766,
    "ItalyPowerDemand": 0.954,
    "OSULeaf": 0.760,
}
STEPS = 1500


def load_ucr(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TRAIN and TEST of a UCR set shipped inside aeon: X (N, L) float64, y (N,) str."""
    import aeon.datasets
    from aeon.datasets import load_from_ts_file

    folder = Path(aeon.datasets.__file__).parent / "data" / name
    splits = []
    for split in ("TRAIN", "TEST"):
        X, y = load_from_ts_file(str(folder / f"{name}_{split}.ts"))
        splits += [np.asarray(X, dtype=np.float64)[:, 0, :], np.asarray(y)]
    return tuple(splits)


def znorm(X: np.ndarray) -> np.ndarray:
    """Each row z-normalised (a constant row becomes zeros), as k-Shape expects."""
    std = X.std(axis=1, keepdims=True)
    return (X - X.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


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
            SVC(gamma="scale"),
            {"C": [10.0**p for p in range(-4, 5)] + [np.inf]},
            cv=5,
        ).fit(train, y_train)
        model, chosen = grid.best_estimator_, grid.best_params_["C"]
    return {"svm_accuracy": float(model.score(test, y_test)), "svm_C": str(chosen)}


def scores(y_true: np.ndarray, labels: np.ndarray) -> dict:
    """NMI and ARI of cluster labels vs classes."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "nmi": float(normalized_mutual_info_score(y_true, labels)),
        "ari": float(adjusted_rand_score(y_true, labels)),
    }


def kmeans_labels(train: np.ndarray, test: np.ndarray, k: int, seed: int) -> np.ndarray:
    """KMeans as our model fits it (n_init=10, seeded), fitted on train, labels of test."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit(train).predict(test)


def l2(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def run(name: str, seed: int, out: Path, scaling: str, threads: int) -> dict:
    """Train and evaluate one (data set, seed); writes and returns its record."""
    import torch

    from cnn_kmeans.config import Config
    from cnn_kmeans.model import CNNKMeans

    torch.set_num_threads(threads)
    X_train, y_train, X_test, y_test = load_ucr(name)
    k = len(np.unique(y_train))
    steps_per_epoch = math.ceil(len(X_train) / Config().batch_size)
    epochs = round(STEPS / steps_per_epoch)
    config = Config(clusters=k, epochs=epochs, seed=seed, scaling=scaling)
    record = {
        "dataset": name,
        "seed": seed,
        "scaling": scaling,
        "train": len(X_train),
        "test": len(X_test),
        "length": X_train.shape[1],
        "classes": k,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        # Whether the UCR files are already z-normalised per series (most are): then `global`
        # and `series` scaling see nearly the same values.
        "max_abs_series_mean": float(np.abs(X_train.mean(axis=1)).max()),
        "max_abs_series_std_minus_1": float(np.abs(X_train.std(axis=1) - 1).max()),
    }
    began = time.perf_counter()
    model = CNNKMeans(config, device=torch.device("cpu")).fit(X_train)
    record["train_seconds"] = time.perf_counter() - began
    f_train, f_test = model.transform(X_train), model.transform(X_test)
    record.update(svm_accuracy(f_train, y_train, f_test, y_test))
    methods = {
        "ours": model.predict(X_test),
        "ours_l2": kmeans_labels(l2(f_train), l2(f_test), k, seed),
        "kmeans_raw": kmeans_labels(znorm(X_train), znorm(X_test), k, seed),
        "kshape": kshape_labels(X_train, X_test, k, seed),
    }
    record["methods"] = {method: scores(y_test, labels) for method, labels in methods.items()}
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{scaling}-seed{seed}"
    # The features, to study other ways of clustering them without training again.
    np.savez(stem.with_suffix(".npz"), train=f_train, test=f_test, y_train=y_train, y_test=y_test)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


def kshape_labels(train: np.ndarray, test: np.ndarray, k: int, seed: int) -> np.ndarray:
    """aeon's k-Shape (it z-normalises each series itself), fitted on train, labels of test."""
    from aeon.clustering import KShape

    # One initialisation (aeon's default): ten cost 6 minutes per seed on OSULeaf here.
    model = KShape(n_clusters=k, random_state=seed).fit(train[:, None, :])
    return model.predict(test[:, None, :])


# -- report --------------------------------------------------------------------------------------

METHODS = {
    "ours": "ours",
    "ours_l2": "ours, L2-normalised features",
    "kmeans_raw": "KMeans, raw series",
    "kshape": "k-Shape",
}


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:  # no spread to report from one seed
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _fidelity(records: list[dict]) -> list[str]:
    """A row per data set: SVM test accuracy, mean ± sd over the seeds run."""
    lines = [
        "| data set | train / test / length / classes | steps | seeds | SVM C | ours | paper | "
        "Δ (mean) | train time (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, paper in PAPER_ACCURACY.items():
        rows = [r for r in records if r["dataset"] == name and "svm_accuracy" in r]
        if not rows:
            continue
        r = rows[0]
        accuracy = [row["svm_accuracy"] for row in rows]
        minutes = statistics.mean(row["train_seconds"] for row in rows) / 60
        lines.append(
            f"| {name} | {r['train']} / {r['test']} / {r['length']} / {r['classes']} | "
            f"{r['steps']} | {','.join(str(row['seed']) for row in rows)} | "
            f"{','.join(row['svm_C'] for row in rows)} | {_mean_sd(accuracy)} | {paper:.3f} | "
            f"{statistics.mean(accuracy) - paper:+.3f} | {minutes:.1f} min |"
        )
    return lines


def _clustering(records: list[dict], metric: str) -> list[str]:
    """One table of `metric` (nmi or ari): a row per data set, mean ± sd over seeds."""
    lines = [
        "| data set | seeds | " + " | ".join(METHODS.values()) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    per_set: dict[str, list[float]] = {method: [] for method in METHODS}
    for name in PAPER_ACCURACY:
        rows = [r for r in records if r["dataset"] == name]
        if not rows:
            continue
        cells = []
        for method in METHODS:
            values = [r["methods"][method][metric] for r in rows]
            per_set[method].append(statistics.mean(values))
            cells.append(_mean_sd(values))
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    means = (f"**{statistics.mean(v):.3f}**" for v in per_set.values())
    lines.append("| **mean over data sets** | | " + " | ".join(means) + " |")
    return lines


def _scaling_gap(name: str) -> float:
    """Largest difference between the inputs `scaling=global` and `scaling=series` give."""
    from cnn_kmeans.preprocess import Scaler

    X_train, _, X_test, _ = load_ucr(name)
    scaled = np.stack(
        [
            Scaler.fit(kind, X_train).transform(np.vstack([X_train, X_test]))
            for kind in ("global", "series")
        ]
    )
    return float(np.abs(scaled[0] - scaled[1]).max())


def report(out: Path, note: str) -> str:
    """BENCHMARKS.md from the JSON records under `out`."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    records.sort(key=lambda r: (r["dataset"], r["seed"]))
    versions = ", ".join(
        f"{package} {metadata.version(package)}"
        for package in ("cnn-kmeans", "torch", "numpy", "scikit-learn", "aeon")
    )
    lines = [
        "# Benchmarks: quality on real data",
        "",
        "Generated by `benchmarks/bench_quality.py report` from the records of its `run`s; do not "
        "edit by hand. UCR data sets as shipped inside aeon (TRAIN and TEST splits); every model "
        f"is fitted on TRAIN only and evaluated on TEST. Default hyperparameters, ≈{STEPS} "
        "optimisation steps (`epochs` = round(1500 / ceil(N / 10))).",
        "",
        "UCR files are already z-normalised per series, so `scaling=global` (the default: one "
        "mean and std over all training values) and `scaling=series` feed the encoder the same "
        "values; largest difference over TRAIN and TEST: "
        + ", ".join(f"{name} {_scaling_gap(name):.1e}" for name in PAPER_ACCURACY)
        + " (float32 rounding). The runs use the default; `series` would not change them.",
        "",
        "## Fidelity to the paper: RBF SVM on the features, test accuracy (mean ± sd over seeds)",
        "",
        "As the paper's code: `SVC(gamma='scale')`, C by 5-fold CV over {1e-4, …, 1e4, inf} on the "
        "train features when every class can have 5 series and there are at least 50, else C=inf. "
        "Paper: Franceschi et al. (2019), K=10 negatives, 1,500 steps.",
        "",
        *_fidelity(records),
        "",
        "## Clustering: NMI of the TEST labels vs the classes (mean ± sd over seeds)",
        "",
        "k = number of classes; every method uses the same seed (KMeans: `n_init=10`; k-Shape: "
        "aeon's `KShape`, one initialisation, z-normalising each series). *ours* is `predict`; "
        "*ours, L2-normalised features* is KMeans (as ours) on the same model's features scaled "
        "to unit norm; *KMeans, raw series*: on the z-normalised series.",
        "",
        *_clustering(records, "nmi"),
        "",
        "## Clustering: ARI (NMI flatters many clusters; judge by both)",
        "",
        *_clustering(records, "ari"),
        "",
        "## How it was run",
        "",
        "```",
        "pip install -c constraints.txt -e '.[bench]'",
        *(
            f"python benchmarks/bench_quality.py run --dataset {name} --seeds "
            + " ".join(str(r["seed"]) for r in records if r["dataset"] == name)
            + f" --out {out}"
            for name in PAPER_ACCURACY
            if any(r["dataset"] == name for r in records)
        ),
        f"python benchmarks/bench_quality.py report --out {out} --write BENCHMARKS.md",
        "```",
        "",
        "Each seed is independent (its own process here: two at a time, one torch thread each). "
        + note,
        "",
        f"Versions: Python {platform.python_version()}, {versions}.",
        "",
        "Machine: CPU only, 2 cores shared with other jobs (one torch thread per run, two runs in "
        f"parallel), {platform.system()} {platform.machine()}; train times are wall times there.",
        "",
    ]
    return "\n".join(lines)


def rescore(out: Path) -> None:
    """Add the SVM evaluation to records written without it, from their saved features."""
    for path in sorted(out.glob("*.json")):
        record = json.loads(path.read_text())
        if "svm_accuracy" not in record:
            saved = np.load(path.with_suffix(".npz"), allow_pickle=False)
            record.update(
                svm_accuracy(saved["train"], saved["y_train"], saved["test"], saved["y_test"])
            )
            path.write_text(json.dumps(record, indent=1))
            print(f"{path.name}: SVM accuracy {record['svm_accuracy']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train and evaluate one data set")
    run_parser.add_argument("--dataset", required=True, choices=sorted(PAPER_ACCURACY))
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_parser.add_argument("--scaling", default="global", choices=("global", "series"))
    run_parser.add_argument("--threads", type=int, default=1, help="torch threads")
    run_parser.add_argument("--out", type=Path, required=True, help="folder of JSON records")
    rescore_parser = sub.add_parser("rescore", help="add missing SVM scores from saved features")
    rescore_parser.add_argument("--out", type=Path, required=True)
    report_parser = sub.add_parser("report", help="merge the records into markdown")
    report_parser.add_argument("--out", type=Path, required=True)
    report_parser.add_argument("--note", default="", help="a sentence on how it was run")
    report_parser.add_argument("--write", type=Path, help="write the markdown here")
    args = parser.parse_args()
    if args.command == "run":
        for seed in args.seeds:
            r = run(args.dataset, seed, args.out, args.scaling, args.threads)
            print(json.dumps({k: v for k, v in r.items() if k != "methods"}))
            for method, s in r["methods"].items():
                print(f"  {method:<11} NMI {s['nmi']:.3f}  ARI {s['ari']:.3f}")
    elif args.command == "rescore":
        rescore(args.out)
    else:
        text = report(args.out, args.note)
        if args.write:
            args.write.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
