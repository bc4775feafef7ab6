"""How far from the box centre the particles' signal reaches, measured on the particles themselves.

The pixel variance over a stack is the noise variance plus the variance of the signal; with the
particles at every in-plane rotation the latter is round, and it falls to 0 where no particle
reaches. :func:`signal_radius` reads where that excess variance ends from its ring profile;
``cryovae train`` sets the likelihood mask from it (:attr:`cryovae.models.ModelConfig.likelihood_mask`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: particles read for the variance image (evenly spaced through the stack)
MAX_PARTICLES = 5000
#: the signal ends at the first ring beyond the peak whose excess variance is below this fraction
#: of the peak's (or below NOISE_SIGMAS standard errors of a ring's variance, when that is larger)
END_FRACTION = 0.02
NOISE_SIGMAS = 4.0
#: pixels added beyond the measured end (the mask also leaves room for the centre's spread)
MARGIN_PX = 2.0
#: the mask never shrinks below this fraction of the box half-width
MIN_MASK = 0.5


@dataclass(frozen=True)
class SignalExtent:
    """What :func:`signal_radius` measured.

    radius_px : where the excess variance ends, pixels from the box centre (None: no signal
        above the noise was found).
    profile : (R,) excess variance of each 1-px ring (ring r holds the pixels at distance
        ``[r, r + 1)`` of pixel ``box // 2``), in the images' units squared.
    noise_variance : the variance of the pixels beyond the box's inscribed circle.
    """

    radius_px: float | None
    profile: np.ndarray
    noise_variance: float

    def mask_fraction(self, box: int) -> float:
        """The likelihood mask's radius for these particles, a fraction of the box half-width:
        the signal's end plus :data:`MARGIN_PX`, between :data:`MIN_MASK` and 1 (the inscribed
        disc, also when no signal was found)."""
        if self.radius_px is None:
            return 1.0
        return float(np.clip((self.radius_px + MARGIN_PX) / (box / 2), MIN_MASK, 1.0))


def pixel_variance(images, max_particles: int = MAX_PARTICLES, chunk: int = 1024) -> tuple[np.ndarray, int]:
    """(box, box) variance of each pixel over (at most ``max_particles``, evenly spaced)
    particles of ``images`` (n, box, box; an array or rows read from disk), and how many were read."""
    n = len(images)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_particles)).round().astype(np.int64))
    s = s2 = None
    for start in range(0, len(idx), chunk):
        block = np.asarray(images[idx[start: start + chunk]], dtype=np.float64)
        s = block.sum(0) if s is None else s + block.sum(0)
        s2 = (block**2).sum(0) if s2 is None else s2 + (block**2).sum(0)
    m = len(idx)
    return (s2 - s**2 / m) / max(m - 1, 1), m


def signal_radius(images) -> SignalExtent:
    """Where the particles' signal ends (see the module docstring).

    images : (n, box, box) preprocessed particles, n >= 2 (an array or rows on disk).
    """
    var, m = pixel_variance(images)
    box = var.shape[0]
    yy, xx = np.indices(var.shape) - box // 2
    r = np.hypot(xx, yy)
    rings = np.floor(r).astype(int)
    n_rings = box // 2
    corners = var[r >= box / 2]
    noise = float(np.median(corners)) if corners.size else float(np.median(var))
    counts = np.bincount(rings.ravel(), minlength=n_rings)[:n_rings]
    sums = np.bincount(rings.ravel(), weights=var.ravel(), minlength=n_rings)[:n_rings]
    profile = sums / np.maximum(counts, 1) - noise
    # a pixel's sample variance of Gaussian noise has std noise * sqrt(2 / (m - 1)); a ring averages its pixels
    stderr = noise * np.sqrt(2.0 / max(m - 1, 1)) / np.sqrt(np.maximum(counts, 1))
    threshold = np.maximum(END_FRACTION * profile.max(), NOISE_SIGMAS * stderr)
    peak = int(np.argmax(profile))
    if profile[peak] <= NOISE_SIGMAS * stderr[peak]:
        return SignalExtent(None, profile, noise)
    below = np.nonzero(profile[peak:] < threshold[peak:])[0]
    radius = float(peak + below[0]) if below.size else float(n_rings)
    return SignalExtent(radius, profile, noise)
