"""Reference-free 2D alignment of every particle to one template, by expectation-maximisation.

The classical route to in-plane poses (RELION's and cryoSPARC's 2D classification with one class):
no network, only the particles. Starting from their rotational average (a round blob, which
favours no rotation), each iteration

1. **E-step**: scores every particle against the template turned to each of ``rotations`` angles
   and shifted by every integer shift (:func:`cryovae.models.pose_search.template_log_likelihoods`,
   one FFT cross-correlation per rotation), adds the Gaussian centre prior and normalises: the
   posterior ``q(theta, s | y)`` on the grid;
2. **M-step**: the new template is the posterior-weighted average of the particles turned back by
   every rotation and shifted back by every shift (again one FFT per rotation), kept inside a disc.

Near the start the posterior is nearly uniform and the template stays round; the symmetry breaks
after some iterations (on the two-arm set at SNR 0.1, after ten) and the poses then settle within
a few more. The iterations may learn the template from a random subset of the particles, and
stop once the rotations no longer move; one last E-step then poses every particle. Each
particle's rotation is the circular posterior mean and its centre the posterior mean of the
shift; the posterior's largest rotation share says how sure the particle is.

Conventions: the internal ones of :mod:`cryovae.geometry` — a particle is ``T(R(theta) (p - c))``
for its template ``T``, rotation ``theta`` (radians) and centre ``c`` (pixels, ``(x, y)``), so
``theta`` and ``c`` convert to RELION's psi and origin with :func:`cryovae.geometry.internal_to_relion`.
The template's frame is the data's choice (one global rotation and shift are arbitrary).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.data.preprocess import radius_map, soft_circular_mask
from cryovae.errors import CryovaeError
from cryovae.models import rotate_images
from cryovae.models.pose_search import (
    rotation_grid,
    shift_grid,
    shift_log_prior,
    template_log_likelihoods,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Align2DConfig:
    """Options of :func:`align_to_one_template`.

    rotations : the rotation grid, ``360 / rotations`` degrees apart.
    iterations : EM iterations (each one E-step and one M-step over every particle).
    shift_sigma_px : std of the Gaussian prior on the centre, pixels.
    mask_radius : the template is kept inside a disc of this fraction of the box half-width.
    batch_size : particles scored at once (memory: ``batch_size * rotations * box^2`` floats).
    template_particles : the iterations learn the template from a random subset of this many
        particles (0: all), and one last E-step then gives every particle its pose: the cost of an
        iteration grows with the particles, the template's noise falls with them (1,000 particles
        at SNR 0.1 already average to SNR 100).
    tol_deg : stop before ``iterations`` once the median rotation change stayed below this for
        two iterations in a row (0: run them all).
    seed : which particles the subset holds.
    """

    rotations: int = 72
    iterations: int = 15
    shift_sigma_px: float = 2.0
    mask_radius: float = 0.9
    batch_size: int = 128
    template_particles: int = 0
    tol_deg: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        if self.rotations < 2:
            raise CryovaeError(f"the rotation grid needs at least 2 angles, got {self.rotations}")
        if self.iterations < 1:
            raise CryovaeError(f"iterations must be >= 1, got {self.iterations}")
        if not self.shift_sigma_px > 0:
            raise CryovaeError(f"the centre prior's std must be > 0 pixels, got {self.shift_sigma_px}")
        if not 0 < self.mask_radius <= 1:
            raise CryovaeError(f"the mask radius is a fraction of the box half-width in (0, 1], got {self.mask_radius}")
        if self.batch_size < 1:
            raise CryovaeError(f"the batch size must be >= 1, got {self.batch_size}")
        if self.template_particles < 0 or self.template_particles == 1:
            raise CryovaeError(f"the template's particles must be 0 (all) or >= 2, got {self.template_particles}")
        if not self.tol_deg >= 0:
            raise CryovaeError(f"the stopping tolerance must be >= 0 degrees, got {self.tol_deg}")


@dataclass(frozen=True)
class Alignment:
    """The result of :func:`align_to_one_template`.

    template : (N, N) the final template (its frame is the data's choice).
    theta : (n,) radians, each particle's circular posterior mean rotation (internal convention).
    center_px : (n, 2) pixels, each particle's posterior mean centre ``(x, y)``.
    confidence : (n,) the largest posterior probability of one rotation of the grid (1 / rotations:
        nothing known; 1: one rotation).
    theta_std : (n,) radians, the circular std of each particle's rotation posterior (at least the
        grid's quantisation, ``step / sqrt(12)``; large: the particle's rotation is not known).
    changes_deg : (iterations run,) median change of the (subset's) rotations in each iteration
        (the first against the rotational average's arbitrary posterior mean).
    """

    template: np.ndarray
    theta: np.ndarray
    center_px: np.ndarray
    confidence: np.ndarray
    theta_std: np.ndarray
    changes_deg: np.ndarray


def noise_variance(images: torch.Tensor) -> float:
    """The noise variance per pixel, from the pixels outside the inscribed disc of every image
    (the corners, where a centred particle has no signal); all pixels when the box has none."""
    n = images.shape[-1]
    outside = torch.from_numpy(radius_map(n) > n / 2)
    values = images[:, outside] if int(outside.sum()) >= 8 else images.flatten(1)
    var = float(values.var())
    if not var > 0:
        raise CryovaeError("the particles have no variance outside their centre: cannot estimate the noise")
    return var


def rotated(template: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """(R, N, N) ``template (N, N)`` as a particle at each rotation (centre 0): ``T(R(a) p)``
    (:func:`cryovae.models.rotate_images`)."""
    return rotate_images(template[None].expand(len(angles), -1, -1).contiguous(), angles)


def _em_step(images: torch.Tensor, template: torch.Tensor, angles: torch.Tensor, sigma2: float,
             log_prior: torch.Tensor, shifts: torch.Tensor, batch_size: int, mask: torch.Tensor,
             update: bool = True):
    """One E-step (and, with ``update``, one M-step). Returns the new template (N, N) (the old one
    without ``update``), theta (n,), centres (n, 2), confidence (n,), the circular std of the
    rotation posterior (n,) radians."""
    n, box = images.shape[0], images.shape[-1]
    turned = rotated(template, angles)  # (R, N, N); the template is already inside the mask
    acc = torch.zeros(len(angles), box, box // 2 + 1, dtype=torch.complex64)
    unit = torch.exp(1j * angles.double()).to(torch.complex64)
    theta, centre, conf, spread = torch.empty(n), torch.empty(n, 2), torch.empty(n), torch.empty(n)
    for s in range(0, n, batch_size):
        y = images[s: s + batch_size]
        logp = template_log_likelihoods(y, turned, sigma2) + log_prior  # (B, R, N, N)
        post = torch.softmax(logp.flatten(1), 1).reshape(logp.shape)
        p_rot = post.sum((2, 3))  # (B, R)
        mean_unit = (p_rot * unit).sum(1)
        theta[s: s + len(y)] = torch.angle(mean_unit)
        # circular std sqrt(-2 ln |E e^{i theta}|), at least the grid's own (uniform within a step)
        spread[s: s + len(y)] = torch.sqrt(-2 * torch.log(mean_unit.abs().clamp(1e-12, 1.0))).clamp_min(
            2 * math.pi / len(angles) / math.sqrt(12))
        centre[s: s + len(y)] = torch.einsum("brij,ijk->bk", post, shifts)
        conf[s: s + len(y)] = p_rot.max(1).values
        if update:  # sum_s q(r, s) y(p + s): a correlation of y with the posterior over shifts, per rotation
            acc += (torch.fft.rfft2(y)[:, None] * torch.fft.rfft2(post).conj()).sum(0)
    if not update:
        return template, theta, centre, conf, spread
    back = torch.fft.irfft2(acc, s=(box, box))  # (R, N, N): the particles' mean in each rotation's frame
    new = rotate_images(back, -angles).sum(0) / n * mask
    return new, theta, centre, conf, spread


#: images read and scored at once in the last E-step over every particle (a stack read from disk
#: is never held whole)
READ_CHUNK = 4096


def _centred(images, rows: np.ndarray | slice) -> torch.Tensor:
    """The images ``rows`` of ``images`` (an array or a memmap), float32, each less its mean;
    CryovaeError for non-finite pixels."""
    x = np.asarray(images[rows], dtype=np.float32)
    if not np.isfinite(x).all():
        raise CryovaeError("2D alignment: the images hold NaN or infinite pixels")
    return torch.from_numpy(x - x.mean((1, 2), keepdims=True))


@torch.no_grad()
def align_to_one_template(images: np.ndarray, cfg: Align2DConfig = Align2DConfig(), progress: bool = True
                          ) -> Alignment:
    """EM alignment of ``images`` (n, N, N) to one template learnt from them (module docstring).

    ``images`` may be a memmap: only the template's particles (``cfg.template_particles``) are
    held in memory, the others read in chunks for the last E-step.

    Raises :class:`CryovaeError` (one line) for fewer than 2 images, images that are not square,
    non-finite pixels, or no noise to measure.
    """
    cfg.validate()
    shape = tuple(getattr(images, "shape", np.shape(images)))
    if len(shape) != 3 or shape[1] != shape[2] or shape[0] < 2:
        raise CryovaeError(f"2D alignment needs at least 2 square images (n, N, N); got shape {shape}")
    n, box = shape[0], shape[1]
    subset = 0 < cfg.template_particles < n
    pick = (np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.template_particles, replace=False))
            if subset else slice(None))
    learn = _centred(images, pick)
    sigma2 = noise_variance(learn)
    angles = rotation_grid(cfg.rotations)
    shifts = shift_grid(box)
    log_prior = shift_log_prior(box, cfg.shift_sigma_px) - math.log(cfg.rotations)
    mask = torch.from_numpy(soft_circular_mask(box, cfg.mask_radius * box / 2, soft=0))
    template = rotated(learn.mean(0), angles).mean(0) * mask  # the rotational average
    theta = torch.zeros(len(learn))
    changes: list[float] = []
    bar = tqdm(range(cfg.iterations), desc="2D alignment", unit="iteration", leave=False, disable=not progress)
    for it in bar:
        template, new_theta, centre, conf, spread = _em_step(learn, template, angles, sigma2, log_prior, shifts,
                                                             cfg.batch_size, mask)
        turn = torch.remainder(new_theta - theta + math.pi, 2 * math.pi) - math.pi
        change = math.degrees(float(turn.abs().median()))
        theta = new_theta
        changes.append(change)
        bar.set_postfix(change=f"{change:.1f}", sure=f"{float(conf.median()):.2f}")
        log.info("2D alignment iteration %d/%d: median rotation change %.1f deg, median largest rotation "
                 "posterior %.2f (%d particles)", it + 1, cfg.iterations, change, float(conf.median()), len(learn))
        if cfg.tol_deg and len(changes) >= 2 and max(changes[-2:]) < cfg.tol_deg:
            log.info("2D alignment converged after %d iterations (median change below %.2f deg twice)",
                     it + 1, cfg.tol_deg)
            break
    bar.close()
    if subset:  # every particle's pose on the subset's template
        parts = [_em_step(_centred(images, slice(s, s + READ_CHUNK)), template, angles, sigma2, log_prior, shifts,
                          cfg.batch_size, mask, update=False)[1:] for s in range(0, n, READ_CHUNK)]
        theta, centre, conf, spread = (torch.cat(p) for p in zip(*parts, strict=True))
    return Alignment(template=template.numpy(), theta=theta.double().numpy(), center_px=centre.double().numpy(),
                     confidence=conf.numpy(), theta_std=spread.double().numpy(), changes_deg=np.asarray(changes))
