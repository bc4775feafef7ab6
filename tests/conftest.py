"""Shared io fixtures: where the test data lives and a writer of small synthetic stacks."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

TEST_DATA = Path(__file__).parent / "data"
#: the torch devices of this machine that device-parametrised tests run on (CPU always; CUDA where present)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each available torch device in turn (a test taking ``device`` runs once per device)."""
    return torch.device(request.param)


@pytest.fixture
def test_data() -> Path:
    """tests/data: real star/.cs files and the stacks they name (see its README for provenance).

    The project carries every real file its tests read, so a fresh clone runs them all; no
    fixture here ever skips (a skip inside a test that already holds ``make_napari_viewer``
    breaks napari's teardown).
    """
    return TEST_DATA


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
