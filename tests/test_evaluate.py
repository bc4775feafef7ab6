"""`cryovae evaluate`: perfect predictions score perfect, shuffled ones near zero, bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import starfile
from click.testing import CliRunner

from cryovae.analysis.evaluation import evaluation_report, latent_figure, rotation_figure
from cryovae.cli.main import cli
from cryovae.geometry import wrap_degrees
from cryovae.simulate import SimulationConfig, simulate_hinge
from cryovae.simulate.writer import star_tables

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim():
    return simulate_hinge(SimulationConfig(n=300, box=24, snr=None, shift_sigma_px=1.5, seed=7), progress=False)


def write_case(tmp_path, sim, z, psi, origin_A, rows=None, drop=()):
    """A truth.csv and a cryovae-like output star (simulation star + predicted columns)."""
    truth = tmp_path / "truth.csv"
    sim.truth.to_csv(truth, index=False)
    tables = star_tables(sim)
    parts = tables["particles"]
    parts["rlnAnglePsi"] = psi
    parts["rlnOriginXAngst"], parts["rlnOriginYAngst"] = origin_A[:, 0], origin_A[:, 1]
    for k in range(z.shape[1]):
        parts[f"cryovaeZ{k + 1}"] = z[:, k]
    parts = parts.drop(columns=list(drop))
    if rows is not None:
        parts = parts.iloc[rows].reset_index(drop=True)
    star = tmp_path / "out.star"
    starfile.write({"optics": tables["optics"], "particles": parts}, star)
    return star, truth


def truth_arrays(sim):
    t = sim.truth
    return (t[["conformation_1"]].to_numpy(), t.psi_deg.to_numpy(), t[["origin_x_A", "origin_y_A"]].to_numpy())


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_perfect_prediction_with_rotation_offset(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    star, truth = write_case(tmp_path, sim, 1.0 - 2 * conf, wrap_degrees(psi + 75.0), origin)
    res = run(star, truth, "-o", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["conformation"]["multiple_correlation"]["conformation_1"] == pytest.approx(1.0, abs=1e-6)
    assert m["conformation"]["pearson"]["cryovaeZ1"]["conformation_1"] == pytest.approx(-1.0, abs=1e-6)
    assert m["rotation"]["circular_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert m["rotation"]["offset_deg"] == pytest.approx(75.0, abs=0.01)
    assert m["rotation"]["median_error_deg"] < 0.01
    assert m["rotation"]["fraction_within_15deg"] == 1.0
    assert m["translation"]["pearson"] == pytest.approx(1.0, abs=1e-6)
    assert m["translation"]["rmse_A"] < 1e-3
    assert m["join"] == "rlnImageName index"
    for name in ("rotation", "latents", "translation"):
        data = (tmp_path / "ev" / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    assert "circular correlation 1.000" in res.output


def test_shuffled_prediction_scores_near_zero(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    perm = np.random.default_rng(1).permutation(len(sim))
    star, truth = write_case(tmp_path, sim, conf[perm], psi[perm], origin[perm])
    res = run(star, truth, "-o", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert abs(m["conformation"]["pearson"]["cryovaeZ1"]["conformation_1"]) < 0.2
    assert abs(m["rotation"]["circular_correlation"]) < 0.2
    assert m["rotation"]["median_error_deg"] > 60
    assert abs(m["translation"]["pearson"]) < 0.2


def test_subset_star_is_joined_by_image_index(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    rows = np.arange(len(sim))[::-3]  # a reversed subset: row order would be wrong
    star, truth = write_case(tmp_path, sim, conf, psi, origin, rows=rows)
    res = run(star, truth, "-o", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == len(rows)
    assert m["rotation"]["median_error_deg"] < 0.01


def test_default_output_dir_is_beside_the_star(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    star, truth = write_case(tmp_path, sim, conf, psi, origin)
    assert run(star, truth).exit_code == 0
    assert (tmp_path / "out_evaluation" / "metrics.json").is_file()


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "\n" not in err and err.startswith("cryovae evaluate: error:"), err
    assert "Traceback" not in res.output
    for w in words:
        assert w in err


def test_missing_truth_file(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    star, _ = write_case(tmp_path, sim, conf, psi, origin)
    one_line_error(run(star, tmp_path / "nope.csv"), "nope.csv")


def test_mismatched_row_counts(tmp_path, sim):
    conf, psi, origin = truth_arrays(sim)
    star, truth = write_case(tmp_path, sim, conf, psi, origin)
    sim.truth.iloc[:100].to_csv(truth, index=False)  # truth shorter than the star: indices 101.. have no row
    one_line_error(run(star, truth), "out.star", "300", "100")


def test_star_without_latents(tmp_path, sim):
    _, psi, origin = truth_arrays(sim)
    star, truth = write_case(tmp_path, sim, np.zeros((len(sim), 0)), psi, origin)
    one_line_error(run(star, truth), "out.star", "cryovaeZ")


def test_missing_star_file(tmp_path, sim):
    truth = tmp_path / "truth.csv"
    sim.truth.to_csv(truth, index=False)
    one_line_error(run(tmp_path / "missing.star", truth), "missing.star")


def test_figures_have_one_panel_per_pair(sim):
    conf, psi, origin = truth_arrays(sim)
    z = np.column_stack([conf[:, 0], np.random.default_rng(0).normal(size=len(sim))])
    fig = latent_figure(z, conf)
    assert len(fig.axes) == 2 and "1.000" in fig.axes[0].get_title()
    fig = rotation_figure(psi, psi + 10.0, offset_deg=10.0)
    xy = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(xy[:, 0], xy[:, 1], atol=1e-6)  # on the diagonal after the offset
    metrics, figures = evaluation_report({"z": z, "psi_deg": psi, "origin_A": None}, sim.truth)
    assert set(figures) == {"rotation", "latents"} and "translation" not in metrics
