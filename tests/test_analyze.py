"""End to end: `cryovae traverse` and `cryovae analyze` on a tiny run made by `cryovae train`."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from _tiny_run import tiny_run_dir
from click.testing import CliRunner
from PIL import Image

from cryovae.cli.main import cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory.getbasetemp() / "tiny_run")


@pytest.fixture(scope="session")
def analysis(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    res = CliRunner().invoke(cli, ["analyze", str(tiny_run), "--k", "3", "--color-by", "rlnDefocusU",
                                   "--examples", "5", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out / "index.html")
    return out


def _check_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100
        px = np.asarray(im.convert("L"))
    assert px.std() > 5, f"{path.name} looks blank"


def test_analyze_writes_every_picture_and_the_page(analysis):
    pngs = sorted(p.name for p in analysis.glob("*.png"))
    assert pngs == sorted(["latent.png", "latent_rlnDefocusU.png", "clusters.png", "cluster_centers.png",
                           "traversal.png", "poses.png", "learning_curve.png", "examples.png"])
    for name in pngs:
        _check_png(analysis / name)
    page = (analysis / "index.html").read_text()
    for name in pngs + ["cluster_01.star", "clusters.csv", "summary.json"]:
        assert f'"{name}"' in page
    assert not list(analysis.glob("*.tmp"))


def test_analyze_cluster_stars_partition_the_run_star(tiny_run, analysis):
    src = starfile.read(tiny_run / "particles.star", always_dict=True)
    parts = [starfile.read(analysis / f"cluster_{j:02d}.star", always_dict=True) for j in (1, 2, 3)]
    for p in parts:
        assert list(p) == list(src)
        pd.testing.assert_frame_equal(p["optics"], src["optics"])
        assert list(p["particles"].columns) == list(src["particles"].columns)
    names = pd.concat([p["particles"]["rlnImageName"] for p in parts])
    assert names.is_unique and set(names) == set(src["particles"]["rlnImageName"])
    table = pd.read_csv(analysis / "clusters.csv")
    summary = json.loads((analysis / "summary.json").read_text())
    assert summary["clusters"]["sizes"] == [len(p["particles"]) for p in parts]
    assert list(np.bincount(table["cluster"], minlength=4)[1:]) == summary["clusters"]["sizes"]
    # clusters.csv rows follow particles.star, and each cluster file holds exactly its rows
    for j, p in enumerate(parts, start=1):
        rows = src["particles"]["rlnImageName"][table["cluster"].to_numpy() == j]
        assert list(p["particles"]["rlnImageName"]) == list(rows)


def test_analyze_again_gives_the_same_numbers(tiny_run, analysis, tmp_path):
    res = CliRunner().invoke(cli, ["analyze", str(tiny_run), "--k", "3", "--color-by", "rlnDefocusU",
                                   "--examples", "5", "-o", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for name in ("summary.json", "clusters.csv"):
        assert (tmp_path / name).read_bytes() == (analysis / name).read_bytes(), name
    for name in ("cluster_01.star", "cluster_03.star"):  # (their header comment holds a time stamp)
        a, b = (starfile.read(d / name, always_dict=True) for d in (analysis, tmp_path))
        pd.testing.assert_frame_equal(a["particles"], b["particles"])


def test_analyze_method_gmm_writes_the_cluster_stars(tiny_run, analysis, tmp_path):
    res = CliRunner().invoke(cli, ["analyze", str(tiny_run), "--k", "2", "--method", "gmm", "--examples", "2",
                                   "-o", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    src = starfile.read(tiny_run / "particles.star", always_dict=True)["particles"]
    parts = [starfile.read(tmp_path / f"cluster_{j:02d}.star", always_dict=True) for j in (1, 2)]
    assert not (tmp_path / "cluster_03.star").exists()
    table = pd.read_csv(tmp_path / "clusters.csv")
    assert list(table.columns) == list(pd.read_csv(analysis / "clusters.csv").columns)  # same format as k-means
    for j, p in enumerate(parts, start=1):
        assert list(p["particles"].columns) == list(src.columns)
        assert list(p["particles"]["rlnImageName"]) == list(src["rlnImageName"][table["cluster"].to_numpy() == j])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["clusters"]["method"] == "gmm"
    assert summary["clusters"]["sizes"] == [len(p["particles"]) for p in parts] and sum(summary["clusters"]["sizes"]) == len(src)
    assert json.loads((analysis / "summary.json").read_text())["clusters"]["method"] == "kmeans"
    page = (tmp_path / "index.html").read_text()
    assert "Gaussian mixture clusters (k = 2)" in page and "k-means" not in page
    for name in ("clusters.png", "cluster_centers.png"):
        _check_png(tmp_path / name)


def test_traverse_on_a_trained_run(tiny_run, tmp_path):
    from cryovae.inference import TrainedRun

    res = CliRunner().invoke(cli, ["traverse", str(tiny_run), "--dims", "1", "--steps", "6", "-o", str(tmp_path)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run = TrainedRun.load(tiny_run)
    lat = run.latents()
    table = pd.read_csv(tmp_path / "traversal.csv")
    z = table[["z1", "z2"]].to_numpy()
    np.testing.assert_allclose(z[[0, -1], 0], np.percentile(lat.z_mean[:, 0], [5, 95]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z[:, 1], np.median(lat.z_mean[:, 1]), rtol=1e-5, atol=1e-6)  # z2 frozen
    with mrcfile.open(tmp_path / "traversal.mrcs", permissive=True) as m:
        frames = np.asarray(m.data)
        assert float(m.voxel_size.x) == pytest.approx(run.pixel_size, rel=1e-4)
    assert frames.shape == (6, run.box, run.box)
    np.testing.assert_allclose(frames, run.decode(z.astype(np.float32)), atol=1e-4)
    assert np.abs(np.diff(frames, axis=0)).max() > 1e-4  # the frames change along z1
    for name in ("traversal.png",):
        _check_png(tmp_path / name)
    with Image.open(tmp_path / "traversal.gif") as im:
        assert im.size == (4 * run.box, 4 * run.box)

    res = CliRunner().invoke(cli, ["traverse", str(tiny_run), "--between", "3", "7", "--steps", "4",
                                   "-o", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with mrcfile.open(tmp_path / "between_3_7.mrcs", permissive=True) as m:
        ends = np.asarray(m.data)[[0, -1]]
    np.testing.assert_allclose(ends, run.decode(lat.z_mean[[2, 6]]), atol=1e-4)  # particles 3 and 7, 1-based


@pytest.mark.parametrize("args,message", [
    (["traverse", "{run}", "--between", "0", "2"], "--between takes particle numbers from 1"),
    (["traverse", "{run}", "--dims", "3"], "--dims must be distinct latent dimensions between 1 and 2"),
    (["traverse", "{run}", "--dims", "a"], "--dims takes comma-separated numbers"),
    (["analyze", "{run}", "--color-by", "rlnNope"], "no column rlnNope"),
    (["analyze", "{run}", "--k", "0"], "--k must be >= 1"),
    (["analyze", "{run}", "--method", "dbscan"], "--method must be one of kmeans, gmm, agglomerative, got 'dbscan'"),
    (["traverse", "{missing}"], "not a cryovae run directory"),
    (["analyze", "{missing}"], "not a cryovae run directory"),
])
def test_user_errors_are_one_line(tiny_run, tmp_path, args, message):
    args = [a.format(run=tiny_run, missing=tmp_path / "nope") for a in args]
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"cryovae {args[0]}: error:") and message in lines[0], err


def test_example_images_without_the_cache_come_from_the_input_file(tiny_run, tmp_path):
    import shutil

    from cryovae.analysis.report import load_particle_images
    from cryovae.inference import TrainedRun

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("images.npy", "analysis", "traversal"))
    run = TrainedRun.load(copy)
    idx = np.array([5, 0, 17])
    images = load_particle_images(run, idx, len(run.latents().z_mean))
    cached = np.load(tiny_run / "images.npy")[idx]
    np.testing.assert_allclose(images, cached, atol=1e-5)
