"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DATA


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The repository's `data/` folder."""
    return DATA
