"""Reference-free 2D alignment by EM (:mod:`cryovae.inference.align2d`): it recovers simulated
poses from the particles alone, in the internal convention, and refuses bad input in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryovae.analysis.metrics import rotation_accuracy
from cryovae.errors import CryovaeError
from cryovae.geometry import transform_image
from cryovae.inference.align2d import Align2DConfig, align_to_one_template, noise_variance, rotated
from cryovae.simulate import SimulationConfig, simulate_hinge


@pytest.fixture(scope="module")
def hinge():
    """300 particles of the hinge held rigid (24 px at 6.67 Å, SNR 1, centres off by 1 px) and their
    alignment on a 10-degree grid. Rigid, so that a turn of the frame with the arm (a moving
    molecule's, docs/models.md) does not count as an error."""
    sim = simulate_hinge(SimulationConfig(n=300, box=24, pixel_size_A=160 / 24, snr=1.0, shift_sigma_px=1.0,
                                          hinge_range_deg=0.0, seed=3), progress=False)
    return sim, align_to_one_template(sim.images, Align2DConfig(rotations=36, iterations=8), progress=False)


def test_rotated_renders_the_internal_convention():
    rng = np.random.default_rng(0)
    template = np.zeros((24, 24), np.float32)
    template[6:14, 9:20] = rng.uniform(0.5, 1.0, (8, 11))
    angles = torch.tensor([0.0, 0.7, -2.0])
    ours = rotated(torch.from_numpy(template), angles).numpy()
    for a, image in zip(angles.tolist(), ours, strict=True):
        np.testing.assert_allclose(image, transform_image(template, a, np.zeros(2), order=1), atol=1e-4)


def test_alignment_recovers_the_rotations_of_simulated_particles(hinge):
    sim, result = hinge
    acc = rotation_accuracy(np.degrees(result.theta), np.degrees(sim.theta_rad))  # after the best global offset
    assert acc["median_error_deg"] < 4.0, acc  # a 10-degree grid: 2.5 degrees from quantisation alone
    assert acc["fraction_within_15deg"] == 1.0
    # the rotation's sense is the internal one: the mirrored fit is far worse
    assert acc["mirror"]["median_error_deg"] > 30


def test_alignment_recovers_the_centres_up_to_the_templates_own_offset(hinge):
    sim, result = hinge
    # the template's centre is the data's choice: a particle's centre is its true one plus that
    # offset turned by the particle's rotation, so compare after removing R(-theta) m fitted by least squares
    th = sim.theta_rad
    c, s = np.cos(th), np.sin(th)
    design = np.concatenate([np.stack([c, s], 1), np.stack([-s, c], 1)])  # R(-theta) m = (c mx + s my, -s mx + c my)
    diff = result.center_px - sim.center_px
    m, *_ = np.linalg.lstsq(design, np.concatenate([diff[:, 0], diff[:, 1]]), rcond=None)
    residual = diff - (design @ m).reshape(2, -1).T
    assert np.median(np.linalg.norm(residual, axis=1)) < 1.0
    corrected = sim.center_px + residual  # the estimate less the template's own offset
    for axis in range(2):
        assert np.corrcoef(corrected[:, axis], sim.center_px[:, axis])[0, 1] > 0.7


def test_alignment_becomes_sure_of_the_rotations(hinge):
    _, result = hinge
    assert np.median(result.confidence) > 3 / 36  # well above the uniform 1/36
    assert result.changes_deg[-1] < result.changes_deg[0]
    assert result.template.shape == (24, 24) and np.isfinite(result.template).all()


def test_noise_variance_is_read_from_the_corners():
    rng = np.random.default_rng(2)
    images = rng.normal(0, 0.5, (50, 24, 24)).astype(np.float32)
    images[:, 6:18, 6:18] += 10.0  # a bright particle in the middle does not count
    assert noise_variance(torch.from_numpy(images)) == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("images, match", [
    (np.zeros((1, 8, 8)), "at least 2 square images"),
    (np.zeros((4, 8, 6)), "at least 2 square images"),
    (np.full((4, 8, 8), np.nan), "NaN"),
    (np.zeros((4, 8, 8)), "no variance"),
])
def test_bad_input_is_refused_in_one_line(images, match):
    with pytest.raises(CryovaeError, match=match):
        align_to_one_template(images, Align2DConfig(iterations=1), progress=False)


def test_bad_options_are_refused():
    with pytest.raises(CryovaeError, match="rotation grid"):
        Align2DConfig(rotations=1).validate()
    with pytest.raises(CryovaeError, match="mask radius"):
        Align2DConfig(mask_radius=0).validate()
    with pytest.raises(CryovaeError, match="template's particles"):
        Align2DConfig(template_particles=1).validate()
    with pytest.raises(CryovaeError, match="tolerance"):
        Align2DConfig(tol_deg=-1).validate()


def test_rotation_std_is_small_where_the_rotation_is_known_and_large_where_not(hinge):
    sim, result = hinge
    step = 2 * np.pi / 36
    assert result.theta_std.shape == (300,) and (result.theta_std >= step / np.sqrt(12) - 1e-6).all()
    assert np.degrees(np.median(result.theta_std)) < 10  # SNR 1: sure within a grid step or two
    rng = np.random.default_rng(5)  # pure noise: nothing to align, every rotation alike
    noise = align_to_one_template(rng.normal(size=(60, 24, 24)).astype(np.float32),
                                  Align2DConfig(rotations=36, iterations=3), progress=False)
    assert np.degrees(np.median(noise.theta_std)) > 3 * np.degrees(np.median(result.theta_std))


def test_template_from_a_subset_poses_every_particle_and_stops_when_settled(hinge, tmp_path):
    """The template learnt from 150 of the 300 particles, read from a memmap, with the tolerance:
    every particle gets a rotation as good as with all of them, in fewer iterations."""
    sim, full = hinge
    path = tmp_path / "images.npy"
    np.save(path, sim.images.astype(np.float32))
    images = np.load(path, mmap_mode="r")
    cfg = Align2DConfig(rotations=36, iterations=30, template_particles=150, tol_deg=0.5)
    result = align_to_one_template(images, cfg, progress=False)
    assert result.theta.shape == (300,) and result.center_px.shape == (300, 2) and result.theta_std.shape == (300,)
    assert len(result.changes_deg) < 30 and max(result.changes_deg[-2:]) < 0.5
    acc = rotation_accuracy(np.degrees(result.theta), np.degrees(sim.theta_rad))
    assert acc["median_error_deg"] < 4.0 and acc["fraction_within_15deg"] == 1.0, acc
