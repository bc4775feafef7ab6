"""Every picture is a valid PNG/GIF with content, written atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cryovae.analysis import plots
from cryovae.analysis.images import display_range, tile, to_uint8, upscale
from cryovae.analysis.output import save_figure, write_gif, write_png
from cryovae.analysis.traverse import decode_frames, dims_traversal, pc_traversal

RNG = np.random.default_rng(1)
Z = RNG.normal(size=(300, 2))
LABELS = (Z[:, 0] > 0).astype(int)
CENTERS = np.stack([Z[LABELS == j].mean(0) for j in range(2)])


def _disc(z: np.ndarray) -> np.ndarray:
    idx = np.arange(20) - 10
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    r = 3 + np.clip(np.atleast_2d(z)[:, 0], -2, 2) + 2
    return (np.hypot(xx, yy)[None] < r[:, None, None]).astype(np.float32)


FIGURES = {
    "hist": lambda: plots.latent_histogram(Z[:, 0], "z1", CENTERS[:, 0]),
    "hexbin": lambda: plots.latent_density(Z, ["z1", "z2"], centers=CENTERS),
    "colored2d": lambda: plots.latent_colored(Z, ["z1", "z2"], Z[:, 0] * 1e4, "rlnDefocusU"),
    "colored1d": lambda: plots.latent_colored(Z[:, :1], ["z1"], Z[:, 1], "rlnDefocusU"),
    "clusters2d": lambda: plots.cluster_plot(Z, ["z1", "z2"], LABELS, CENTERS),
    "clusters1d": lambda: plots.cluster_plot(Z[:, :1], ["z1"], LABELS, CENTERS[:, :1]),
    "poses": lambda: plots.pose_histograms(RNG.uniform(-180, 180, 300), RNG.normal(size=(300, 2)) * 8),
    "poses_prob": lambda: plots.pose_histograms(RNG.uniform(-180, 180, 300), RNG.normal(size=(300, 2)),
                                                RNG.uniform(size=300)),
    "learning": lambda: plots.learning_curve(pd.DataFrame(
        {"epoch": [1, 1, 2, 2, 3, 3], "split": ["train", "val"] * 3, "elbo": [9, 9.5, 7, 7.4, 6, 6.5],
         "recon": [8, 8, 6, 6, 5, 5.0], "kl": [1, 1.5, 1, 1.4, 1, 1.5]})),
    "examples": lambda: plots.example_sheet(_disc(Z[:5]), _disc(Z[:5]) * 0.9, _disc(Z[:5]), [1, 2, 3, 4, 5]),
    "grid": lambda: plots.image_grid(_disc(Z[:6]), (2, 3), titles=[str(i) for i in range(6)]),
    "traversal_row": lambda: plots.traversal_figure(decode_frames(_disc, dims_traversal(Z, [0], 6)),
                                                    dims_traversal(Z, [0], 6)),
    "traversal_grid": lambda: plots.traversal_figure(decode_frames(_disc, pc_traversal(Z, [0, 1], 3)),
                                                     pc_traversal(Z, [0, 1], 3)),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_is_a_png_with_content(name, tmp_path):
    fig = FIGURES[name]()
    path = save_figure(fig, tmp_path / f"{name}.png", dpi=80)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.png"]  # no temporary left
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = fig.get_size_inches() * 80
        assert abs(im.size[0] - w) <= 1 and abs(im.size[1] - h) <= 1
        px = np.asarray(im.convert("L"))
    assert px.std() > 5  # not blank
    assert (px < 128).mean() > 0.001  # some dark ink (axes, text, data)


def test_image_grid_draws_the_images_in_order(tmp_path):
    # one white image among black ones: the white area must sit in the second column of the top row
    images = np.zeros((4, 10, 10), np.float32)
    images[1] = 1.0
    fig = plots.image_grid(images, (2, 2), vrange=(0.0, 1.0))
    px = np.asarray(Image.open(save_figure(fig, tmp_path / "g.png", dpi=60)).convert("L"), float)
    h, w = px.shape
    bright = px > 250
    dark = px < 5
    assert dark[: h // 2, : w // 2].mean() > 0.2 and bright[: h // 2, w // 2:].mean() > 0.2
    assert dark[h // 2:, w // 2:].mean() > 0.2


def test_tile_uint8_and_png_roundtrip(tmp_path):
    frames = np.stack([np.full((5, 7), v, np.float32) for v in (0.0, 0.5, 1.0)])
    vmin, vmax = display_range(frames, 0, 100)
    assert (vmin, vmax) == (0.0, 1.0)
    u8 = to_uint8(frames, vmin, vmax)
    assert u8.dtype == np.uint8 and list(u8[:, 0, 0]) == [0, 128, 255]
    mont = tile(u8, (1, 3), pad=2, fill=255)
    assert mont.shape == (5, 7 * 3 + 4)
    big = upscale(mont, 3)
    assert big.shape == (15, 75) and np.array_equal(big[::3, ::3], mont)
    path = write_png(big, tmp_path / "m.png")
    assert np.array_equal(np.asarray(Image.open(path)), big)


def test_gif_holds_every_frame(tmp_path):
    frames = np.stack([to_uint8(_disc(np.array([[v]]))[0], 0, 1) for v in np.linspace(-2, 2, 5)])
    path = write_gif(upscale(frames, 2), tmp_path / "t.gif", duration_ms=50)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.info.get("loop") == 0
        got = []
        for i in range(im.n_frames):
            im.seek(i)
            got.append(np.asarray(im.convert("L")))
    np.testing.assert_array_equal(np.stack(got), upscale(frames, 2))
    assert len({g.sum() for g in got}) == 5  # the disc grows: every frame differs


def test_pose_histogram_gives_grid_origins_one_bin_per_pixel():
    # TARGET-VAE origins are whole pixels (here 5 Å): one bin per pixel, so no empty bins between
    # occupied ones and each bar counts the particles at one offset
    px = 5.0
    origin = np.array([[-10, 0], [-5, 0], [-5, 5], [0, 0], [0, 0], [0, -5], [5, 0], [10, 5]], float)
    fig = plots.pose_histograms(np.zeros(len(origin)), origin, pixel_size_A=px)
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert heights == [1, 2, 3, 1, 1]  # x = -10, -5, 0, 5, 10 Å
    # off the grid (spatial-VAE's continuous origins): 40 equal bins
    fig = plots.pose_histograms(np.zeros(8), origin + 0.3 * px * RNG.uniform(size=origin.shape), pixel_size_A=px)
    assert len(fig.axes[1].patches) == 40
