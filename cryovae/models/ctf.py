"""Contrast transfer function (RELION's formula) and its application to generator images.

For spatial frequency ``s = (sx, sy)`` in 1/Å (``sx`` along columns, ``sy`` along rows, the
internal/RELION frame), with ``alpha = atan2(sy, sx)``::

    lambda = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))                  Å, V in volts
    dz(alpha) = (dU + dV)/2 + (dU - dV)/2 cos(2 (alpha - angle_ast))    Å, underfocus positive
    gamma = -pi lambda dz |s|^2 + pi/2 Cs lambda^3 |s|^4 - phase_shift - atan(w / sqrt(1 - w^2))
    CTF = -sin(gamma)

(RELION ``CTF::getCTF`` with ``deltaf = -dz``, Cs in Å.) Sign: for an underfocused image the
CTF is **positive** at low frequency (``CTF(0) = w``, the amplitude contrast), i.e. the model
images have RELION's contrast (protein density bright after RELION's usual inversion). No
envelope (B-factor 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryovae.errors import NonFiniteError

#: star columns of the per-particle CTF parameters, in the order of :func:`ctf_parameters`.
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
               "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift")


def ctf_parameters(table) -> np.ndarray:
    """(n, 7) float32 CTF parameters from a particle table (pandas DataFrame).

    Columns: defocus U, V (Å), astigmatism angle (deg), voltage (kV), Cs (mm), amplitude contrast,
    phase shift (deg; 0 when the column is absent). Raises KeyError naming a missing column.
    """
    cols = []
    for name in CTF_COLUMNS:
        if name in table.columns:
            cols.append(np.asarray(table[name], dtype=np.float64))
        elif name == "rlnPhaseShift":
            cols.append(np.zeros(len(table)))
        else:
            raise KeyError(name)
    return np.stack(cols, axis=1).astype(np.float32)


def electron_wavelength(voltage_kv: torch.Tensor) -> torch.Tensor:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643247 / torch.sqrt(v * (1.0 + v * 0.978466e-6))


def compute_ctf(params: torch.Tensor, box: int, pixel_size: float) -> torch.Tensor:
    """CTF of each particle on the ``rfft2`` grid of a ``box x box`` image.

    Parameters
    ----------
    params : (B, 7) as from :func:`ctf_parameters`.
    box : image size in pixels.  pixel_size : Å/pixel.

    Returns
    -------
    (B, box, box//2 + 1) float32 real CTF values.
    """
    params = params.to(torch.float64)
    du, dv, ang, kv, cs, w, phase = params.unbind(dim=1)
    device = params.device
    sy = torch.fft.fftfreq(box, d=pixel_size, device=device, dtype=torch.float64)
    sx = torch.fft.rfftfreq(box, d=pixel_size, device=device, dtype=torch.float64)
    syy, sxx = torch.meshgrid(sy, sx, indexing="ij")
    s2 = sxx**2 + syy**2
    alpha = torch.atan2(syy, sxx)
    lam = electron_wavelength(kv)[:, None, None]
    dz = ((du + dv) / 2)[:, None, None] + ((du - dv) / 2)[:, None, None] * torch.cos(
        2 * (alpha[None] - torch.deg2rad(ang)[:, None, None]))
    cs_a = (cs * 1e7)[:, None, None]
    w = w[:, None, None]
    gamma = (-math.pi * lam * dz * s2 + 0.5 * math.pi * cs_a * lam**3 * s2**2
             - torch.deg2rad(phase)[:, None, None] - torch.atan(w / torch.sqrt(1 - w**2)))
    return (-torch.sin(gamma)).to(torch.float32)


def apply_ctf(images: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """Multiply images by their CTF in Fourier space.

    images : (B, H, W) real.  ctf : (B, H, W//2 + 1) from :func:`compute_ctf`.
    Returns (B, H, W) real, ``irfft2(rfft2(images) * ctf)``.
    """
    h, w = images.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(images.float()) * ctf, s=(h, w))


def check_ctf_finite(ctf_params: np.ndarray, source: str = "ctf_params", rows: np.ndarray | None = None) -> None:
    """NonFiniteError naming the column and the first particle (1-based row of ``source``) of a
    NaN/inf CTF value.

    ``ctf_params`` is (n, 7) in the order of :data:`CTF_COLUMNS`; ``rows`` (n,) the 0-based rows
    of the particles in the file (default ``arange(n)``).
    """
    params = np.asarray(ctf_params, dtype=np.float64)
    bad = ~np.isfinite(params)
    if bad.any():
        k, col = (int(v[0]) for v in np.nonzero(bad))  # first bad particle (row-major order)
        row = int(rows[k]) if rows is not None else k
        count = int(bad.any(axis=1).sum())
        raise NonFiniteError(f"{source}: _{CTF_COLUMNS[col]} is {params[k, col]} for particle {row + 1} "
                             f"(row {row + 1} of the particle table; {count} particle(s) with a non-finite "
                             "CTF value in all); --ctf needs a finite CTF for every particle")
