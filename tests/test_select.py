"""`cryovae select`: a subset of a run's particles, chosen by latent range, cluster, class, pose
probability or index, written as a RELION star (or a cryoSPARC .cs) that reads back to exactly
those particles, their images and their results. Runs on the shipped napari sample run
(300 simulated particles, z = 2), so no training is needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner
from cryosparc.dataset import Dataset

from cryovae.cli.main import cli
from cryovae.io import read_particles

SAMPLE = Path(__file__).resolve().parents[1] / "napari_plugin" / "sample_run"
RUN, PARTICLES = SAMPLE / "z2", SAMPLE / "sim" / "particles.star"
LAT = np.load(RUN / "latents.npz")
N = len(LAT["theta"])


def _select(*args, run=RUN):
    return CliRunner().invoke(cli, ["select", str(run), "--particles", str(PARTICLES), *map(str, args)])


def _rows(star: Path) -> pd.DataFrame:
    return starfile.read(star, always_dict=True)["particles"]


def _kept_indices(star: Path) -> np.ndarray:
    """0-based indices in the sample stack of the particles of a written star."""
    return np.array([int(name.split("@")[0]) - 1 for name in _rows(star)["rlnImageName"]])


def test_a_latent_range_keeps_exactly_those_particles_with_their_images_and_results(tmp_path, monkeypatch):
    out = tmp_path / "sub" / "open.star"
    out.parent.mkdir()
    r = _select("--z1", "-0.7:", "--z2", ":0", "-o", out)
    assert r.exit_code == 0, r.output
    z = LAT["z_mean"]
    want = np.flatnonzero((z[:, 0] >= -0.7) & (z[:, 1] <= 0))
    assert 0 < len(want) < N
    assert r.output.strip() == f"kept {len(want)} of {N} particles: {out}"
    idx = _kept_indices(out)
    np.testing.assert_array_equal(idx, want)
    rows = _rows(out)
    np.testing.assert_allclose(rows["cryovaeZ1"], z[want, 0], rtol=1e-5)
    np.testing.assert_allclose(rows["rlnAnglePsi"], LAT["psi_deg"][want], atol=1e-4)
    np.testing.assert_allclose(rows["cryovaeProb"], LAT["prob"][want], rtol=1e-5)
    # the stack paths resolve from the new star, from any folder, to the same images
    monkeypatch.chdir(tmp_path)
    sub, full = read_particles(out), read_particles(PARTICLES)
    np.testing.assert_array_equal(sub.images(np.arange(len(sub))), full.images(want))
    assert "optics" in starfile.read(out, always_dict=True)


def test_percentile_ranges_and_invert_split_the_run_in_two(tmp_path):
    a, b = tmp_path / "mid.star", tmp_path / "rest.star"
    assert _select("--z1", "10%:90%", "-o", a).exit_code == 0
    assert _select("--z1", "10%:90%", "--invert", "-o", b).exit_code == 0
    ia, ib = _kept_indices(a), _kept_indices(b)
    lo, hi = np.percentile(LAT["z_mean"][:, 0], [10, 90])
    np.testing.assert_array_equal(ia, np.flatnonzero((LAT["z_mean"][:, 0] >= lo) & (LAT["z_mean"][:, 0] <= hi)))
    assert len(ia) == pytest.approx(0.8 * N, abs=2)
    assert not set(ia) & set(ib) and sorted({*ia, *ib}) == list(range(N))


@pytest.mark.parametrize("base", [0, 1])
def test_indices_are_read_in_the_base_stated(tmp_path, base):
    wanted = np.array([4, 0, 17, 299])
    (tmp_path / "ind.txt").write_text("# particles\n" + ", ".join(str(i + base) for i in wanted) + "\n")
    out = tmp_path / "ind.star"
    r = _select("--indices", tmp_path / "ind.txt", "--index-base", base, "-o", out)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(_kept_indices(out), np.sort(wanted))  # in the run's order


def test_clusters_of_the_last_analysis_and_prob_min(tmp_path):
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    labels = np.arange(N) % 3 + 1
    pd.DataFrame({"particle": np.arange(1, N + 1), "cluster": labels}).to_csv(analysis / "clusters.csv", index=False)
    out = tmp_path / "c.star"
    r = _select("--cluster", "1,3", "--prob-min", 0.05, "--analysis", analysis, "-o", out)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(_kept_indices(out), np.flatnonzero(np.isin(labels, [1, 3]) & (LAT["prob"] >= 0.05)))


def test_classes_of_a_class_producing_model(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    classes = np.arange(N) % 4 + 1
    np.savez(run / "latents.npz", **{k: LAT[k] for k in LAT.files}, extra_class=classes)
    out = tmp_path / "k.star"
    r = _select("--class", "2", "-o", out, run=run)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(_kept_indices(out), np.flatnonzero(classes == 2))
    assert set(_rows(out)["rlnClassNumber"]) == {2}
    r = _select("--class", "2", "-o", out)
    assert r.exit_code == 2 and "writes no classes" in r.output


def test_cryosparc_output(tmp_path):
    out = tmp_path / "sel.cs"
    assert _select("--z1", ":0", "-o", out).exit_code == 0
    ds = Dataset.load(out)
    want = np.flatnonzero(LAT["z_mean"][:, 0] <= 0)
    assert len(ds) == len(want) and out.with_suffix(".csg").is_file()
    np.testing.assert_allclose(ds["cryovae/z1"], LAT["z_mean"][want, 0], rtol=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--z1", "5:1"], "LOW is above HIGH"),
    (["--z1", "a:b"], "expected numbers"),
    (["--z1", "10%:2"], "both in percent"),
    (["--z3", "0:"], "the run has 2 latent dimension(s)"),
    (["--zed", "0:"], "no such option: --zed"),
    (["--z1", "100:"], "the selection is empty; nothing written"),
    (["--indices", "ind.txt"], "--index-base 0 or 1"),
    (["--cluster", "1"], "run cryovae analyze first"),
    ([], "say what to keep"),
])
def test_bad_selections_are_one_line_errors_and_write_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ind.txt").write_text("1\n")
    r = _select(*args, "-o", tmp_path / "x.star")
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "x.star").exists()


def test_the_selection_average_undoes_each_particles_pose():
    """napari's selection average: particles rendered from one template at known poses, aligned
    by those poses, average back to the template (and the decoded mean is at the mean z)."""
    from cryovae.geometry import transform_image
    from cryovae.runs import Latents
    from napari_plugin.latent_space import Session, selection_images

    rng = np.random.default_rng(3)
    box = 33
    yy, xx = np.mgrid[:box, :box] - box // 2
    template = (np.exp(-((xx - 5) ** 2 + yy ** 2) / 8.0) + 0.6 * np.exp(-(xx ** 2 + (yy + 6) ** 2) / 5.0)
                ).astype(np.float32)  # no rotational symmetry
    n = 40
    theta, center = rng.uniform(-np.pi, np.pi, n), rng.normal(0, 1.5, (n, 2))
    particles = np.stack([transform_image(template, t, c) for t, c in zip(theta, center, strict=True)])
    z = rng.normal(size=(n, 1))
    lat = Latents.from_pose(z, np.ones_like(z), theta, center, 1.0)

    class Stack:
        def images(self, idx):
            return particles[idx]

        def __len__(self):
            return n

    class Run:
        zdim = 1

        def preprocess(self, images):
            return images

        def decode(self, zz, theta=None, center_px=None):
            return np.full((len(zz), box, box), float(zz[0, 0]), np.float32)

    mask = np.arange(n) % 2 == 0
    out = selection_images(Session(run=Run(), latents=lat, stack=Stack()), mask)
    assert out.used == mask.sum()
    inner = np.hypot(xx, yy) < box // 2 - 3  # interpolation at the border differs
    assert np.abs(out.average - template)[inner].max() < 0.05 * template.max()
    assert np.abs(particles[mask].mean(0) - template)[inner].max() > 0.3 * template.max()  # unaligned: blurred
    np.testing.assert_allclose(out.decoded_mean, z[mask].mean(), rtol=1e-5)
