"""`cryovae preprocess`: a new stack plus a RELION 3.1 star pointing at it."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner
from conftest import write_mrc

from cryovae.cli.main import cli
from cryovae.data import PreprocessConfig, preprocess_images
from cryovae.io import read_particles, write_star


def invoke(*args):
    result = CliRunner().invoke(cli, ["preprocess", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_preprocess_relion31_two_groups_two_stacks(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 32, 32)).astype(np.float32), rng.normal(size=(3, 32, 32)).astype(np.float32)
    write_mrc(tmp_path / "a.mrcs", a)
    write_mrc(tmp_path / "b.mrcs", b)
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnImagePixelSize": [1.0, 1.1], "rlnImageSize": [32, 32], "rlnVoltage": [300.0, 200.0]})
    particles = pd.DataFrame({"rlnImageName": ["2@a.mrcs", "3@b.mrcs", "5@a.mrcs", "1@b.mrcs"],
                              "rlnOpticsGroup": [1, 2, 1, 2], "rlnDefocusU": [1.5e4, 1.6e4, 1.7e4, 1.8e4],
                              "rlnOriginXAngst": [1.0, 2.0, 3.0, 4.0], "rlnMicrographName": ["m1", "m2", "m3", "m4"]})
    write_star(tmp_path / "in.star", {"optics": optics, "particles": particles})
    (tmp_path / "out").mkdir()
    invoke(tmp_path / "in.star", "--box", 16, "--invert", "--batch-size", 3, "-o", tmp_path / "out" / "p16.star")
    blocks = starfile.read(tmp_path / "out" / "p16.star", always_dict=True)
    np.testing.assert_allclose(blocks["optics"]["rlnImagePixelSize"], [2.0, 2.2])
    assert blocks["optics"]["rlnImageSize"].tolist() == [16, 16]
    assert blocks["optics"]["rlnVoltage"].tolist() == [300.0, 200.0]
    out = blocks["particles"]
    assert out["rlnImageName"].tolist() == [f"{k:06d}@p16.mrcs" for k in (1, 2, 3, 4)]
    pd.testing.assert_frame_equal(out.drop(columns="rlnImageName"), particles.drop(columns="rlnImageName"))
    raw = np.stack([a[1], b[2], a[4], b[0]])
    expected = preprocess_images(raw, PreprocessConfig(box=16, invert=True))
    with mrcfile.open(tmp_path / "out" / "p16.mrcs") as mrc:  # strict: valid header, float32
        assert mrc.data.dtype == np.float32 and mrc.voxel_size.x == pytest.approx(2.0)
        np.testing.assert_allclose(mrc.data, expected, atol=1e-5)
    back = read_particles(tmp_path / "out" / "p16.star")
    assert back.box == 16 and back.source_kind == "relion31"
    np.testing.assert_allclose(back.images(np.arange(4)), expected, atol=1e-5)


def test_preprocess_relion30_converts_pixel_origins_to_angstrom(tmp_path):
    write_mrc(tmp_path / "s.mrcs", np.random.default_rng(1).normal(size=(2, 16, 16)).astype(np.float32))
    df = pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"], "rlnOriginX": [2.0, -1.0], "rlnOriginY": [0.5, 3.0],
                       "rlnDetectorPixelSize": [14.0, 14.0], "rlnMagnification": [1e5, 1e5],
                       "rlnVoltage": [300.0, 300.0], "rlnDefocusU": [1e4, 2e4]})
    write_star(tmp_path / "in.star", {"images": df})
    invoke(tmp_path / "in.star", "--box", 8, "--normalize", "image", "--mask", "-o", tmp_path / "o.star")
    blocks = starfile.read(tmp_path / "o.star", always_dict=True)
    assert blocks["optics"]["rlnImagePixelSize"].tolist() == [pytest.approx(1.4 * 2)]
    p = blocks["particles"]
    np.testing.assert_allclose(p["rlnOriginXAngst"], [2.8, -1.4])  # 1.4 Å/px input pixels
    np.testing.assert_allclose(p["rlnOriginYAngst"], [0.7, 4.2])
    assert "rlnOriginX" not in p.columns and "rlnDetectorPixelSize" not in p.columns
    assert p["rlnDefocusU"].tolist() == [1e4, 2e4] and p["rlnOpticsGroup"].tolist() == [1, 1]


def test_preprocess_toy_projections_fixture(test_data, tmp_path):
    invoke(test_data / "toy_projections.star", "--box", 16, "-o", tmp_path / "t.star")
    back = read_particles(tmp_path / "t.star")
    assert (len(back), back.box, back.pixel_size) == (250, 16, pytest.approx(30 / 16))
    src = read_particles(test_data / "toy_projections.star")
    pd.testing.assert_series_equal(back.table["dummyVariable"], src.table["dummyVariable"])
    imgs = back.images(np.arange(250))
    bg = imgs.reshape(250, -1)[:, (np.hypot(*np.indices((16, 16)) - 8) > 6).ravel()]
    np.testing.assert_allclose(bg.mean(axis=1), 0, atol=1e-4)


def test_preprocess_cryosparc_with_found_stack(tmp_path):
    (tmp_path / "J1").mkdir()
    write_mrc(tmp_path / "J1" / "s.mrcs", np.random.default_rng(3).normal(size=(3, 16, 16)).astype(np.float32))
    arr = np.zeros(2, dtype=[("blob/path", "S12"), ("blob/idx", "<u4"), ("blob/psize_A", "<f4"),
                             ("ctf/df1_A", "<f4")])
    arr["blob/path"], arr["blob/idx"], arr["blob/psize_A"], arr["ctf/df1_A"] = b">J1/s.mrcs", [2, 0], 1.5, 1e4
    with open(tmp_path / "p.cs", "wb") as fh:
        np.save(fh, arr)
    invoke(tmp_path / "p.cs", "--box", 8, "-o", tmp_path / "o.star")
    back = read_particles(tmp_path / "o.star")
    assert back.pixel_size == pytest.approx(3.0) and back.table["rlnDefocusU"].tolist() == [1e4, 1e4]
    src = read_particles(tmp_path / "p.cs")
    np.testing.assert_allclose(back.images(np.arange(2)),
                               preprocess_images(src.images(np.arange(2)), PreprocessConfig(box=8)), atol=1e-5)


def test_preprocess_keeps_relion5_version_and_optics_columns(test_data, tmp_path):
    """The RELION 5 fixture (its text as RELION wrote it, only the image size made 16 px) with real
    stacks: the written star keeps ``# version 50001`` before each block and the RELION 5 optics columns."""
    text = (test_data / "relion5.star").read_text()
    assert text.count("          448 ") == 1
    (tmp_path / "in.star").write_text(text.replace("          448 ", "           16 "))
    rng = np.random.default_rng(4)
    write_mrc(tmp_path / "toy_images_a.mrcs", rng.normal(size=(11, 16, 16)).astype(np.float32), 0.89)
    write_mrc(tmp_path / "toy_images_b.mrcs", rng.normal(size=(11, 16, 16)).astype(np.float32), 0.89)
    invoke(tmp_path / "in.star", "--box", 8, "-o", tmp_path / "out.star")
    out = (tmp_path / "out.star").read_text()
    assert out.count("# version 50001") == 2 and "# version 30001" not in out
    for block in ("data_optics", "data_particles"):
        assert f"# version 50001\n\n{block}\n" in out
    src = starfile.read(tmp_path / "in.star", always_dict=True)
    back = starfile.read(tmp_path / "out.star", always_dict=True)
    kept = ["rlnOddZernike", "rlnEvenZernike", "rlnMagMat01", "rlnBeamTiltX", "rlnMicrographOriginalPixelSize"]
    pd.testing.assert_frame_equal(back["optics"][kept], src["optics"][kept])
    assert back["optics"]["rlnImageSize"].tolist() == [8]
    assert back["optics"]["rlnImagePixelSize"].tolist() == [pytest.approx(0.89 * 2)]
    assert read_particles(tmp_path / "out.star").version_comment == 50001


def test_preprocess_relion30_input_is_written_as_relion31(tmp_path):
    write_mrc(tmp_path / "s.mrcs", np.random.default_rng(0).normal(size=(2, 8, 8)).astype(np.float32))
    df = pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"], "rlnDetectorPixelSize": [14.0, 14.0],
                       "rlnMagnification": [1e5, 1e5]})
    write_star(tmp_path / "in.star", {"images": df}, version=None)
    invoke(tmp_path / "in.star", "-o", tmp_path / "o.star")
    assert (tmp_path / "o.star").read_text().count("# version 30001") == 2
