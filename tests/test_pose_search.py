"""The exhaustive class x rotation x shift search (cryovae.models.pose_search) and MCE-VAE's use of
it: the FFT scores are the Gaussian log likelihoods of every shifted template (with and without a
CTF), and the search recovers the known class, rotation and centre of rendered particles, in the
frame of the generator's template centre."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryovae.models import build_model, compute_ctf, model_config
from cryovae.models.ctf import apply_ctf
from cryovae.models.distributions import gaussian_log_likelihood
from cryovae.models.pose_search import (
    rotation_grid,
    shift_grid,
    shift_log_prior,
    template_log_likelihoods,
)
from cryovae.models.registry import config_from_dict


def _shifted(template: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``T(p - s)``: the template moved by ``s = (dx, dy)`` pixels (x along columns), circularly."""
    return torch.roll(template, shifts=(dy, dx), dims=(-2, -1))


@pytest.mark.parametrize("with_ctf", [False, True])
def test_scores_are_the_gaussian_log_likelihood_of_every_shifted_template(with_ctf):
    torch.manual_seed(0)
    n, sigma2 = 12, 0.7
    y = torch.randn(3, n, n)
    templates = torch.randn(2, n, n)
    ctf = None
    if with_ctf:
        params = torch.tensor([[12000.0, 10000.0, 40.0, 300.0, 2.7, 0.1, 0.0]]).repeat(3, 1)
        params[:, 0] += torch.arange(3) * 4000.0
        ctf = compute_ctf(params, n, 3.0)
    scores = template_log_likelihoods(y, templates, sigma2, ctf)
    assert scores.shape == (3, 2, n, n)
    shifts = shift_grid(n)
    log_sigma = torch.tensor(0.5 * math.log(sigma2))
    for b in range(3):
        diffs = []
        for t in range(2):
            for row, col in ((0, 0), (1, 3), (n - 2, 5), (7, n - 1)):
                dx, dy = (int(v) for v in shifts[row, col])
                model = _shifted(templates[t], dx, dy)[None]
                if ctf is not None:
                    model = apply_ctf(model, ctf[b: b + 1])
                exact = gaussian_log_likelihood(y[b: b + 1], model, log_sigma)[0]
                diffs.append(float(scores[b, t, row, col] - exact))
        # the same constant of y_b alone for every template and shift: the posterior is exact
        np.testing.assert_allclose(diffs, diffs[0], atol=1e-3)


def test_grids_and_the_shift_prior():
    assert shift_grid(5)[0, 4].tolist() == [-1.0, 0.0] and shift_grid(5)[3, 0].tolist() == [0.0, -2.0]
    assert shift_grid(6)[0, 3].tolist() == [-3.0, 0.0]
    np.testing.assert_allclose(rotation_grid(4).numpy(), [0, math.pi / 2, math.pi, 3 * math.pi / 2], atol=1e-6)
    lp = shift_log_prior(16, 2.0)
    assert float(torch.logsumexp(lp.flatten(), 0)) == pytest.approx(0.0, abs=1e-5)
    assert lp[0, 0] == lp.max() and lp[0, 1] == lp[1, 0] == lp[0, -1]


def _model(**kw):
    torch.manual_seed(0)
    sizes = dict(box=24, classes=3, zdim=2, gen_hidden=32, gen_layers=2, fourier_features=16, enc_channels=4,
                 head_hidden=16, pose_search=36, translation_prior_px=2.0)
    return build_model(model_config("mce", **{**sizes, **kw})).eval()


@pytest.mark.parametrize("template_center", [(0.0, 0.0), (1.5, -1.0)])
def test_search_recovers_the_class_rotation_and_centre_of_rendered_particles(template_center):
    # particles rendered by the model itself at known classes and poses (in the frame of the
    # generator's template centre, what infer reports), with noise: infer reads them back
    model = _model()
    model.generator.template_center.copy_(torch.tensor(template_center))
    gen = torch.Generator().manual_seed(1)
    b = 30
    cls = torch.arange(b) % 3
    theta = torch.rand(b, generator=gen) * 2 * math.pi
    center = torch.randn(b, 2, generator=gen) * 1.5
    with torch.no_grad():
        clean, _ = model.decode_class(torch.zeros(b, 2), cls, theta, center)
        noise_std = 0.3 * float(clean.std())
        model.log_sigma.fill_(math.log(noise_std))
        y = clean + noise_std * torch.randn(clean.shape, generator=gen)
    log_q = model.search_log_posterior(y)
    assert log_q.shape == (b, 3, 36, 24, 24)
    np.testing.assert_allclose(torch.logsumexp(log_q.flatten(1), 1).numpy(), 0.0, atol=5e-3)  # float32 of peaked logits
    enc = model.infer(y)
    assert (enc.extras["class"] - 1).tolist() == cls.tolist()
    assert (enc.extras["class_prob"] > 0.5).all()
    err = torch.remainder(enc.theta - theta + math.pi, 2 * math.pi) - math.pi
    assert err.abs().max() < math.radians(5 + 1)  # half the 10-degree grid step, and a little
    assert (enc.center_px - center).abs().max() < 0.75  # integer shifts, posterior mean


def test_search_objective_parts_and_the_class_balance_reaches_the_templates():
    model = _model().train()
    y = torch.randn(8, 24, 24)
    terms = model(y, generator=torch.Generator().manual_seed(0))
    assert set(terms.kl_parts) == {"kl_search", "kl_z", "class_balance", "invariance", "pose_distillation"}
    assert torch.isfinite(terms.elbo).all() and (terms.kl_parts["kl_search"] >= -1e-4).all()
    # the balance term alone has a gradient into the generator (through the search's class posterior)
    model.zero_grad()
    terms.kl_parts["class_balance"].sum().backward(retain_graph=True)
    assert model.generator.z_in.weight.grad.abs().sum() > 0
    # distillation: the encoder's tau is pulled to the searched pose
    model.zero_grad()
    terms.kl_parts["pose_distillation"].sum().backward()
    assert model.encoder.tau_head[-1].weight.grad.abs().sum() > 0


def test_pose_distillation_is_zero_at_the_encoders_own_pose():
    from cryovae.models.mce_vae import pose_from_se2, se2_exp

    model = _model()
    post = model.encode(torch.randn(5, 24, 24))
    theta, center = pose_from_se2(se2_exp(post.tau_mu))
    np.testing.assert_allclose(model.pose_distillation(post, theta, center).detach().numpy(), 0.0, atol=1e-4)
    # a rotation error alone costs 4 (1 - cos dtheta) (the centre's column turns with it: compare at c = 0)
    zero = torch.zeros_like(center)
    at_zero = model.pose_distillation(post, theta, zero)
    np.testing.assert_allclose((model.pose_distillation(post, theta + 0.5, zero) - at_zero).detach().numpy(),
                               4 * (1 - math.cos(0.5)), atol=1e-4)


def test_runs_written_before_the_search_load_without_it():
    d = model_config("mce", box=24).to_dict()
    d.pop("pose_search")
    assert config_from_dict(d).pose_search == 0
    with pytest.raises(Exception, match="--pose-search"):
        model_config("mce", box=24, pose_search=2).validate()


def test_infer_in_chunks_equals_infer_at_once(monkeypatch):
    import cryovae.models.mce_vae as mce

    model = _model()
    y = torch.randn(7, 24, 24)
    whole = model.infer(y)
    monkeypatch.setattr(mce, "SEARCH_CHUNK_VALUES", 3 * 36 * 24 * 24 * 2)  # 2 particles a chunk
    chunked = model.infer(y)
    for a, b in ((whole.theta, chunked.theta), (whole.center_px, chunked.center_px), (whole.z_mean, chunked.z_mean),
                 (whole.extras["class_prob"], chunked.extras["class_prob"])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert whole.extras["class"].tolist() == chunked.extras["class"].tolist()


def test_encoding_a_ctf_run_searches_with_each_particles_ctf():
    # particles rendered by a --ctf model with their own CTFs (defocus 1-3 um, astigmatic): the
    # encoding that is given their CTF parameters (what train and encode pass) reads back class,
    # rotation and centre, and is the model's infer with the CTF
    from cryovae.inference.encode import encode_images

    model = _model(ctf=True, pixel_size=4.0)
    gen = torch.Generator().manual_seed(2)
    b = 24
    cls = torch.arange(b) % 3
    theta = torch.rand(b, generator=gen) * 2 * math.pi
    center = torch.randn(b, 2, generator=gen)
    params = torch.tensor([[15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0]]).repeat(b, 1)
    params[:, 0] = 10000.0 + 20000.0 * torch.rand(b, generator=gen)
    params[:, 1] = params[:, 0] - 1500.0
    ctf = compute_ctf(params, 24, 4.0)
    with torch.no_grad():
        clean, _ = model.decode_class(torch.zeros(b, 2), cls, theta, center, ctf)
        noise_std = 0.3 * float(clean.std())
        model.log_sigma.fill_(math.log(noise_std))
        y = clean + noise_std * torch.randn(clean.shape, generator=gen)
    lat = encode_images(model, y.numpy(), 4.0, ctf_params=params.numpy())
    assert (lat.extras["class"] - 1).tolist() == cls.tolist()
    err = np.angle(np.exp(1j * (lat.theta - theta.numpy())))
    assert np.abs(err).max() < math.radians(6)
    with torch.no_grad():
        direct = model.infer(y, ctf)
    np.testing.assert_allclose(lat.extras["class_prob"], direct.extras["class_prob"].numpy(), atol=1e-6)
    # without the CTF the same particles are read with less certainty: the CTF did reach the search
    blind = encode_images(model, y.numpy(), 4.0)
    assert lat.extras["class_prob"].mean() > blind.extras["class_prob"].mean()


def test_the_z_delay_reads_a_ctf_runs_classes_with_each_particles_ctf():
    # the settling rule's reading of the classes and rotations is the one infer gives with the CTF
    from cryovae.data import ParticleDataset
    from cryovae.training.loop import inferred_poses

    model = _model(ctf=True, pixel_size=4.0)
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(6, 24, 24, generator=gen)
    params = torch.tensor([[15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0]]).repeat(6, 1)
    params[:, 0] = 10000.0 + 20000.0 * torch.rand(6, generator=gen)
    theta, classes = inferred_poses(model, ParticleDataset(y.numpy(), params.numpy()), np.arange(6), 4,
                                    torch.device("cpu"))
    with torch.no_grad():
        with_ctf = model.infer(y, compute_ctf(params, 24, 4.0))
        blind = model.infer(y)
    np.testing.assert_allclose(theta, with_ctf.theta.numpy(), atol=1e-6)
    assert classes.tolist() == with_ctf.extras["class"].tolist()
    assert not np.allclose(theta, blind.theta.numpy(), atol=1e-3)  # the CTF changes the reading
