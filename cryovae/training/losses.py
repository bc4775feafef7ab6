"""ELBO terms of TARGET-VAE (supplement A.1) and spatial-VAE (eq. 3-4), per particle, in nats.

All KL terms are closed forms of Gaussians / categoricals and are pinned against
``torch.distributions`` in tests/test_training_losses.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryovae.models.transforms import rotate_images
from cryovae.models.vae import SpatialVAE, TargetVAE

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


@dataclass
class ElboTerms:
    """Per-particle terms (B,) in nats; ``elbo = recon - kl``; parts of kl in ``kl_parts``."""

    recon: torch.Tensor
    kl: torch.Tensor
    kl_parts: dict[str, torch.Tensor]

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def target_kl(model: TargetVAE, post) -> dict[str, torch.Tensor]:
    """Exact KL of supplement A.1: ``KL_tr + sum_{t,r} q(t,r) (KL_theta + KL_z)``, per particle."""
    log_q = torch.log_softmax(post.logits.flatten(1), 1).reshape(post.logits.shape)
    q = log_q.exp()
    kl_tr = kl_categorical(log_q, model.log_prior_tr()[None])
    kl_th = kl_normal(post.theta_delta, post.theta_logstd, model.theta_prior_std)
    kl_z = kl_normal(post.z_mu, post.z_logstd).sum(1)
    return {"kl_tr": kl_tr, "kl_theta": (q * kl_th).flatten(1).sum(1), "kl_z": (q * kl_z).flatten(1).sum(1)}


def target_elbo(model: TargetVAE, y: torch.Tensor, ctf: torch.Tensor | None = None, *,
                sample: bool = True, generator: torch.Generator | None = None,
                zero_z: bool = False) -> ElboTerms:
    """TARGET-VAE ELBO of images ``y`` (B, box, box); one sample of (t, r), theta, z when
    ``sample`` (Gumbel-softmax, straight-through when ``cfg.gumbel_hard``), else the posterior means at the argmax cell.
    ``zero_z`` feeds z = 0 to the generator (z-delay)."""
    post = model.encode(y)
    if sample:
        weights = gumbel_softmax_sample(post.logits, model.cfg.gumbel_tau, generator, model.cfg.gumbel_hard)
    else:
        weights = model.argmax_onehot(post.logits)
    cell = model.select(post, weights)
    theta, z = cell.theta_mean, cell.z_mu
    if sample:
        theta = theta + cell.theta_logstd.exp() * _randn(theta.shape, theta, generator)
        z = z + cell.z_logstd.exp() * _randn(z.shape, z, generator)
    if zero_z:
        z = torch.zeros_like(z)
    # the encoder reads the centre in the network's own frame; the generator decodes centred poses
    mean, log_sigma = model.decode(z if model.zdim else None, theta,
                                   model.generator.centred_pose(theta, cell.center_px), ctf)
    recon = gaussian_log_likelihood(y.float(), mean.float(), log_sigma.float())
    parts = target_kl(model, post)
    return ElboTerms(recon=recon, kl=sum(parts.values()), kl_parts=parts)


def spatial_elbo(model: SpatialVAE, y: torch.Tensor, ctf: torch.Tensor | None = None, *,
                 sample: bool = True, generator: torch.Generator | None = None,
                 rotate_encoder: bool = False, zero_z: bool = False) -> ElboTerms:
    """spatial-VAE ELBO (eq. 4 with the theta KL of eq. 3).

    rotate_encoder : show the encoder the image turned by a random gamma in [0, 2 pi) and remove
        gamma from its prediction (theta - gamma, centre R(gamma) c'), as in the paper's 5HDB runs.
    zero_z : feed z = 0 to the generator (the paper's z-delay of the first epochs).
    """
    b = y.shape[0]
    if rotate_encoder:
        gamma = torch.rand(b, generator=generator, device=y.device) * (2 * math.pi)
        post = model.encode(rotate_images(y, gamma))
        theta_mu = post.theta_mu - gamma
        if post.center_mu is not None:
            cos, sin = torch.cos(gamma), torch.sin(gamma)
            cx, cy = post.center_mu[:, 0], post.center_mu[:, 1]
            center_mu = torch.stack([cos * cx - sin * cy, sin * cx + cos * cy], 1)
        else:
            center_mu = None
    else:
        post = model.encode(y)
        theta_mu, center_mu = post.theta_mu, post.center_mu
    theta, z, center = theta_mu, post.z_mu, center_mu
    if sample:
        theta = theta + post.theta_logstd.exp() * _randn(theta.shape, theta, generator)
        z = z + post.z_logstd.exp() * _randn(z.shape, z, generator)
        if center is not None:
            center = center + post.center_logstd.exp() * _randn(center.shape, center, generator)
    if center is None:
        center = y.new_zeros(b, 2)
    if zero_z:
        z = torch.zeros_like(z)
    mean, log_sigma = model.decode(z if model.zdim else None, theta, model.generator.centred_pose(theta, center), ctf)
    recon = gaussian_log_likelihood(y.float(), mean.float(), log_sigma.float())
    parts = {"kl_theta": kl_theta_uniform(post.theta_logstd, model.cfg.theta_prior_std),
             "kl_z": kl_normal(post.z_mu, post.z_logstd).sum(1)}
    if post.center_mu is not None:
        parts["kl_t"] = kl_normal(post.center_mu, post.center_logstd, model.cfg.translation_prior_px).sum(1)
    return ElboTerms(recon=recon, kl=sum(parts.values()), kl_parts=parts)


def elbo_terms(model, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
               generator: torch.Generator | None = None, rotate_encoder: bool = False,
               zero_z: bool = False) -> ElboTerms:
    """Dispatch to :func:`target_elbo` or :func:`spatial_elbo`."""
    if isinstance(model, TargetVAE):
        return target_elbo(model, y, ctf, sample=sample, generator=generator, zero_z=zero_z)
    return spatial_elbo(model, y, ctf, sample=sample, generator=generator,
                        rotate_encoder=rotate_encoder, zero_z=zero_z)


__all__ = ["ElboTerms", "elbo_terms", "gaussian_log_likelihood", "kl_categorical", "kl_normal",
           "kl_theta_uniform", "spatial_elbo", "gumbel_softmax_sample", "target_elbo", "target_kl"]
