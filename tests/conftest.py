"""Shared fixtures: a settings object and a migrated store in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path):
    """Settings whose data folder is a fresh temporary directory."""
    from rlhf.settings import load_settings

    return load_settings(store={"data_dir": tmp_path / "data"})


@pytest.fixture
def store(settings):
    """A migrated, empty store for the test."""
    from storage import Store

    return Store.from_settings(settings)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real data sets, read in place, never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
