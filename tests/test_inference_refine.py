"""Per-particle refinement of pose and z climbs the trained model's log posterior to the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryovae.errors import CryovaeError
from cryovae.inference import Latents, RefineConfig, refine_latents
from cryovae.inference.refine import refine_batch
from cryovae.models import ModelConfig, build_model

BOX = 21
NOISE = 0.05


def _model(kind: str):
    torch.manual_seed(0)
    own = {"target": dict(group="p4", enc_fields=2, enc_kernel=7), "spatial": dict(enc_hidden=(32,))}[kind]
    cfg = ModelConfig.for_model(kind, box=BOX, zdim=1, gen_hidden=32, fourier_features=16,
                                translation_prior_px=2.0, **own)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.log_sigma.fill_(math.log(NOISE))
    return model


def _particles(model, n=48, seed=1):
    """Images drawn from the model itself at known (z, theta, t), with its own noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    theta = (torch.rand(n, generator=g) * 2 - 1) * math.pi
    center = torch.randn(n, 2, generator=g)
    with torch.no_grad():
        mean, _ = model.decode(z, theta, center)
    return mean + NOISE * torch.randn(mean.shape, generator=g), z, theta, center


@pytest.mark.parametrize("kind", ["target", "spatial"])
def test_refinement_moves_a_perturbed_start_to_the_generating_pose_and_z(kind, device):
    """Start 0.6 (z), 0.15 rad (8.6 deg) and 0.8 px off the truth; 80 steps end within a fifth of
    that on the median particle, and no particle's log posterior ends lower than it started; on
    every available device."""
    torch.set_num_threads(2)
    model = _model(kind)
    y, z, theta, center = _particles(model)
    model = model.to(device)
    y, z, theta, center = (t.to(device) for t in (y, z, theta, center))
    g = torch.Generator().manual_seed(2)
    sign = lambda shape: (torch.randint(0, 2, shape, generator=g).float() * 2 - 1).to(device)  # noqa: E731
    z0, th0, c0 = z + 0.6 * sign(z.shape), theta + 0.15 * sign(theta.shape), center + 0.8 * sign(center.shape)
    zr, thr, cr, start, end = refine_batch(model, y, z0, th0, c0, RefineConfig(steps=80))
    assert torch.all(end >= start)
    dth = torch.remainder(thr - theta + math.pi, 2 * math.pi) - math.pi
    assert float((zr - z).abs().median()) < 0.6 / 5
    assert float(dth.abs().median()) < 0.15 / 5
    assert float((cr - center).norm(dim=1).median()) < 0.8 * math.sqrt(2) / 5
    with torch.no_grad():  # the truth is (about) where the objective peaks: refinement got close to it
        at_truth = model.log_posterior(y, z, theta, center)
    assert float((at_truth - end).median()) < 5.0


def test_refine_latents_round_trips_the_pose_convention_and_keeps_the_encoder_extras():
    model = _model("target")
    y, z, theta, center = _particles(model, n=10)
    lat = Latents.from_pose(z.numpy(), np.full((10, 1), 0.3), theta.numpy(), center.numpy(), model.cfg.pixel_size,
                            prob=np.linspace(0.1, 1, 10))
    out = refine_latents(model, y.numpy(), lat, RefineConfig(steps=5, batch_size=4))
    again = Latents.from_pose(out.z_mean, out.z_std, out.theta, out.center_px, model.cfg.pixel_size, out.prob)
    np.testing.assert_allclose(out.psi_deg, again.psi_deg)  # psi / origin follow the refined pose
    np.testing.assert_allclose(out.origin_A, again.origin_A)
    assert np.all(np.abs(out.theta) <= math.pi)
    np.testing.assert_array_equal(out.z_std, lat.z_std)
    np.testing.assert_array_equal(out.prob, lat.prob)
    assert refine_latents(model, y.numpy(), lat, RefineConfig(steps=0)) is lat


def test_refinement_of_a_ctf_model_needs_the_ctf_and_steps_must_be_non_negative():
    cfg = ModelConfig.for_model("target", box=BOX, group="p4", enc_fields=2, enc_kernel=7, gen_hidden=16,
                                fourier_features=8, ctf=True)
    model = build_model(cfg).eval()
    lat = Latents.from_pose(np.zeros((2, 1)), np.ones((2, 1)), np.zeros(2), np.zeros((2, 2)), 1.0)
    with pytest.raises(CryovaeError, match="CTF"):
        refine_latents(model, np.zeros((2, BOX, BOX), np.float32), lat, RefineConfig(steps=2))
    with pytest.raises(CryovaeError, match="refine-steps"):
        RefineConfig(steps=-1).validate()
