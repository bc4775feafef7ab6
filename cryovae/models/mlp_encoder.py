"""spatial-VAE inference network: a tanh MLP on the flattened image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cryovae.models.priors import LatentPrior


@dataclass
class SpatialPosterior:
    """Gaussian posterior parameters of spatial-VAE (shapes for a batch of B images).

    z_mu, z_logstd : (B, zdim).  theta_mu, theta_logstd : (B,) radians.
    center_mu, center_logstd : (B, 2) pixels, or None without translation inference.
    """

    z_mu: torch.Tensor
    z_logstd: torch.Tensor
    theta_mu: torch.Tensor
    theta_logstd: torch.Tensor
    center_mu: torch.Tensor | None
    center_logstd: torch.Tensor | None


class MLPEncoder(nn.Module):
    """(B, box, box) -> :class:`SpatialPosterior` through ``Linear + tanh`` layers.

    Parameters
    ----------
    box : image size in pixels.
    prior : the content prior: the encoder outputs its ``n_outputs`` numbers, split into (mu, logstd).
    hidden : hidden layer widths.  translation : also infer the centre (pixels).
    """

    def __init__(self, box: int, prior: LatentPrior, hidden: tuple[int, ...], translation: bool) -> None:
        super().__init__()
        self.z_outputs, self.split_z, self.translation = prior.n_outputs, prior.split, translation
        dims = [box * box, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.n_out = self.z_outputs + 2 + (4 if translation else 0)
        self.head = nn.Linear(dims[-1], self.n_out)

    def forward(self, images: torch.Tensor) -> SpatialPosterior:
        out = self.head(self.body(images.flatten(1))).float()
        k = self.z_outputs
        z_mu, z_logstd = self.split_z(out[:, :k], dim=1)
        theta_mu, theta_logstd = out[:, k], out[:, k + 1]
        if self.translation:
            c = out[:, k + 2:]
            return SpatialPosterior(z_mu, z_logstd, theta_mu, theta_logstd, c[:, :2], c[:, 2:])
        return SpatialPosterior(z_mu, z_logstd, theta_mu, theta_logstd, None, None)
