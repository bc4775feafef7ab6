"""Render particle images: analytic projections of pseudo-atoms, and projections of a 3D map.

Both follow :mod:`cryovae.geometry`: the particle with rotation ``theta`` (radians) and centre
offset ``c`` (pixels) is ``particle(p) = template(R(theta) (p - c))``, where ``template`` is the
projection at ``theta = 0, c = 0``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryovae.geometry import pixel_coordinates, rotation_matrix


def render_atoms(
    coords_A: np.ndarray,
    theta_rad: np.ndarray,
    center_px: np.ndarray,
    box: int,
    pixel_size_A: float,
    sigma_A: float,
) -> np.ndarray:
    """Project pseudo-atoms along z and render them as 2D Gaussians, exactly at a pose.

    The projection of a 3D isotropic Gaussian along z is a 2D Gaussian with the same sigma,
    and it is isotropic, so ``template(R(theta)(p - c))`` is the sum of Gaussians centred at
    ``R(-theta) a_j + c`` for projected atom positions ``a_j``: no interpolation is involved.
    Gaussians are separable, so each image is one ``(box, m) @ (m, box)`` product.

    Parameters
    ----------
    coords_A : (n, m, 3) atom coordinates in Å (x, y in the internal frame; z is summed over).
    theta_rad : (n,) in-plane rotation, radians.
    center_px : (n, 2) particle centre offset ``(cx, cy)``, pixels.
    box : image size, pixels.  pixel_size_A : Å per pixel.  sigma_A : atom Gaussian sigma, Å.

    Returns
    -------
    (n, box, box) float32; each atom contributes a Gaussian of unit peak height.
    """
    coords_A = np.asarray(coords_A, dtype=np.float64)
    theta = np.asarray(theta_rad, dtype=np.float64).reshape(-1)
    center = np.asarray(center_px, dtype=np.float64).reshape(-1, 2)
    xy = coords_A[..., :2] / pixel_size_A  # (n, m, 2) template-frame positions, pixels
    rot_inv = rotation_matrix(-theta)  # (n, 2, 2)
    pos = np.einsum("nij,nmj->nmi", rot_inv, xy) + center[:, None, :]
    grid = np.arange(box, dtype=np.float64) - box // 2
    s = sigma_A / pixel_size_A
    gx = np.exp(-((grid[None, None, :] - pos[..., 0:1]) ** 2) / (2 * s * s))  # (n, m, box) cols
    gy = np.exp(-((grid[None, None, :] - pos[..., 1:2]) ** 2) / (2 * s * s))  # (n, m, box) rows
    return np.einsum("nmr,nmc->nrc", gy, gx).astype(np.float32)


def tilt_rotations(tilt_deg: np.ndarray, axis_deg: np.ndarray) -> np.ndarray:
    """3D rotations by ``tilt_deg`` about the in-plane axis ``(cos a, sin a, 0)``; (n, 3, 3)."""
    tilt = np.radians(np.asarray(tilt_deg, dtype=np.float64).reshape(-1))
    a = np.radians(np.asarray(axis_deg, dtype=np.float64).reshape(-1))
    axes = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)
    return Rotation.from_rotvec(axes * tilt[:, None]).as_matrix()


def project_volume(
    volume: np.ndarray,
    volume_pixel_size_A: float,
    box: int,
    pixel_size_A: float,
    view_euler_deg: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Project a 3D map along z into a ``box x box`` image at ``pixel_size_A``.

    Parameters
    ----------
    volume : (D, D, D) map as stored in an MRC file, indexed ``[z, y, x]``; its centre is voxel
        ``D//2`` on every axis.
    volume_pixel_size_A : Å per voxel.
    box, pixel_size_A : output image size (pixels) and Å per pixel.
    view_euler_deg : optional ZYZ Euler angles (degrees, scipy's intrinsic ``"ZYZ"``) of a 3D
        rotation of the map about its centre before projecting; ``None`` views along z.

    Returns
    -------
    (box, box) float32 projection (sum along z; rows = y, cols = x, centre at box//2). When the
    output pixels are coarser than the voxels, the projection is low-pass filtered first
    (Gaussian, sigma = 0.4 output pixels) to avoid aliasing.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {vol.shape}")
    if view_euler_deg is not None and any(float(a) != 0.0 for a in view_euler_deg):
        rot = Rotation.from_euler("ZYZ", view_euler_deg, degrees=True).as_matrix()  # acts on (x, y, z)
        # array axes are (z, y, x): conjugate by the axis reversal
        perm = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)
        rot_zyx = perm @ rot @ perm
        centre = np.array([s // 2 for s in vol.shape], dtype=np.float64)
        # output voxel q samples input at R^T (q - centre) + centre
        inv = rot_zyx.T
        vol = ndimage.affine_transform(vol, inv, offset=centre - inv @ centre, order=1, mode="constant")
    proj = vol.sum(axis=0)  # (y, x)
    factor = pixel_size_A / volume_pixel_size_A  # input pixels per output pixel
    if factor > 1.0:
        proj = ndimage.gaussian_filter(proj, sigma=0.4 * factor, mode="constant")
    p = pixel_coordinates(box).astype(np.float64) * factor  # (box*box, 2) (x, y) in input pixels
    rows = p[:, 1] + proj.shape[0] // 2
    cols = p[:, 0] + proj.shape[1] // 2
    out = ndimage.map_coordinates(proj, [rows, cols], order=3, mode="constant", cval=0.0)
    return out.reshape(box, box).astype(np.float32)
