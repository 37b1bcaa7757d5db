"""Local command line: `cnn-kmeans train`, `predict`, `serve` and `spec`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnn_kmeans import __version__
from cnn_kmeans.config import HYPERPARAMETERS, Config, Hyperparameter
from cnn_kmeans.data import format_csv, read_channel
from cnn_kmeans.errors import UserError
from cnn_kmeans.heap import map_large_allocations
from cnn_kmeans.onednn import limit_primitive_cache
from cnn_kmeans.outputs import OUTPUT_CHOICES, output_values
from cnn_kmeans.report import (
    epoch_record,
    require_plotting,
    write_prediction_report,
    write_training_report,
)
from cnn_kmeans.threads import (
    THREADS_ENV,
    available_cores,
    set_threads,
    threads_setting,
)

log = logging.getLogger("cnn_kmeans")


def _flag_type(hp: Hyperparameter):
    def parse(text: str):
        try:
            return hp.check(text)
        except UserError:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}; allowed: {hp.allowed()}"
            ) from None

    parse.__name__ = hp.kind.__name__
    return parse


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; a positive integer")
    return int(text)


def _threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help=f"torch threads (default: {THREADS_ENV}, else OMP_NUM_THREADS, else the cores "
        "this process may use); on a shared machine, the cores that are free",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; hyperparameter flags come from the declarations."""
    parser = argparse.ArgumentParser(
        prog="cnn-kmeans", description="Cluster time series: CNN encoder + KMeans."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on CSV series")
    train.add_argument("--train", required=True, type=Path, help="CSV file or folder")
    train.add_argument("--validation", type=Path, help="CSV file or folder (optional)")
    train.add_argument("--model-dir", required=True, type=Path, help="where the model goes")
    _threads_flag(train)
    train.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write report.json, cluster_sizes.csv, clusters.png (and sweep.png after a "
        "max-clusters sweep) to DIR, as the SageMaker job does in output/data",
    )
    group = train.add_argument_group("hyperparameters")
    for hp in HYPERPARAMETERS:
        group.add_argument(
            f"--{hp.name}",
            dest=hp.field,
            type=_flag_type(hp),
            default=hp.default,
            metavar=hp.kind.__name__.upper(),
            help=f"{hp.help} (default {hp.default}; allowed {hp.allowed()})",
        )

    predict = commands.add_parser("predict", help="label CSV series with a trained model")
    predict.add_argument("--model-dir", required=True, type=Path, help="a trained model")
    predict.add_argument("input", type=Path, help="CSV file or folder")
    predict.add_argument("-o", "--output", type=Path, help="output CSV (default: stdout)")
    _threads_flag(predict)
    predict.add_argument(
        "--columns",
        choices=OUTPUT_CHOICES,
        default=OUTPUT_CHOICES[0],
        help="what follows the label on each line, as the server's `output` choice: "
        "features (default), labels (the label only) or distances (to each centroid)",
    )
    predict.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write report.json (cluster sizes, distances to the centroids), "
        "cluster_sizes.csv and clusters.png of the predicted series to DIR",
    )

    serve = commands.add_parser("serve", help="run the inference server (gunicorn) locally")
    serve.add_argument("--model-dir", required=True, type=Path, help="a trained model")
    serve.add_argument("--port", type=int, help="default: SAGEMAKER_BIND_TO_PORT or 8080")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument(
        "--threads", type=_positive, metavar="N", help=f"torch threads per worker ({THREADS_ENV})"
    )

    spec = commands.add_parser(
        "spec",
        add_help=False,  # `cnn-kmeans spec --help` is the spec command's own help
        help="print (or --create) the CreateAlgorithm request; see `cnn-kmeans spec --help`",
    )
    spec.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def _sizes(labels: np.ndarray, clusters: int) -> str:
    counts = np.bincount(labels, minlength=clusters)
    return ", ".join(f"{k}: {n}" for k, n in enumerate(counts))


def train(args: argparse.Namespace) -> None:
    """Train, save, and report the model, its cluster sizes and (after a sweep) the sweep."""
    # torch: after main() set OpenMP's variables
    from cnn_kmeans.model import CNNKMeans, prepare, silhouette
    from cnn_kmeans.persistence import save

    config = Config(**{hp.field: getattr(args, hp.field) for hp in HYPERPARAMETERS})
    if args.report:
        require_plotting()  # before training, not after
    series = read_channel(args.train)
    valid = read_channel(args.validation) if args.validation else None
    limit_primitive_cache(os.environ, series, valid)
    map_large_allocations(series, valid)
    model = CNNKMeans(config, threads=args.torch_threads)
    history: list[dict] = []
    model.fit(series, valid, on_epoch=lambda report: history.append(epoch_record(report)))
    save(model, args.model_dir)
    log.info("model saved to %s", args.model_dir)
    log.info("training cluster sizes: %s", _sizes(model.labels_, model.n_clusters_))
    if model.sweep_:
        _log_sweep(model.sweep_)
    if args.report:
        features = model.transform(series)  # the training series' features, for their score
        summary = {
            **model.summary(),
            "train_score": _finite_or_none(silhouette(features, model.labels_, config.seed)),
            "valid_score": None if valid is None else _finite_or_none(model.score(valid)),
            "series": len(series),
            "hyperparameters": config.to_dict(),
            "history": history,
        }
        values = prepare(series)[0]  # the plots show the data's units, not the scaled values
        write_training_report(args.report, summary, model.labels_, values, config.seed)


def _log_sweep(sweep: list[dict]) -> None:
    log.info("max-clusters sweep (k: silhouette, smallest cluster):")
    for row in sweep:
        notes = [] if row["eligible"] else ["not eligible: a cluster too small"]
        if row["chosen"]:
            notes.append("chosen")
        log.info(
            "  k=%-3d silhouette %.4f  smallest %d%s",
            row["k"],
            row["silhouette"],
            row["smallest"],
            f"  ({', '.join(notes)})" if notes else "",
        )


def _finite_or_none(value: float) -> float | None:
    return value if value == value else None


def predict(args: argparse.Namespace) -> None:
    """Label every row of the input; one output row per input row, as the server's CSV answer:
    `label` then the features or distances (`--columns`)."""
    from cnn_kmeans.model import prepare  # torch: after main() set OpenMP's variables
    from cnn_kmeans.persistence import load

    if args.report:
        require_plotting()
    model = load(args.model_dir)
    model.threads = args.torch_threads
    series = read_channel(args.input)
    features = model.transform(series)
    labels, distances = model.assign(features)
    text = format_csv(labels, output_values(args.columns, features, distances))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        log.info("predictions for %d series written to %s", len(labels), args.output)
    else:
        sys.stdout.write(text)
    log.info("cluster sizes: %s", _sizes(labels, model.n_clusters_))
    if args.report:
        values = prepare(series)[0]
        write_prediction_report(args.report, labels, distances, values, model.config.seed)


def serve(args: argparse.Namespace) -> None:
    """Become the container's `serve` entrypoint, so the local server is the deployed one.

    A new program rather than an import: this module stays free of the container layer (the
    core's tested rule), and gunicorn's master gets this process, signals included.
    """
    command = [sys.executable, "-m", "cnn_kmeans.container.serve"]
    command += ["--model-dir", str(args.model_dir), "--host", args.host]
    if args.port is not None:
        command += ["--port", str(args.port)]
    environ = dict(os.environ)
    if args.threads is not None:
        environ[THREADS_ENV] = str(args.threads)
    sys.stderr.flush()
    os.execve(sys.executable, command, environ)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnn-kmeans` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # OMP_WAIT_POLICY is left to the user: PASSIVE made quiet-machine steps 1.8x slower and gave
    # 0.85-1.1x beside one busy process, where one thread gave 2.0-3.1x (bench_threads.py, two
    # runs; README "Threads"). The commands still import torch only once main()
    # runs, so a policy set in the environment reaches OpenMP as it loads.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if argv[:1] == ["spec"]:  # its options are the spec command's own (argparse can't forward)
        from cnn_kmeans.container import algorithm  # the container layer: only for this command

        return algorithm.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command != "serve":  # the server divides the cores among its workers
            count, source = threads_setting(args.threads, os.environ, available_cores())
            args.torch_threads = set_threads(count)
            log.info("%d torch thread(s) (%s)", args.torch_threads, source)
        {"train": train, "predict": predict, "serve": serve}[args.command](args)
    except UserError as error:
        log.error("error: %s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
