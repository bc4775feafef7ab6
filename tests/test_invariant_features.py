"""The training-free baseline: its features do not change when a particle is turned or shifted,
and they tell different molecules apart."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.analysis.invariant_features import (
    InvariantConfig,
    invariant_classes,
    invariant_features,
)
from cryovae.analysis.metrics import class_agreement
from cryovae.errors import CryovaeError
from cryovae.simulate import SimulationConfig, simulate_classes


@pytest.fixture(scope="module")
def class_images():
    sim = simulate_classes(SimulationConfig(n=4, box=32, pixel_size_A=5.0, snr=None, n_classes=4), progress=False)
    return sim.class_images().astype(np.float64)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_quarter_turns_and_circular_shifts_leave_the_features_unchanged(class_images):
    image = class_images[0]
    copies = np.stack([image, np.rot90(image), np.rot90(image, 3), np.roll(image, (3, -2), axis=(0, 1)),
                       np.roll(np.rot90(image, 2), (-1, 4), axis=(0, 1))])
    f = invariant_features(copies)
    for i in range(1, len(f)):
        assert rel(f[i], f[0]) < 1e-9
    # while the images themselves are far apart
    assert rel(copies[1], copies[0]) > 0.5


def test_turned_and_shifted_particles_are_nearest_their_own_class(class_images):
    """Exactly rendered particles (no image interpolation) at random rotations and shifts: the
    features move only a little (polar-grid interpolation), less than the distance to any
    other class, the other conformation of the hinge included."""
    sim = simulate_classes(SimulationConfig(n=40, box=32, pixel_size_A=5.0, snr=None, n_classes=4,
                                            shift_sigma_px=1.5, seed=3), progress=False)
    ref = invariant_features(class_images)
    f = invariant_features(sim.clean)
    labels = sim.truth["class"].to_numpy()
    dist = np.linalg.norm(f[:, None] - ref[None], axis=2) / np.linalg.norm(ref, axis=1)[None]  # (n, 4) relative
    own = dist[np.arange(len(f)), labels - 1]
    assert own.max() < 0.1 and np.median(own) < 0.03
    np.testing.assert_array_equal(dist.argmin(axis=1) + 1, labels)
    # the images themselves are not: the canonical image is far from its turned copies
    pixels = [rel(sim.clean[i], class_images[labels[i] - 1]) for i in range(len(f))]
    assert np.median(pixels) > 0.5


def test_the_baseline_separates_four_classes_at_snr_1():
    sim = simulate_classes(SimulationConfig(n=600, box=32, pixel_size_A=5.0, snr=1.0, shift_sigma_px=1.0, seed=2),
                           progress=False)
    res = invariant_classes(sim.images, 4)
    assert res.labels.min() == 1 and res.labels.max() == 4 and res.components.shape == (600, 8)
    agreement = class_agreement(sim.truth["class"], res.labels)
    assert agreement.accuracy > 0.9, agreement.to_dict()


@pytest.mark.parametrize("bad", [dict(n_angles=4), dict(max_radius=0.0), dict(max_harmonic=40),
                                 dict(n_components=0), dict(method="ward")])
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(CryovaeError):
        InvariantConfig(**bad)
