"""The one image-coordinate convention used inside cryovae, and its conversion to RELION's.

Internal convention (used by every model, the simulator and the analysis code)
------------------------------------------------------------------------------
* An image is an array ``img[row, col]``; row 0 is the first row stored in the MRC file.
* A pixel's coordinate is ``p = (x, y) = (col - N//2, row - N//2)`` in pixels: x to the right
  along columns, y *down* along rows, origin at pixel ``(N//2, N//2)``. This is RELION's frame,
  so no axis flip or half-pixel term is needed at the file boundary.
* ``R(theta) = [[cos, -sin], [sin, cos]]`` acts on ``(x, y)``; theta is in radians.
* Image formation: a particle with rotation ``theta`` and centre offset ``c = (cx, cy)``
  (pixels, where the particle's centre sits relative to the box centre) is::

      particle(p) = template(R(theta) (p - c))

RELION (../shared/CONVENTIONS.md): ``aligned(R(psi) (p + o)) = particle(p)``, so
``psi = theta`` and ``o = -c``. :func:`internal_to_relion` is the only place this is written.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def pixel_coordinates(box: int) -> np.ndarray:
    """Internal coordinates of every pixel of a ``box x box`` image.

    Returns
    -------
    np.ndarray
        ``(box * box, 2)`` float32 array of ``(x, y)`` in pixels, in row-major (C) order, so
        ``coords.reshape(box, box, 2)[row, col] == (col - box//2, row - box//2)``.
    """
    idx = np.arange(box, dtype=np.float32) - box // 2
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def rotation_matrix(theta: np.ndarray | float) -> np.ndarray:
    """``R(theta)`` for angles in radians; shape ``(..., 2, 2)``."""
    theta = np.asarray(theta, dtype=np.float64)
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def wrap_degrees(angle_deg: np.ndarray | float) -> np.ndarray:
    """Wrap angles in degrees to ``(-180, 180]``."""
    a = np.mod(np.asarray(angle_deg, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def internal_to_relion(theta_rad: np.ndarray, center_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert internal pose to RELION's ``(psi, origin)``.

    Parameters
    ----------
    theta_rad : (n,) rotation in radians (internal convention).
    center_px : (n, 2) particle centre offset ``(cx, cy)`` in pixels.

    Returns
    -------
    psi_deg : (n,) ``rlnAnglePsi`` in degrees, wrapped to (-180, 180].
    origin_px : (n, 2) ``(rlnOriginX, rlnOriginY)`` in pixels (multiply by the pixel size for
        ``rlnOriginXAngst``/``YAngst``).
    """
    psi = wrap_degrees(np.degrees(np.asarray(theta_rad, dtype=np.float64)))
    return psi, -np.asarray(center_px, dtype=np.float64)


def relion_to_internal(psi_deg: np.ndarray, origin_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`internal_to_relion`: ``(theta_rad, center_px)``."""
    return np.radians(np.asarray(psi_deg, dtype=np.float64)), -np.asarray(origin_px, dtype=np.float64)


def _sample(image: np.ndarray, src_xy: np.ndarray, order: int) -> np.ndarray:
    box = image.shape[-1]
    rows = src_xy[..., 1] + box // 2
    cols = src_xy[..., 0] + box // 2
    out = ndimage.map_coordinates(image, [rows.ravel(), cols.ravel()], order=order, mode="constant", cval=0.0)
    return out.reshape(image.shape).astype(np.float32)


def transform_image(template: np.ndarray, theta_rad: float, center_px, order: int = 3) -> np.ndarray:
    """Render ``particle(p) = template(R(theta) (p - c))`` for one ``(N, N)`` image."""
    box = template.shape[-1]
    p = pixel_coordinates(box).astype(np.float64)
    src = (p - np.asarray(center_px, dtype=np.float64)) @ rotation_matrix(theta_rad).T
    return _sample(template, src.reshape(box, box, 2), order)


def apply_relion_alignment(particle: np.ndarray, psi_deg: float, origin_px, order: int = 3) -> np.ndarray:
    """What ``relion_stack_create --apply_transformation`` does to one ``(N, N)`` image.

    ``aligned(R(psi) (p + o)) = particle(p)``, i.e. ``aligned(q) = particle(R(-psi) q - o)``.
    Used by tests and by the simulator's self-check; it reads nothing but psi and origin.
    """
    box = particle.shape[-1]
    q = pixel_coordinates(box).astype(np.float64)
    src = q @ rotation_matrix(-np.radians(psi_deg)).T - np.asarray(origin_px, dtype=np.float64)
    return _sample(particle, src.reshape(box, box, 2), order)
