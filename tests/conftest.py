"""Shared fixtures: a seeded random generator and the location of the optional real data.

The plain helper functions the tests share (``write_tif``, ``snakemake_command``, ...) are in
tests/helpers.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REAL_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def real_data() -> Path:
    """Path of ../shared/data/real; skips the test where it is absent."""
    if not REAL_DATA.exists():
        pytest.skip(f"real data not available at {REAL_DATA} (only on the project's machines)")
    return REAL_DATA
