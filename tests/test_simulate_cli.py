"""`cryovae simulate` writes a RELION 3.1 star, a stack and the truth; bad input exits 2."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.geometry import apply_relion_alignment
from cryovae.simulate import SimulationConfig, read_truth, simulate_arms, write_simulation


def run(*args):
    return CliRunner().invoke(cli, ["simulate", *map(str, args)])


def test_hinge_files_are_relion31_and_reproduce_the_api(tmp_path):
    out = tmp_path / "sim"
    res = run("hinge", "-o", out, "--n", 40, "--box", 32, "--apix", 5.0, "--snr", 0.05, "--ctf",
              "--shift-sigma", 1.0, "--seed", 3)
    assert res.exit_code == 0, res.output
    star = starfile.read(out / "particles.star", always_dict=True)
    assert set(star) == {"optics", "particles"}
    optics, parts = star["optics"], star["particles"]
    assert optics.rlnImagePixelSize[0] == 5.0 and optics.rlnImageSize[0] == 32
    assert {"rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"} <= set(optics.columns)
    assert parts.rlnImageName[0] == "000001@particles.mrcs"
    assert parts.rlnImageName.iloc[-1] == "000040@particles.mrcs"
    assert {"rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnOpticsGroup"} <= set(parts.columns)
    assert "rlnAnglePsi" not in parts.columns  # the truth is not handed to the model
    with mrcfile.open(out / "particles.mrcs", permissive=True) as mrc:
        stack = np.asarray(mrc.data)
        assert float(mrc.voxel_size.x) == pytest.approx(5.0)
    assert stack.shape == (40, 32, 32)
    truth = read_truth(out / "truth.csv")
    assert list(truth.columns[:4]) == ["conformation_1", "psi_deg", "origin_x_A", "origin_y_A"]
    np.testing.assert_allclose(truth.defocus_u_A, parts.rlnDefocusU, rtol=1e-5)
    settings = json.loads((out / "simulation.json").read_text())
    assert settings["kind"] == "hinge" and settings["snr"] == 0.05
    # the same options through the API give the same particles
    from cryovae.simulate import simulate_hinge

    sim = simulate_hinge(SimulationConfig(n=40, box=32, pixel_size_A=5.0, snr=0.05, ctf=True, shift_sigma_px=1.0,
                                          seed=3), progress=False)
    np.testing.assert_allclose(stack, sim.images, atol=1e-6)
    assert "40 hinge particles" in res.output


def test_written_truth_aligns_written_clean_particles(tmp_path):
    sim = simulate_arms(SimulationConfig(n=6, box=40, snr=None, shift_sigma_px=2.0, seed=2), progress=False)
    paths = write_simulation(sim, tmp_path / "arms")
    truth = pd.read_csv(paths["truth"])
    with mrcfile.open(paths["stack"], permissive=True) as mrc:
        stack = np.asarray(mrc.data)
    canonical = sim.canonical_images()
    for i in range(len(sim)):
        al = apply_relion_alignment(stack[i], truth.psi_deg[i], truth[["origin_x_A", "origin_y_A"]].to_numpy()[i] / 4.0)
        assert np.corrcoef(al.ravel(), canonical[i].ravel())[0, 1] > 0.999


def test_volume_kind(tmp_path):
    d = 24
    z, y, x = np.meshgrid(*(np.arange(d) - d // 2,) * 3, indexing="ij")
    vol = (np.exp(-((x - 4) ** 2 + y**2 + z**2) / 8.0) + 0.5 * np.exp(-(x**2 + (y + 5) ** 2 + z**2) / 8.0))
    path = tmp_path / "map.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(vol.astype(np.float32))
        mrc.voxel_size = 3.0
    res = run("volume", "--volume", path, "-o", tmp_path / "v", "--n", 10, "--box", 24, "--apix", 3.0)
    assert res.exit_code == 0, res.output
    truth = pd.read_csv(tmp_path / "v" / "truth.csv")
    assert len(truth) == 10 and "conformation_1" not in truth.columns


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "\n" not in err and err.startswith("cryovae simulate: error:"), err
    for w in words:
        assert w in err


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    one_line_error(run("volume", "-o", tmp_path / "a"), "--volume")
    one_line_error(run("volume", "--volume", tmp_path / "none.mrc", "-o", tmp_path / "b"), "none.mrc")
    one_line_error(run("hinge", "--volume", tmp_path / "none.mrc", "-o", tmp_path / "c"), "volume")
    one_line_error(run("hinge", "--snr", "lots", "-o", tmp_path / "d"), "snr")
    one_line_error(run("hinge", "--n", 0, "-o", tmp_path / "e"), "particles")
    one_line_error(run("arms", "--ctf", "--defocus-min", 30000, "--defocus-max", 10000, "-o", tmp_path / "f"),
                   "defocus")
    assert not (tmp_path / "d").exists()
