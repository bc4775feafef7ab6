"""``cryovae pick`` and ``cryovae extract`` as commands: files, conventions, resumption, errors.

Micrographs are composed here from the particle simulator (tests/_composed.py); the picking run
is the shared tiny TARGET-VAE run (tests/_tiny_run.py, 24 px at 6 Å/px). The science of the
picks (recall, precision, psi) is in tests/test_pick_end_to_end.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import starfile
from _composed import compose
from _tiny_run import tiny_run_dir
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.io import (
    read_autopick_index,
    read_coordinates,
    read_particles,
    write_autopick_index,
    write_coordinates,
    write_micrograph,
)
from cryovae.simulate import SimulationConfig, simulate_hinge


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory.getbasetemp() / "tiny_run")


def _invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extract_cuts_boxes_centred_on_the_coordinates(tmp_path):
    """Noise-free composed micrograph, coordinates = the true centres: every extracted box equals
    the simulator's clean particle (pasted with its centre on pixel box//2), to float precision;
    a pick whose box leaves the micrograph is skipped and counted; the star is RELION 3.1 with
    the picker's psi as rlnAnglePsiPrior and reads back through cryovae's reader and starfile."""
    box = 24
    sim = simulate_hinge(SimulationConfig(n=12, box=box, pixel_size_A=5.0, snr=None, seed=3), progress=False)
    img, truth, _ = compose(sim, (150, 170), 8, snr=None, seed=1, min_dist=box + 1)
    for d in ("mics", "picks"):
        (tmp_path / d).mkdir()
    mic = write_micrograph(tmp_path / "mics" / "m1.mrc", img, 5.0)
    picks = pd.DataFrame({"rlnCoordinateX": truth["x_px"], "rlnCoordinateY": truth["y_px"],
                          "rlnAutopickFigureOfMerit": np.arange(len(truth), 0, -1, dtype=float),
                          "rlnAnglePsi": truth["psi_deg"]})
    edge = pd.DataFrame({"rlnCoordinateX": [3.0], "rlnCoordinateY": [60.0], "rlnAutopickFigureOfMerit": [0.5],
                         "rlnAnglePsi": [10.0]})
    pickdir = tmp_path / "picks"
    write_coordinates(pickdir / "m1.star", pd.concat([picks, edge], ignore_index=True))
    write_autopick_index(pickdir / "autopick.star", [("../mics/m1.mrc", "m1.star")])
    before = _sha(mic)
    out = tmp_path / "ext" / "particles.star"
    res = _invoke(["extract", str(pickdir), "-o", str(out), "--box", str(box)])
    assert res.exit_code == 0, res.output
    assert f"extracted {len(truth)} particles (1 too close to an edge)" in res.output
    assert _sha(mic) == before
    blocks = starfile.read(out, always_dict=True)
    optics, parts = blocks["optics"], blocks["particles"]
    assert optics["rlnImagePixelSize"].iloc[0] == 5.0 and optics["rlnImageSize"].iloc[0] == box
    assert optics["rlnMicrographOriginalPixelSize"].iloc[0] == 5.0
    assert parts["rlnImageName"].tolist()[:2] == ["000001@particles.mrcs", "000002@particles.mrcs"]
    assert (parts["rlnMicrographName"] == "../mics/m1.mrc").all()
    np.testing.assert_allclose(parts["rlnAnglePsiPrior"], truth["psi_deg"])
    np.testing.assert_allclose(parts["rlnCoordinateX"], truth["x_px"])
    stack = read_particles(out)
    assert len(stack) == len(truth) and stack.box == box and stack.pixel_size == 5.0
    boxes = stack.images(np.arange(len(truth)))
    # equal up to the tails of neighbouring particles (< 1e-3 of a peak of ~1); one pixel off is far worse
    np.testing.assert_allclose(boxes, sim.clean[: len(truth)], atol=1e-3)
    assert np.abs(np.roll(boxes, 1, axis=2) - sim.clean[: len(truth)]).max() > 0.1
    # --threshold keeps the picks with a figure of merit at or above it
    res = _invoke(["extract", str(pickdir), "-o", str(tmp_path / "best.star"), "--box", str(box), "--threshold", "5"])
    assert res.exit_code == 0, res.output
    assert len(starfile.read(tmp_path / "best.star", always_dict=True)["particles"]) == len(truth) - 4


def test_extract_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["extract", str(tmp_path), "-o", str(tmp_path / "p.star"), "--box", "24"])
    assert res.exit_code == 2 and "no autopick.star" in res.output and "Traceback" not in res.output


def test_pick_writes_stars_index_overview_and_resumes(tiny_run, tmp_path):
    """Two micrographs at 3 Å/px (half the run's 6): picks in the micrographs' own pixels, one star
    each, autopick.star resolving to both, PNGs; inputs untouched; a second call keeps the
    stars, --overwrite picks again with the new threshold."""
    sim = simulate_hinge(SimulationConfig(n=40, box=48, pixel_size_A=3.0, snr=None, seed=5), progress=False)
    paths, truths = [], []
    (tmp_path / "mics").mkdir()
    for k in range(2):
        img, truth, _ = compose(sim, (300, 340), 12, snr=4.0, seed=k, min_dist=50, bin=2)
        paths.append(write_micrograph(tmp_path / "mics" / f"mic_{k}.mrc", img, 3.0))
        truths.append(truth)
    sums = [_sha(p) for p in paths]
    out = tmp_path / "picks"
    res = _invoke(["pick", str(tiny_run), *map(str, paths), "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert [_sha(p) for p in paths] == sums
    index = read_autopick_index(out / "autopick.star")
    assert [(m.resolve(), c.resolve()) for m, c in index] == [(p.resolve(), (out / f"{p.stem}.star").resolve())
                                                                for p in paths]
    for p in paths:
        assert (out / f"{p.stem}_picks.png").stat().st_size > 1000
    coords = read_coordinates(out / "mic_0.star")
    assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnAnglePsi", "cryovaeZ1",
            "cryovaeZ2"} <= set(coords.columns)
    assert len(coords) > 0 and coords["rlnCoordinateX"].between(-5, 345).all()
    # coordinates are in the micrograph's 3 Å pixels, not the run's 6 Å ones: picks reach x > 170
    assert coords["rlnCoordinateX"].max() > 200
    stamp = (out / "mic_0.star").stat().st_mtime_ns
    res = _invoke(["pick", str(tiny_run), *map(str, paths), "-o", str(out), "--device", "cpu", "--threshold", "1e9"])
    assert res.exit_code == 0 and "2 kept from before" in res.output
    assert (out / "mic_0.star").stat().st_mtime_ns == stamp
    res = _invoke(["pick", str(tiny_run), str(paths[0]), "-o", str(out), "--device", "cpu", "--threshold", "1e9",
                   "--overwrite", "--no-png"])
    assert res.exit_code == 0, res.output
    assert len(read_coordinates(out / "mic_0.star")) == 0  # a micrograph without picks is legal
    assert len(read_autopick_index(out / "autopick.star")) == 1  # the index lists this call's micrographs


def test_pick_bad_input_is_one_line(tiny_run, tmp_path):
    img = np.random.default_rng(0).normal(size=(200, 200)).astype(np.float32)
    coarse = write_micrograph(tmp_path / "coarse.mrc", img, 10.0)
    cases = [([str(tmp_path / "missing.mrc")], "missing.mrc"),
             ([str(coarse)], "finer than the micrograph"),
             ([str(coarse), "--apix", "2", "--tile", "4"], "--tile 4")]
    for args, message in cases:
        res = CliRunner().invoke(cli, ["pick", str(tiny_run), *args, "-o", str(tmp_path / "out")])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_pick_refuses_a_model_without_attention(tiny_run, tmp_path):
    """A spatial-VAE run: one line naming what picking needs, exit 2, nothing written."""
    run = tmp_path / "spatial"
    res = _invoke(["train", str(tiny_run.parent / "sim" / "particles.star"), "-o", str(run), "--model", "spatial",
                   "--epochs", "1", "--box", "24", "--gen-hidden", "16", "--gen-layers", "1", "--enc-hidden", "32",
                   "--fourier-features", "0", "--device", "cpu", "--refine-steps", "0"])
    assert res.exit_code == 0, res.output
    mic = write_micrograph(tmp_path / "m.mrc", np.zeros((100, 100), np.float32), 6.0)
    res = CliRunner().invoke(cli, ["pick", str(run), str(mic), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "picking needs TARGET-VAE's attention (train with --model target)" in res.output
    assert not (tmp_path / "out").exists()
