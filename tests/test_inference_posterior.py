"""The posterior grid: its log posterior is the model's, and its means estimate z, the rotation
and the centre of particles drawn from the model itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryovae.errors import CryovaeError
from cryovae.inference import Latents, PosteriorGrid, PosteriorGridConfig, posterior_latents
from cryovae.inference.posterior import searchable
from cryovae.models import ModelConfig, build_model, compute_ctf

BOX = 21


def _model(kind="target", zdim=1, noise_sigma=0.05, **extra):
    torch.manual_seed(0)
    own = {"target": dict(group="p4", enc_fields=2, enc_kernel=7), "spatial": dict(enc_hidden=(32,)),
           "mce": dict(classes=2), "tvae": {}}[kind]
    cfg = ModelConfig.for_model(kind, box=BOX, zdim=zdim, gen_hidden=32, fourier_features=16,
                                translation_prior_px=1.5, **own, **extra)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.log_sigma.fill_(math.log(noise_sigma))
    return model


def _particles(model, n, sigma, seed=1, ctf=None):
    """Images drawn from the model at z ~ p(z), theta uniform, centre ~ N(0, 1 px), with noise sigma."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.zdim, generator=g)
    theta = (torch.rand(n, generator=g) * 2 - 1) * math.pi
    center = torch.randn(n, 2, generator=g)
    with torch.no_grad():
        mean, _ = model.decode(z, theta, center, ctf)
    return mean + sigma * torch.randn(mean.shape, generator=g), z, theta, center


def _grid_points(grid: PosteriorGrid):
    """Every grid point as (z, theta, offset) tensors in the (S, R, K) order of log_posterior."""
    s, r, k = len(grid.offsets), len(grid.theta), len(grid.z)
    z = grid.z[None, None].expand(s, r, k, -1).reshape(-1, grid.z.shape[1])
    theta = grid.theta[None, :, None].expand(s, r, k).reshape(-1)
    off = grid.offsets[:, None, None].expand(s, r, k, 2).reshape(-1, 2)
    return z, theta, off


@pytest.mark.parametrize("case", ["mask", "no mask", "ctf", "pixel noise"])
def test_the_grids_log_posterior_is_the_models_up_to_a_constant_of_the_particle(case):
    """The shared-template products (the CTF moved onto the particle, Parseval for |h * T|^2,
    per-pixel noise) equal model.log_posterior at every grid point, up to one constant per
    particle, for particles at the box centre (no move: the grid's mask then is the model's)."""
    extra = {"mask": dict(likelihood_mask=0.8), "no mask": dict(likelihood_mask=0.0),
             "ctf": dict(likelihood_mask=0.8, ctf=True), "pixel noise": dict(likelihood_mask=0.8, noise="pixel")}[case]
    model = _model(**extra)
    grid = PosteriorGrid(model, PosteriorGridConfig(rotations=8, z_points=5, shift_points=1))
    ctf = None
    if case == "ctf":
        params = torch.tensor([[15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1, 0.0]] * 2)
        ctf = compute_ctf(params, BOX, model.cfg.pixel_size)
    y, _, _, _ = _particles(model, 2, 0.05, ctf=ctf)
    center = torch.zeros(2, 2)
    lp = grid.log_posterior(y, center, ctf).reshape(2, -1)
    z, theta, off = _grid_points(grid)
    with torch.no_grad():
        for b in range(2):
            m = len(z)
            want = model.log_posterior(y[b: b + 1].expand(m, BOX, BOX), z, theta, center[b] + off,
                                       None if ctf is None else ctf[b: b + 1].expand(m, *ctf.shape[1:]))
            if case == "ctf":  # the grid scores the whole box, the model its mask: compare with the mask off
                want = _full_box_log_posterior(model, y[b], z, theta, ctf[b])
            diff = (lp[b] - want).double()
            assert float(diff.std()) < 1e-4 * float(want.std()), case
            assert float(want.std()) > 1.0  # the grid points do differ


def _full_box_log_posterior(model, y, z, theta, ctf):
    """log N(y; h * g(z, theta, 0), sigma^2) + log p(z) over every pixel (the template 0 outside
    the mask, as decode draws it)."""
    m = len(z)
    mean, log_sigma = model.decode(z, theta, torch.zeros(m, 2), ctf[None].expand(m, *ctf.shape))
    r = (y[None] - mean).flatten(1)
    return -0.5 * (r**2).sum(1) / torch.exp(2 * log_sigma) + model.prior.log_density(z)


def test_the_means_recover_the_generating_z_rotation_and_centre():
    """At low noise the posterior is sharp: z within a grid step (0.2), the rotation within the
    3-degree grid, the centre within the 0.5-px offsets, starting from a centre 0.4 px off."""
    torch.set_num_threads(2)
    model = _model()
    y, z, theta, center = _particles(model, 32, 0.05)
    grid = PosteriorGrid(model, PosteriorGridConfig())
    start = center + 0.4 * torch.tensor([1.0, -1.0])
    zm, thm, cm = grid.means(y, start)
    dth = torch.remainder(thm - theta + math.pi, 2 * math.pi) - math.pi
    assert float((zm - z).abs().median()) < 0.1
    assert float(dth.abs().max()) < math.radians(3.0)
    assert float((cm - center).norm(dim=1).median()) < 0.3
    assert float((start - center).norm(dim=1).median()) > 0.5


def test_the_posterior_mean_has_a_smaller_squared_error_than_the_peak_in_heavy_noise():
    """With z drawn from the prior and the model the true one, the posterior mean is the
    estimator of least squared error (the reason the grid reports it): at a noise where z's
    posterior is wide it beats the grid's most probable z by a clear margin."""
    torch.set_num_threads(2)
    model = _model(noise_sigma=0.5)
    y, z, theta, center = _particles(model, 400, 0.5, seed=3)
    grid = PosteriorGrid(model, PosteriorGridConfig(rotations=36, shift_points=1))
    lp = grid.log_posterior(y, center)
    peak = grid.z[lp.flatten(1).argmax(1) % len(grid.z)]
    zm, _, _ = grid.means(y, center)
    mse_mean, mse_peak = float(((zm - z) ** 2).mean()), float(((peak - z) ** 2).mean())
    assert mse_mean < 0.85 * mse_peak
    assert mse_mean < 0.9  # and the particles still say something about z (the prior alone gives 1)


def test_two_z_dimensions_and_the_latents_it_writes():
    """zdim 2 searches the product grid: particles made at its inner points (z, rotation; at the box
    centre, where the random generator's cut at the mask does not move) at low noise are found
    exactly; psi/origin follow the new pose; z_std, prob and the extras stay the
    encoder's."""
    model = _model(zdim=2, noise_sigma=0.005, likelihood_mask=0.7)
    cfg = PosteriorGridConfig(rotations=60)
    grid = PosteriorGrid(model, cfg)
    g = torch.Generator().manual_seed(4)
    inner = torch.nonzero(grid.z_edge == 0)[:, 0]  # a point on the edge is kept (see the next test)
    pick_z = inner[torch.randint(0, len(inner), (6,), generator=g)]
    pick_r = torch.randint(0, cfg.rotations, (6,), generator=g)
    z, theta = grid.z[pick_z], grid.theta[pick_r]
    center = torch.zeros(6, 2)
    with torch.no_grad():
        y = model.decode(z, theta, center)[0] + 0.005 * torch.randn(6, BOX, BOX, generator=g)
    lat = Latents.from_pose(np.zeros((6, 2), np.float32), np.full((6, 2), 0.4), np.zeros(6), center.numpy(),
                            model.cfg.pixel_size, prob=np.linspace(0.1, 1, 6), extras={"x": np.arange(6)})
    out = grid.apply(y.numpy(), lat)
    np.testing.assert_allclose(out.z_mean, z.numpy(), atol=0.05)
    dth = np.angle(np.exp(1j * (out.theta - theta.numpy())))
    assert np.abs(dth).max() < math.radians(1.0)
    again = Latents.from_pose(out.z_mean, out.z_std, out.theta, out.center_px, model.cfg.pixel_size)
    np.testing.assert_allclose(out.psi_deg, again.psi_deg)
    np.testing.assert_allclose(out.origin_A, again.origin_A)
    np.testing.assert_array_equal(out.z_std, lat.z_std)
    np.testing.assert_array_equal(out.prob, lat.prob)
    np.testing.assert_array_equal(out.extras["x"], lat.extras["x"])


def test_which_models_are_searched():
    assert searchable(_model("target")) and searchable(_model("spatial"))
    assert not searchable(_model("target", zdim=3))  # a 41^3 grid is too large: the refined point stays
    assert not searchable(_model("target", ctf=True, noise="pixel"))
    mce = _model("mce")
    assert not searchable(mce)  # its generator also reads a class code
    lat = Latents.from_pose(np.zeros((2, 1), np.float32), np.ones((2, 1)), np.zeros(2), np.zeros((2, 2)), 1.0)
    assert posterior_latents(mce, np.zeros((2, BOX, BOX), np.float32), lat) is lat
    with pytest.raises(CryovaeError, match="posterior grid"):
        PosteriorGrid(mce, PosteriorGridConfig())
    with pytest.raises(CryovaeError, match="CTF parameters"):
        PosteriorGrid(_model(ctf=True), PosteriorGridConfig(rotations=4, z_points=3)).apply(
            np.zeros((2, BOX, BOX), np.float32), lat)


def test_a_particle_whose_z_lies_beyond_the_grid_keeps_its_refined_values(caplog):
    """Particles made at z = 6, beyond the grid's +-4: the grid can only say "at the edge", so
    they keep the values they came with (and the count is logged); those at z = 0.5 are moved
    to the grid's means."""
    model = _model(noise_sigma=0.005)
    grid = PosteriorGrid(model, PosteriorGridConfig(rotations=36, shift_points=1))
    z = torch.tensor([[6.0], [6.0], [-6.0], [0.5], [0.5], [0.5]])
    theta = torch.linspace(-2.0, 2.0, 6)
    center = torch.zeros(6, 2)
    with torch.no_grad():
        y = model.decode(z, theta, center)[0] + 0.005 * torch.randn(6, BOX, BOX, generator=torch.Generator().manual_seed(2))
    came = Latents.from_pose(np.full((6, 1), 1.0, np.float32), np.full((6, 1), 0.3), np.zeros(6), center.numpy(),
                             model.cfg.pixel_size)
    with caplog.at_level("WARNING", logger="cryovae.inference.posterior"):
        out = grid.apply(y.numpy(), came)
    np.testing.assert_array_equal(out.z_mean[:3], came.z_mean[:3])
    np.testing.assert_array_equal(out.theta[:3], came.theta[:3])
    np.testing.assert_allclose(out.z_mean[3:], 0.5, atol=0.11)  # a grid step is 0.2
    np.testing.assert_allclose(np.angle(np.exp(1j * (out.theta[3:] - theta[3:].numpy()))), 0, atol=math.radians(5))
    assert "3 of 6 particles" in caplog.text
