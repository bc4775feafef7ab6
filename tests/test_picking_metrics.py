"""Pick evaluation: one-to-one matching within a radius, P/R/F1, AP, rotation error, the command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cryovae.analysis.picking import match_picks, pick_metrics
from cryovae.cli.main import cli
from cryovae.io import read_coordinates, write_coordinates

TRUTH = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
# A hits truth 0; B is near truth 0 too (a duplicate); C hits truth 1; D is far from all; E hits truth 2
PICKS = np.array([[1.0, 0.0], [2.0, 0.0], [103.0, 0.0], [500.0, 500.0], [198.0, 0.0]])
FOM = np.array([0.9, 0.8, 0.7, 0.6, 0.5])


def test_precision_recall_f1_and_ap_by_hand():
    m = pick_metrics(PICKS, TRUTH, radius=10.0, fom=FOM)
    # one-to-one: A and B share truth 0, so 3 of 5 picks match 3 of 4 truths
    assert (m.n_picks, m.n_truth, m.n_matched) == (5, 4, 3)
    assert m.precision == pytest.approx(3 / 5) and m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    # ranking A(TP) B(FP) C(TP) D(FP) E(TP): recall steps of 1/4 at precision 1, 2/3 and 3/5
    assert m.average_precision == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 5)
    np.testing.assert_allclose(m.pr_recall, [0.25, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(m.pr_precision, [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])


def test_threshold_keeps_the_picks_above_it():
    m = pick_metrics(PICKS, TRUTH, radius=10.0, fom=FOM, threshold=0.7)  # A, B, C
    assert (m.n_picks, m.n_matched) == (3, 2)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 4)
    assert m.average_precision == pytest.approx(pick_metrics(PICKS, TRUTH, 10.0, FOM).average_precision)


def test_two_picks_near_one_truth_count_once():
    matching = match_picks([[0.5, 0.0], [-0.5, 0.0]], [[0.0, 0.0]], radius=5.0)
    assert matching.n_matched == 1 and matching.truth_index.tolist() == [0]


def test_radius_is_respected():
    truth = [[50.0, 50.0]]
    assert match_picks([[50.0 + 9.9, 50.0]], truth, radius=10.0).n_matched == 1
    assert match_picks([[50.0, 50.0 + 10.5]], truth, radius=10.0).n_matched == 0
    assert match_picks([[57.0, 57.5]], truth, radius=10.0).n_matched == 0  # 10.01 px diagonally


def test_hungarian_finds_the_most_pairs():
    # nearest-first would give pick 0 truth 0 and leave pick 1 alone; the best matching has two pairs
    truth = [[0.0, 0.0], [8.0, 0.0]]
    picks = [[3.5, 0.0], [-5.0, 0.0]]
    matching = match_picks(picks, truth, radius=6.0)
    assert matching.n_matched == 2
    assert dict(zip(matching.pick_index.tolist(), matching.truth_index.tolist(), strict=True)) == {0: 1, 1: 0}


def test_groups_keep_micrographs_apart():
    m = pick_metrics([[0.0, 0.0]], [[0.0, 0.0]], radius=5.0, pick_group=[1], truth_group=[2])
    assert m.n_matched == 0 and m.recall == 0.0 and m.precision == 0.0 and m.f1 == 0.0


def test_rotation_error_after_the_best_global_offset():
    rng = np.random.default_rng(0)
    truth_psi = rng.uniform(-180, 180, size=4)
    # matched pairs A-0, C-1, E-2 are off by 30, 30 and 33 degrees (B and D are not matched)
    picks_psi = np.array([truth_psi[0] + 30.0, 0.0, truth_psi[1] + 30.0, 0.0, truth_psi[2] + 33.0])
    m = pick_metrics(PICKS, TRUTH, 10.0, FOM, pick_psi=picks_psi, truth_psi=truth_psi)
    assert m.rotation_offset_deg == pytest.approx(30.0, abs=0.011)
    assert m.rotation_error_median_deg == pytest.approx(0.0, abs=0.011)
    shifted = pick_metrics(PICKS, TRUTH, 10.0, FOM, pick_psi=picks_psi + [0, 0, 20.0, 0, 0], truth_psi=truth_psi)
    # differences 30, 50, 33: the best offset is 31.5 with errors 1.5, 18.5, 1.5 (median 1.5)
    assert shifted.rotation_error_median_deg == pytest.approx(1.5, abs=0.011)


def test_no_picks_and_no_truth():
    m = pick_metrics(np.zeros((0, 2)), TRUTH, 10.0)
    assert m.recall == 0.0 and np.isnan(m.precision) and m.average_precision == 0.0
    m = pick_metrics(PICKS, np.zeros((0, 2)), 10.0, FOM)
    assert m.precision == 0.0 and np.isnan(m.recall) and np.isnan(m.average_precision)


def test_cli_on_a_tiny_simulated_set(tmp_path):
    sim = tmp_path / "sim"
    result = CliRunner().invoke(cli, ["simulate", "micrographs", "-o", str(sim), "--n-micrographs", "2", "--size",
                                      "240", "--n-train", "0", "--junk", "0", "--snr", "inf"])
    assert result.exit_code == 0, result.output
    radius = json.loads((sim / "simulation.json").read_text())["particle_diameter_px"] / 2
    truth0 = read_coordinates(sim / "truth" / "mic_000.star")
    n0, n1 = len(truth0), len(read_coordinates(sim / "truth" / "mic_001.star"))
    assert n0 >= 4 and n1 >= 1
    picks = pd.DataFrame({"rlnCoordinateX": truth0["rlnCoordinateX"] + np.r_[radius - 1, [0.0] * (n0 - 1)],
                          "rlnCoordinateY": truth0["rlnCoordinateY"],
                          "rlnAutopickFigureOfMerit": np.linspace(1, 0.5, n0),
                          "rlnAnglePsi": truth0["rlnAnglePsi"] + 40.0})
    picks.loc[1, "rlnCoordinateX"] += radius + 1  # outside the default radius: a miss and a false pick
    pickdir = tmp_path / "picks"
    pickdir.mkdir()
    write_coordinates(pickdir / "mic_000.star", picks)  # no picks at all for mic_001
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate-picks", str(pickdir), str(sim / "truth"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["radius_px"] == pytest.approx(radius)
    overall = metrics["overall"]
    assert overall["n_matched"] == n0 - 1 and overall["n_truth"] == n0 + n1
    assert overall["precision"] == pytest.approx((n0 - 1) / n0)
    assert overall["recall"] == pytest.approx((n0 - 1) / (n0 + n1))
    assert overall["rotation_offset_deg"] == pytest.approx(40.0, abs=0.02)
    assert metrics["micrographs"]["mic_001"]["recall"] == 0.0 and metrics["micrographs_without_picks"] == ["mic_001"]
    table = pd.read_csv(out / "metrics.csv")
    assert table["micrograph"].tolist() == ["mic_000", "mic_001", "overall"]
    with Image.open(out / "pr_curve.png") as png:
        assert png.format == "PNG" and png.size[0] > 200
    assert "overall" in result.output


def test_cli_needs_a_radius_without_simulation_json(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    write_coordinates(tmp_path / "t" / "m.star", pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0]}))
    result = CliRunner().invoke(cli, ["evaluate-picks", str(tmp_path / "p"), str(tmp_path / "t"), "-o",
                                      str(tmp_path / "o")])
    assert result.exit_code == 2 and "pass --radius" in result.output
