"""Stack paths in the stars cryovae reads and writes, the input's pose, origins in Å at encode time.

Layouts: a RELION project (star in Refine3D/job020, stacks in Extract/job010/..., paths relative
to the project folder), a star-relative folder (paths relative to the star, cryoDRGN's way), a
cryoSPARC project (``blob/path`` relative to the project folder above the job folder). Every
star cryovae writes is read again from *another* working directory and must find every stack
and give the input's pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner
from conftest import write_mrc

from cryovae.cli.main import cli
from cryovae.io import read_particles, write_particles_star, write_star
from cryovae.io.particles_star import INPUT_POSE_COLUMNS

BOX = 16
APIX = 3.0
N = 12
TINY = ["--box", str(BOX), "--group", "p4", "--zdim", "1", "--enc-fields", "2", "--enc-kernel", "5",
        "--enc-layers", "0", "--gen-hidden", "8", "--gen-layers", "1", "--fourier-features", "4",
        "--batch-size", "12", "--device", "cpu", "--val-fraction", "0.25", "--epochs", "1",
        "--z-delay", "0", "--refine-steps", "0"]


def _images(n: int = N, box: int = BOX, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, box, box)).astype(np.float32)


def _pose(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """A 3D refinement's pose columns with distinctive decimals (RELION 3.1 origins in Å)."""
    rng = np.random.default_rng(seed)
    return {"rlnAngleRot": np.round(rng.uniform(-180, 180, n), 6),
            "rlnAngleTilt": np.round(rng.uniform(0, 180, n), 6),
            "rlnAnglePsi": np.round(rng.uniform(-180, 180, n), 6),
            "rlnOriginXAngst": np.round(rng.normal(size=n) * 4, 6),
            "rlnOriginYAngst": np.round(rng.normal(size=n) * 4, 6)}


def _relion31_star(path: Path, refs: list[str], apix=APIX, pose: bool = True) -> Path:
    n = len(refs)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [apix], "rlnImageSize": [BOX], "rlnImageDimensionality": [2],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    parts = pd.DataFrame({"rlnImageName": refs, "rlnOpticsGroup": [1] * n, "rlnDefocusU": [15000.0] * n,
                          "rlnDefocusV": [14500.0] * n, "rlnDefocusAngle": [5.28] * n})
    if pose:
        for col, values in _pose(n).items():
            parts[col] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    write_star(path, {"optics": optics, "particles": parts})
    return path


@pytest.fixture
def relion_project(tmp_path):
    """A RELION project: run_data.star in Refine3D/job020 naming Extract/job010/Micrographs/*.mrcs."""
    project = tmp_path / "project"
    images = _images()
    stacks = project / "Extract" / "job010" / "Micrographs"
    stacks.mkdir(parents=True)
    write_mrc(stacks / "mic1.mrcs", images[:7], APIX)
    write_mrc(stacks / "mic2.mrcs", images[7:], APIX)
    refs = ([f"{k:06d}@Extract/job010/Micrographs/mic1.mrcs" for k in range(1, 8)]
            + [f"{k:06d}@Extract/job010/Micrographs/mic2.mrcs" for k in range(1, 6)])
    star = _relion31_star(project / "Refine3D" / "job020" / "run_data.star", refs)
    return project, star, images


@pytest.fixture
def elsewhere(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def _paths_in(star: Path) -> list[str]:
    blocks = starfile.read(star, always_dict=True)
    df = blocks["particles"] if "particles" in blocks else next(iter(blocks.values()))
    return sorted({str(n).partition("@")[2] for n in df["rlnImageName"]})


def _reread_from(folder: Path, star: Path, images: np.ndarray, monkeypatch) -> None:
    """cryovae, run in ``folder``, finds every stack of ``star`` and reads ``images``."""
    monkeypatch.chdir(folder)
    back = read_particles(star)
    assert back.stacks_missing == [], (star, _paths_in(star))
    np.testing.assert_array_equal(back.images(np.arange(len(back))), images)


def _relion_ok(star: Path, project: Path) -> None:
    """Every path resolves from the RELION project folder (RELION's rule)."""
    for p in _paths_in(star):
        assert (project / p).is_file(), (star, p)


def _star_relative_ok(star: Path) -> None:
    """Every path resolves from the star's own folder (cryoDRGN's rule)."""
    for p in _paths_in(star):
        assert (star.parent / p).is_file(), (star, p)


# ----------------------------------------------------------------- reading
def test_relion_project_star_read_from_the_project_folder_finds_every_stack(relion_project, elsewhere,
                                                                             monkeypatch):
    project, star, images = relion_project
    monkeypatch.chdir(project)
    stack = read_particles("Refine3D/job020/run_data.star")
    assert stack.stacks_missing == [] and stack.stack_found_via == ["cwd", "cwd"]
    np.testing.assert_array_equal(stack.images(np.arange(N)), images)
    monkeypatch.chdir(elsewhere)  # from another folder: not found, unless --datadir is the project
    assert len(read_particles(star).stacks_missing) == 2
    via = read_particles(star, datadir=project)
    assert via.stack_found_via == ["datadir", "datadir"]
    np.testing.assert_array_equal(via.images(np.arange(N)), images)
    # a resumed run passes the folder it started in
    assert read_particles(star, project_dir=project).stack_found_via == ["cwd", "cwd"]


def test_cryosparc_blob_path_resolves_from_the_project_folder_above_the_job(tmp_path, elsewhere, monkeypatch):
    project = tmp_path / "P12"
    images = _images(5)
    (project / "J1" / "imported").mkdir(parents=True)
    write_mrc(project / "J1" / "imported" / "s.mrcs", images, 1.5)
    arr = np.zeros(5, dtype=[("uid", "<u8"), ("blob/path", "S24"), ("blob/idx", "<u4"),
                             ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4")])
    arr["blob/path"], arr["blob/idx"], arr["blob/shape"], arr["blob/psize_A"] = b">J1/imported/s.mrcs", \
        np.arange(5), BOX, 1.5
    (project / "J24").mkdir()
    with open(project / "J24" / "J24_particles.cs", "wb") as fh:
        np.save(fh, arr)
    monkeypatch.chdir(elsewhere)
    stack = read_particles(project / "J24" / "J24_particles.cs")
    assert stack.stack_found_via == ["project"]
    np.testing.assert_array_equal(stack.images(np.arange(5)), images)
    # the star cryovae writes from it points at the stack relative to the new star
    (tmp_path / "out").mkdir()
    out = write_particles_star(stack, tmp_path / "out" / "p.star", np.zeros(5), np.zeros((5, 2)))
    assert _paths_in(out) == ["../P12/J1/imported/s.mrcs"]
    _star_relative_ok(out)
    _reread_from(tmp_path, out, images, monkeypatch)


# ----------------------------------------------------------------- writing
@pytest.mark.parametrize("where", ["run", "project"])
def test_written_star_from_a_relion_project_resolves_for_every_reader(relion_project, elsewhere, monkeypatch,
                                                                      where):
    project, _, images = relion_project
    monkeypatch.chdir(project)
    stack = read_particles("Refine3D/job020/run_data.star")
    out = Path("cryovae_run/particles.star") if where == "run" else Path("particles_cryovae.star")
    out.parent.mkdir(exist_ok=True)
    write_particles_star(stack, out, np.zeros(N), np.zeros((N, 2)))
    paths = _paths_in(out)
    if where == "project":  # a star in the project folder keeps RELION's project-relative paths
        assert paths == ["Extract/job010/Micrographs/mic1.mrcs", "Extract/job010/Micrographs/mic2.mrcs"]
    else:  # no relative path serves RELION (from the project) and cryoDRGN (from the star): absolute
        assert paths == [str(project / "Extract/job010/Micrographs" / m) for m in ("mic1.mrcs", "mic2.mrcs")]
    _relion_ok(project / out, project)
    _star_relative_ok(project / out)
    _reread_from(elsewhere, project / out, images, monkeypatch)


def test_written_star_from_a_star_relative_folder_is_rewritten_relative_to_the_new_star(tmp_path, elsewhere,
                                                                                        monkeypatch):
    images = _images()
    (tmp_path / "data" / "stacks").mkdir(parents=True)
    write_mrc(tmp_path / "data" / "stacks" / "s.mrcs", images, APIX)
    star = _relion31_star(tmp_path / "data" / "particles.star", [f"{k}@stacks/s.mrcs" for k in range(1, N + 1)])
    monkeypatch.chdir(elsewhere)
    stack = read_particles(star)
    assert stack.stack_found_via == ["file"]
    (tmp_path / "results" / "run1").mkdir(parents=True)
    out = write_particles_star(stack, tmp_path / "results" / "run1" / "p.star", np.zeros(N), np.zeros((N, 2)))
    assert _paths_in(out) == ["../../data/stacks/s.mrcs"]
    # the index text is kept as written ('1@', not '000001@')
    assert starfile.read(out, always_dict=True)["particles"]["rlnImageName"].iloc[0] == "1@../../data/stacks/s.mrcs"
    _star_relative_ok(out)
    _reread_from(tmp_path, out, images, monkeypatch)
    # beside the input, the paths come back exactly as the input wrote them
    again = write_particles_star(stack, tmp_path / "data" / "again.star", np.zeros(N), np.zeros((N, 2)))
    pd.testing.assert_series_equal(starfile.read(again, always_dict=True)["particles"]["rlnImageName"],
                                   starfile.read(star, always_dict=True)["particles"]["rlnImageName"])


def test_relion30_star_paths_rewritten_and_absolute_paths_on_request(tmp_path, elsewhere, monkeypatch):
    images = _images()
    write_mrc(tmp_path / "s.mrcs", images, APIX)
    df = pd.DataFrame({"rlnImageName": [f"{k:06d}@s.mrcs" for k in range(1, N + 1)],
                       "rlnDetectorPixelSize": [APIX] * N, "rlnMagnification": [1e4] * N,
                       "rlnOriginX": np.linspace(-2, 2, N)})
    write_star(tmp_path / "in.star", {"images": df})
    monkeypatch.chdir(elsewhere)
    stack = read_particles(tmp_path / "in.star")
    (tmp_path / "out").mkdir()
    rel = write_particles_star(stack, tmp_path / "out" / "rel.star", np.zeros(N), np.zeros((N, 2)))
    assert _paths_in(rel) == ["../s.mrcs"]
    absolute = write_particles_star(stack, tmp_path / "out" / "abs.star", np.zeros(N), np.zeros((N, 2)),
                                    absolute_paths=True)
    assert _paths_in(absolute) == [str((tmp_path / "s.mrcs").absolute())]
    for out in (rel, absolute):
        _star_relative_ok(out)
        _reread_from(tmp_path / "out", out, images, monkeypatch)


def test_train_and_encode_stars_resolve_from_another_folder(relion_project, elsewhere, monkeypatch):
    """`cryovae train` / `encode` run in a RELION project; their stars open from anywhere."""
    project, _, images = relion_project
    monkeypatch.chdir(project)
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "Refine3D/job020/run_data.star", "-o", "cryovae/run1", *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["encode", "cryovae/run1", "Refine3D/job020/run_data.star", "-o", "encoded.star",
                            "--device", "cpu", "--absolute-paths"])
    assert r.exit_code == 0, r.output
    assert _paths_in(project / "encoded.star") == [
        str(project / "Extract/job010/Micrographs" / m) for m in ("mic1.mrcs", "mic2.mrcs")]
    for star in (project / "cryovae" / "run1" / "particles.star", project / "encoded.star"):
        _relion_ok(star, project)
        _star_relative_ok(star)
        _reread_from(elsewhere, star, images, monkeypatch)
        monkeypatch.chdir(project)
    # resumed from another folder, the run still finds its project-relative stacks
    monkeypatch.chdir(elsewhere)
    r = runner.invoke(cli, ["train", "--resume", str(project / "cryovae" / "run1"), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    _reread_from(elsewhere, project / "cryovae" / "run1" / "particles.star", images, monkeypatch)
    # so does analysis, reading the run's particles again (no images.npy cache)
    from cryovae.analysis.report import load_particle_images
    from cryovae.inference import TrainedRun

    run = TrainedRun.load(project / "cryovae" / "run1")
    (project / "cryovae" / "run1" / "images.npy").unlink()
    np.testing.assert_allclose(load_particle_images(run, np.arange(3), N), run.preprocess(images[:3]))


# ----------------------------------------------------------------- the input's pose
@pytest.mark.parametrize("name", ["relion31.star", "FinalRefinement-OriginalParticles-PfCRT.star"])
def test_input_pose_is_kept_under_cryovae_input_names(test_data, tmp_path, caplog, name):
    stack = read_particles(test_data / name)
    n = len(stack)
    rng = np.random.default_rng(3)
    psi, origin = rng.uniform(-180, 180, n), rng.normal(size=(n, 2))
    with caplog.at_level(logging.INFO, logger="cryovae"):
        out = write_particles_star(stack, tmp_path / "out.star", psi, origin)
    src = starfile.read(test_data / name, always_dict=True)[stack.data_block]
    df = starfile.read(out, always_dict=True)[stack.data_block]
    present = [c for c in INPUT_POSE_COLUMNS if c in src.columns]
    expected = (["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
                + (["rlnOriginX", "rlnOriginY"] if name.startswith("Final") else ["rlnOriginXAngst", "rlnOriginYAngst"]))
    assert present == expected
    for col in present:  # the input's values, unchanged
        pd.testing.assert_series_equal(df[INPUT_POSE_COLUMNS[col]], src[col], check_names=False)
    # one consistent 2D pose: cryovae's psi and origin, no 3D angles from another refinement
    assert (df["rlnAngleRot"] == 0).all() and (df["rlnAngleTilt"] == 0).all()
    np.testing.assert_allclose(df["rlnAnglePsi"], psi)
    origin_cols = ["rlnOriginX", "rlnOriginY"] if name.startswith("Final") else ["rlnOriginXAngst", "rlnOriginYAngst"]
    scale = stack.pixel_sizes[:, None] if name.startswith("Final") else 1.0
    np.testing.assert_allclose(df[origin_cols].to_numpy() * scale, origin)
    said = [r for r in caplog.records if "cryovaeInputAnglePsi" in r.getMessage()]
    assert len(said) == 1 and "rlnAngleRot = rlnAngleTilt = 0" in said[0].getMessage()


def test_train_keeps_the_input_pose(relion_project, monkeypatch):
    project, star, _ = relion_project
    monkeypatch.chdir(project)
    r = CliRunner().invoke(cli, ["train", str(star), "-o", "run", *TINY])
    assert r.exit_code == 0, r.output
    src = starfile.read(star, always_dict=True)["particles"]
    df = starfile.read(project / "run" / "particles.star", always_dict=True)["particles"]
    lat = np.load(project / "run" / "latents.npz")
    for col, values in _pose(N).items():
        np.testing.assert_array_equal(df[INPUT_POSE_COLUMNS[col]].to_numpy(), values)
        np.testing.assert_array_equal(src[col].to_numpy(), values)
    assert (df["rlnAngleRot"] == 0).all() and (df["rlnAngleTilt"] == 0).all()
    np.testing.assert_allclose(df["rlnAnglePsi"], lat["psi_deg"], atol=1e-4)
    np.testing.assert_allclose(df[["rlnOriginXAngst", "rlnOriginYAngst"]], lat["origin_A"], atol=1e-4)


# ----------------------------------------------------------------- origins in Å at encode time
def test_encode_origins_use_the_pixel_size_of_the_images_encoded(tmp_path, monkeypatch, caplog):
    """The same images at 3 and 6 Å/px (and as two optics groups): origins in Å scale with it."""
    images = _images(seed=5)
    write_mrc(tmp_path / "s.mrcs", images, APIX)
    names = [f"{k}@s.mrcs" for k in range(1, N + 1)]
    train_star = _relion31_star(tmp_path / "train.star", names, pose=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["train", str(train_star), "-o", "run", *TINY])
    assert r.exit_code == 0, r.output
    _relion31_star(tmp_path / "coarse.star", names, apix=2 * APIX, pose=False)
    two = starfile.read(tmp_path / "coarse.star", always_dict=True)
    optics = pd.concat([two["optics"], two["optics"].assign(rlnOpticsGroup=2, rlnImagePixelSize=APIX)])
    parts = two["particles"].assign(rlnOpticsGroup=[1, 2] * (N // 2))
    write_star(tmp_path / "mixed.star", {"optics": optics, "particles": parts})

    def encode(star):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cryovae"):
            res = runner.invoke(cli, ["encode", "run", str(star), "-o", f"{star.stem}_out.star", "--device", "cpu",
                                      "--refine-steps", "0"])
        assert res.exit_code == 0, res.output
        df = starfile.read(tmp_path / f"{star.stem}_out.star", always_dict=True)["particles"]
        warned = [rec.getMessage() for rec in caplog.records if "another scale" in rec.getMessage()]
        return df, warned

    same, warned_same = encode(train_star)
    coarse, warned_coarse = encode(tmp_path / "coarse.star")
    mixed, warned_mixed = encode(tmp_path / "mixed.star")
    xy = ["rlnOriginXAngst", "rlnOriginYAngst"]
    assert np.abs(same[xy].to_numpy()).max() > 0  # a test that can fail: some origin is not zero
    np.testing.assert_allclose(coarse["rlnAnglePsi"], same["rlnAnglePsi"])
    np.testing.assert_allclose(coarse[xy].to_numpy(), 2 * same[xy].to_numpy(), atol=1e-9)
    factor = np.where(np.arange(N) % 2 == 0, 2.0, 1.0)[:, None]
    np.testing.assert_allclose(mixed[xy].to_numpy(), factor * same[xy].to_numpy(), atol=1e-9)
    assert warned_same == [] and len(warned_coarse) == 1 and len(warned_mixed) == 1
    assert f"{N} of {N} particles are 6 Å per model pixel" in warned_coarse[0]
    assert f"{N // 2} of {N} particles" in warned_mixed[0]


def test_latents_from_pose_takes_one_pixel_size_per_particle():
    from cryovae.inference import Latents

    center = np.array([[1.0, -2.0], [0.5, 0.25]])
    lat = Latents.from_pose(np.zeros((2, 1)), np.ones((2, 1)), np.zeros(2), center, np.array([2.0, 4.0]))
    np.testing.assert_allclose(lat.origin_A, -center * np.array([[2.0], [4.0]]))
    np.testing.assert_allclose(Latents.from_pose(np.zeros((2, 1)), np.ones((2, 1)), np.zeros(2), center,
                                                 3.0).origin_A, -3.0 * center)
    with pytest.raises(ValueError, match="pixel_size has shape"):
        Latents.from_pose(np.zeros((2, 1)), np.ones((2, 1)), np.zeros(2), center, np.ones(3))


@pytest.mark.parametrize("absolute", [False, True])
def test_preprocess_star_names_its_new_stack_by_the_same_rule(relion_project, elsewhere, monkeypatch, absolute):
    import mrcfile

    project, _, _ = relion_project
    monkeypatch.chdir(project)
    flags = ["--absolute-paths"] if absolute else []
    for out in ("prep/p.star", "p.star"):
        (project / out).parent.mkdir(exist_ok=True)
        r = CliRunner().invoke(cli, ["preprocess", "Refine3D/job020/run_data.star", "--box", "8", "-o", out, *flags])
        assert r.exit_code == 0, r.output
        star = project / out
        new_stack = star.with_suffix(".mrcs")
        relative = not absolute and out == "p.star"  # only there does one relative path serve RELION too
        assert _paths_in(star) == (["p.mrcs"] if relative else [str(new_stack)])
        _relion_ok(star, project)
        _star_relative_ok(star)
        with mrcfile.open(new_stack) as mrc:
            _reread_from(elsewhere, star, mrc.data, monkeypatch)
        monkeypatch.chdir(project)
