"""Picking with the attention map: the model contract (equivariance, tiles), the micrograph's
preparation, and the pick API (cryovae.inference.pick_micrograph) on untrained models.

Picks of trained runs on composed micrographs: tests/test_picking_trained.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryovae.data import fourier_crop, fourier_resample
from cryovae.errors import CryovaeError
from cryovae.geometry import rotation_matrix
from cryovae.inference import PickConfig, TrainedRun, pick_micrograph
from cryovae.inference.picking import attention_maps, find_peaks, prepare_micrograph
from cryovae.models import ModelConfig, build_model
from cryovae.runs import RunConfig, TrainConfig


def _target(seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(box=24, group="p4", zdim=2, enc_fields=4, enc_kernel=9, enc_layers=1, enc_inner_kernel=3,
                gen_hidden=16, fourier_features=8, pixel_size=4.0)
    opts.update(kw)
    cfg = ModelConfig.for_model("target", **opts)
    model = build_model(cfg).eval()
    model.generator.template_center.copy_(torch.tensor([1.5, -0.5]))
    return model


def _run(model, **pre) -> TrainedRun:
    cfg = RunConfig(model=model.cfg, train=TrainConfig(), preprocess={"box": model.cfg.box, **pre})
    return TrainedRun(rundir="rundir", config=cfg, model=model, device=torch.device("cpu"))


def test_attention_map_turns_with_the_micrograph():
    """np.rot90 of the image (+90 deg, internal convention) rotates every map, adds 90 deg to
    theta, leaves z alone and turns the template-centre offset by R(-90) (atol 1e-4)."""
    model = _target()
    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 56)).astype(np.float32)
    with torch.no_grad():
        a = model.attention_map(torch.from_numpy(img)[None])
        b = model.attention_map(torch.from_numpy(np.rot90(img).copy())[None])
    np.testing.assert_allclose(b.score[0].numpy(), np.rot90(a.score[0].numpy()), atol=1e-4)
    d = np.remainder(b.theta[0].numpy() - np.rot90(a.theta[0].numpy()) - math.pi / 2 + math.pi, 2 * math.pi) - math.pi
    assert np.abs(d).max() < 1e-3
    np.testing.assert_allclose(b.z[0].numpy(), np.rot90(a.z[0].numpy(), axes=(1, 2)), atol=1e-4)
    off_a = np.rot90(a.center_offset[0].numpy(), axes=(1, 2))  # (2, W, H): vectors not yet turned
    expected = np.einsum("ij,jhw->ihw", rotation_matrix(-math.pi / 2), off_a)
    np.testing.assert_allclose(b.center_offset[0].numpy(), expected, atol=1e-4)
    # the offset is R(-theta) m of the template centre m = (1.5, -0.5): length |m| everywhere
    np.testing.assert_allclose(np.hypot(*a.center_offset[0].numpy()), math.hypot(1.5, -0.5), atol=1e-5)
    assert a.score.shape == (1, 40, 56) and a.z.shape == (1, 2, 40, 56)


def test_attention_map_is_none_for_a_model_without_attention():
    torch.manual_seed(0)
    cfg = ModelConfig.for_model("spatial", box=16, zdim=1, gen_hidden=8)
    model = build_model(cfg).eval()
    assert model.attention_map(torch.zeros(1, 30, 30)) is None
    with pytest.raises(CryovaeError, match="picking needs TARGET-VAE's attention"):
        pick_micrograph(_run(model), np.zeros((64, 64), np.float32), None)


@pytest.mark.parametrize("tile", [16, 23])
def test_tiled_attention_equals_the_untiled_map(tile):
    """Tiles of 16 / 23 px (context 4 + 1 px from a 9-px lift and a 3-px inner kernel) give the
    whole image's map: score, theta, z within 1e-4."""
    model = _target()
    assert model.attention_context_px == 9 // 2 + 3 // 2
    img = np.random.default_rng(1).normal(size=(50, 71)).astype(np.float32)
    run = _run(model)
    whole = attention_maps(run, img, tile=1000)
    calls = []
    tiled = attention_maps(run, img, tile=tile, progress=lambda d, n: calls.append((d, n)))
    n_tiles = math.ceil(50 / tile) * math.ceil(71 / tile)
    assert calls[-1] == (n_tiles, n_tiles) and len(calls) == n_tiles
    for name in ("score", "theta", "z", "center_offset"):
        np.testing.assert_allclose(getattr(tiled, name), getattr(whole, name), atol=1e-4, err_msg=name)


def test_fourier_resample_matches_the_square_crop_and_keeps_pixel_zero():
    """Square: equal to fourier_crop. Non-square: a plane wave sampled at i * H / h."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(48, 48)).astype(np.float32)
    np.testing.assert_allclose(fourier_resample(x, (24, 24)), fourier_crop(x, 24), atol=1e-6)
    big_h, big_w, h, w = 60, 90, 20, 45
    rows, cols = np.mgrid[0:big_h, 0:big_w]
    wave = np.cos(2 * np.pi * (2 * rows / big_h + 3 * cols / big_w))
    out = fourier_resample(wave, (h, w))
    r, c = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(out, np.cos(2 * np.pi * (2 * r * big_h / h / big_h + 3 * c * big_w / w / big_w)),
                               atol=1e-5)


def test_prepare_bins_to_the_run_pixel_size_and_refuses_upsampling():
    model = _target(pixel_size=4.0)
    run = _run(model, invert=True)
    img = np.random.default_rng(3).normal(5.0, 2.0, size=(200, 300)).astype(np.float32)
    out, (sx, sy) = prepare_micrograph(run, img, apix=2.0)
    assert out.shape == (100, 150) and (sx, sy) == (2.0, 2.0)
    assert abs(float(np.median(out))) < 0.1 and 0.9 < float(out.std()) < 1.1  # noise std -> 1
    out1, scale1 = prepare_micrograph(run, img, apix=None)  # None: the run's pixel size
    assert out1.shape == img.shape and scale1 == (1.0, 1.0)
    with pytest.raises(CryovaeError, match="finer than the micrograph"):
        prepare_micrograph(run, img, apix=5.0)
    with pytest.raises(CryovaeError, match="smaller than the run's 24 px box"):
        prepare_micrograph(run, img[:40], apix=2.0)
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(CryovaeError, match="NaN"):
        prepare_micrograph(run, bad, apix=None)


def test_inverted_run_inverts_the_micrograph():
    """A dark blob on a bright field becomes positive for a run trained with --invert."""
    img = np.zeros((96, 96), np.float32)
    img += np.random.default_rng(4).normal(size=img.shape).astype(np.float32)
    img[40:50, 40:50] -= 10.0
    for invert, sign in ((True, 1), (False, -1)):
        out, _ = prepare_micrograph(_run(_target(), invert=invert), img, None)
        assert sign * out[45, 45] > 5.0


def test_find_peaks_keeps_maxima_at_least_the_distance_apart():
    score = np.zeros((60, 60), np.float32)
    for (r, c, v) in ((10, 10, 5.0), (10, 16, 4.0), (40, 40, 3.0), (40, 40 + 11, 2.5)):
        score[r, c] = v
    score[20, 20] = score[20, 21] = 6.0  # a plateau: one pick
    rows, cols = find_peaks(score, radius=10.0, floor=1.0)
    got = list(zip(rows.tolist(), cols.tolist(), strict=True))
    assert got[0] in ((20, 20), (20, 21)) and len([p for p in got if p[0] == 20]) == 1
    assert (10, 10) in got and (10, 16) not in got  # 6 px from a better one
    assert (40, 40) in got and (40, 51) in got  # 11 px apart: both
    assert find_peaks(score, radius=10.0, floor=5.5)[0].tolist() == [20]


def test_pick_micrograph_api_shapes_and_columns():
    """The shared interface: table columns, the score map and scale, above() / coordinate_table()."""
    model = _target()
    run = _run(model)
    img = np.random.default_rng(5).normal(size=(160, 200)).astype(np.float32)
    picks = pick_micrograph(run, img, apix=2.0, cfg=PickConfig(threshold=2.0, tile=64))
    assert picks.score.shape == (80, 100) and picks.scale == 2.0 and picks.scale_xy == (2.0, 2.0)
    assert picks.threshold == 2.0 and picks.distance_px == 0.5 * 24 * 2.0
    t = picks.table
    assert list(t.columns[:4]) == ["x_px", "y_px", "fom", "psi_deg"] and {"z_1", "z_2"} <= set(t.columns)
    assert len(t) > 0 and (np.diff(t["fom"].to_numpy()) <= 0).all()
    assert ((t["psi_deg"] > -180) & (t["psi_deg"] <= 180)).all()
    assert t["x_px"].between(-4, 204).all() and t["y_px"].between(-4, 164).all()
    above = picks.above()
    assert (above["fom"] >= 2.0).all() and len(above) == int((t["fom"] >= 2.0).sum())
    assert len(picks.above(-np.inf)) == len(t)
    coords = picks.coordinate_table()
    assert list(coords.columns) == ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnAnglePsi",
                                    "cryovaeZ1", "cryovaeZ2"]
    np.testing.assert_allclose(coords["rlnCoordinateX"], above["x_px"])
