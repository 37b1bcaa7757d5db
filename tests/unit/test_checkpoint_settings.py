"""Where and how often checkpoints are written, without a process: checkpointconfig.json, the
interval variable, and the interval itself on an injected clock."""

from __future__ import annotations

import json

import pytest

from cnn_kmeans.config import Config
from cnn_kmeans.container.checkpoint import (
    DEFAULT_INTERVAL_S,
    FILE_NAME,
    INTERVAL_ENV,
    Checkpointer,
    CheckpointSettings,
)
from cnn_kmeans.encoder import Encoder
from cnn_kmeans.errors import UserError
from cnn_kmeans.preprocess import Scaler
from cnn_kmeans.trainer import Trainer


def settings(root, checkpoint_config=None, **environ) -> CheckpointSettings:
    config_dir = root / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_config is not None:
        (config_dir / "checkpointconfig.json").write_text(json.dumps(checkpoint_config))
    return CheckpointSettings.from_job(root, config_dir, environ)


def test_without_a_checkpoint_config_the_default_folder_decides(tmp_path):
    assert settings(tmp_path).directory is None  # no CheckpointConfig, no folder: off
    (tmp_path / "checkpoints").mkdir()
    assert settings(tmp_path).directory == tmp_path / "checkpoints"


def test_the_checkpoint_config_decides_and_its_folder_is_created(tmp_path):
    default = settings(tmp_path, {"S3Uri": "s3://b/p"})  # LocalPath left out
    assert default.directory == tmp_path / "checkpoints" and default.directory.is_dir()
    elsewhere = tmp_path / "mnt" / "ckpt"
    assert settings(tmp_path, {"S3Uri": "s3://b/p", "LocalPath": str(elsewhere)}).directory == (
        elsewhere
    )
    assert elsewhere.is_dir()
    under = settings(tmp_path, {"S3Uri": "s3://b/p", "LocalPath": "/opt/ml/x/y"})
    assert under.directory == tmp_path / "x" / "y"


def test_the_interval_is_read_once_and_validated(tmp_path):
    assert settings(tmp_path).every_s == DEFAULT_INTERVAL_S == 60.0
    assert settings(tmp_path, **{INTERVAL_ENV: "2.5"}).every_s == 2.5
    assert settings(tmp_path, **{INTERVAL_ENV: "0"}).every_s == 0.0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(UserError, match=f"{INTERVAL_ENV}='{bad}' must be a number"):
            settings(tmp_path, **{INTERVAL_ENV: bad})


def test_a_save_happens_once_the_interval_has_passed_and_not_before(tmp_path):
    now = [1000.0]
    config = Config(blocks=1, filters=4, reduced_size=4, output_size=4, epochs=1)
    trainer = Trainer(Encoder.from_config(config), config)
    checkpointer = Checkpointer(
        tmp_path, config, Scaler.from_dict({"kind": "series"}), every_s=60.0, clock=lambda: now[0]
    )
    saved = []
    for second in range(1, 200):
        now[0] = 1000.0 + second
        if checkpointer.maybe_save(trainer):
            saved.append(second)
    assert saved == [60, 120, 180]
    assert (tmp_path / FILE_NAME).is_file()
