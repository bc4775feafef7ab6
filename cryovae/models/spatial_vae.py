"""spatial-VAE (Bepler et al.): an MLP encoder giving Gaussian posteriors of z, theta and the
centre, the spatial generator, and its ELBO (eq. 4 with the theta KL of eq. 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from cryovae.errors import CryovaeError
from cryovae.models.base import (
    ACTIVATIONS,
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    option,
    wrap_angle,
)
from cryovae.models.distributions import kl_normal, kl_theta_uniform, randn_like
from cryovae.models.mlp_encoder import MLPEncoder, SpatialPosterior
from cryovae.models.transforms import rotate_images


@dataclass(frozen=True)
class SpatialConfig(ModelConfig):
    """spatial-VAE's options (and every :class:`ModelConfig` one); its generator defaults are
    the paper's (tanh, raw coordinates).

    Attributes
    ----------
    enc_hidden : encoder hidden layer widths (tanh MLP; paper 500, 500).
    translation : infer the centre offset (else the centre is fixed at 0).
    theta_prior_std : prior std of theta in radians (pi: the paper's 'uniform').
    """

    kind: ClassVar[str] = "spatial"
    paper_sizes: ClassVar[dict] = dict(enc_hidden=(500, 500), gen_hidden=500, gen_layers=2, fourier_features=0)

    gen_hidden: int = field(default=256, metadata=option("--gen-hidden", "Generator width."))
    fourier_features: int = field(default=0, metadata=option(
        "--fourier-features", "Fourier features of the coordinate (0 = raw coordinates)."))
    gen_activation: str = field(default="tanh", metadata=option(
        "--activation", "Generator activation.", choices=ACTIVATIONS))
    enc_hidden: tuple[int, ...] = field(default=(500, 500), metadata=option(
        "--enc-hidden", "Encoder widths, comma-separated, e.g. 500,500."))
    translation: bool = field(default=True, metadata=option(
        "--no-translation", "No translation inference (centres fixed at 0).", flag_value=False))
    theta_prior_std: float = field(default=math.pi, metadata=option(
        "--theta-prior", "Theta prior std, radians."))

    def validate(self) -> None:
        super().validate()
        if self.theta_prior_std <= 0:
            raise CryovaeError("prior standard deviations must be > 0")
        if any(h < 1 for h in self.enc_hidden) or not self.enc_hidden:
            raise CryovaeError("spatial-VAE encoder hidden sizes must be positive integers")


class SpatialVAE(PoseVAE):
    """spatial-VAE: MLP encoder giving Gaussian posteriors of z, theta and the centre."""

    name = "spatial"
    title = "spatial-VAE"
    config_class = SpatialConfig
    rotate_encoder_default = True
    posterior_grid = True

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__(cfg)
        self.encoder = MLPEncoder(cfg.box, self.prior, cfg.enc_hidden, cfg.translation)

    def encode(self, images: torch.Tensor) -> SpatialPosterior:
        return self.encoder(images)

    def forward(self, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None, zero_z: bool = False,
                rotate_encoder: bool = False, rotation_guide: RotationGuide | None = None) -> LossTerms:
        """spatial-VAE's ELBO (eq. 4 with the theta KL of eq. 3).

        rotate_encoder : show the encoder the image turned by a random gamma in [0, 2 pi) and remove
            gamma from its prediction (theta - gamma, centre R(gamma) c'), as in the paper's 5HDB runs.
        rotation_guide : ignored (the encoder gives one rotation, not a posterior over cells).
        """
        b = y.shape[0]
        if rotate_encoder:
            gamma = torch.rand(b, generator=generator, device=y.device) * (2 * math.pi)
            post = self.encode(rotate_images(y, gamma))
            theta_mu = post.theta_mu - gamma
            if post.center_mu is not None:
                cos, sin = torch.cos(gamma), torch.sin(gamma)
                cx, cy = post.center_mu[:, 0], post.center_mu[:, 1]
                center_mu = torch.stack([cos * cx - sin * cy, sin * cx + cos * cy], 1)
            else:
                center_mu = None
        else:
            post = self.encode(y)
            theta_mu, center_mu = post.theta_mu, post.center_mu
        z_params = (post.z_mu, post.z_logstd)
        theta, center = theta_mu, center_mu
        if sample:
            theta = theta + post.theta_logstd.exp() * randn_like(theta.shape, theta, generator)
            z = self.prior.sample(z_params, generator)
            if center is not None:
                center = center + post.center_logstd.exp() * randn_like(center.shape, center, generator)
        else:
            z = self.prior.mean(z_params)
        if center is None:
            center = y.new_zeros(b, 2)
        if zero_z:
            z = torch.zeros_like(z)
        recon = self.reconstruction(y, z, theta, center, ctf)
        parts = {"kl_theta": kl_theta_uniform(post.theta_logstd, self.cfg.theta_prior_std),
                 "kl_z": self.prior.kl(z_params, dim=1)}
        if post.center_mu is not None:
            parts["kl_t"] = kl_normal(post.center_mu, post.center_logstd, self.cfg.translation_sigma_px).sum(1)
        return LossTerms(recon=recon, kl=sum(parts.values()), kl_parts=parts,
                         kl_z_dims=self.prior.kl_dims(z_params))

    @torch.no_grad()
    def infer(self, y: torch.Tensor, ctf: torch.Tensor | None = None) -> Encoding:
        post = self.encode(y)
        center = post.center_mu if post.center_mu is not None else y.new_zeros(y.shape[0], 2)
        z_mean, z_std = self.prior.summary((post.z_mu, post.z_logstd))
        return Encoding(z_mean=z_mean, z_std=z_std, theta=wrap_angle(post.theta_mu),
                        center_px=self.generator.centred_pose(post.theta_mu, center), prob=None)
