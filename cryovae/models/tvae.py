"""The Topographic VAE (Keller & Welling 2021) for particles: rotation-equivariant capsules.

Each particle is masked (soft circular mask) and turned by ``360 / C`` degrees per step through a
full turn, C frames (:func:`cryovae.data.sequences.rotation_sequence`; C is the capsule size). An
MLP encoder gives every frame Gaussian posteriors of Z and U, K capsules of C dimensions each, and

    T_l = (Z_l - mu) / sqrt(sum_{d=-L..L} W Roll_d(U_{l+d}^2))          (eq. 6-9)

with W the 1-D circular neighbourhood inside each capsule and the neighbourhood rolled by one
capsule step per frame (shifting temporal coherence). An MLP decoder turns each frame's T into
that frame's image (Gaussian likelihood on the mask's pixels; the particle's CTF, turned with the
frame, with ``--ctf``). Because frame l + 1 shares its U with frame l rolled by one step, the
capsules learn to roll by one step when the particle turns by 360/C degrees.

Read-out (:meth:`TVAE.infer`): T of the particle as given (frame 0), its rotation from the roll
(the phase of each capsule's first circular harmonic against a reference pattern, combined over
capsules: :func:`cryovae.models.capsules.capsule_roll_angle`), its content z = the K capsule
magnitudes ``|T_k|`` (rotation-invariant: a roll keeps a capsule's norm). The reference pattern
``reference`` (K, C) is a buffer, a running mean (like batch norm's statistics) of the training
particles' frame-0 capsules turned back by their read-out roll; its arbitrary zero is the zero of
psi, as the template orientation of the other models is.

Variants (``--tvae-variant``): ``topographic`` (the above), ``static`` (L = 0: one frame, no
sequence, T = (Z - mu) / sqrt(W U^2); the paper's "TVAE L = 0") and ``plain`` (T = Z: an ordinary
VAE of the same size, its latent cut into K pieces of C as "capsules"; the paper's baseline).
The read-outs are the same for all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from cryovae.data.sequences import (
    DEFAULT_MASK_RADIUS,
    rotate_band_limited,
    rotation_sequence,
    sequence_mask,
    shift_images,
)
from cryovae.errors import CryovaeError
from cryovae.models.base import (
    ACTIVATIONS,
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    option,
)
from cryovae.models.capsules import capsule_roll_angle, fractional_roll, topographic_t
from cryovae.models.ctf import apply_ctf
from cryovae.models.distributions import gaussian_log_likelihood, kl_normal, randn_like
from cryovae.models.generator import SpatialGenerator, make_activation

VARIANTS = ("topographic", "static", "plain")
#: momentum of the running reference pattern (per training step)
REFERENCE_MOMENTUM = 0.1
#: posterior samples behind each capsule magnitude's std (z_std)
STD_SAMPLES = 8


@dataclass(frozen=True)
class TVAEConfig(ModelConfig):
    """The Topographic VAE's options (and every :class:`ModelConfig` one).

    ``zdim`` is the number of capsules K (the content z is one magnitude per capsule).

    Attributes
    ----------
    capsule_size : C, dimensions per capsule = frames per full turn (360/C degrees per step).
    neighbourhood : width of the circular neighbourhood W inside a capsule (odd).
    window : L, frames on either side that share their U, rolled (the paper's L; at most
        (C - 1) // 2, i.e. 2L + 1 frames of the C; None: that most, the paper's best L = S/2;
        ignored by the static and plain variants; :attr:`coherence_window` is the L in use).
    mu_init : mu of eq. 6 (learned) at the start; the authors' code starts T at (Z + 30) / ...,
        mu = -30, so T is a positive, energy-like activation.
    variant : "topographic", "static" (L = 0, no sequence) or "plain" (T = Z, an ordinary VAE).
    encoder_hidden : widths of the MLP encoder's hidden layers (ReLU).
    mask_radius : outer radius of the soft circular mask, a fraction of the box half-width.
    gen_hidden, gen_layers, gen_activation : the MLP decoder's width, hidden layers, activation
        (``fourier_features``, ``fourier_scale`` and ``translation_prior_px`` are not used).
    """

    kind: ClassVar[str] = "tvae"
    #: the MNIST sizes of the paper: 18 capsules of 18 (its MLPs are 3 D and 2 D wide, D = 324)
    paper_sizes: ClassVar[dict] = dict(zdim=18, capsule_size=18, encoder_hidden=(972, 648),
                                       gen_hidden=972, gen_layers=2)

    zdim: int = field(default=8, metadata=option("--zdim", "Content latent dimensions."))
    gen_hidden: int = field(default=512, metadata=option("--gen-hidden", "Generator width."))
    gen_activation: str = field(default="relu", metadata=option(
        "--activation", "Generator activation.", choices=ACTIVATIONS))
    capsule_size: int = field(default=12, metadata=option(
        "--tvae-capsule-size", "Dimensions per capsule = frames per turn (360/C degrees per step); --zdim capsules."))
    neighbourhood: int = field(default=3, metadata=option(
        "--tvae-neighbourhood", "Width of the circular neighbourhood inside a capsule (odd)."))
    window: int | None = field(default=None, metadata=option(
        "--tvae-window", "L: frames either side sharing U, rolled; at most, and by default, (C-1)//2."))
    mu_init: float = field(default=-30.0, metadata=option("--tvae-mu", "Initial mu of T = (Z - mu)/sqrt(W U^2)."))
    variant: str = field(default="topographic", metadata=option(
        "--tvae-variant", "topographic; static (L = 0, no sequence); plain (an ordinary VAE).", choices=VARIANTS))
    encoder_hidden: tuple[int, ...] = field(default=(512, 256), metadata=option(
        "--tvae-enc-hidden", "Encoder widths, comma-separated."))
    mask_radius: float = field(default=DEFAULT_MASK_RADIUS, metadata=option(
        "--tvae-mask-radius", "Soft mask outer radius, fraction of the box half-width."))
    #: the sequence's own soft mask (``mask_radius``) is the likelihood's
    likelihood_mask: float = 0.0

    @property
    def coherence_window(self) -> int:
        """L in use: ``window``, or (C - 1) // 2 when not given (every frame but the opposite one
        for an even C); 0 for the static and plain variants."""
        if self.variant != "topographic":
            return 0
        return (self.capsule_size - 1) // 2 if self.window is None else self.window

    def validate(self) -> None:
        super().validate()
        if self.likelihood_mask:
            raise CryovaeError("the Topographic VAE's likelihood mask is --tvae-mask-radius; --likelihood-mask is "
                               "not an option of --model tvae")
        if self.zdim < 1:
            raise CryovaeError(f"--zdim (the number of capsules) must be >= 1 for --model tvae, got {self.zdim}")
        if self.capsule_size < 3:
            raise CryovaeError(f"--tvae-capsule-size must be >= 3, got {self.capsule_size}")
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0 or self.neighbourhood > self.capsule_size:
            raise CryovaeError(f"--tvae-neighbourhood must be odd and between 1 and --tvae-capsule-size "
                               f"({self.capsule_size}), got {self.neighbourhood}")
        if self.window is not None and not 0 <= self.window <= (self.capsule_size - 1) // 2:
            raise CryovaeError(f"--tvae-window must be between 0 and (C - 1) // 2 = {(self.capsule_size - 1) // 2} "
                               f"for --tvae-capsule-size {self.capsule_size}, got {self.window}")
        if self.variant not in VARIANTS:
            raise CryovaeError(f"unknown --tvae-variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if not self.encoder_hidden or any(h < 1 for h in self.encoder_hidden):
            raise CryovaeError("--tvae-enc-hidden must be positive integers")
        if not 0.2 <= self.mask_radius <= 0.92:
            raise CryovaeError(f"--tvae-mask-radius must be between 0.2 and 0.92 of the box half-width "
                               f"(larger would wrap around the box when turned), got {self.mask_radius}")


class CapsuleDecoder(nn.Module):
    """MLP image decoder: T (B, D) -> pixel means (B, box, box) (and log sigmas for pixel noise).

    It holds the ``template_center`` buffer ``m`` (pixels, template frame) that
    :func:`cryovae.inference.recenter_template` sets, as :class:`SpatialGenerator` does: where the
    decoded particle's centre sits in the image decoded at theta = 0.
    """

    centred_pose = SpatialGenerator.centred_pose

    def __init__(self, box: int, dim: int, hidden: int, layers: int, activation: str, pixel_noise: bool) -> None:
        super().__init__()
        self.box, self.pixel_noise = box, pixel_noise
        self.register_buffer("template_center", torch.zeros(2))
        widths = [dim] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            body += [nn.Linear(a, b), make_activation(activation)]
        body.append(nn.Linear(widths[-1], box * box * (2 if pixel_noise else 1)))
        self.body = nn.Sequential(*body)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.body(t).float().reshape(t.shape[0], -1, self.box, self.box)
        return out[:, 0], (out[:, 1] if self.pixel_noise else None)


class CapsuleEncoder(nn.Module):
    """MLP encoder: masked frames (B, box, box) -> (z_mu, z_logstd, u_mu, u_logstd), each (B, D)
    (no U outputs for the plain variant: u's are None)."""

    def __init__(self, box: int, dim: int, hidden: tuple[int, ...], with_u: bool) -> None:
        super().__init__()
        self.dim, self.with_u = dim, with_u
        widths = [box * box, *hidden]
        body: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(widths[-1], dim * (4 if with_u else 2))

    def forward(self, x: torch.Tensor):
        out = self.head(self.body(x.flatten(1))).float()
        parts = out.split(self.dim, dim=1)
        if self.with_u:
            return parts[0], parts[1], parts[2], parts[3]
        return parts[0], parts[1], None, None


class TVAE(PoseVAE):
    """Topographic VAE with capsules that roll as the particle turns (see the module docstring)."""

    name = "tvae"
    title = "Topographic VAE"
    config_class = TVAEConfig
    #: no refinement objective: z is a summary of the capsules, not the decoder's input
    refine_steps_default = 0

    def __init__(self, cfg: TVAEConfig) -> None:
        super().__init__(cfg)
        self.capsules, self.capsule_size = cfg.zdim, cfg.capsule_size
        dim = cfg.zdim * cfg.capsule_size
        # the decoder reads T, not a pose: it replaces the base class's spatial generator
        self.generator = CapsuleDecoder(cfg.box, dim, cfg.gen_hidden, cfg.gen_layers, cfg.gen_activation,
                                        pixel_noise=cfg.noise == "pixel")
        self.encoder = CapsuleEncoder(cfg.box, dim, cfg.encoder_hidden, with_u=cfg.variant != "plain")
        self.mu = nn.Parameter(torch.tensor(float(cfg.mu_init))) if cfg.variant != "plain" else None
        self.register_buffer("mask", sequence_mask(cfg.box, cfg.mask_radius))
        self.register_buffer("reference", torch.zeros(cfg.zdim, cfg.capsule_size))

    # -- the construction of T ------------------------------------------------------------------
    @property
    def frames(self) -> int:
        """Frames of a training sequence: C for the topographic variant, else 1."""
        return self.capsule_size if self.cfg.variant == "topographic" else 1

    def _t(self, z: torch.Tensor, u: torch.Tensor | None, frames: int) -> torch.Tensor:
        """T (B, S, K, C) of flat (B * S, D) z and u."""
        shape = (-1, frames, self.capsules, self.capsule_size)
        if self.cfg.variant == "plain":
            return z.float().reshape(shape)
        window = self.cfg.coherence_window if frames == self.capsule_size else 0
        return topographic_t(z.reshape(shape), u.reshape(shape), self.mu, self.cfg.neighbourhood, window)

    def _encode_frames(self, y: torch.Tensor, frames: int):
        """The masked rotation sequence (B, S, N, N) of ``y`` and its encoder outputs (flat)."""
        x = rotation_sequence(y, frames, self.mask)
        return x, self.encoder(x.flatten(0, 1))

    # -- the contract ---------------------------------------------------------------------------
    def forward(self, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None, zero_z: bool = False,
                rotate_encoder: bool = False, rotation_guide: RotationGuide | None = None) -> LossTerms:
        """The ELBO of eq. 12 over each particle's rotation sequence, divided by its S frames (nats
        per image, comparable with the other models). ``zero_z`` and ``rotate_encoder`` are not used
        (T is the decoder's only input; the sequence turns the particle already); nor is
        ``rotation_guide``."""
        b, s = y.shape[0], self.frames
        x, (z_mu, z_logstd, u_mu, u_logstd) = self._encode_frames(y, s)
        z, u = z_mu, u_mu
        if sample:
            z = z_mu + z_logstd.exp() * randn_like(z_mu.shape, z_mu, generator)
            if u_mu is not None:
                u = u_mu + u_logstd.exp() * randn_like(u_mu.shape, u_mu, generator)
        t = self._t(z, u, s)
        mean, log_sigma = self.generator(t.flatten(2).flatten(0, 1))
        mean = mean.reshape(b, s, *mean.shape[1:])
        if ctf is not None:
            mean = self._frames_ctf(mean, ctf)
        recon = self._masked_log_likelihood(x, mean * self.mask, log_sigma).reshape(b, s).mean(1)
        parts = {"kl_z": kl_normal(z_mu, z_logstd).sum(1).reshape(b, s).mean(1)}
        if u_mu is not None:
            parts["kl_u"] = kl_normal(u_mu, u_logstd).sum(1).reshape(b, s).mean(1)
        if self.training and torch.is_grad_enabled():
            self._update_reference(z_mu.detach(), None if u_mu is None else u_mu.detach(), s)
        return LossTerms(recon=recon, kl=sum(parts.values()), kl_parts=parts)

    def _masked_log_likelihood(self, x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor | None) -> torch.Tensor:
        """Gaussian log-likelihood (B * S,) over the pixels inside the mask (outside it every frame is 0)."""
        inside = self.mask > 0
        ls = self.log_sigma if log_sigma is None else log_sigma[:, inside]
        return gaussian_log_likelihood(x.flatten(0, 1)[:, inside], mean.flatten(0, 1)[:, inside].float(), ls.float())

    def _frames_ctf(self, mean: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
        """Each frame's image with the particle's CTF turned with the frame: frame l (turned by
        ``a = l 2 pi / S``) is ``rotate(CTF * rotate(g_l, -a), a)`` (exact rotations)."""
        b, s, n, _ = mean.shape
        if s == 1:
            return apply_ctf(mean[:, 0], ctf)[:, None]
        angles = (torch.arange(s, device=mean.device, dtype=torch.float32) * (2 * math.pi / s)).repeat(b)
        back = rotate_band_limited(mean.reshape(b * s, n, n), -angles)
        blurred = apply_ctf(back, ctf.repeat_interleave(s, dim=0))
        return rotate_band_limited(blurred, angles).reshape(b, s, n, n)

    @torch.no_grad()
    def _update_reference(self, z_mu: torch.Tensor, u_mu: torch.Tensor | None, frames: int) -> None:
        """Running mean of the batch's frame-0 capsules (B, K, C) of the posterior means (flat
        (B * S, D) ``z_mu``, ``u_mu``), turned back by their read-out roll."""
        t0 = self._t(z_mu, u_mu, frames)[:, 0]
        theta, _ = capsule_roll_angle(t0, self.reference)
        aligned = fractional_roll(t0, -theta * self.capsule_size / (2 * math.pi)).mean(0)
        self.reference.mul_(1 - REFERENCE_MOMENTUM).add_(REFERENCE_MOMENTUM * aligned.to(self.reference.dtype))

    @torch.no_grad()
    def capsule_sequence(self, y: torch.Tensor, coherent: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Each particle of ``y`` (B, box, box) masked and turned through a full turn in C steps,
        (B, C, box, box), and the capsule activations T of every frame (posterior means),
        (B, C, K, C). For the topographic variant T is computed over the sequence (eq. 7), as it
        trains; ``coherent=False``: from each frame's own Z and U alone (L = 0), so that the
        neighbouring frames' shared U do not make the capsules roll by construction. The static
        and plain variants always take each frame alone."""
        x, (z_mu, _, u_mu, _) = self._encode_frames(y, self.capsule_size)
        if self.cfg.variant == "topographic" and coherent:
            return x, self._t(z_mu, u_mu, self.capsule_size)
        t = self._t(z_mu, u_mu, 1)
        return x, t.reshape(y.shape[0], self.capsule_size, self.capsules, self.capsule_size)

    @torch.no_grad()
    def infer(self, y: torch.Tensor, ctf: torch.Tensor | None = None) -> Encoding:
        """theta from the roll of frame 0's capsules, z = the capsule magnitudes (their std over
        posterior samples), prob = how well the capsules agree on the roll (0-1), centre = where the
        template centre lands (no translation is inferred)."""
        b, s = y.shape[0], self.frames
        _, (z_mu, z_logstd, u_mu, u_logstd) = self._encode_frames(y, s)
        t0 = self._t(z_mu, u_mu, s)[:, 0]
        theta, agreement = capsule_roll_angle(t0, self.reference)
        gen = torch.Generator(device=y.device).manual_seed(0)
        norms = []
        for _ in range(STD_SAMPLES):
            z = z_mu + z_logstd.exp() * randn_like(z_mu.shape, z_mu, gen)
            u = None if u_mu is None else u_mu + u_logstd.exp() * randn_like(u_mu.shape, u_mu, gen)
            norms.append(self._t(z, u, s)[:, 0].norm(dim=-1))
        center = self.generator.centred_pose(theta, y.new_zeros(b, 2).float())
        return Encoding(z_mean=t0.norm(dim=-1), z_std=torch.stack(norms).std(0), theta=theta,
                        center_px=center, prob=agreement)

    def capsules_at(self, z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The capsules (B, K, C) that :meth:`decode` decodes: the unit reference pattern of each
        capsule rolled by ``theta C / 2 pi`` steps and scaled to the magnitude z (B, K)."""
        ref = self.reference.float()
        norm = ref.norm(dim=-1, keepdim=True)
        unit = torch.where(norm > 0, ref / norm.clamp_min(1e-12), torch.full_like(ref, self.capsule_size ** -0.5))
        rolled = fractional_roll(unit[None].expand(z.shape[0], -1, -1), theta * self.capsule_size / (2 * math.pi))
        rolled = rolled / rolled.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # a fractional roll's Nyquist loss
        return z.float()[..., None] * rolled

    def decode(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
               ctf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The image of content z (B, K capsule magnitudes) at rotation theta and centre c.

        The decoder's image of :meth:`capsules_at` ``(z, theta)`` (rolling the capsules turns the
        decoded particle), moved from where its template centre lands, ``R(-theta) m``, to
        ``center_px`` (a Fourier shift), with the CTF, inside the mask. ``decode(infer(y))`` is
        the particle's image as its capsule magnitudes and roll describe it: the capsules' own
        patterns are replaced by the reference pattern (an approximation of T).
        """
        mean, log_sigma = self.generator(self.capsules_at(z, theta).flatten(1))
        move = center_px.float() - self.generator.centred_pose(theta.float(), torch.zeros_like(center_px.float()))
        if bool((move != 0).any()):
            mean = shift_images(mean, move)
        if ctf is not None:
            mean = apply_ctf(mean, ctf)
        return mean * self.mask, (self.log_sigma if log_sigma is None else log_sigma)

    def log_posterior(self, y, z, theta, center_px, ctf=None) -> torch.Tensor:
        raise CryovaeError("the Topographic VAE (--model tvae) has no refinement objective (its z summarises "
                           "the capsules); use --refine-steps 0")
