"""The capsule metrics of Keller & Welling (eq. 13: equivariance error, eq. 14: CapCorr) on
constructed capsule activations: exact rolls, reversed rolls, unrelated activations."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.analysis.capsules import (
    capsule_correlation,
    capsule_scores,
    equivariance_error,
    observed_roll,
)

S = K = C = 6


def _rolled(rng, n: int, step: int = 1) -> np.ndarray:
    """(n, S, K, C) sequences whose frame l is frame 0 rolled by ``step * l`` (and scaled: the
    metrics normalise each frame)."""
    t0 = rng.random((n, K, C)) + rng.random((n, K, 1))
    return np.stack([(1 + k) * np.roll(t0, step * k, axis=-1) for k in range(S)], axis=1)


def test_equivariant_capsules_score_zero_error_and_capcorr_one():
    rng = np.random.default_rng(0)
    t = _rolled(rng, 20)
    np.testing.assert_allclose(equivariance_error(t), 0.0, atol=1e-12)
    assert capsule_correlation(t) == pytest.approx(1.0)
    np.testing.assert_array_equal(observed_roll(t[:, 0], t[:, 2]), 2)


def test_capsules_rolling_the_other_way_or_not_at_all_score_badly():
    rng = np.random.default_rng(1)
    backwards = _rolled(rng, 20, step=-1)
    assert np.all(equivariance_error(backwards) > 1.0)
    assert capsule_correlation(backwards) == pytest.approx(-1.0)
    noise = rng.random((200, S, K, C))
    assert abs(capsule_correlation(noise)) < 0.1
    assert np.all(equivariance_error(noise) > 5.0)


def test_equivariance_error_is_eq_13_by_hand():
    # one sequence of S = 2 frames, one capsule of C = 2: frame 0 = (1, 0), frame 1 = (0, 1) / 2
    t = np.array([[[[1.0, 0.0]], [[0.0, 0.5]]]])
    # Roll_1 of unit frame 0 = (0, 1) = unit frame 1: error 0
    assert equivariance_error(t)[0] == pytest.approx(0.0)
    t = np.array([[[[1.0, 0.0]], [[3.0, 4.0]]]])
    # |(0, 1) - (0.6, 0.8)|_1 = 0.6 + 0.2
    assert equivariance_error(t)[0] == pytest.approx(0.8)


def test_the_mode_over_capsules_decides_the_observed_roll():
    rng = np.random.default_rng(2)
    a = rng.random((1, 5, 8)) + np.linspace(0, 1, 8)
    b = np.roll(a, 3, axis=-1)
    b[0, :2] = np.roll(a[0, :2], 5, axis=-1)  # two capsules of five disagree
    assert observed_roll(a, b)[0] == 3
    scores = capsule_scores(_rolled(rng, 4))
    assert scores["capcorr"] == pytest.approx(1.0) and scores["frames"] == S and scores["particles"] == 4
