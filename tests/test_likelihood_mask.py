"""The likelihood mask: only the particle's disc is rendered and scored, measured from the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_models_synthetic import blob_particles

from cryovae.data import signal_radius
from cryovae.models import ModelConfig, build_model
from cryovae.models.base import likelihood_pixels
from cryovae.models.distributions import gaussian_log_likelihood
from cryovae.models.registry import config_from_dict

BOX = 24


def _model(kind="target", **kw):
    torch.manual_seed(0)
    own = {"target": dict(group="p4", enc_fields=2, enc_kernel=7), "spatial": dict(enc_hidden=(16,))}[kind]
    cfg = ModelConfig.for_model(kind, box=BOX, zdim=2, gen_hidden=16, fourier_features=8, **own, **kw)
    return build_model(cfg).eval()


def test_mask_pixels_are_the_disc_about_the_box_centre():
    idx = likelihood_pixels(BOX, 0.5)
    yy, xx = np.divmod(idx.numpy(), BOX)
    r = np.hypot(xx - BOX // 2, yy - BOX // 2)
    assert r.max() <= 6 and len(idx) == int((np.hypot(*np.indices((BOX, BOX)) - BOX // 2) <= 6).sum())
    assert likelihood_pixels(BOX, 0) is None and likelihood_pixels(BOX, 1.5) is None  # every pixel


@pytest.mark.parametrize("kind", ["target", "spatial"])
@pytest.mark.parametrize("noise", ["global", "pixel"])
def test_masked_likelihood_scores_the_mask_pixels_of_the_full_render(kind, noise):
    """Rendering only the mask's pixels gives the log likelihood of those pixels of the full
    image; mask 0 scores every pixel; a CTF model renders the whole box, then masks."""
    model = _model(kind, likelihood_mask=0.7, noise=noise)
    g = torch.Generator().manual_seed(1)
    y, z = torch.randn(3, BOX, BOX, generator=g), torch.randn(3, 2, generator=g)
    theta, c = torch.tensor([0.3, -2.0, 1.0]), torch.randn(3, 2, generator=g)
    with torch.no_grad():
        ll = model.log_likelihood(y, z, theta, c)
        mean, log_sigma = model.decode(z, theta, c)
        idx = model.likelihood_pixels
        ls = log_sigma.flatten(1)[:, idx] if log_sigma.dim() else log_sigma
        ref = gaussian_log_likelihood(y.flatten(1)[:, idx], mean.flatten(1)[:, idx], ls)
        torch.testing.assert_close(ll, ref, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(mean.flatten(1)[:, model.likelihood_disc == 0].numpy(), 0.0)  # 0 outside
        whole = _model(kind, likelihood_mask=0.0, noise=noise)
        whole.load_state_dict(model.state_dict())
        full = gaussian_log_likelihood(y, *whole.decode(z, theta, c))
        torch.testing.assert_close(whole.log_likelihood(y, z, theta, c), full, rtol=1e-5, atol=1e-3)
        assert not torch.allclose(ll, full)


def test_a_run_written_before_the_mask_loads_without_it():
    """config.yaml of a run from before the option: the model it was trained as (no mask)."""
    d = _model().cfg.to_dict()
    d.pop("likelihood_mask")
    assert config_from_dict(d).likelihood_mask == 0.0
    assert build_model(config_from_dict(d)).likelihood_pixels is None


def test_unresolved_mask_and_prior_build_the_inscribed_disc_and_box_over_20():
    cfg = ModelConfig.for_model("target", box=40)
    assert cfg.likelihood_mask is None and cfg.translation_sigma_px == 2.0
    assert len(build_model(cfg).likelihood_pixels) == len(likelihood_pixels(40, 1.0))
    assert ModelConfig.for_model("target", box=40, translation_prior_px=3.0).translation_sigma_px == 3.0


def test_signal_radius_finds_where_particles_of_known_size_end():
    """The test blob particles, centres spread by 1 px, at SNR ~0.1: the signal ends within 2 px
    of where it ends in the noise-free particles (whose excess variance falls below 2 % of its
    peak there, and is 0 beyond); pure noise has no signal and keeps the inscribed disc."""
    rng = np.random.default_rng(0)
    n, box = 3000, 40
    theta = rng.uniform(-math.pi, math.pi, n)
    c = rng.normal(0, 1.0, (n, 2))
    clean = blob_particles(box, theta, c)
    clean /= clean.std()
    reach = signal_radius(clean).radius_px
    assert 6 < reach < 18
    noisy = clean + 3.0 * rng.standard_normal(clean.shape).astype(np.float32)
    extent = signal_radius(noisy)
    assert extent.radius_px is not None and abs(extent.radius_px - reach) <= 2, (extent.radius_px, reach)
    assert extent.mask_fraction(box) == pytest.approx(min(1.0, max(0.5, (extent.radius_px + 2) / 20)))
    none = signal_radius(rng.standard_normal((2000, box, box)).astype(np.float32))
    assert none.radius_px is None and none.mask_fraction(box) == 1.0
    assert none.noise_variance == pytest.approx(1.0, rel=0.02)
