"""The latent explorer's computations (no viewer): slider ranges, plot views, traversals, the
particle panels of the shipped tiny run and encoding a stack with it."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.errors import CryovaeError
from napari_plugin.latent_space import (
    PCA_MODE,
    encode_session_stack,
    latent_ranges,
    latent_view,
    load_session,
    particle_panels,
    plot_modes,
    slider_position,
    slider_value,
    traversal_for,
    traversal_stack,
)
from napari_plugin.sample_data import sample_run_paths


def _z(n=200, zdim=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, zdim)) * np.array([3.0, 1.0, 0.2])[:zdim] + np.array([1.0, -2.0, 0.5])[:zdim]


def test_slider_ranges_cover_the_particles_and_round_trip():
    z = _z()
    z[:, 2] = 0.7  # a dimension the model does not use
    ranges = latent_ranges(z)
    assert (ranges[:2, 0] < np.percentile(z[:, :2], 0.5, axis=0)).all()
    assert (ranges[:2, 1] > np.percentile(z[:, :2], 99.5, axis=0)).all()
    np.testing.assert_allclose(ranges[2], [0.7 - 3, 0.7 + 3])
    for pos in (0, 17, 200, 400):
        assert slider_position(slider_value(pos, ranges[0], 400), ranges[0], 400) == pos
    assert slider_position(1e9, ranges[0], 400) == 400


def test_pair_and_pca_views_map_plot_points_back_to_latents():
    z = _z()
    assert plot_modes(1) == [(0, 0)] and plot_modes(2) == [(0, 1)]
    assert plot_modes(3)[0] == PCA_MODE and (0, 2) in plot_modes(3)
    current = np.array([0.1, 0.2, 0.3])
    pair = latent_view(z, (0, 2))
    np.testing.assert_allclose(pair.coords, z[:, [0, 2]])
    np.testing.assert_allclose(pair.to_latent((5.0, -1.0), current), [5.0, 0.2, -1.0])
    pca = latent_view(z, PCA_MODE)
    target = np.array([2.0, -0.5])
    moved = pca.to_latent(target, current)
    np.testing.assert_allclose(pca.project(moved), target, atol=1e-12)
    # the move is within the plotted plane: the third principal direction is unchanged
    normal = np.cross(pca.components[0], pca.components[1])
    assert abs((moved - current) @ normal) < 1e-12
    k = 37
    assert pca.nearest(pca.coords[k]) == k and pair.nearest(z[k, [0, 2]]) == k
    hist = latent_view(z[:, :1], (0, 0))
    assert hist.ndim == 1 and hist.nearest([z[k, 0]]) == k


def test_traversal_stack_lays_decoded_frames_on_its_grid():
    def decode(zz):  # an image that encodes its own latent vector, to check the layout
        zz = np.asarray(zz, np.float32)
        out = np.zeros((len(zz), 6, 6), np.float32)
        out[:, 0, : zz.shape[1]] = zz
        return out

    z = _z()
    grid = traversal_for(z, (0, 1), steps=4)
    frames = traversal_stack(decode, grid)
    assert frames.shape == (4, 4, 6, 6)
    for r in range(4):
        for c in range(4):
            np.testing.assert_allclose(frames[r, c, 0, :3], grid.z[r * 4 + c], rtol=1e-6)
    # columns follow z1, rows follow z2
    assert np.all(np.diff(frames[0, :, 0, 0]) > 0) and np.all(np.diff(frames[:, 0, 0, 1]) > 0)
    row = traversal_stack(decode, traversal_for(z[:, :1], (0, 0), steps=5))
    assert row.shape == (5, 6, 6) and np.all(np.diff(row[:, 0, 0]) > 0)
    assert traversal_stack(decode, traversal_for(z, PCA_MODE, steps=3)).shape == (3, 3, 6, 6)


@pytest.fixture(scope="module")
def session():
    rundir, star = sample_run_paths(1)
    return load_session(rundir, star)


def test_particle_panels_are_the_runs_images(session):
    run, lat = session.run, session.latents
    idx = [0, 11, 123]
    for i in idx:
        p = particle_panels(session, i)
        np.testing.assert_allclose(p.raw, run.preprocess(session.stack.images([i]))[0])
        np.testing.assert_allclose(p.reconstruction, run.decode(lat.z_mean[[i]], lat.theta[[i]], lat.center_px[[i]])[0])
        np.testing.assert_allclose(p.pose_free, run.decode(lat.z_mean[[i]])[0])
    with pytest.raises(CryovaeError, match="out of range"):
        particle_panels(session, session.n_particles)


def test_reconstruction_panel_is_the_runs_own_reconstruction(session):
    """latents.npz, the loaded weights and the run's preprocessing agree: the panel built from
    the saved pose (theta in radians, centre in model pixels) equals encoding the particle
    again and decoding at the inferred pose. Using psi_deg/origin_A (RELION's frame) instead
    would break this."""
    ids = np.array([3, 150, 299])
    # the whole stack, batched as `cryovae train` batched it: the refinement's last steps on a
    # nearly flat z direction land within ~0.01 of each other under the float rounding of
    # another batch size, and this tiny sample run's z is nearly flat
    everything = session.run.preprocess(session.stack.images(np.arange(len(session.stack))))
    again = session.run.reconstruct(everything)[ids]
    for k, i in enumerate(ids):
        # (the sample run was refined in batches of 256 particles; reconstruct refines in CPU batches
        # of 32, whose float rounding moves this run's nearly flat z by ~0.01 and pixels by up to
        # 0.005; a pose convention slip, e.g. a quarter turn, moves them by ~0.3: see below)
        np.testing.assert_allclose(particle_panels(session, int(i)).reconstruction, again[k], rtol=0, atol=0.02)
    turned = session.run.decode(session.latents.z_mean[ids], session.latents.theta[ids] + np.pi / 2,
                                session.latents.center_px[ids])
    assert np.abs(turned - again).max() > max(0.1 * np.abs(again).max(), 5 * 0.02)  # the pose matters


def test_encoding_a_stack_reports_progress_and_matches_the_run(session):
    items = list(encode_session_stack(session.run, session.stack, batch_size=128))
    assert items[:-1] == [128, 256, 300]
    lat = items[-1]
    direct = session.run.encode(session.run.preprocess(session.stack.images(np.arange(40))))
    np.testing.assert_allclose(lat.z_mean[:40], direct.z_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lat.psi_deg[:40], direct.psi_deg, atol=1e-3)


def test_a_particle_file_of_another_size_is_a_one_line_error(tmp_path):
    from cryovae.io import read_particles, write_stack

    rundir, star = sample_run_paths(1)
    images = read_particles(star).images(np.arange(10))
    write_stack(tmp_path / "ten.mrcs", images, 5.0)
    with pytest.raises(CryovaeError, match="10 particles but .*latents.npz has 300"):
        load_session(rundir, tmp_path / "ten.mrcs")
