"""The simulator's ground truth is self-consistent: poses, conformations, SNR, CTF, files."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.errors import CryovaeError
from cryovae.geometry import apply_relion_alignment, relion_to_internal, transform_image
from cryovae.simulate import (
    SimulationConfig,
    hinge_molecule,
    simulate_arms,
    simulate_hinge,
    simulate_volume,
)
from cryovae.simulate.ctf import ctf_2d, electron_wavelength_A
from cryovae.simulate.molecules import axis_rotation
from cryovae.simulate.render import project_volume


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def origin_px(sim, i: int) -> np.ndarray:
    row = sim.truth.iloc[i]
    return np.array([row.origin_x_A, row.origin_y_A]) / sim.pixel_size


@pytest.mark.parametrize("simulate", [simulate_hinge, simulate_arms])
def test_relion_alignment_of_clean_particle_gives_canonical_image(simulate):
    cfg = SimulationConfig(n=12, box=48, pixel_size_A=3.5, shift_sigma_px=2.5, snr=0.05, seed=3)
    sim = simulate(cfg, progress=False)
    canonical = sim.canonical_images()
    for i in range(len(sim)):
        aligned = apply_relion_alignment(sim.clean[i], sim.truth.psi_deg[i], origin_px(sim, i))
        assert ncc(aligned, canonical[i]) > 0.9995
        assert np.abs(aligned - canonical[i]).max() < 0.02 * canonical[i].max()
    # and the pose is not trivial: the clean particles differ from their canonical images
    assert np.mean([ncc(sim.clean[i], canonical[i]) for i in range(len(sim))]) < 0.7


def test_rendered_pose_follows_internal_convention():
    sim = simulate_hinge(SimulationConfig(n=6, box=40, shift_sigma_px=2.0, snr=None, seed=5), progress=False)
    canonical = sim.canonical_images()
    theta, center = relion_to_internal(sim.truth.psi_deg.to_numpy(), np.stack([origin_px(sim, i) for i in range(6)]))
    np.testing.assert_allclose(theta, np.angle(np.exp(1j * sim.theta_rad)), atol=1e-5)
    np.testing.assert_allclose(center, sim.center_px, atol=1e-5)
    for i in range(len(sim)):
        expected = transform_image(canonical[i], float(theta[i]), center[i])
        assert ncc(expected, sim.clean[i]) > 0.9995


def test_no_noise_means_images_are_clean():
    sim = simulate_hinge(SimulationConfig(n=4, snr=None, seed=1), progress=False)
    assert sim.noise_sigma == 0.0
    np.testing.assert_array_equal(sim.images, sim.clean)


@pytest.mark.parametrize("snr", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("ctf", [False, True])
def test_snr_matches_request(snr, ctf):
    cfg = SimulationConfig(n=150, box=40, snr=snr, ctf=ctf, pixel_size_A=2.0, seed=2)
    sim = simulate_hinge(cfg, progress=False)
    if ctf:
        t = sim.truth
        signal = np.fft.irfft2(np.fft.rfft2(sim.clean) * ctf_2d(
            40, 2.0, t.defocus_u_A, t.defocus_v_A, t.defocus_angle_deg, cfg.voltage_kv, cfg.cs_mm,
            cfg.amplitude_contrast), s=(40, 40))
    else:
        signal = sim.clean
    noise = sim.images - signal
    measured = signal.reshape(len(sim), -1).var(axis=1).mean() / noise.var()
    assert measured == pytest.approx(snr, rel=0.03)
    assert abs(noise.mean()) < 3 * noise.std() / np.sqrt(noise.size)


def test_seed_reproducible_and_different_seeds_differ():
    cfg = SimulationConfig(n=30, snr=0.1, shift_sigma_px=1.0, ctf=True, tilt_sigma_deg=5.0, seed=11)
    a, b = simulate_arms(cfg, progress=False), simulate_arms(cfg, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.truth.equals(b.truth)
    c = simulate_arms(SimulationConfig(n=30, snr=0.1, shift_sigma_px=1.0, ctf=True, tilt_sigma_deg=5.0, seed=12),
                      progress=False)
    assert not np.allclose(a.images, c.images)


def test_rotation_and_shift_distributions():
    n = 4000
    uni = simulate_hinge(SimulationConfig(n=n, box=16, snr=None, shift_sigma_px=1.5, seed=0), progress=False)
    psi = uni.truth.psi_deg.to_numpy()
    assert psi.min() > -180 and psi.max() <= 180
    assert abs(np.histogram(psi, bins=8, range=(-180, 180))[0] / n - 1 / 8).max() < 0.02
    origin = uni.truth[["origin_x_A", "origin_y_A"]].to_numpy() / uni.pixel_size
    assert origin.std(axis=0) == pytest.approx([1.5, 1.5], rel=0.05)
    nrm = simulate_hinge(SimulationConfig(n=n, box=16, snr=None, rotation="normal", rotation_sigma_deg=20.0,
                                          seed=0), progress=False)
    assert nrm.truth.psi_deg.std() == pytest.approx(20.0, rel=0.05)
    np.testing.assert_array_equal(nrm.truth[["origin_x_A", "origin_y_A"]].to_numpy(), 0.0)


def test_hinge_arm_turns_rigidly_about_its_axis():
    mol = hinge_molecule(range_deg=40.0)
    conf = np.array([[0.0], [0.5], [1.0]])
    xyz = mol.coordinates(conf)
    nb = len(mol.body)
    np.testing.assert_allclose(xyz[0, :nb], xyz[2, :nb])  # body does not move
    arm = mol.arms[0]
    # conformation 1 is conformation 0 turned by the full range about the hinge axis
    rot = axis_rotation(arm.axis, np.radians([40.0]))[0]
    np.testing.assert_allclose((xyz[0, nb:] - arm.pivot) @ rot.T + arm.pivot, xyz[2, nb:], atol=1e-9)
    # the projected motion is visible: the arm tip moves by more than a few pixels at 4 Å/px
    assert np.linalg.norm(xyz[2, nb:, :2] - xyz[0, nb:, :2], axis=1).max() > 25.0


def test_discrete_states_like_5hdb():
    sim = simulate_hinge(SimulationConfig(n=400, box=16, snr=None, n_states=20, seed=4), progress=False)
    values = np.unique(sim.truth.conformation_1.round(9))
    np.testing.assert_allclose(values, np.arange(20) / 19, atol=1e-6)


def test_conformations_change_the_canonical_image():
    sim = simulate_arms(SimulationConfig(n=200, box=40, snr=None, seed=8), progress=False)
    conf = sim.conformation
    i, j = np.argmin(conf.sum(1)), np.argmax(conf.sum(1))
    can = sim.canonical_images([i, j])
    assert ncc(can[0], can[1]) < 0.8


def test_ctf_zeros_sign_and_astigmatism():
    box, apix, d, kv, cs, w = 256, 1.0, 15000.0, 300.0, 2.7, 0.1
    lam = electron_wavelength_A(kv)
    assert lam == pytest.approx(0.019687, rel=1e-4)  # 300 kV electrons
    ctf = ctf_2d(box, apix, [d], [d], [0.0], kv, cs, w)[0]
    assert ctf[0, 0] == pytest.approx(w, abs=1e-9)  # positive at low frequency for underfocus
    # first zero: pi lam d s^2 - pi/2 Cs lam^3 s^4 + atan(w/sqrt(1-w^2)) = pi
    phi = np.arctan(w / np.sqrt(1 - w * w))
    a, b, c = -0.5 * np.pi * cs * 1e7 * lam**3, np.pi * lam * d, phi - np.pi
    s2 = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
    s_zero = np.sqrt(s2)
    freqs = np.fft.rfftfreq(box, d=apix)
    k = int(np.searchsorted(freqs, s_zero))
    assert ctf[0, k - 1] > 0 > ctf[0, k]  # the sign flips across the predicted zero (along x)
    assert ctf[k, 0] * ctf[k - 1, 0] < 0  # and along y (isotropic)
    # astigmatism: along the angle the defocus is U, perpendicular to it V
    ast = ctf_2d(box, apix, [d], [d - 3000.0], [90.0], kv, cs, w)[0]
    kv_zero = int(np.searchsorted(freqs, np.sqrt((-np.pi * lam * (d - 3000) + np.sqrt(
        (np.pi * lam * (d - 3000)) ** 2 - 4 * a * c)) / (2 * a))))
    assert ast[k - 1, 0] > 0 > ast[k, 0]  # along y (90 degrees): defocus U
    assert ast[0, kv_zero - 1] > 0 > ast[0, kv_zero]  # along x: defocus V (zero further out)
    assert kv_zero > k


def test_ctf_agrees_with_the_models_ctf():
    torch = pytest.importorskip("torch")
    from cryovae.models.ctf import compute_ctf

    params = np.array([[12000.0, 11000.0, 30.0, 300.0, 2.7, 0.07, 0.0],
                       [20000.0, 19500.0, 120.0, 200.0, 2.0, 0.1, 0.0]])
    ours = ctf_2d(64, 1.5, params[:, 0], params[:, 1], params[:, 2], 300.0, 2.7, 0.07)[0]
    theirs = compute_ctf(torch.tensor(params, dtype=torch.float32), 64, 1.5).numpy()[0]
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_volume_projection_scales_and_views():
    d = 32
    z, y, x = np.meshgrid(*(np.arange(d) - d // 2,) * 3, indexing="ij")
    vol = np.exp(-((x - 8) ** 2 + y**2 + (z - 3) ** 2) / (2 * 1.5**2))
    for view, apix, expect in [(None, 2.0, (8, 0)), ((90.0, 0.0, 0.0), 2.0, (0, 8)),
                               ((0.0, 90.0, 0.0), 2.0, (3, 0)), (None, 4.0, (4, 0))]:
        proj = project_volume(vol, 2.0, 32, apix, view)
        row, col = np.unravel_index(np.argmax(proj), proj.shape)
        assert (col - 16, row - 16) == expect


def test_volume_simulation_pose_truth():
    d = 32
    z, y, x = np.meshgrid(*(np.arange(d) - d // 2,) * 3, indexing="ij")
    vol = sum(a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + z**2) / (2 * 2.0**2))
              for px, py, a in [(0, 0, 1.0), (7, 0, 0.7), (0, -9, 0.5)])
    cfg = SimulationConfig(n=5, box=32, pixel_size_A=2.0, shift_sigma_px=1.5, snr=0.5, seed=9)
    sim = simulate_volume(vol, 2.0, cfg, progress=False)
    assert "conformation_1" not in sim.truth.columns
    for i in range(len(sim)):
        aligned = apply_relion_alignment(sim.clean[i], sim.truth.psi_deg[i], origin_px(sim, i))
        assert ncc(aligned, sim.template) > 0.995
    with pytest.raises(CryovaeError):
        simulate_volume(vol, 2.0, SimulationConfig(n=2, tilt_sigma_deg=3.0), progress=False)


@pytest.mark.parametrize("bad", [dict(n=0), dict(snr=-1.0), dict(rotation="gauss"), dict(ctf=True, defocus_min_A=0.0),
                                 dict(n_states=1), dict(box=4)])
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(CryovaeError):
        SimulationConfig(**bad)
