"""The training job's config files, `input/config/*.json`, and their local defaults.

SageMaker always writes `resourceconfig.json`, `inputdataconfig.json` and `hyperparameters.json`
("How Amazon SageMaker Provides Training Information", SageMaker developer guide); the
`sagemaker-training` toolkit reads them and has no defaults. A local run of the training
entrypoint (README, "Running the training entrypoint locally") may leave any of them out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cnn_kmeans.errors import UserError

log = logging.getLogger("cnn_kmeans.train")

RESOURCE_CONFIG = "resourceconfig.json"
INPUT_DATA_CONFIG = "inputdataconfig.json"
HYPERPARAMETERS_FILE = "hyperparameters.json"
LOCAL_HOST = "localhost"  # resolves everywhere; SageMaker's own names (algo-1) do not, locally


class _Given(dict):
    """A dict the toolkit takes even when empty.

    `sagemaker_training.environment.Environment.__init__` (5.x) reads each file unless given
    its content, testing `given or read_file()`: an empty dict (no hyperparameters, no
    channels) would make it open the missing file, a FileNotFoundError.
    """

    def __bool__(self) -> bool:
        return True


def toolkit_arguments(config: Path, data: Path) -> dict[str, dict[str, Any] | None]:
    """The toolkit's `Environment` arguments: None for a config file present (the toolkit reads
    it, as on SageMaker), a default for one that is missing, each default said in the log.

    Args:
        config: `input/config`.
        data: `input/data`.

    The toolkit itself has no defaults (it opens each file and fails with FileNotFoundError,
    `read_resource_config` and friends in sagemaker_training/environment.py). Locally:

    - no `resourceconfig.json`: one host, `localhost`;
    - no `inputdataconfig.json`: one channel per folder of `input/data`, input mode File;
    - no `hyperparameters.json`: every hyperparameter at its default.

    Raises:
        UserError: A file that is not a readable JSON object, or a resourceconfig.json whose
            hosts cannot be used, naming the file.
    """
    given: dict[str, dict[str, Any] | None] = {}
    resources = _read_object(config / RESOURCE_CONFIG)
    if resources is None:
        log.info(
            "%s not found: training on one host (%s), as SageMaker runs a job of one instance",
            config / RESOURCE_CONFIG,
            LOCAL_HOST,
        )
        given["resource_config"] = _Given(current_host=LOCAL_HOST, hosts=[LOCAL_HOST])
    else:
        _check_hosts(config / RESOURCE_CONFIG, resources)
        given["resource_config"] = None
    channels = _read_object(config / INPUT_DATA_CONFIG)
    if channels is None:
        folders = data.iterdir() if data.is_dir() else ()
        found = sorted(p.name for p in folders if p.is_dir() and not p.name.startswith("."))
        log.info(
            "%s not found: channels are the folders of %s (%s), input mode File",
            config / INPUT_DATA_CONFIG,
            data,
            ", ".join(found) or "none",
        )
        file_mode = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
        given["input_data_config"] = _Given({name: dict(file_mode) for name in found})
    else:
        given["input_data_config"] = None
    if _read_object(config / HYPERPARAMETERS_FILE) is None:
        log.info("%s not found: every hyperparameter at its default", config / HYPERPARAMETERS_FILE)
        given["hyperparameters"] = _Given()
    else:
        given["hyperparameters"] = None
    return given


def _read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in path; None if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "fix it or remove it to use the default"
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _check_hosts(path: Path, resources: dict[str, Any]) -> None:
    hosts = resources.get("hosts")
    current = resources.get("current_host")
    if not (isinstance(hosts, list) and hosts and all(isinstance(h, str) for h in hosts)):
        raise UserError(
            f'{path} needs "hosts", a non-empty list of host names (for example ["algo-1"]); '
            "remove the file to train on one host"
        )
    if current not in hosts:
        raise UserError(
            f'{path}: "current_host" {current!r} is not one of "hosts" {hosts}; '
            "remove the file to train on one host"
        )
