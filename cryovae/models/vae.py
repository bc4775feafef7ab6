"""The two VAEs: TARGET-VAE (group-equivariant attention encoder) and spatial-VAE (MLP encoder),
sharing the spatial generator. Losses live in :mod:`cryovae.training.losses`; this module holds
the networks, the selection of the (t, r) cell and deterministic inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cryovae.models.config import ModelConfig
from cryovae.models.ctf import apply_ctf
from cryovae.models.generator import SpatialGenerator
from cryovae.models.mlp_encoder import MLPEncoder, SpatialPosterior
from cryovae.models.target_encoder import GroupAttentionEncoder, GroupPosterior


@dataclass
class Encoding:
    """Deterministic encoding of a batch (posterior means; what is written to the star).

    z_mean, z_std : (B, zdim).  theta : (B,) radians in (-pi, pi].
    center_px : (B, 2) particle centre (cx, cy) in pixels (internal convention), in the frame of the
        centred template (``SpatialGenerator.centred_pose`` of the encoder's reading).
    prob : (B,) q(t, r | y) of the chosen cell (TARGET-VAE) or None.
    """

    z_mean: torch.Tensor
    z_std: torch.Tensor
    theta: torch.Tensor
    center_px: torch.Tensor
    prob: torch.Tensor | None


@dataclass
class Cell:
    """Posterior parameters read at one (t, r) cell per image (possibly straight-through soft).

    theta_mean (B,) includes the rotation offset; theta_delta (B,) excludes it.
    """

    theta_mean: torch.Tensor
    theta_delta: torch.Tensor
    theta_logstd: torch.Tensor
    z_mu: torch.Tensor
    z_logstd: torch.Tensor
    center_px: torch.Tensor


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Wrap radians to (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - theta, 2 * math.pi)


class _VAEBase(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = SpatialGenerator(
            cfg.box, cfg.zdim, cfg.gen_hidden, cfg.gen_layers, cfg.fourier_features,
            cfg.fourier_scale, cfg.gen_activation, pixel_noise=cfg.noise == "pixel")
        self.log_sigma = nn.Parameter(torch.zeros(()))

    @property
    def zdim(self) -> int:
        return self.cfg.zdim

    def decode(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
               ctf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator mean image and its log sigma.

        ``(theta, center_px)`` is a pose in the centred template's frame (what ``infer`` reports;
        the pose-free image ``(0, 0)`` is centred on the box): the generator adds its
        ``template_center`` (see :mod:`cryovae.models.generator`).

        Parameters
        ----------
        z : (B, zdim) or None.  theta : (B,) radians.  center_px : (B, 2) pixels.
        ctf : (B, box, box//2+1) CTF to apply to the mean (see :mod:`cryovae.models.ctf`) or None.

        Returns
        -------
        mean : (B, box, box).  log_sigma : (B, box, box) or a scalar tensor (global noise).
        """
        mean, log_sigma = self.generator(z, theta, center_px)
        if ctf is not None:
            mean = apply_ctf(mean, ctf)
        return mean, (self.log_sigma if log_sigma is None else log_sigma)


class TargetVAE(_VAEBase):
    """TARGET-VAE: q(t, r | y) attention over pixels x rotations, theta and z per cell.

    ``p(t)`` is a Gaussian over the translation grid (``translation_prior_px``; the pixel grid,
    or its centred window ``|x|, |y| <= max_shift``), ``p(r)`` uniform,
    ``theta | r ~ N(2 pi r/N, (pi/N)^2)``, ``z ~ N(0, I)``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = GroupAttentionEncoder(cfg.n_rotations, cfg.zdim, cfg.enc_fields, cfg.enc_kernel,
                                             cfg.enc_layers, cfg.enc_inner_kernel, cfg.fft_lift,
                                             cfg.attention_max_shift)
        m = cfg.attention_max_shift
        idx = torch.arange(cfg.box, dtype=torch.float32) - cfg.box // 2
        if m is not None:
            idx = idx[(idx >= -m) & (idx <= m)]
        yy, xx = torch.meshgrid(idx, idx, indexing="ij")
        self.register_buffer("grid", torch.stack([xx, yy], dim=-1), persistent=False)  # (H, W, 2)
        self.register_buffer("offsets", self.encoder.offsets(), persistent=False)  # (N,)

    @property
    def theta_prior_std(self) -> float:
        """Prior std of theta around its cell's offset, pi/N radians."""
        return math.pi / self.cfg.n_rotations

    def log_prior_tr(self) -> torch.Tensor:
        """(N, H, W) log p(t, r): Gaussian over the grid (normalised on it) times uniform r."""
        d2 = (self.grid**2).sum(-1)
        log_pt = torch.log_softmax((-d2 / (2 * self.cfg.translation_prior_px**2)).flatten(), 0)
        log_pt = log_pt.reshape(d2.shape)
        return log_pt[None].expand(self.cfg.n_rotations, -1, -1) - math.log(self.cfg.n_rotations)

    def encode(self, images: torch.Tensor) -> GroupPosterior:
        """(B, box, box) -> posterior over all (r, t) cells."""
        return self.encoder(images)

    def select(self, post: GroupPosterior, weights: torch.Tensor) -> Cell:
        """Read the posterior at the cell given by ``weights`` (B, N, H, W), a one-hot (or
        straight-through one-hot) over (r, t)."""
        def pick(x: torch.Tensor) -> torch.Tensor:
            return (x * weights).flatten(-3).sum(-1)

        delta = pick(post.theta_delta)
        offset = (weights * self.offsets[None, :, None, None]).flatten(1).sum(-1)
        w_t = weights.sum(1)  # (B, H, W)
        center = (w_t[..., None] * self.grid).flatten(1, 2).sum(1)
        def pick_z(x: torch.Tensor) -> torch.Tensor:  # (B, zdim, N, H, W) -> (B, zdim)
            return (x * weights[:, None]).flatten(2).sum(-1)

        return Cell(theta_mean=delta + offset, theta_delta=delta, theta_logstd=pick(post.theta_logstd),
                    z_mu=pick_z(post.z_mu), z_logstd=pick_z(post.z_logstd), center_px=center)

    @staticmethod
    def argmax_onehot(logits: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W) logits -> one-hot of the most probable cell."""
        flat = logits.flatten(1)
        return torch.zeros_like(flat).scatter_(1, flat.argmax(1, keepdim=True), 1.0).reshape(logits.shape)

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> Encoding:
        """The pose (theta, centre) at the most probable (t, r) cell; z's posterior mean and std.

        q(z | y) is the mixture over cells sum_tr q(t, r | y) N(mu_tr, sigma_tr^2), so z_mean is
        sum_tr q mu_tr and z_std the mixture's std. (The mean at the argmax cell alone throws away
        the neighbouring cells that share its probability: on the 40-degree SNR-1 hinge it
        correlated 0.815 with the conformation where the mixture mean gave 0.854.) The pose stays
        the argmax cell's: a mixture of angles in different rotation bins has no useful mean.
        """
        post = self.encode(images)
        onehot = self.argmax_onehot(post.logits)
        cell = self.select(post, onehot)
        q = torch.softmax(post.logits.flatten(1).float(), 1)  # (B, cells)
        mu, var = post.z_mu.flatten(2).float(), (2 * post.z_logstd.flatten(2).float()).exp()  # (B, zdim, cells)
        z_mean = (q[:, None] * mu).sum(-1)
        z_var = (q[:, None] * (var + mu ** 2)).sum(-1) - z_mean ** 2
        prob = (q * onehot.flatten(1)).sum(1)
        return Encoding(z_mean=z_mean, z_std=z_var.clamp_min(0).sqrt(), theta=wrap_angle(cell.theta_mean),
                        center_px=self.generator.centred_pose(cell.theta_mean, cell.center_px), prob=prob)


class SpatialVAE(_VAEBase):
    """spatial-VAE: MLP encoder giving Gaussian posteriors of z, theta and the centre."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = MLPEncoder(cfg.box, cfg.zdim, cfg.enc_hidden, cfg.translation)

    def encode(self, images: torch.Tensor) -> SpatialPosterior:
        return self.encoder(images)

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> Encoding:
        post = self.encode(images)
        center = post.center_mu if post.center_mu is not None else images.new_zeros(images.shape[0], 2)
        return Encoding(z_mean=post.z_mu, z_std=post.z_logstd.exp(), theta=wrap_angle(post.theta_mu),
                        center_px=self.generator.centred_pose(post.theta_mu, center), prob=None)


def build_model(cfg: ModelConfig) -> TargetVAE | SpatialVAE:
    """The model described by ``cfg`` (freshly initialised; load a state dict for weights)."""
    cfg.validate()
    return TargetVAE(cfg) if cfg.kind == "target" else SpatialVAE(cfg)
