"""The contrast transfer function applied by the simulator (numpy; RELION's formula).

For spatial frequency ``s = (sx, sy)`` in 1/Å (``sx`` along columns, ``sy`` along rows, the
internal/RELION frame) and ``alpha = atan2(sy, sx)``::

    lambda   = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))                     Å, V in volts
    dz       = (dU + dV)/2 + (dU - dV)/2 cos(2 (alpha - angle_ast))         Å, underfocus > 0
    gamma    = -pi lambda dz |s|^2 + pi/2 Cs lambda^3 |s|^4 - atan(w / sqrt(1 - w^2))
    CTF      = -sin(gamma)

This is RELION's ``CTF::getCTF`` (with its ``deltaf = -dz``, Cs in Å, no phase shift, no
B-factor envelope) and the same formula as :func:`cryovae.models.ctf.compute_ctf`, which the
models use (a test checks the two agree). Sign: for an underfocused image the CTF is
**positive** at low frequency (``CTF(0) = w``), so a simulated particle keeps the contrast of
its projection (protein bright, as RELION's particles after the usual contrast inversion).
Kept in numpy here so ``cryovae simulate`` does not import torch/e2cnn.
"""

from __future__ import annotations

import numpy as np


def electron_wavelength_A(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = float(voltage_kv) * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


def ctf_2d(
    box: int,
    pixel_size_A: float,
    defocus_u_A: np.ndarray,
    defocus_v_A: np.ndarray,
    defocus_angle_deg: np.ndarray,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> np.ndarray:
    """CTF values on the ``numpy.fft.rfft2`` grid of ``box x box`` images.

    Parameters
    ----------
    defocus_u_A, defocus_v_A, defocus_angle_deg : (n,) per particle (Å, Å, degrees).
    voltage_kv, cs_mm, amplitude_contrast : microscope, shared by all particles.

    Returns
    -------
    (n, box, box//2 + 1) float64.
    """
    return ctf_rfft_grid((box, box), pixel_size_A, defocus_u_A, defocus_v_A, defocus_angle_deg, voltage_kv,
                         cs_mm, amplitude_contrast)


def ctf_rfft_grid(
    shape: tuple[int, int],
    pixel_size_A: float,
    defocus_u_A: np.ndarray,
    defocus_v_A: np.ndarray,
    defocus_angle_deg: np.ndarray,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> np.ndarray:
    """CTF values on the ``numpy.fft.rfft2`` grid of ``(H, W)`` images (a micrograph, or a box).

    Parameters
    ----------
    shape : ``(H, W)`` pixels.  The other parameters as for :func:`ctf_2d`.

    Returns
    -------
    (n, H, W//2 + 1) float64.
    """
    height, width = int(shape[0]), int(shape[1])
    du = np.asarray(defocus_u_A, dtype=np.float64).reshape(-1, 1, 1)
    dv = np.asarray(defocus_v_A, dtype=np.float64).reshape(-1, 1, 1)
    ang = np.radians(np.asarray(defocus_angle_deg, dtype=np.float64)).reshape(-1, 1, 1)
    sy = np.fft.fftfreq(height, d=pixel_size_A)
    sx = np.fft.rfftfreq(width, d=pixel_size_A)
    syy, sxx = np.meshgrid(sy, sx, indexing="ij")
    s2 = (sxx**2 + syy**2)[None]
    alpha = np.arctan2(syy, sxx)[None]
    lam = electron_wavelength_A(voltage_kv)
    dz = (du + dv) / 2 + (du - dv) / 2 * np.cos(2 * (alpha - ang))
    cs_A = cs_mm * 1e7
    w = amplitude_contrast
    gamma = -np.pi * lam * dz * s2 + 0.5 * np.pi * cs_A * lam**3 * s2**2 - np.arctan(w / np.sqrt(1 - w * w))
    return -np.sin(gamma)


def apply_ctf(images: np.ndarray, ctf: np.ndarray) -> np.ndarray:
    """``irfft2(rfft2(images) * ctf)``: images (n, N, N), ctf (n, N, N//2+1) -> (n, N, N) float32."""
    n = images.shape[-1]
    return np.fft.irfft2(np.fft.rfft2(images) * ctf, s=(n, n)).astype(np.float32)
