"""`analyze_run` on stand-in runs whose decoder is known: zdim 3 (PCA view) and zdim 0."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import starfile
from PIL import Image

from cryovae.analysis.embedding import fit_pca, latent_view, umap_available
from cryovae.analysis.report import AnalyzeConfig, analyze_run, example_indices

BOX = 16


def _decode(z, theta=None, center_px=None):
    z = np.atleast_2d(np.asarray(z, np.float64))
    idx = np.arange(BOX) - BOX // 2
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    shift = 2 * z[:, 0] if z.shape[1] else np.zeros(len(z))
    return np.exp(-((xx[None] - shift[:, None, None]) ** 2 + yy[None] ** 2) / 6.0).astype(np.float32)


class _Run:
    """A run directory on disk plus a known decoder, standing in for TrainedRun."""

    def __init__(self, rundir, z):
        n = len(z)
        rng = np.random.default_rng(0)
        self.rundir, self.box, self.zdim, self.pixel_size = rundir, BOX, z.shape[1], 3.0
        self.config = SimpleNamespace(model=SimpleNamespace(kind="target"), input={})
        self._lat = SimpleNamespace(z_mean=z.astype(np.float32), psi_deg=rng.uniform(-180, 180, n),
                                    origin_A=rng.normal(size=(n, 2)), prob=rng.uniform(size=n), extras={})
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [3.0], "rlnImageSize": [BOX]})
        particles = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@s.mrcs" for i in range(n)],
                                  "rlnOpticsGroup": 1, "rlnDefocusU": rng.uniform(1e4, 2e4, n)})
        starfile.write({"optics": optics, "particles": particles}, rundir / "particles.star")
        pd.DataFrame({"epoch": [1, 1, 2, 2], "split": ["train", "val"] * 2, "elbo": [5, 6, 4, 5.0],
                      "recon": [4, 5, 3, 4.0], "kl": [1, 1, 1, 1.0]}).to_csv(rundir / "metrics.csv", index=False)
        np.save(rundir / "images.npy", _decode(z) + rng.normal(size=(n, BOX, BOX)).astype(np.float32) * 0.1)

    def latents(self):
        return self._lat

    def decode(self, z, theta=None, center_px=None):
        return _decode(z)

    def reconstruct(self, images):
        return images * 0.5


def test_pca_is_right_and_sign_stable():
    rng = np.random.default_rng(2)
    u = np.array([0.6, -0.8, 0.0])
    z = rng.normal(size=(400, 1)) * 3 * u + rng.normal(size=(400, 3)) * 0.1
    p = fit_pca(z)
    assert abs(p.components[0] @ u) > 0.999 and p.explained_ratio[0] > 0.95
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(p.inverse_transform(p.transform(z)), z, atol=1e-10)
    q = fit_pca(-z[::-1] + 5)  # same cloud mirrored and moved: same directions, no sign flip
    np.testing.assert_allclose(np.abs(q.components), np.abs(p.components), atol=1e-8)
    assert np.all(p.components[np.arange(3), np.argmax(np.abs(p.components), 1)] > 0)
    view = latent_view(z)
    assert view.names[0].startswith("PC1") and view.project(z).shape == (400, 2)
    assert latent_view(z[:, :2]).names == ["z1", "z2"]


def test_examples_spread_along_the_main_axis():
    z = np.linspace(-1, 1, 101)[:, None] * [1.0, 0.2]
    zs = z[np.random.default_rng(0).permutation(101)]
    picked = zs[example_indices(zs, 5), 0]
    np.testing.assert_allclose(np.abs(picked), [0.8, 0.4, 0.0, 0.4, 0.8], atol=0.021)
    assert np.all(np.diff(picked) > 0) or np.all(np.diff(picked) < 0)  # in order along the axis
    assert len(example_indices(np.zeros((7, 0)), 20)) == 7


@pytest.mark.parametrize("zdim", [3, 0])
def test_analyze_run_stand_in(tmp_path, zdim):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(90, zdim)) if zdim else np.zeros((90, 0))
    run = _Run(tmp_path, z)
    report = analyze_run(run, tmp_path / "analysis", AnalyzeConfig(k=3, color_by="rlnDefocusU", n_examples=4))
    out = tmp_path / "analysis"
    pngs = sorted(p.name for p in out.glob("*.png"))
    expected = {"poses.png", "learning_curve.png", "examples.png"}
    if zdim:
        expected |= {"latent.png", "latent_rlnDefocusU.png", "clusters.png", "cluster_centers.png", "traversal.png"}
        if umap_available():  # the optional extra cryovae[umap]
            expected.add("latent_umap.png")
    assert set(pngs) == expected
    for name in pngs:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_particles"] == 90 and summary["zdim"] == zdim
    assert len(summary["examples"]) == 4 and all(1 <= e <= 90 for e in summary["examples"])
    if zdim:
        assert sum(summary["clusters"]["sizes"]) == 90 and len(list(out.glob("cluster_*.star"))) == 3
        assert report.sections[0][0] == "Latent space"
    else:
        assert not list(out.glob("cluster_*.star"))
    assert (out / "index.html").read_text().count("<img") == len(pngs)
