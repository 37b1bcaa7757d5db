"""The container's settings: the `/opt/ml` layout (root injectable) and SageMaker variables.

Settings are read once, in an entrypoint's `main()`, into frozen objects; nothing here runs at
import. `SAGEMAKER_BASE_DIR` redirects `/opt/ml` exactly as the SageMaker toolkits do, so the
entrypoints run locally against a folder laid out like `/opt/ml`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_kmeans.container import job_config
from cnn_kmeans.errors import UserError
from cnn_kmeans.outputs import OUTPUT_CHOICES

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_ROOT = Path("/opt/ml")
DEFAULT_MAX_PAYLOAD_MB = 6.0
UNLIMITED_PAYLOAD_MB = 100.0  # the largest MaxPayloadInMB batch transform accepts
# What the reader handles: files on a file system, copied (File) or mounted from S3 (FastFile,
# read-only). Pipe mode streams through FIFOs the reader does not read.
FILE_INPUT_MODES = ("File", "FastFile")
# Real-time endpoints wait 60 s for an answer (InvokeEndpoint's limit; the inference toolkit's
# default SAGEMAKER_MODEL_SERVER_TIMEOUT is 60 too); batch transform waits longer for large
# mini-batches.
REALTIME_TIMEOUT_S = 60
BATCH_TIMEOUT_S = 600
# InvokeEndpoint refuses a response body above 6 MB (botocore's service model: sagemaker-runtime
# InvokeEndpoint output Body, max 6291456 bytes = 6 MiB); serverless endpoints allow 4 MB.
REALTIME_MAX_RESPONSE_MB = 6.0
# SageMaker sets SAGEMAKER_BATCH=true in a batch transform's container ("Use your own inference
# code with batch transform", https://docs.aws.amazon.com/sagemaker/latest/dg/
# your-algorithms-batch-code.html; the same page names SAGEMAKER_MAX_PAYLOAD_IN_MB,
# SAGEMAKER_BATCH_STRATEGY and SAGEMAKER_MAX_CONCURRENT_TRANSFORMS, set only when the job sets
# them). Nothing documented tells an asynchronous or a serverless endpoint from a real-time one:
# they get the real-time defaults, and their users set CNN_KMEANS_MAX_RESPONSE_MB (0 for
# asynchronous endpoints, 4 for serverless ones) and SAGEMAKER_MODEL_SERVER_TIMEOUT.
BATCH_ENV = "SAGEMAKER_BATCH"
MAX_RESPONSE_ENV = "CNN_KMEANS_MAX_RESPONSE_MB"


def root_from(environ: Mapping[str, str]) -> Path:
    """`/opt/ml`, or the folder `SAGEMAKER_BASE_DIR` redirects it to."""
    return Path(environ.get(BASE_DIR_ENV) or DEFAULT_ROOT)


@dataclass(frozen=True)
class Layout:
    """Paths of the `/opt/ml` contract under a root."""

    root: Path

    @property
    def model_dir(self) -> Path:
        """Where the model artifact is written (training) or read (serving)."""
        return self.root / "model"

    @property
    def config_dir(self) -> Path:
        """`input/config`: hyperparameters.json, inputdataconfig.json, resourceconfig.json."""
        return self.root / "input" / "config"

    def channel_dir(self, channel: str) -> Path:
        """`input/data/<channel>`."""
        return self.root / "input" / "data" / channel

    @property
    def output_dir(self) -> Path:
        """`output`: the failure file lives here."""
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        """`output/data`: the report and plots (uploaded as output.tar.gz)."""
        return self.root / "output" / "data"

    @property
    def failure_file(self) -> Path:
        """`output/failure`: SageMaker shows its first 1024 characters as the failure reason."""
        return self.root / "output" / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        """SageMaker's default local checkpoint path (synchronised with S3 when configured)."""
        return self.root / "checkpoints"


@dataclass(frozen=True)
class TrainingEnvironment:
    """What a training job is given: hyperparameters (raw), channels, hosts and devices."""

    layout: Layout
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    hosts: tuple[str, ...] = ("localhost",)
    current_host: str = "localhost"
    num_gpus: int = 0
    num_cpus: int = 1
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    network_interface_name: str = "eth0"
    instance_type: str = "local"
    channel_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def check_channels(self) -> None:
        """Refuse what the reader cannot serve: a Pipe-mode channel, or a channel sharded
        across the hosts (ShardedByS3Key), since every process must see every series (the
        triplets' negatives and the KMeans fit span the whole training set).

        Raises:
            UserError: Naming the channel and the setting to change.
        """
        for name, config in self.channel_configs.items():
            mode = config.get("TrainingInputMode", "File")
            if mode not in FILE_INPUT_MODES:
                raise UserError(
                    f"channel {name!r} uses input mode {mode}: cnn-kmeans reads files; set the "
                    f"channel's InputMode (or the job's TrainingInputMode) to File or FastFile"
                )
            sharded = config.get("S3DistributionType") == "ShardedByS3Key"
            if sharded and len(self.hosts) > 1:
                raise UserError(
                    f"channel {name!r} is ShardedByS3Key on a job of {len(self.hosts)} "
                    "instances: every instance must read the whole data set; set the channel's "
                    "S3DataDistributionType to FullyReplicated"
                )

    @classmethod
    def from_toolkit(cls, environ: Mapping[str, str] | None = None) -> TrainingEnvironment:
        """Read the job's environment through the `sagemaker-training` toolkit.

        SageMaker always writes `input/config/{resourceconfig,inputdataconfig,hyperparameters}
        .json`; a local run may leave any of them out (see `job_config`). The toolkit computes
        its paths (and creates folders) when imported, from `SAGEMAKER_BASE_DIR`, so it is
        imported here, at run time, never at module import.

        Raises:
            UserError: No `input/config` folder, or a config file that cannot be read or used.
        """
        environ = os.environ if environ is None else environ
        layout = Layout(root_from(environ))
        if not layout.config_dir.is_dir():
            raise UserError(
                f"{layout.config_dir} does not exist: this is not a SageMaker training "
                f"container; set {BASE_DIR_ENV} to a folder laid out like /opt/ml (see the "
                "README, 'Running the training entrypoint locally')"
            )
        given = job_config.toolkit_arguments(layout.config_dir, layout.root / "input" / "data")
        from sagemaker_training import environment as toolkit

        env = toolkit.Environment(**given)
        channels = {name: Path(path) for name, path in env.channel_input_dirs.items()}
        result = cls(
            layout=layout,
            hyperparameters=dict(env.hyperparameters),
            channels=channels,
            hosts=tuple(env.hosts),
            current_host=env.current_host,
            num_gpus=int(env.num_gpus),
            num_cpus=int(env.num_cpus),
            environ=dict(environ),
            network_interface_name=env.network_interface_name,
            instance_type=env.current_instance_type,
            channel_configs=dict(env.input_data_config),
        )
        result.check_channels()
        return result


@dataclass(frozen=True)
class ServingSettings:
    """What the inference server is configured with (SageMaker's variables, our defaults).

    `model_dir` defaults to the layout's `model/`; the local CLI points it elsewhere. `host` is
    the address to bind: every interface in a container, loopback for local runs.
    """

    layout: Layout
    port: int = 8080
    workers: int = 1
    timeout: int = REALTIME_TIMEOUT_S
    max_payload_mb: float = DEFAULT_MAX_PAYLOAD_MB
    max_response_mb: float = REALTIME_MAX_RESPONSE_MB  # 0: no limit
    batch: bool = False
    output: str = "features"
    threads_per_worker: int = 1
    model_dir: Path | None = None
    host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", self.layout.model_dir)

    @property
    def max_payload_bytes(self) -> int:
        """The request size limit in bytes (SageMaker's MB are MiB)."""
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def max_response_bytes(self) -> int | None:
        """The response size limit in bytes; None when responses are not limited."""
        return int(self.max_response_mb * 1024 * 1024) if self.max_response_mb else None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, cpus: int | None = None, gpus: int = 0
    ) -> ServingSettings:
        """Read `SAGEMAKER_BIND_TO_PORT`, `SAGEMAKER_MODEL_SERVER_WORKERS` (default: one per
        GPU, else one per CPU), `SAGEMAKER_MODEL_SERVER_TIMEOUT` (default 60 s, 600 s in batch
        transform), `SAGEMAKER_MAX_PAYLOAD_IN_MB`, `CNN_KMEANS_MAX_RESPONSE_MB` (default 6, no
        limit in batch transform), `CNN_KMEANS_OUTPUT`, `SAGEMAKER_BATCH` and
        `CNN_KMEANS_THREADS` (torch threads per worker; default: OMP_NUM_THREADS if set, else
        so that workers x threads <= the cores this process may use)."""
        if cpus is None:
            from cnn_kmeans.threads import available_cores  # torch-free until it is called

            cpus = available_cores()
        batch = environ.get(BATCH_ENV, "").strip().lower() == "true"
        workers = _positive_int(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", gpus if gpus else cpus)
        output = environ.get("CNN_KMEANS_OUTPUT", "features").strip().lower() or "features"
        if output not in OUTPUT_CHOICES:
            raise UserError(
                f"CNN_KMEANS_OUTPUT={output!r} is not one of {', '.join(OUTPUT_CHOICES)}"
            )
        max_payload_mb = _megabytes(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB)
        if 0 < max_payload_mb < 1:
            # /execution-parameters advertises MaxPayloadInMB in whole MB of at least 1 (0 means
            # "no limit" to batch transform): a smaller limit cannot be advertised, and
            # advertising 1 MB would invite requests the server refuses.
            raise UserError(
                f"SAGEMAKER_MAX_PAYLOAD_IN_MB={max_payload_mb:g} is below 1 MB, which batch "
                "transform's MaxPayloadInMB (whole MB) cannot express; set 1 or more, or 0 for "
                f"no limit (then {UNLIMITED_PAYLOAD_MB:g} MB, batch transform's maximum)"
            )
        # Batch transform's 0 means "no limit" (chunked streaming): cap it at its own maximum.
        max_payload_mb = max_payload_mb or UNLIMITED_PAYLOAD_MB
        # Batch transform writes responses to S3, whatever their size; 0 means no limit.
        max_response_mb = _megabytes(
            environ, MAX_RESPONSE_ENV, 0.0 if batch else REALTIME_MAX_RESPONSE_MB
        )
        timeout = BATCH_TIMEOUT_S if batch else REALTIME_TIMEOUT_S
        return cls(
            layout=Layout(root_from(environ)),
            port=_positive_int(environ, "SAGEMAKER_BIND_TO_PORT", 8080),
            workers=workers,
            timeout=_positive_int(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", timeout),
            max_payload_mb=max_payload_mb,
            max_response_mb=max_response_mb,
            batch=batch,
            output=output,
            threads_per_worker=_threads_per_worker(environ, max(1, cpus // workers)),
        )


def _threads_per_worker(environ: Mapping[str, str], share: int) -> int:
    from cnn_kmeans.threads import OMP_ENV, threads_setting

    count, _ = threads_setting(None, environ, share)
    if count is None:  # OMP_NUM_THREADS ("4" or OpenMP's nested "4,2"): its first level
        first = environ[OMP_ENV].split(",")[0].strip()
        count = int(first) if first.isdigit() and int(first) > 0 else share
    return count


def _megabytes(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UserError(f"{name}={text!r} must be a number of MB, 0 or more")
    return value


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{name}={text!r} must be a positive integer")
    return value
