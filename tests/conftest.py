"""Shared io fixtures: where the test data lives and a writer of small synthetic stacks."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

TEST_DATA = Path(__file__).parent / "data"
#: large real files stay beside the repository (CI clones ../shared next to it)
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture
def test_data() -> Path:
    """tests/data: small real star/.cs files (see its README for provenance)."""
    return TEST_DATA


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures (real stacks over 1 MB); skips the test when absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"{SHARED_FIXTURES} not present")
    return SHARED_FIXTURES


def write_mrc(path: Path, data: np.ndarray, voxel_size: float = 1.0) -> Path:
    """Write ``data`` (n, N, N) as an MRC stack in the mode its dtype maps to (mrcfile rules)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        mrc.set_image_stack()
        mrc.voxel_size = voxel_size
    return path


@pytest.fixture
def make_mrc():
    """The :func:`write_mrc` helper, as a fixture."""
    return write_mrc
