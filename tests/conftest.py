"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test data sets (../shared/data from the repository root, or $RECON_SHARED_DATA); skips if absent."""
    root = Path(os.environ.get("RECON_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")).resolve()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set RECON_SHARED_DATA)")
    return root
