"""Latent traversals against a decoder with a known dependence on each latent dimension."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.analysis.images import animation_order
from cryovae.analysis.traverse import (
    between_traversal,
    decode_frames,
    default_traversal,
    dims_traversal,
    pc_traversal,
)
from cryovae.analysis.traverse_run import TraverseConfig, build_traversal, traversal_table
from cryovae.errors import CryovaeError

BOX = 24


def blob_decoder(z: np.ndarray) -> np.ndarray:
    """z1 moves a Gaussian blob along x (1 px per unit), z2 is ignored, z3 (if any) scales its
    brightness. Images (n, BOX, BOX), row 0 first."""
    z = np.atleast_2d(z)
    idx = np.arange(BOX) - BOX // 2
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    bright = 1.0 + (z[:, 2] if z.shape[1] > 2 else 0.0)
    return (np.broadcast_to(bright, (len(z),))[:, None, None]
            * np.exp(-((xx[None] - 3 * z[:, 0, None, None]) ** 2 + yy[None] ** 2) / 8.0)).astype(np.float32)


def centroid_x(images: np.ndarray) -> np.ndarray:
    idx = np.arange(BOX) - BOX // 2
    return (images.sum(1) * idx).sum(1) / images.sum((1, 2))


@pytest.fixture
def latents() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(400, 3)) * [1.0, 2.0, 0.3] + [0.5, -1.0, 0.0]


def test_frames_change_along_used_latent_and_not_along_ignored_one(latents):
    moving = decode_frames(blob_decoder, dims_traversal(latents, [0], steps=7))
    frozen = decode_frames(blob_decoder, dims_traversal(latents, [1], steps=7))
    assert moving.shape == frozen.shape == (7, BOX, BOX)
    # the blob moves monotonically along x while z1 goes from its 5th to its 95th percentile
    cx = centroid_x(moving)
    assert np.all(np.diff(cx) > 0.3)
    lo, hi = np.percentile(latents[:, 0], [5, 95])
    np.testing.assert_allclose(cx[[0, -1]], 3 * np.array([lo, hi]), atol=0.05)
    # z2 is ignored by the decoder: every frame of its traversal is the same image
    assert np.ptp(frozen, axis=0).max() < 1e-6
    assert np.abs(np.diff(moving, axis=0)).max() > 0.1


def test_dims_traversal_holds_other_dims_at_median_and_spans_percentiles(latents):
    t = dims_traversal(latents, [2], steps=5, lo=10, hi=90)
    assert t.shape == (1, 5) and t.axes == ("z3",)
    med = np.median(latents, axis=0)
    np.testing.assert_allclose(t.z[:, :2], np.broadcast_to(med[:2], (5, 2)))
    np.testing.assert_allclose(t.z[[0, -1], 2], np.percentile(latents[:, 2], [10, 90]))
    np.testing.assert_allclose(t.values[:, 0], t.z[:, 2])


def test_two_dims_make_a_grid_columns_first_rows_second(latents):
    t = dims_traversal(latents, [0, 2], steps=4)
    assert t.grid and t.shape == (4, 4)
    g = t.z.reshape(4, 4, 3)
    assert np.ptp(g[:, :, 0], axis=0).max() == 0  # z1 constant down each column
    assert np.all(np.diff(g[0, :, 0]) > 0)  # and increasing along the columns
    assert np.ptp(g[:, :, 2], axis=1).max() == 0  # z3 constant along each row
    assert np.all(np.diff(g[:, 0, 2]) > 0)
    frames = decode_frames(blob_decoder, t).reshape(4, 4, BOX, BOX)
    # brightness follows the rows (z3), position the columns (z1)
    assert np.all(np.diff(frames.max((2, 3))[:, 0]) > 0)
    assert np.all(np.diff(centroid_x(frames[0])) > 0)


def test_three_dims_give_one_row_per_dim(latents):
    t = dims_traversal(latents, [0, 1, 2], steps=6)
    assert t.shape == (3, 6) and not t.grid
    med = np.median(latents, axis=0)
    for i in range(3):
        row = t.z[i * 6: (i + 1) * 6]
        others = [d for d in range(3) if d != i]
        np.testing.assert_allclose(row[:, others], np.broadcast_to(med[others], (6, 2)))
        assert np.all(np.diff(row[:, i]) > 0)


def test_pc_traversal_follows_the_direction_of_variation():
    rng = np.random.default_rng(0)
    u = np.array([1.0, 2.0, -2.0]) / 3.0
    z = rng.normal(size=(500, 1)) * 2.0 * u + rng.normal(size=(500, 3)) * 0.05 + [1, 1, 1]
    t = pc_traversal(z, [0], steps=9)
    step = np.diff(t.z, axis=0)
    cos = np.abs(step @ u) / np.linalg.norm(step, axis=1)
    assert np.all(cos > 0.99)
    # PC1 traversal of an ignored direction: a decoder reading only z . u changes, the rest not
    proj = np.percentile((z - z.mean(0)) @ u, [5, 95])
    np.testing.assert_allclose(np.sort(np.abs((t.z[[0, -1]] - z.mean(0)) @ u)), np.sort(np.abs(proj)), rtol=0.02)


def test_default_traversal_per_zdim(latents):
    assert default_traversal(latents[:, :1], 5).shape == (1, 5)
    assert default_traversal(latents[:, :2], 5).shape == (5, 5)
    t = default_traversal(latents, 5)
    assert t.kind == "pcs" and t.shape == (5, 5) and t.axes == ("PC1", "PC2")


def test_between_interpolates_end_to_end(latents):
    t = between_traversal(latents[3], latents[10], steps=6)
    np.testing.assert_allclose(t.z[0], latents[3])
    np.testing.assert_allclose(t.z[-1], latents[10])
    np.testing.assert_allclose(np.diff(t.z, axis=0), np.broadcast_to((latents[10] - latents[3]) / 5, (5, 3)))


def test_build_traversal_options_and_user_errors(latents):
    t, stem = build_traversal(latents, TraverseConfig(between=(1, 400), steps=4))
    assert stem == "between_1_400"
    np.testing.assert_allclose(t.z[[0, -1]], latents[[0, 399]])  # 1-based particle numbers
    t, _ = build_traversal(latents, TraverseConfig(dims=(2,), steps=3))
    assert t.axes == ("z2",)
    t, _ = build_traversal(latents, TraverseConfig(dims=(2, 3), pcs=True, steps=3))
    assert t.axes == ("PC2", "PC3") and t.grid
    t, _ = build_traversal(latents[:, :2], TraverseConfig(steps=3))
    assert t.axes == ("z1", "z2")
    for bad in (TraverseConfig(between=(0, 5)), TraverseConfig(between=(1, 401)), TraverseConfig(dims=(4,)),
                TraverseConfig(dims=(1, 1)), TraverseConfig(steps=0)):
        with pytest.raises(CryovaeError):
            build_traversal(latents, bad)
    with pytest.raises(CryovaeError, match="zdim = 0"):
        build_traversal(np.zeros((10, 0)), TraverseConfig())


def test_traversal_table_lists_every_frame(latents):
    t = dims_traversal(latents, [0, 1], steps=3)
    df = traversal_table(t)
    assert list(df["frame"]) == list(range(1, 10))
    assert list(df["row"]) == [1, 1, 1, 2, 2, 2, 3, 3, 3] and list(df["col"]) == [1, 2, 3] * 3
    np.testing.assert_allclose(df[["z1", "z2", "z3"]].to_numpy(), t.z)


@pytest.mark.parametrize("shape,grid", [((1, 6), False), ((4, 5), True), ((3, 4), False)])
def test_animation_visits_neighbours(shape, grid):
    order = animation_order(shape, grid)
    rows, cols = shape
    assert set(order) == set(range(rows * cols))
    if grid:
        assert len(order) == rows * cols
        r, c = np.divmod(order, cols)
        assert np.all(np.abs(np.diff(r)) + np.abs(np.diff(c)) == 1)


class _FakeRun:
    """Stands in for a TrainedRun: posterior means and a decoder with known behaviour."""

    pixel_size = 2.5

    def __init__(self, z_mean):
        self._lat = type("L", (), {"z_mean": z_mean})()

    def latents(self):
        return self._lat

    def decode(self, z):
        return blob_decoder(z)


def test_traverse_run_writes_montage_gif_stack_and_table(tmp_path, latents):
    import mrcfile
    import pandas as pd
    from PIL import Image

    from cryovae.analysis.traverse_run import traverse_run

    run = _FakeRun(latents[:, :2])
    out = traverse_run(run, tmp_path / "a", TraverseConfig(steps=4))
    assert out.traversal.shape == (4, 4)
    with mrcfile.open(out.mrcs, permissive=True) as m:
        stack = np.asarray(m.data)
        assert float(m.voxel_size.x) == pytest.approx(2.5)
    np.testing.assert_allclose(stack, blob_decoder(out.traversal.z.astype(np.float32)), atol=1e-6)
    # columns move the blob (z1), rows do not change anything (z2 is ignored by the decoder)
    grid = stack.reshape(4, 4, BOX, BOX)
    assert np.ptp(grid, axis=0).max() < 1e-6 and np.all(np.diff(centroid_x(grid[0])) > 0)
    with Image.open(out.gif) as im:
        # 16 frames in a snake; GIF merges the 3 repeated images at the row turns (z2 is ignored)
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        assert im.size == (BOX * 4, BOX * 4) and im.n_frames == 13 and sum(durations) == 16 * 120
    with Image.open(out.png) as im:
        assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
    table = pd.read_csv(out.csv)
    np.testing.assert_allclose(table[["z1", "z2"]].to_numpy(), out.traversal.z, rtol=1e-5)
    # same inputs, same numbers and the same files
    again = traverse_run(run, tmp_path / "b", TraverseConfig(steps=4))
    for a, b in ((out.csv, again.csv), (out.gif, again.gif), (out.png, again.png)):
        assert a.read_bytes() == b.read_bytes()
    with mrcfile.open(again.mrcs, permissive=True) as m:  # the header holds a time stamp
        np.testing.assert_array_equal(np.asarray(m.data), stack)
    between = traverse_run(run, tmp_path / "a", TraverseConfig(steps=5, between=(2, 3)))
    assert between.mrcs.name == "between_2_3.mrcs" and len(between.frames) == 5
    np.testing.assert_allclose(between.frames[[0, -1]], blob_decoder(latents[[1, 2], :2]), atol=1e-6)
    assert not list(tmp_path.rglob("*.tmp"))
