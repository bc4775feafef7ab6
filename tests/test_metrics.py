"""Ground-truth metrics score perfect, offset, mirrored and shuffled predictions correctly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryovae.analysis.metrics import (
    best_rotation_offset,
    circular_correlation,
    circular_correlation_js,
    conformation_accuracy,
    latent_columns,
    multiple_correlation,
    pearson,
    rotation_accuracy,
    score_against_truth,
    translation_accuracy,
)
from cryovae.geometry import rotation_matrix, wrap_degrees

RNG = np.random.default_rng(0)
N = 2000
TRUE_PSI = RNG.uniform(-180, 180, N)
TRUE_ORIGIN = RNG.normal(0, 6.0, (N, 2))
CONF = RNG.uniform(0, 1, (N, 2))


def truth_table() -> pd.DataFrame:
    return pd.DataFrame({"conformation_1": CONF[:, 0], "conformation_2": CONF[:, 1], "psi_deg": TRUE_PSI,
                         "origin_x_A": TRUE_ORIGIN[:, 0], "origin_y_A": TRUE_ORIGIN[:, 1]})


def test_perfect_prediction_scores_perfect():
    z = np.column_stack([3 * CONF[:, 1] - 1, -2 * CONF[:, 0]])
    s = score_against_truth({"z": z, "psi_deg": TRUE_PSI, "origin_A": TRUE_ORIGIN}, truth_table())
    assert s["conformation"]["multiple_correlation"]["conformation_1"] == pytest.approx(1.0, abs=1e-9)
    assert s["conformation"]["pearson"]["cryovaeZ2"]["conformation_1"] == pytest.approx(-1.0, abs=1e-9)
    assert s["conformation"]["best_abs_pearson"]["conformation_2"] == pytest.approx(1.0, abs=1e-9)
    rot = s["rotation"]
    assert rot["circular_correlation"] == pytest.approx(1.0, abs=1e-9)
    assert rot["median_error_deg"] < 0.01 and rot["fraction_within_15deg"] == 1.0
    assert rot["best_fit"] == "direct"
    tr = s["translation"]
    assert tr["pearson"] == pytest.approx(1.0) and tr["rmse_A"] == pytest.approx(0.0, abs=1e-9)


def test_shuffled_prediction_scores_near_zero():
    perm = RNG.permutation(N)
    z = CONF[perm, :1]
    s = score_against_truth({"z": z, "psi_deg": TRUE_PSI[perm], "origin_A": TRUE_ORIGIN[perm]}, truth_table())
    assert abs(s["conformation"]["pearson"]["cryovaeZ1"]["conformation_1"]) < 0.1
    assert s["conformation"]["multiple_correlation"]["conformation_1"] < 0.1
    assert abs(s["rotation"]["circular_correlation"]) < 0.1
    assert s["rotation"]["median_error_deg"] > 70  # random angles: median |error| ~ 90 deg
    assert s["rotation"]["fraction_within_15deg"] < 0.25
    assert abs(s["translation"]["pearson"]) < 0.1


@pytest.mark.parametrize("offset", [0.0, 37.5, -120.0, 179.0])
def test_constant_rotation_offset_is_perfect_after_offset(offset):
    pred = wrap_degrees(TRUE_PSI + offset + RNG.normal(0, 1.0, N))
    rot = rotation_accuracy(pred, TRUE_PSI)
    assert float(wrap_degrees(rot["offset_deg"] - offset)) == pytest.approx(0.0, abs=0.2)
    assert rot["median_error_deg"] < 1.0
    assert rot["fraction_within_15deg"] == 1.0
    assert rot["circular_correlation"] > 0.99
    assert rot["best_fit"] == "direct"


def test_mirrored_rotation_is_detected_but_direct_is_scored():
    pred = wrap_degrees(-TRUE_PSI + 50.0)
    rot = rotation_accuracy(pred, TRUE_PSI)
    assert rot["best_fit"] == "mirror"
    assert rot["mirror"]["median_error_deg"] < 0.05
    assert float(wrap_degrees(rot["mirror"]["offset_deg"] - 50.0)) == pytest.approx(0.0, abs=0.05)
    assert rot["circular_correlation"] < -0.99  # the direct score shows the handedness flip
    assert rot["median_error_deg"] > 30


def test_half_turn_flips_score_poorly_directly_but_well_modulo_180():
    # a near two-fold particle placed either way round: half the predictions are off by 180 degrees
    flip = RNG.uniform(size=N) < 0.5
    pred = wrap_degrees(TRUE_PSI + 30.0 + 180.0 * flip + RNG.normal(0, 2.0, N))
    rot = rotation_accuracy(pred, TRUE_PSI)
    assert abs(rot["circular_correlation"]) < 0.2
    axial = rot["modulo_180"]
    assert axial["circular_correlation"] > 0.98
    assert axial["median_error_deg"] < 3.0 and axial["fraction_within_15deg"] == 1.0
    assert float(wrap_degrees(2 * (axial["offset_deg"] - 30.0))) == pytest.approx(0.0, abs=1.0)
    # without flips the two agree
    same = rotation_accuracy(wrap_degrees(TRUE_PSI + 30.0 + RNG.normal(0, 2.0, N)), TRUE_PSI)
    assert same["modulo_180"]["median_error_deg"] == pytest.approx(same["median_error_deg"], rel=0.1)


def test_circular_correlation_is_offset_invariant_and_bounded():
    a = np.radians(TRUE_PSI)
    b = a + 0.3 * RNG.normal(size=N)
    r = circular_correlation(a, b)
    assert 0.5 < r < 1.0
    assert circular_correlation(a + 1.0, b - 2.0) == pytest.approx(r, abs=1e-9)


@pytest.mark.parametrize("offset", [0.0, 73.0, -150.0])
def test_fisher_lee_is_robust_for_uniform_noisy_angles(offset):
    # uniform angles, 30 deg noise: clearly related. Fisher-Lee stays high for every offset;
    # the Jammalamadaka-SenGupta r_c (centred on ill-defined means) is reported but not relied on.
    noisy = np.radians(TRUE_PSI + offset + RNG.normal(0, 30.0, N))
    r = circular_correlation(np.radians(TRUE_PSI), noisy)
    assert 0.6 < r < 0.95
    assert circular_correlation(np.radians(TRUE_PSI), -noisy) == pytest.approx(-r, abs=1e-9)
    assert -1.0 <= circular_correlation_js(np.radians(TRUE_PSI), noisy) <= 1.0


def test_best_offset_is_robust_to_outliers():
    pred = TRUE_PSI + 20.0
    pred[:600] = RNG.uniform(-180, 180, 600)  # 30 % garbage
    assert best_rotation_offset(pred, TRUE_PSI) == pytest.approx(20.0, abs=0.5)


def test_translation_template_offset_is_removed():
    t = np.array([3.0, -2.0])  # learned template sits off-centre by t
    shift = np.einsum("nij,j->ni", rotation_matrix(-np.radians(TRUE_PSI)), t)
    tr = translation_accuracy(TRUE_ORIGIN - shift, TRUE_ORIGIN, TRUE_PSI)
    assert tr["rmse_A"] == pytest.approx(np.hypot(3, 2), rel=1e-6)
    np.testing.assert_allclose(tr["template_offset_A"], t, atol=1e-9)
    assert tr["rmse_after_template_offset_A"] < 1e-9


def test_pearson_and_multiple_correlation():
    x = RNG.normal(size=500)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert np.isnan(pearson(x, np.ones(500)))
    z = np.column_stack([x, RNG.normal(size=500)])
    y = z[:, 0] - 0.5 * z[:, 1]
    assert multiple_correlation(z, y) == pytest.approx(1.0)
    assert pearson(z[:, 0], y) < 0.95  # one latent alone does not explain it
    c = conformation_accuracy(z, y)
    assert c["best_abs_pearson"]["conformation_1"] == pytest.approx(abs(pearson(z[:, 0], y)))


def test_latent_columns_in_numeric_order():
    df = pd.DataFrame(columns=["rlnAnglePsi", "cryovaeZ10", "cryovaeZ2", "cryovaeZ1", "cryovaeProb"])
    assert latent_columns(df) == ["cryovaeZ1", "cryovaeZ2", "cryovaeZ10"]
