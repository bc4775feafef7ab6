"""The rotation guide (:class:`cryovae.models.RotationGuide`): a 2D alignment's rotations teach
TARGET-VAE's attention the rotation, as a penalty beside the ELBO, never inside it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from test_models_synthetic import blob_particles

from cryovae.models import (
    ROTATION_GUIDE,
    RotationGuide,
    build_model,
    model_class,
    model_config,
    model_names,
    wrap_angle,
)

BOX = 24


def tiny_target(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(model_config("target", box=BOX, zdim=1, group="p8", enc_fields=4, enc_kernel=7,
                                    gen_hidden=32, fourier_features=16))


def test_guide_nll_is_the_guides_density_under_the_encoders_posterior():
    """With all of q on one cell the mixture is one wrapped Gaussian: offset + delta, variance
    s^2 + std^2; a guide half a turn away costs more than one on the cell's mean."""
    model = tiny_target()
    y = torch.from_numpy(blob_particles(BOX, np.array([0.3, -1.0]), np.zeros((2, 2)), noise=0.1))
    post = model.encode(y)
    r, i, j = 3, 4, 5
    logits = torch.full_like(post.logits, -1e4)
    logits[:, r, i, j] = 0.0
    post = dataclasses.replace(post, logits=logits)
    mean = model.offsets[r] + post.theta_delta[:, r, i, j]
    s = post.theta_logstd[:, r, i, j].exp()
    guide = RotationGuide(theta=torch.tensor([0.5, 2.8]), std=torch.tensor([0.1, 0.3]))
    var = s**2 + guide.std**2
    d = wrap_angle(guide.theta - mean)
    expected = 0.5 * d**2 / var + 0.5 * torch.log(2 * math.pi * var)
    torch.testing.assert_close(model.guide_nll(post, guide), expected, rtol=1e-5, atol=1e-5)
    on_mean = model.guide_nll(post, RotationGuide(mean.detach(), guide.std))
    away = model.guide_nll(post, RotationGuide(wrap_angle(mean.detach() + math.pi), guide.std))
    assert (on_mean < away - 10).all()


def test_the_guide_is_trained_but_is_not_part_of_the_elbo():
    model = tiny_target()
    y = torch.from_numpy(blob_particles(BOX, np.linspace(-3, 3, 6), np.zeros((6, 2)), noise=0.1))
    guide = RotationGuide(torch.linspace(-3, 3, 6), torch.full((6,), 0.1))
    plain = model(y, sample=False)
    guided = model(y, sample=False, rotation_guide=guide)
    torch.testing.assert_close(guided.elbo, plain.elbo)
    assert ROTATION_GUIDE not in plain.penalties and ROTATION_GUIDE not in guided.kl_parts
    penalty = guided.penalties[ROTATION_GUIDE]
    torch.testing.assert_close(guided.objective(), plain.objective() - penalty)
    torch.testing.assert_close(guided.objective(2.0), plain.objective(2.0) - penalty)


def _rotation_error_deg(model, y, target) -> float:
    with torch.no_grad():
        theta = model.infer(y).theta
    return float(np.degrees(np.median(np.abs(wrap_angle(theta - target).numpy()))))


def test_the_guide_teaches_the_attention_the_guides_rotations():
    """100 steps on 64 particles with the guide (weight 10) at their rotations turned by 40 degrees
    (a frame of its own): the encoder reads the guide's rotations; the same steps without it do not."""
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, 64)
    y = torch.from_numpy(blob_particles(BOX, theta, np.zeros((64, 2)), noise=0.2, seed=1))
    target = wrap_angle(torch.as_tensor(theta, dtype=torch.float32) + math.radians(40))
    guide = RotationGuide(target, torch.full((64,), math.radians(5)), weight=10.0)
    errors = {}
    for name, g in (("guided", guide), ("plain", None)):
        model = tiny_target(seed=1)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            loss = -model(y, generator=gen, rotation_guide=g).objective().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        errors[name] = _rotation_error_deg(model, y, target)
    assert errors["guided"] < 20, errors
    assert errors["plain"] > 2 * errors["guided"], errors


@pytest.mark.parametrize("name", sorted(model_names()))
def test_every_model_takes_a_guide_and_only_a_guided_one_uses_it(name):
    cls = model_class(name)
    cfg = model_config(name, box=BOX, zdim=1)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    y = torch.from_numpy(blob_particles(BOX, np.array([0.2, 1.0]), np.zeros((2, 2)), noise=0.1))
    terms = model(y, sample=False, rotation_guide=RotationGuide(torch.zeros(2), torch.ones(2)))
    assert (ROTATION_GUIDE in terms.penalties) == cls.rotation_guidance
    assert bool(torch.isfinite(terms.objective()).all())
