"""Priors of the content latent z, as objects.

A :class:`LatentPrior` says how many numbers an encoder outputs for z (per particle, or per
(t, r) cell for TARGET-VAE), how those numbers become the posterior's parameters, and gives
the KL of that posterior to the prior (the ELBO), a reparameterised sample (training), the
log prior density (refinement's MAP objective) and the posterior's mean and std (what the
writers store). A model holds one as ``model.prior``; a Gaussian-mixture or topographic prior
is one new subclass.

Posterior parameters are passed as a tuple ``params`` whose entries carry the latent dimension
on axis ``dim`` (1 by default: (B, zdim, ...)).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

from cryovae.models.distributions import kl_normal, randn_like


class LatentPrior(abc.ABC):
    """p(z) and the family of q(z | y) that goes with it.

    Attributes
    ----------
    zdim : dimensions of z (what the generator reads).
    n_outputs : encoder outputs per particle (or per cell) that :meth:`split` turns into the
        posterior parameters.
    """

    zdim: int
    n_outputs: int

    @abc.abstractmethod
    def split(self, raw: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, ...]:
        """(..., n_outputs on ``dim``, ...) encoder outputs -> posterior parameters."""

    @abc.abstractmethod
    def kl(self, params: tuple[torch.Tensor, ...], dim: int = 1) -> torch.Tensor:
        """``KL(q(z | y) || p(z))`` summed over the latent axis ``dim`` (removed), nats."""

    def kl_dims(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """The KL of each latent dimension, shaped like ``params[0]`` (it sums to :meth:`kl` over
        the latent axis), for a prior under which the dimensions are independent; None
        otherwise (a mixture)."""
        return None

    @abc.abstractmethod
    def sample(self, params: tuple[torch.Tensor, ...], generator: torch.Generator | None) -> torch.Tensor:
        """A reparameterised sample of q(z | y), (B, zdim)."""

    @abc.abstractmethod
    def mean(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The posterior mean, (B, zdim) (the generator's input when not sampling)."""

    @abc.abstractmethod
    def std(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The posterior standard deviation, (B, zdim)."""

    def var(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The posterior variance, (B, zdim)."""
        return self.std(params) ** 2

    @abc.abstractmethod
    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` per particle up to a constant independent of z, (B,); z (B, zdim)."""

    def summary(self, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z | y), each (B, zdim): what latents.npz and the star hold."""
        return self.mean(params), self.std(params)


class DiagonalGaussianPosterior(LatentPrior):
    """The posterior family both priors here use: ``q(z | y) = N(mu, diag exp(logstd)^2)``, the
    encoder giving ``(mu, logstd)``, ``2 zdim`` numbers, means first."""

    zdim: int

    def split(self, raw: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return raw.narrow(dim, 0, self.zdim), raw.narrow(dim, self.zdim, self.zdim)

    def sample(self, params, generator: torch.Generator | None) -> torch.Tensor:
        mu, logstd = params
        return mu + logstd.exp() * randn_like(mu.shape, mu, generator)

    def mean(self, params) -> torch.Tensor:
        return params[0]

    def std(self, params) -> torch.Tensor:
        return params[1].exp()

    def var(self, params) -> torch.Tensor:
        return (2 * params[1]).exp()


class StandardNormalPrior(DiagonalGaussianPosterior):
    """``p(z) = N(0, I)`` with a diagonal Gaussian posterior ``N(mu, exp(logstd)^2)``.

    The encoder outputs ``(mu, logstd)``: ``2 zdim`` numbers, means first.
    """

    def __init__(self, zdim: int) -> None:
        self.zdim = int(zdim)
        self.n_outputs = 2 * self.zdim

    def kl(self, params, dim: int = 1) -> torch.Tensor:
        return self.kl_dims(params).sum(dim)

    def kl_dims(self, params) -> torch.Tensor:
        mu, logstd = params
        return kl_normal(mu, logstd)

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.float() ** 2).sum(1)

    def __repr__(self) -> str:
        return f"StandardNormalPrior(zdim={self.zdim})"


class GaussianMixturePrior(DiagonalGaussianPosterior, nn.Module):
    """``p(z) = sum_k pi_k N(z; mu_k, diag s_k^2)`` with learnable ``mu_k`` and ``s_k`` and fixed,
    equal weights ``pi_k = 1/K`` (MCE-VAE's equi-mixture), and a diagonal Gaussian posterior
    ``N(mu, exp(logstd)^2)`` (the encoder outputs ``(mu, logstd)``, means first, as for
    :class:`StandardNormalPrior`).

    It is an ``nn.Module`` too, so a model that holds it as ``model.prior`` trains and saves its
    log stds (``prior.log_stds``, (K, zdim), learnable, starting at 0) and its means
    (``prior.means``, (K, zdim): a parameter with ``learn_means``, else a fixed buffer).

    The means lie ``spacing`` prior units apart: on a line for zdim 1, else on a circle in the
    first two dimensions (neighbours ``spacing`` apart; two components: +-spacing/2 on z1).

    Parameters
    ----------
    zdim : dimensions of z (>= 1).  n_components : K (>= 1).  spacing : distance between
        neighbouring means.  learn_means : train the means too.
    """

    def __init__(self, zdim: int, n_components: int, spacing: float = 4.0, learn_means: bool = True) -> None:
        nn.Module.__init__(self)
        self.zdim = int(zdim)
        self.n_outputs = 2 * self.zdim
        self.n_components = k = int(n_components)
        means = torch.zeros(k, self.zdim)
        if self.zdim == 1 or k <= 2:
            means[:, 0] = spacing * (torch.arange(k, dtype=torch.float32) - (k - 1) / 2)
        else:
            radius = spacing / (2 * math.sin(math.pi / k))
            angle = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
            means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
        if learn_means:
            self.means = nn.Parameter(means)
        else:
            self.register_buffer("means", means)
        self.log_stds = nn.Parameter(torch.zeros(k, self.zdim))

    @property
    def log_weights(self) -> torch.Tensor:
        """(K,) ``log pi_k`` (equal weights)."""
        return torch.full((self.n_components,), -math.log(self.n_components), device=self.means.device)

    def component_kl(self, params, dim: int = 1) -> torch.Tensor:
        """``KL(q(z | y) || N(mu_k, s_k^2))`` for every component: (..., K), the latent axis
        ``dim`` removed and the component axis last."""
        mu, logstd = (p.movedim(dim, -1).float()[..., None, :] for p in params)  # (..., 1, zdim)
        m, ls = self.means.float(), self.log_stds.float()  # (K, zdim)
        kl = ls - logstd + 0.5 * (torch.exp(2 * (logstd - ls)) + ((mu - m) * torch.exp(-ls)) ** 2) - 0.5
        return kl.sum(-1)

    def offset_kl(self, params) -> torch.Tensor:
        """``KL(N(mu_k + m, s^2) || N(mu_k, s_k^2)) = KL(N(m, s^2) || N(0, s_k^2))`` for a
        posterior given as the offset ``(m, log s)`` (B, zdim) from the component's mean: (B, K)."""
        m, logstd = (p.float()[:, None, :] for p in params)
        ls = self.log_stds.float()
        return (ls - logstd + 0.5 * (torch.exp(2 * (logstd - ls)) + (m * torch.exp(-ls)) ** 2) - 0.5).sum(-1)

    def kl(self, params, dim: int = 1) -> torch.Tensor:
        """An upper bound of ``KL(q || p)`` (no closed form for a mixture): the tightest bound of
        MCE-VAE eq. 13 over the posterior's class weights, ``-log sum_k pi_k exp(-KL_k)`` (eq. 14
        is the case of weights equal to ``pi``)."""
        return -torch.logsumexp(self.log_weights - self.component_kl(params, dim), dim=-1)

    def component_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log pi_k + log N(z; mu_k, s_k^2)`` up to the constant ``-zdim/2 log 2 pi``: (B, K)."""
        d = (z.float()[:, None, :] - self.means.float()) * torch.exp(-self.log_stds.float())
        return self.log_weights - 0.5 * (d**2).sum(-1) - self.log_stds.float().sum(-1)

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_density(z), dim=-1)

    def log_responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(k | z)`` under the prior, (B, K): which component z belongs to."""
        return torch.log_softmax(self.component_log_density(z), dim=-1)

    def __repr__(self) -> str:
        return f"GaussianMixturePrior(zdim={self.zdim}, n_components={self.n_components})"
