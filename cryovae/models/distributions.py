"""Closed-form densities and divergences shared by the models' ELBOs, per particle, in nats.

Every KL here is a closed form of Gaussians or categoricals, pinned against
``torch.distributions`` in tests/test_training_losses.py.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def kl_normal(mu: torch.Tensor, logstd: torch.Tensor, prior_std: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Elementwise ``KL(N(mu, s^2) || N(0, prior_std^2))`` with ``s = exp(logstd)``."""
    prior_std = torch.as_tensor(prior_std, dtype=mu.dtype, device=mu.device)
    var_ratio = torch.exp(2 * logstd) / prior_std**2
    return 0.5 * (var_ratio + mu**2 / prior_std**2 - 1.0) - logstd + torch.log(prior_std)


def kl_theta_uniform(logstd: torch.Tensor, prior_std: float) -> torch.Tensor:
    """spatial-VAE eq. 3: ``-log s + log s_theta + s^2 / (2 s_theta^2) - 1/2`` (no mean term)."""
    return -logstd + math.log(prior_std) + torch.exp(2 * logstd) / (2 * prior_std**2) - 0.5


def kl_categorical(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``sum q (log q - log p)`` over all but the first dimension; log_p broadcasts."""
    q = log_q.exp()
    return (q * (log_q - log_p)).flatten(1).sum(1)


def gaussian_log_likelihood(y: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``sum_pixels log N(y; mean, sigma^2)`` per image; y, mean (B, H, W); log_sigma broadcasts."""
    log_sigma = log_sigma.expand_as(mean)
    ll = -0.5 * ((y - mean) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * LOG_2PI
    return ll.flatten(1).sum(1)


def gumbel_softmax_sample(logits: torch.Tensor, tau: float, generator: torch.Generator | None,
                          hard: bool = True) -> torch.Tensor:
    """Gumbel-softmax sample over all cells of (B, ...) logits: a one-hot with the relaxed gradient
    (straight-through) when ``hard``, else the relaxed (soft) weights themselves."""
    flat = logits.flatten(1)
    u = torch.rand(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)
    g = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
    soft = torch.softmax((flat + g) / tau, dim=1)
    if not hard:
        return soft.reshape(logits.shape)
    hard = torch.zeros_like(soft).scatter_(1, soft.argmax(1, keepdim=True), 1.0)
    return (hard - soft.detach() + soft).reshape(logits.shape)


def randn_like(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype, from ``generator``."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
