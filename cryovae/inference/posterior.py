"""Each particle's z, rotation and centre as posterior means over a grid (the last step of inference).

The encoder and the refinement (:mod:`cryovae.inference.refine`) each give one point per particle:
the amortized guess and the nearest peak of the log posterior. In heavy noise a particle's
posterior over z is wide (at SNR 0.1 on the 40-degree hinge its standard deviation is about half
the prior's), and the point that minimises the expected squared error is its mean, not its peak.
This module computes, for every particle, the trained model's posterior

    p(z, theta, t | y) ~ N(y; g(z, theta, t) [* CTF], sigma^2) p(z) N(t; 0, s_t^2 I)

on a grid: every z of a grid over the prior (``z_points`` per dimension, +-``z_extent``), every
rotation ``2 pi r / rotations``, and the centres ``c + o`` with ``o`` a small grid of sub-pixel
offsets about the centre ``c`` the refinement found. It reports the posterior means of z and of
the centre and the circular mean of the rotation, which is what RELION does with its poses
(marginalisation) rather than keeping the best one.

Everything is one matrix product per offset: the templates ``T = g(z_k, theta_r, 0)`` are
rendered once and shared by all particles, and each particle is moved by ``-(c + o)`` (a Fourier
phase ramp) instead of rendering each template at each particle's centre, so

    log N(y; shift_{c+o} T, sigma^2) = (<shift_{-(c+o)} y, T> - |T|^2 / 2) / sigma^2 + const(y).

Without a CTF the products run over the model's likelihood mask (a disc about the moved
particle's centre). With ``--ctf`` they run over the whole box: ``<y, h * T> = <h * y, T>`` (the
CTF ``h`` is real and even) and ``|h * T|^2 = sum_f |H_f|^2 |T_f|^2 / N^2`` (Parseval), so the
templates stay shared there too. The grid's z values are a lattice, so a sharp posterior (SNR 1)
puts all its weight on one of them; with 41 points over +-4 the rounding (at most 0.1 prior
units) is small beside the spread of z.

Only models that declare ``posterior_grid`` (a generator read by z alone: TARGET-VAE,
spatial-VAE) and have 1 or 2 z dimensions are searched (and not per-pixel noise with a CTF); for
the others the refinement's point stays.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.data.sequences import shift_images
from cryovae.errors import CryovaeError
from cryovae.models import PoseVAE, compute_ctf
from cryovae.runs import Latents

log = logging.getLogger(__name__)

#: z grid points per dimension, by the number of z dimensions searched
Z_POINTS = {1: 41, 2: 15}
#: a particle with more of its posterior than this on the edge of the z grid keeps its refined values
EDGE_MASS = 0.5


@dataclass(frozen=True)
class PosteriorGridConfig:
    """The grid of :func:`posterior_latents`.

    Attributes
    ----------
    rotations : R, rotations ``2 pi / R`` apart (120: 3 degrees).
    z_points : grid points per z dimension (None: :data:`Z_POINTS` by zdim).
    z_extent : the z grid spans +-this, in prior standard deviations.
    shift_points, shift_step_px : the offsets about each particle's centre, ``shift_points`` per
        axis ``shift_step_px`` model pixels apart (3 and 0.5: a 3 x 3 grid reaching 0.5 px).
    budget : about how many log posterior values one batch holds (sets the batch size; memory
        use is about 8 bytes each).
    """

    rotations: int = 120
    z_points: int | None = None
    z_extent: float = 4.0
    shift_points: int = 3
    shift_step_px: float = 0.5
    budget: int = 20_000_000

    def validate(self) -> None:
        if self.rotations < 4:
            raise CryovaeError(f"the posterior grid needs at least 4 rotations, got {self.rotations}")
        if self.z_points is not None and self.z_points < 2:
            raise CryovaeError(f"the posterior grid needs at least 2 z points per dimension, got {self.z_points}")
        if not self.z_extent > 0 or self.shift_points < 1 or not self.shift_step_px >= 0:
            raise CryovaeError("the posterior grid's z extent must be > 0, its shift points >= 1 and step >= 0")


def searchable(model: PoseVAE) -> bool:
    """Whether :func:`posterior_latents` applies to ``model`` (see the module docstring)."""
    if model.cfg.ctf and model.cfg.noise == "pixel":  # per-pixel noise breaks the CTF's shared products
        return False
    return type(model).posterior_grid and model.zdim in Z_POINTS


class PosteriorGrid:
    """The templates of one model, rendered once; :meth:`apply` searches batches of particles.

    Parameters
    ----------
    model : a trained :class:`cryovae.models.PoseVAE` with :func:`searchable` true.
    cfg : the grid.
    device : where the templates live and the products run.
    """

    def __init__(self, model: PoseVAE, cfg: PosteriorGridConfig, device: torch.device | str = "cpu") -> None:
        cfg.validate()
        if not searchable(model):
            raise CryovaeError(f"the posterior grid needs a {'/'.join(map(str, Z_POINTS))}-dimensional z "
                               f"read by the generator alone (model {model.name}, zdim {model.zdim})")
        self.model, self.cfg, self.device = model.eval(), cfg, torch.device(device)
        d = model.zdim
        k = cfg.z_points or Z_POINTS[d]
        axis = torch.linspace(-cfg.z_extent, cfg.z_extent, k, device=self.device)
        self.z = torch.stack(torch.meshgrid(*([axis] * d), indexing="ij"), -1).reshape(-1, d)  # (K, zdim)
        self.z_edge = (self.z.abs() >= cfg.z_extent * (1 - 1e-6)).any(1).float()  # (K,) 1 on the grid's edge
        self.theta = torch.arange(cfg.rotations, device=self.device, dtype=torch.float32) * (2 * math.pi / cfg.rotations)
        steps = (torch.arange(cfg.shift_points, device=self.device, dtype=torch.float32)
                 - (cfg.shift_points - 1) / 2) * cfg.shift_step_px
        ox, oy = torch.meshgrid(steps, steps, indexing="xy")
        self.offsets = torch.stack([ox.flatten(), oy.flatten()], 1)  # (S, 2) pixels
        with torch.no_grad():
            self.log_prior_z = model.prior.log_density(self.z).float()  # (K,)
            self._render()

    @property
    def size(self) -> int:
        """Grid points per particle: offsets x rotations x z values."""
        return len(self.offsets) * len(self.theta) * len(self.z)

    def _render(self) -> None:
        """The templates (R * K, P) at the likelihood pixels and the full-box ones' spectra for a CTF."""
        model, n = self.model, self.model.cfg.box
        pixels = None if model.cfg.ctf else model.likelihood_pixels
        means, inv_var, log_sig = [], [], []
        per = max(1, 2_000_000 // max(1, len(self.z) * (n * n if pixels is None else len(pixels))))
        for s in range(0, len(self.theta), per):
            th = self.theta[s: s + per]
            codes = self.z[None].expand(len(th), *self.z.shape)
            mean, log_sigma = model.generator.render_codes(codes, th, torch.zeros(len(th), 2, device=self.device),
                                                           pixels=pixels)
            mean = mean.reshape(len(th) * len(self.z), -1).float()
            if pixels is None and model.likelihood_disc is not None:
                mean = mean * model.likelihood_disc  # as decode: nothing drawn outside the mask
            means.append(mean)
            if log_sigma is not None:
                ls = log_sigma.reshape(len(th) * len(self.z), -1).float()
                inv_var.append(torch.exp(-2 * ls))
                log_sig.append(ls.sum(1))
        templates = torch.cat(means)  # (T, P); only its weighted copy is kept
        if inv_var:
            w = torch.cat(inv_var)
            self.inv_var = w  # (T, P): 1 / sigma_p^2
            self.weighted = templates * w
            self.const = -0.5 * (templates**2 * w).sum(1) - torch.cat(log_sig)  # (T,)
        else:
            self.inv_var = None
            sigma2 = torch.exp(2 * model.log_sigma.detach().float())
            self.weighted = templates / sigma2
            self.const = -0.5 * (templates**2).sum(1) / sigma2
        if model.cfg.ctf:
            spec = torch.fft.rfft2(templates.reshape(-1, n, n))
            weight = torch.full((n // 2 + 1,), 2.0, device=self.device)
            weight[0] = 1.0
            if n % 2 == 0:
                weight[-1] = 1.0
            # |h * T|^2 = sum_f w_f |H_f|^2 |T_f|^2 / N^2, as (B, F) @ (F, T)
            self.power = ((spec.abs() ** 2) * weight / (n * n)).reshape(len(spec), -1).T.contiguous()

    @torch.no_grad()
    def log_posterior(self, y: torch.Tensor, center_px: torch.Tensor, ctf: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log posterior of every grid point, (B, S, R, K) nats.

        y : (B, box, box) particles.  center_px : (B, 2) pixels, centred-template frame (as
        :meth:`cryovae.models.PoseVAE.infer` reports).  ctf : (B, box, box//2+1) or None.
        """
        model = self.model
        b, n = y.shape[0], model.cfg.box
        y = y.float()
        sigma2 = torch.exp(2 * model.log_sigma.detach().float())
        if ctf is not None:
            y = torch.fft.irfft2(torch.fft.rfft2(y) * ctf.float(), s=(n, n))  # h * y
            const = -0.5 * ((ctf.float() ** 2).reshape(b, -1) @ self.power) / sigma2  # (B, T)
        else:
            const = self.const[None]
        pixels = None if model.cfg.ctf else model.likelihood_pixels
        s_t = model.cfg.translation_sigma_px
        out = []
        for o in self.offsets:
            c = center_px.float() + o
            moved = shift_images(y, -c).flatten(1)
            if pixels is not None:
                moved = moved[:, pixels]
            ll = moved @ self.weighted.T + const  # (B, T)
            if self.inv_var is not None:
                ll = ll - 0.5 * (moved**2) @ self.inv_var.T
            out.append(ll - 0.5 * (c**2).sum(1, keepdim=True) / s_t**2)
        lp = torch.stack(out, 1).reshape(b, len(self.offsets), len(self.theta), len(self.z))
        return lp + self.log_prior_z

    @torch.no_grad()
    def means(self, y: torch.Tensor, center_px: torch.Tensor, ctf: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior means of one batch: z (B, zdim), theta (B,) radians (circular mean, in
        (-pi, pi]) and centre (B, 2) pixels; arguments as :meth:`log_posterior`."""
        return self._summaries(y, center_px, ctf)[:3]

    def _summaries(self, y: torch.Tensor, center_px: torch.Tensor, ctf: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`means` and the posterior mass of each particle on the edge of the z grid, (B,)."""
        lp = self.log_posterior(y, center_px, ctf)
        w = torch.softmax(lp.flatten(1), 1).reshape(lp.shape)
        w_z, w_r, w_s = w.sum((1, 2)), w.sum((1, 3)), w.sum((2, 3))
        z = w_z @ self.z
        theta = torch.atan2(w_r @ torch.sin(self.theta), w_r @ torch.cos(self.theta))
        center = center_px.float() + w_s @ self.offsets
        return z, theta, center, w_z @ self.z_edge

    def apply(self, images: np.ndarray, latents: Latents, ctf_params: np.ndarray | None = None,
              progress: bool = False) -> Latents:
        """Latents with z, theta and the centre replaced by the posterior means (``z_std``,
        ``prob`` and the extras stay the encoder's). A particle whose posterior puts more than
        ``EDGE_MASS`` on the edge of the z grid (its z lies beyond ``z_extent``, where the grid
        cannot say where) keeps the values it came with, and their number is logged.

        images : (n, box, box) float32 preprocessed particles.  latents : their encoding (and
        refinement): its centres are where the offsets are laid.  ctf_params : (n, 7) for a
        model trained with ``--ctf``.
        """
        model = self.model
        if model.cfg.ctf and ctf_params is None:
            raise CryovaeError("the model applies a CTF: the posterior grid needs the particles' CTF parameters")
        n = len(images)
        step = max(1, self.cfg.budget // self.size)
        z_out = np.array(latents.z_mean, dtype=np.float32, copy=True)
        th_out = np.array(latents.theta, dtype=np.float64, copy=True)
        c_out = np.array(latents.center_px, dtype=np.float64, copy=True)
        kept = 0
        for s in tqdm(range(0, n, step), desc="posterior means of z and pose", leave=False, disable=not progress):
            sl = slice(s, min(s + step, n))
            y = torch.as_tensor(np.asarray(images[sl], dtype=np.float32), device=self.device)
            ctf = (compute_ctf(torch.as_tensor(np.asarray(ctf_params[sl], dtype=np.float32), device=self.device),
                               model.cfg.box, model.cfg.pixel_size) if model.cfg.ctf else None)
            z, th, c, edge = self._summaries(y, torch.as_tensor(c_out[sl], device=self.device), ctf)
            inside = (edge <= EDGE_MASS).cpu().numpy()
            kept += int((~inside).sum())
            idx = np.arange(sl.start, sl.stop)[inside]
            z_out[idx] = z.cpu().numpy()[inside]
            th_out[idx] = th.double().cpu().numpy()[inside]
            c_out[idx] = c.double().cpu().numpy()[inside]
        if kept:
            log.warning("%d of %d particles have their z posterior at the edge of the grid (|z| = %g): they keep "
                        "the refined z and pose", kept, n, self.cfg.z_extent)
        return Latents.from_pose(z_out, latents.z_std, th_out, c_out, model.cfg.pixel_size, prob=latents.prob,
                                 extras=latents.extras)


def posterior_latents(model: PoseVAE, images: np.ndarray, latents: Latents, cfg: PosteriorGridConfig | None = None,
                      ctf_params: np.ndarray | None = None, device: torch.device | str = "cpu",
                      progress: bool = False) -> Latents:
    """:meth:`PosteriorGrid.apply` with a grid rendered for this call; ``latents`` unchanged when
    the model is not :func:`searchable`."""
    if not searchable(model):
        return latents
    return PosteriorGrid(model, cfg or PosteriorGridConfig(), device).apply(images, latents, ctf_params, progress)
