"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import DATA, REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The repository's `data/` folder."""
    return DATA


@pytest.fixture
def quality_report(monkeypatch):
    """benchmarks/quality_report.py, imported afresh (the benchmarks are not a package)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("quality_report", None)
    import quality_report

    return quality_report
