"""TARGET-VAE (Nasiri & Bepler): a group-equivariant attention encoder over translation x
rotation, the spatial generator, and its ELBO (supplement A.1).

``p(t)`` is a Gaussian over the translation grid (``translation_prior_px``; the pixel grid, or
its centred window ``|x|, |y| <= max_shift``), ``p(r)`` uniform, ``theta | r ~ N(2 pi r/N,
(pi/N)^2)``, ``z ~ model.prior`` (N(0, I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from cryovae.errors import CryovaeError
from cryovae.models.base import (
    ROTATION_GUIDE,
    AttentionMap,
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    option,
    wrap_angle,
)
from cryovae.models.distributions import (
    gumbel_softmax_sample,
    kl_categorical,
    kl_normal,
    randn_like,
)
from cryovae.models.target_encoder import GroupAttentionEncoder, GroupPosterior

GROUPS = {"c1": 1, "p4": 4, "p8": 8, "p16": 16}


@dataclass(frozen=True)
class TargetConfig(ModelConfig):
    """TARGET-VAE's options (and every :class:`ModelConfig` one).

    Attributes
    ----------
    group : rotation group: "p4", "p8", "p16" (cyclic C_N) or "c1" (translation only).
    enc_fields : hidden width in regular fields (each has N channels; paper 128).
    enc_kernel : lifting kernel size in pixels (odd; paper 65).
    enc_layers : number of regular -> regular group convolutions after the lifting one.
    enc_inner_kernel : kernel size of those convolutions (odd; 1 = pointwise).
    fft_lift : compute the lifting convolution of whole images (micrographs) with FFTs (equal to R2Conv's output up to float
        rounding; much faster for large kernels).
    max_shift : translation grid half-width in pixels: the attention covers centres with
        ``|cx|, |cy| <= max_shift`` (None, the default: 3 x translation_prior_px rounded up, at
        least 2; any value >= box//2 covers the whole box).
    gumbel_tau : temperature of the Gumbel-softmax over (t, r).
    gumbel_hard : straight-through (one-hot forward, soft gradient) when True; the relaxed
        (soft, weighted) sample of the original TARGET-VAE code when False (default: it trained
        faster and recovered rotations better in our side-by-side run, see docs/models.md).
    """

    kind: ClassVar[str] = "target"
    paper_sizes: ClassVar[dict] = dict(enc_fields=128, enc_kernel=65, gen_hidden=512, gen_layers=2,
                                       fourier_features=1024)

    group: str = field(default="p8", metadata=option(
        "--group", "Rotation group (c1: translation only).", choices=tuple(GROUPS)))
    enc_fields: int = field(default=16, metadata=option("--enc-fields", "Regular fields of the encoder."))
    enc_kernel: int = field(default=33, metadata=option("--enc-kernel", "Lifting kernel, odd pixels."))
    enc_layers: int = field(default=1, metadata=option("--enc-layers", "Extra group-conv layers."))
    enc_inner_kernel: int = 1
    fft_lift: bool = True
    max_shift: int | None = field(default=None, metadata=option(
        "--max-shift", "Translation grid half-width, model pixels [3 x translation prior]."))
    gumbel_tau: float = 1.0
    gumbel_hard: bool = field(default=False, metadata=option(
        "--gumbel-hard", "Straight-through one-hot (t, r) samples.", flag_value=True))

    @property
    def attention_max_shift(self) -> int | None:
        """The translation window half-width actually used; None when it covers the whole box."""
        m = max(2, math.ceil(3 * self.translation_sigma_px)) if self.max_shift is None else self.max_shift
        return None if m >= self.box // 2 else int(m)

    @property
    def n_rotations(self) -> int:
        """N of the cyclic group (1 for c1)."""
        return GROUPS[self.group]

    def validate(self) -> None:
        if self.group not in GROUPS:
            raise CryovaeError(f"unknown --group {self.group!r}; choose one of {', '.join(GROUPS)}")
        super().validate()
        if self.enc_kernel < 1 or self.enc_kernel % 2 == 0:
            raise CryovaeError(f"--enc-kernel must be a positive odd number, got {self.enc_kernel}")
        if self.enc_inner_kernel < 1 or self.enc_inner_kernel % 2 == 0:
            raise CryovaeError(f"encoder inner kernel must be a positive odd number, got {self.enc_inner_kernel}")
        if self.enc_fields < 1:
            raise CryovaeError("encoder fields must be >= 1")
        if self.enc_layers < 0:
            raise CryovaeError("encoder layers must be >= 0")
        if self.gumbel_tau <= 0:
            raise CryovaeError("the Gumbel temperature must be > 0")
        if self.max_shift is not None and self.max_shift < 0:
            raise CryovaeError(f"--max-shift must be >= 0 pixels, got {self.max_shift}")


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


class TargetVAE(PoseVAE):
    """TARGET-VAE: q(t, r | y) attention over pixels x rotations, theta and z per cell."""

    name = "target"
    title = "TARGET-VAE"
    config_class = TargetConfig
    #: at SNR 0.1 the plain ELBO let z collapse onto the prior (KL of z 0.02 nats, |corr(z,
    #: conformation)| 0.28 on the 4,000-particle hinge, docs/quality); 1 nat of free bits keeps it
    free_nats_default = 1.0
    posterior_grid = True
    rotation_guidance = True

    def __init__(self, cfg: TargetConfig) -> None:
        super().__init__(cfg)
        self.encoder = GroupAttentionEncoder(cfg.n_rotations, self.prior, cfg.enc_fields,
                                             cfg.enc_kernel, cfg.enc_layers, cfg.enc_inner_kernel,
                                             cfg.fft_lift, cfg.attention_max_shift)
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
        log_pt = torch.log_softmax((-d2 / (2 * self.cfg.translation_sigma_px**2)).flatten(), 0)
        log_pt = log_pt.reshape(d2.shape)
        return log_pt[None].expand(self.cfg.n_rotations, -1, -1) - math.log(self.cfg.n_rotations)

    def encode(self, images: torch.Tensor) -> GroupPosterior:
        """(B, box, box) -> posterior over all (r, t) cells."""
        return self.encoder(images)

    def z_params(self, post: GroupPosterior) -> tuple[torch.Tensor, torch.Tensor]:
        """The z posterior parameters of every cell, each (B, zdim, N, H, W)."""
        return post.z_mu, post.z_logstd

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

    def kl_terms(self, post: GroupPosterior) -> dict[str, torch.Tensor]:
        """Exact KL of supplement A.1: ``KL_tr + sum_{t,r} q(t,r) (KL_theta + KL_z)``, per particle."""
        return self.kl_with_dims(post)[0]

    def kl_with_dims(self, post: GroupPosterior) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`kl_terms` and the part of ``kl_z`` of each z dimension, (B, zdim) (None for a
        prior whose dimensions are not independent)."""
        log_q = torch.log_softmax(post.logits.flatten(1), 1).reshape(post.logits.shape)
        q = log_q.exp()
        kl_tr = kl_categorical(log_q, self.log_prior_tr()[None])
        kl_th = kl_normal(post.theta_delta, post.theta_logstd, self.theta_prior_std)
        parts = {"kl_tr": kl_tr, "kl_theta": (q * kl_th).flatten(1).sum(1)}
        params = self.z_params(post)
        per_dim = self.prior.kl_dims(params)  # (B, zdim, N, H, W)
        if per_dim is None:
            parts["kl_z"] = (q * self.prior.kl(params, dim=1)).flatten(1).sum(1)
            return parts, None
        dims = (q[:, None] * per_dim).flatten(2).sum(2)
        parts["kl_z"] = dims.sum(1)
        return parts, dims

    def forward(self, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None, zero_z: bool = False,
                rotate_encoder: bool = False, rotation_guide: RotationGuide | None = None) -> LossTerms:
        """The ELBO of images ``y`` (B, box, box): one sample of (t, r), theta, z when ``sample``
        (Gumbel-softmax, straight-through when ``cfg.gumbel_hard``), else the posterior means at
        the argmax cell. ``rotate_encoder`` is ignored: the encoder is rotation-equivariant.
        With ``rotation_guide``, ``penalties["rotation_guide"]`` is its weight times :meth:`guide_nll`."""
        post = self.encode(y)
        if sample:
            weights = gumbel_softmax_sample(post.logits, self.cfg.gumbel_tau, generator, self.cfg.gumbel_hard)
        else:
            weights = self.argmax_onehot(post.logits)
        cell = self.select(post, weights)
        theta = cell.theta_mean
        if sample:
            theta = theta + cell.theta_logstd.exp() * randn_like(theta.shape, theta, generator)
            z = self.prior.sample((cell.z_mu, cell.z_logstd), generator)
        else:
            z = self.prior.mean((cell.z_mu, cell.z_logstd))
        if zero_z:
            z = torch.zeros_like(z)
        # the encoder reads the centre in the network's own frame; reconstruction centres it
        recon = self.reconstruction(y, z, theta, cell.center_px, ctf)
        parts, kl_z_dims = self.kl_with_dims(post)
        penalties = ({} if rotation_guide is None else
                     {ROTATION_GUIDE: rotation_guide.weight * self.guide_nll(post, rotation_guide)})
        return LossTerms(recon=recon, kl=sum(parts.values()), kl_parts=parts, kl_z_dims=kl_z_dims,
                         penalties=penalties)

    def guide_nll(self, post: GroupPosterior, guide: RotationGuide) -> torch.Tensor:
        """(B,) nats: ``-log q(theta = guide.theta | y)``, the guide's rotation under the encoder's
        posterior over theta, the mixture over cells ``sum_{r,t} q(r, t | y) N(theta; offset_r +
        delta_rt, s_rt^2 + guide.std^2)`` (the difference wrapped to a half turn; the guide's own
        uncertainty widens each component). Its gradient teaches the attention the guide's
        rotation cell and each cell's theta the angle within it, as MCE-VAE's pose distillation
        teaches its encoder the searched pose."""
        log_q = torch.log_softmax(post.logits.float().flatten(1), 1)  # (B, cells)
        mean = (post.theta_delta.float() + self.offsets[None, :, None, None]).flatten(1)
        var = (2 * post.theta_logstd.float()).exp().flatten(1) + guide.std.float()[:, None] ** 2
        d = wrap_angle(guide.theta.float()[:, None] - mean)
        log_n = -0.5 * d**2 / var - 0.5 * torch.log(2 * math.pi * var)
        return -torch.logsumexp(log_q + log_n, 1)

    def z_at_rotation(self, y: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z's posterior parameters, each (B, zdim), at the rotation cell nearest ``theta`` (B,)
        radians and that cell's most probable shift (see :meth:`PoseVAE.z_at_rotation`)."""
        post = self.encode(y)
        rows = torch.arange(y.shape[0], device=y.device)
        cell = wrap_angle(theta.to(self.offsets)[:, None] - self.offsets[None]).abs().argmin(1)  # (B,)
        shift = post.logits[rows, cell].flatten(1).argmax(1)  # (B,) over the cell's H x W shifts
        # p[rows, :, cell] is (B, zdim, H, W): advanced indices split by a slice come first
        return tuple(p[rows, :, cell].flatten(2)[rows, :, shift] for p in self.z_params(post))

    @property
    def attention_context_px(self) -> int:
        return self.encoder.context_px

    @torch.no_grad()
    def attention_map(self, image: torch.Tensor) -> AttentionMap:
        """The encoder over the whole of ``image`` (B, H, W), without the training-time
        translation window: at every pixel, ``log sum_r exp logit``, theta at the best r, z mixed
        over r, and the template-centre offset (see :class:`cryovae.models.AttentionMap`)."""
        post = self.encoder(image, window=False)
        logits = post.logits.float()  # (B, N, H, W)
        score = torch.logsumexp(logits, dim=1)
        best = logits.argmax(dim=1, keepdim=True)  # (B, 1, H, W)
        theta = torch.gather(post.theta_delta.float(), 1, best)[:, 0] + self.offsets[best[:, 0]]
        theta = wrap_angle(theta)
        w = torch.softmax(logits, dim=1)  # (B, N, H, W)
        params = tuple(p.float() for p in self.z_params(post))
        z = (w[:, None] * self.prior.mean(params)).sum(2)  # (B, zdim, H, W)
        b, h, wd = theta.shape
        offset = self.generator.centred_pose(theta.reshape(-1), torch.zeros(b * h * wd, 2, device=theta.device))
        offset = offset.reshape(b, h, wd, 2).permute(0, 3, 1, 2)
        return AttentionMap(score=score, theta=theta, z=z, center_offset=offset.contiguous())

    @torch.no_grad()
    def infer(self, y: torch.Tensor, ctf: torch.Tensor | None = None) -> Encoding:
        """The pose (theta, centre) at the most probable (t, r) cell; z's posterior mean and std.

        q(z | y) is the mixture over cells sum_tr q(t, r | y) N(mu_tr, sigma_tr^2), so z_mean is
        sum_tr q mu_tr and z_std the mixture's std. (The mean at the argmax cell alone throws away
        the neighbouring cells that share its probability: on the 40-degree SNR-1 hinge it
        correlated 0.815 with the conformation where the mixture mean gave 0.854.) The pose stays
        the argmax cell's: a mixture of angles in different rotation bins has no useful mean.
        """
        post = self.encode(y)
        onehot = self.argmax_onehot(post.logits)
        cell = self.select(post, onehot)
        q = torch.softmax(post.logits.flatten(1).float(), 1)  # (B, cells)
        params = tuple(p.float() for p in self.z_params(post))
        mu, var = self.prior.mean(params).flatten(2), self.prior.var(params).flatten(2)  # (B, zdim, cells)
        z_mean = (q[:, None] * mu).sum(-1)
        z_var = (q[:, None] * (var + mu ** 2)).sum(-1) - z_mean ** 2
        prob = (q * onehot.flatten(1)).sum(1)
        return Encoding(z_mean=z_mean, z_std=z_var.clamp_min(0).sqrt(), theta=wrap_angle(cell.theta_mean),
                        center_px=self.generator.centred_pose(cell.theta_mean, cell.center_px), prob=prob)
