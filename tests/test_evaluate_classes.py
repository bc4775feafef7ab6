"""`cryovae evaluate` on a class simulation: the class accuracy, ARI, NMI and the rotation
within classes of a star that carries a predicted class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import starfile
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.geometry import wrap_degrees
from cryovae.simulate import SimulationConfig, simulate_classes, write_simulation
from cryovae.simulate.writer import star_tables


@pytest.fixture(scope="module")
def sim():
    return simulate_classes(SimulationConfig(n=240, box=16, snr=None, n_classes=4, shift_sigma_px=1.0, seed=5),
                            progress=False)


def write_star(path, sim, classes, column="rlnClassNumber", psi=None):
    tables = star_tables(sim)
    parts = tables["particles"]
    truth = sim.truth
    parts["rlnAnglePsi"] = truth.psi_deg if psi is None else psi
    parts["rlnOriginXAngst"], parts["rlnOriginYAngst"] = truth.origin_x_A, truth.origin_y_A
    parts["cryovaeZ1"] = RNG.normal(size=len(sim))
    if classes is not None:
        parts[column] = classes
    starfile.write({"optics": tables["optics"], "particles": parts}, path)
    return path


RNG = np.random.default_rng(0)


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_class_accuracy_ari_nmi_are_reported(tmp_path, sim):
    paths = write_simulation(sim, tmp_path / "sim")
    true = sim.truth["class"].to_numpy()
    pred = np.array([3, 1, 4, 2])[true - 1]  # relabelled ...
    wrong = np.flatnonzero(true == 2)[:12]   # ... and 12 of class 2 (60 particles) put in class 1's
    pred[wrong] = 3
    offsets = np.array([0.0, 40.0, -90.0, 150.0])[true - 1]  # each class its own template angle
    star = write_star(tmp_path / "out.star", sim, pred, psi=wrap_degrees(sim.truth.psi_deg + offsets))
    res = run(star, paths["truth"], "-o", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    cls = metrics["classes"]
    assert cls["accuracy"] == pytest.approx(1 - 12 / 240)
    assert cls["matching"] == {"1": 2, "2": 4, "3": 1, "4": 3}
    assert cls["recall"]["2"] == pytest.approx(48 / 60)
    assert 0.8 < cls["ari"] < 1 and 0.8 < cls["nmi"] < 1
    assert metrics["rotation_within_classes"]["circular_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["rotation"]["circular_correlation"] < 0.9  # one global offset cannot fit all classes
    assert "classes: accuracy 0.950" in res.output and "rotation within each true class" in res.output
    assert (tmp_path / "ev" / "classes.png").read_bytes()[:4] == b"\x89PNG"


def test_generic_class_column_is_read_and_no_class_means_no_class_metrics(tmp_path, sim):
    paths = write_simulation(sim, tmp_path / "sim")
    true = sim.truth["class"].to_numpy()
    star = write_star(tmp_path / "generic.star", sim, true, column="cryovaeClass")
    res = run(star, paths["truth"], "-o", tmp_path / "g")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "g" / "metrics.json").read_text())["classes"]["accuracy"] == 1.0
    star = write_star(tmp_path / "none.star", sim, None)
    res = run(star, paths["truth"], "-o", tmp_path / "n")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert "classes" not in metrics and "rotation_within_classes" in metrics
    assert not (tmp_path / "n" / "classes.png").exists()


def test_nan_class_in_the_star_is_one_line(tmp_path, sim):
    paths = write_simulation(sim, tmp_path / "sim")
    pred = sim.truth["class"].to_numpy().astype(float)
    pred[3] = np.nan
    star = write_star(tmp_path / "bad.star", sim, pred)
    res = run(star, paths["truth"], "-o", tmp_path / "b")
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and "class number" in err and "row 4" in err, err
    pred[3] = 2.5
    res = run(write_star(tmp_path / "half.star", sim, pred), paths["truth"], "-o", tmp_path / "h")
    assert res.exit_code == 2 and "particle 4" in res.stderr and "whole number" in res.stderr, res.stderr
