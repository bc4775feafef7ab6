"""Tiny synthetic particles shared by the model/training tests (no simulator needed); self-tests."""

from __future__ import annotations

import numpy as np

from cryovae.geometry import pixel_coordinates, rotation_matrix


def blob_template(box: int, hinge_deg: float = 0.0) -> np.ndarray:
    """An asymmetric particle of Gaussian blobs: a body, a side blob and an arm hinged at the
    body by ``hinge_deg`` (no rotational or mirror symmetry)."""
    p = pixel_coordinates(box).reshape(box, box, 2).astype(np.float64)
    arm = rotation_matrix(np.radians(hinge_deg)) @ np.array([0.0, -7.0])
    blobs = [((0.0, 0.0), 3.0, 1.0), ((5.5, 0.0), 2.0, 0.7), (tuple(arm), 2.2, 0.6)]
    img = np.zeros((box, box))
    for (x, y), s, a in blobs:
        img += a * np.exp(-((p[..., 0] - x) ** 2 + (p[..., 1] - y) ** 2) / (2 * s**2))
    return img.astype(np.float32)


def blob_particles(box: int, theta: np.ndarray, centers: np.ndarray, hinge_deg: np.ndarray | None = None,
                   noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Particles ``template(R(theta)(p - c))`` of :func:`blob_template`, evaluated exactly.

    theta : (n,) radians.  centers : (n, 2) pixels.  hinge_deg : (n,) or None.
    Returns (n, box, box) float32 (plus Gaussian noise of std ``noise``).
    """
    n = len(theta)
    hinge_deg = np.zeros(n) if hinge_deg is None else np.asarray(hinge_deg, np.float64)
    p = pixel_coordinates(box).astype(np.float64)
    out = np.empty((n, box, box), np.float32)
    for i in range(n):
        u = (p - centers[i]) @ rotation_matrix(theta[i]).T
        arm = rotation_matrix(np.radians(hinge_deg[i])) @ np.array([0.0, -7.0])
        img = np.zeros(len(p))
        for (x, y), s, a in [((0.0, 0.0), 3.0, 1.0), ((5.5, 0.0), 2.0, 0.7), (tuple(arm), 2.2, 0.6)]:
            img += a * np.exp(-((u[:, 0] - x) ** 2 + (u[:, 1] - y) ** 2) / (2 * s**2))
        out[i] = img.reshape(box, box)
    if noise:
        out += np.random.default_rng(seed).normal(0, noise, out.shape).astype(np.float32)
    return out


def circular_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Jammalamadaka-Sengupta circular correlation of two angle arrays (radians)."""
    a0 = np.angle(np.mean(np.exp(1j * a)))
    b0 = np.angle(np.mean(np.exp(1j * b)))
    sa, sb = np.sin(a - a0), np.sin(b - b0)
    return float((sa * sb).sum() / np.sqrt((sa**2).sum() * (sb**2).sum()))


def aligned_angle_error_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """|pred - true - global offset| in degrees, the offset being the circular mean difference."""
    d = pred - true
    off = np.angle(np.mean(np.exp(1j * d)))
    return np.degrees(np.abs(np.angle(np.exp(1j * (d - off)))))


def test_blob_particles_follow_internal_convention():
    """The exact renderer agrees with cryovae.geometry.transform_image of the template."""
    from cryovae.geometry import transform_image

    box = 33
    theta, c = np.array([0.7]), np.array([[2.0, -3.0]])
    exact = blob_particles(box, theta, c)[0]
    interp = transform_image(blob_template(box), 0.7, (2.0, -3.0))
    assert np.abs(exact - interp).max() < 0.02


def test_circular_correlation_of_offset_angles_is_one():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 200)
    assert circular_correlation(a, a + 1.0) > 0.999
    assert abs(circular_correlation(a, rng.uniform(-np.pi, np.pi, 200))) < 0.2
    assert aligned_angle_error_deg(a + 1.0, a).max() < 1e-6
