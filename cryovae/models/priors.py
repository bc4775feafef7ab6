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

import torch

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


class StandardNormalPrior(LatentPrior):
    """``p(z) = N(0, I)`` with a diagonal Gaussian posterior ``N(mu, exp(logstd)^2)``.

    The encoder outputs ``(mu, logstd)``: ``2 zdim`` numbers, means first.
    """

    def __init__(self, zdim: int) -> None:
        self.zdim = int(zdim)
        self.n_outputs = 2 * self.zdim

    def split(self, raw: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logstd = raw.narrow(dim, 0, self.zdim), raw.narrow(dim, self.zdim, self.zdim)
        return mu, logstd

    def kl(self, params, dim: int = 1) -> torch.Tensor:
        mu, logstd = params
        return kl_normal(mu, logstd).sum(dim)

    def sample(self, params, generator: torch.Generator | None) -> torch.Tensor:
        mu, logstd = params
        return mu + logstd.exp() * randn_like(mu.shape, mu, generator)

    def mean(self, params) -> torch.Tensor:
        return params[0]

    def std(self, params) -> torch.Tensor:
        return params[1].exp()

    def var(self, params) -> torch.Tensor:
        return (2 * params[1]).exp()

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.float() ** 2).sum(1)

    def __repr__(self) -> str:
        return f"StandardNormalPrior(zdim={self.zdim})"
