"""Each KL / likelihood term against its closed form in torch.distributions."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from cryovae.models import ModelConfig, build_model
from cryovae.models.distributions import (
    gaussian_log_likelihood,
    gumbel_softmax_sample,
    kl_categorical,
    kl_normal,
    kl_theta_uniform,
)
from cryovae.models.target_encoder import GroupPosterior


def test_kl_normal_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logstd = torch.randn(50, generator=g) * 2, torch.randn(50, generator=g)
    for prior in (1.0, math.pi / 8, 4.0):
        ref = kl_divergence(Normal(mu, logstd.exp()), Normal(torch.zeros(50), torch.full((50,), prior)))
        torch.testing.assert_close(kl_normal(mu, logstd, prior), ref, rtol=1e-5, atol=1e-5)


def test_spatial_vae_theta_kl_is_the_kl_with_the_mean_removed():
    """spatial-VAE eq. 3 == KL(N(mu, s^2) || N(mu, s_theta^2)) for any mu (no mean penalty)."""
    g = torch.Generator().manual_seed(1)
    mu, logstd = torch.randn(40, generator=g) * 3, torch.randn(40, generator=g)
    ref = kl_divergence(Normal(mu, logstd.exp()), Normal(mu, torch.full((40,), math.pi)))
    torch.testing.assert_close(kl_theta_uniform(logstd, math.pi), ref, rtol=1e-5, atol=1e-5)


def test_kl_categorical_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    logits_q, logits_p = torch.randn(6, 30, generator=g), torch.randn(30, generator=g)
    log_q, log_p = torch.log_softmax(logits_q, 1), torch.log_softmax(logits_p, 0)
    ref = kl_divergence(Categorical(logits=logits_q), Categorical(logits=logits_p.expand(6, -1)))
    torch.testing.assert_close(kl_categorical(log_q, log_p[None]), ref, rtol=1e-5, atol=1e-5)


def test_gaussian_log_likelihood_matches_normal_log_prob():
    g = torch.Generator().manual_seed(3)
    y, mean, ls = (torch.randn(3, 5, 5, generator=g) for _ in range(3))
    ref = Normal(mean, ls.exp()).log_prob(y).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_likelihood(y, mean, ls), ref, rtol=1e-5, atol=1e-4)
    ref_global = Normal(mean, torch.tensor(0.3).exp()).log_prob(y).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_likelihood(y, mean, torch.tensor(0.3)), ref_global, rtol=1e-5, atol=1e-4)


def test_target_kl_is_supplement_a1_computed_cell_by_cell():
    """KL_tr + sum q(t,r)(KL_theta + KL_z), with theta | r ~ N(offset_r, (pi/N)^2) on the absolute
    angle and p(t) a Gaussian normalised over the grid, recomputed with torch.distributions."""
    torch.manual_seed(0)
    cfg = ModelConfig.for_model("target", box=9, group="p4", zdim=2, enc_fields=2, enc_kernel=3,
                                translation_prior_px=2.0, gen_hidden=8, fourier_features=4)
    model = build_model(cfg)
    b, n, h, w = 2, 4, 9, 9
    g = torch.Generator().manual_seed(4)
    post = GroupPosterior(logits=torch.randn(b, n, h, w, generator=g) * 2,
                          theta_delta=torch.randn(b, n, h, w, generator=g) * 0.3,
                          theta_logstd=torch.randn(b, n, h, w, generator=g) * 0.5 - 1,
                          z_mu=torch.randn(b, 2, n, h, w, generator=g),
                          z_logstd=torch.randn(b, 2, n, h, w, generator=g) * 0.3)
    parts = model.kl_terms(post)
    total = sum(parts.values())

    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    log_pt = Normal(0.0, 2.0).log_prob(torch.tensor(xx, dtype=torch.float64)) + Normal(0.0, 2.0).log_prob(
        torch.tensor(yy, dtype=torch.float64))
    log_pt = log_pt - torch.logsumexp(log_pt.flatten(), 0)
    offsets = [math.remainder(2 * math.pi * r / n, 2 * math.pi) for r in range(n)]
    for i in range(b):
        q = torch.softmax(post.logits[i].flatten().double(), 0).reshape(n, h, w)
        ref = 0.0
        for r in range(n):
            for yi in range(h):
                for xi in range(w):
                    qc = q[r, yi, xi]
                    log_p = log_pt[yi, xi] - math.log(n)
                    ref += qc * (torch.log(qc) - log_p)
                    mean = post.theta_delta[i, r, yi, xi].double() + offsets[r]
                    kl_th = kl_divergence(Normal(mean, post.theta_logstd[i, r, yi, xi].double().exp()),
                                          Normal(torch.tensor(offsets[r], dtype=torch.float64),
                                                 torch.tensor(math.pi / n, dtype=torch.float64)))
                    kl_z = kl_divergence(Normal(post.z_mu[i, :, r, yi, xi].double(),
                                                post.z_logstd[i, :, r, yi, xi].double().exp()),
                                         Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))).sum()
                    ref += qc * (kl_th + kl_z)
        assert abs(float(total[i]) - float(ref)) < 1e-3 * max(1.0, abs(float(ref)))
    # the KL of z split over its dimensions: sum_{t,r} q(t,r) KL(q(z_d | t,r) || N(0, 1)), each d
    parts_again, dims = model.kl_with_dims(post)
    q = torch.softmax(post.logits.flatten(1).double(), 1).reshape(b, 1, n, h, w)
    ref_dims = (q * kl_divergence(Normal(post.z_mu.double(), post.z_logstd.double().exp()),
                                  Normal(0.0, 1.0))).flatten(2).sum(2)
    torch.testing.assert_close(dims.double(), ref_dims, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dims.sum(1), parts_again["kl_z"])


def test_gumbel_softmax_samples_follow_q_and_pass_gradients():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]], requires_grad=True)
    g = torch.Generator().manual_seed(5)
    hard = torch.cat([gumbel_softmax_sample(logits, 1.0, g, hard=True) for _ in range(4000)])
    assert torch.all((hard == 0) | (hard == 1)) and torch.all(hard.sum(1) == 1)
    freq = hard.detach().mean(0)
    torch.testing.assert_close(freq, torch.softmax(logits.detach(), 1)[0], atol=0.03, rtol=0)
    (hard * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = gumbel_softmax_sample(logits, 1.0, g, hard=False)
    assert torch.all(soft > 0) and abs(float(soft.sum()) - 1) < 1e-5


def test_free_bits_count_the_batch_kl_of_z_as_at_least_the_free_nats():
    """LossTerms.objective: the ELBO when 0 (or without kl_z); with free nats the batch-mean KL
    of z below them costs nothing (no gradient), above them the ELBO's own."""
    from cryovae.models import LossTerms

    kz = torch.tensor([0.2, 0.4], requires_grad=True)
    other = torch.tensor([1.0, 2.0])
    terms = LossTerms(recon=torch.tensor([-10.0, -20.0]), kl=kz + other, kl_parts={"kl_z": kz, "kl_tr": other})
    assert torch.equal(terms.objective(0.0), terms.elbo)
    free = terms.objective(1.0)
    torch.testing.assert_close(free, torch.tensor([-10.0 - 1.0 - 1.0, -20.0 - 2.0 - 1.0]))
    free.sum().backward()
    assert torch.count_nonzero(kz.grad) == 0
    kz.grad = None
    above = terms.objective(0.1)  # mean 0.3 > 0.1: the batch's ELBO (each particle's KL of z as the mean)
    torch.testing.assert_close(above.sum(), terms.elbo.sum())
    above.sum().backward()
    torch.testing.assert_close(kz.grad, torch.full((2,), -1.0))
    no_z = LossTerms(recon=torch.zeros(2), kl=other, kl_parts={"kl_tr": other})
    assert torch.equal(no_z.objective(5.0), no_z.elbo)


def test_free_bits_per_dimension_keep_one_dimension_from_taking_the_others_share():
    """With kl_z_dims, each dimension's batch-mean KL counts as at least free_nats / zdim: a
    dimension below its share costs nothing, one above pays the ELBO's own price even when the
    total is below free_nats (counted over the total, no dimension would pay)."""
    from cryovae.models import LossTerms

    dims = torch.tensor([[0.1, 1.5], [0.3, 0.9]], requires_grad=True)  # batch means 0.2 and 1.2
    kz = dims.sum(1)
    other = torch.tensor([1.0, 2.0])
    terms = LossTerms(recon=torch.tensor([-10.0, -20.0]), kl=kz + other, kl_parts={"kl_z": kz, "kl_tr": other},
                      kl_z_dims=dims)
    out = terms.objective(2.0)  # total mean 1.4 < 2, but dimension 1 (1.2) is above its 1.0
    torch.testing.assert_close(out, terms.elbo + kz - (1.0 + 1.2))
    out.sum().backward()
    torch.testing.assert_close(dims.grad, torch.tensor([[0.0, -1.0], [0.0, -1.0]]))
    total = LossTerms(recon=terms.recon, kl=terms.kl.detach(), kl_parts={"kl_z": kz.detach(), "kl_tr": other})
    torch.testing.assert_close(total.objective(2.0), terms.elbo.detach() + kz.detach() - 2.0)


def test_free_nats_default_is_the_models_and_scales_with_zdim():
    from cryovae.models import build_model
    from cryovae.runs import TrainConfig
    from cryovae.training.loop import free_nats

    target = build_model(ModelConfig.for_model("target", box=16, zdim=3, enc_fields=2, enc_kernel=5))
    spatial = build_model(ModelConfig.for_model("spatial", box=16, zdim=3))
    assert free_nats(target, TrainConfig()) == 3.0 and free_nats(spatial, TrainConfig()) == 0.0
    assert free_nats(target, TrainConfig(free_nats=0.5)) == 1.5
