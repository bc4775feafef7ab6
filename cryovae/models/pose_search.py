"""Exhaustive search of a particle's template, in-plane rotation and shift: the expectation step of
RELION's and cryoSPARC's 2D classification, done with rendered templates (as cryoDRGN 2 searches
poses with its neural decoder).

For templates ``T_t`` (already rotated: one per class and rotation of the grid) and a particle
``y`` with white Gaussian noise of std ``sigma``, the log likelihood of ``y`` being ``T_t``
shifted by ``s`` (integer pixels, every shift of the box) is, up to a constant of ``y`` alone::

    log p(y | t, s) = (<y, shift_s(T_t)> - |T_t|^2 / 2) / sigma^2 + const(y)

and every ``<y, shift_s(T_t)>`` of one template comes from one FFT cross-correlation
(``irfft2(Y conj(F_t))``; shifts are circular, so a template must be ~0 near the box edge). With a
CTF the template is ``T_t * ctf`` (a product in Fourier space, so the same correlation).

Shift convention: ``shift_s(T)(p) = T(p - s)`` for pixel coordinates ``p = (x, y)`` (x along
columns, y along rows, the internal convention of :mod:`cryovae.geometry`), so a particle
rendered at centre ``c`` is its pose-free template shifted by ``s = c``.
"""

from __future__ import annotations

import math

import torch


def rotation_grid(n: int, device=None) -> torch.Tensor:
    """(n,) angles ``2 pi i / n`` in radians, float32."""
    return torch.arange(n, device=device, dtype=torch.float32) * (2 * math.pi / n)


def shift_grid(box: int, device=None) -> torch.Tensor:
    """(box, box, 2) float32: the shift ``(dx, dy)`` pixels of each cross-correlation index
    ``[row, col]`` (``dx = col``, ``dy = row``, wrapped into ``[-box/2, box/2)``)."""
    idx = torch.arange(box, device=device)
    wrapped = torch.where(idx < (box + 1) // 2, idx, idx - box).to(torch.float32)
    dy, dx = torch.meshgrid(wrapped, wrapped, indexing="ij")
    return torch.stack([dx, dy], dim=-1)


def shift_log_prior(box: int, sigma_px: float, device=None) -> torch.Tensor:
    """(box, box) log probabilities of the shifts of :func:`shift_grid` under an isotropic Gaussian
    of std ``sigma_px`` pixels, normalised over the grid."""
    s = shift_grid(box, device)
    logits = -0.5 * (s**2).sum(-1) / sigma_px**2
    return logits - torch.logsumexp(logits.flatten(), 0)


def template_log_likelihoods(images: torch.Tensor, templates: torch.Tensor, sigma2: torch.Tensor | float,
                             ctf: torch.Tensor | None = None) -> torch.Tensor:
    """``log p(y_b | T_t shifted by s)`` up to a constant of ``y_b``, for every image, template
    and shift.

    Parameters
    ----------
    images : (B, N, N) particles.
    templates : (T, N, N) templates (pose-free apart from their rotation).
    sigma2 : the noise variance per pixel (scalar).
    ctf : (B, N, N//2 + 1) each particle's CTF on the ``rfft2`` grid (None: no CTF).

    Returns
    -------
    (B, T, N, N) float32 nats; index ``[b, t, row, col]`` is the shift of :func:`shift_grid`.
    """
    n = images.shape[-1]
    y_f = torch.fft.rfft2(images.float())[:, None]  # (B, 1, N, M)
    t_f = torch.fft.rfft2(templates.float())[None]  # (1, T, N, M)
    if ctf is not None:
        t_f = t_f * ctf.float()[:, None]  # (B, T, N, M)
        norms = (torch.fft.irfft2(t_f, s=(n, n)) ** 2).sum((-2, -1))  # (B, T)
    else:
        norms = (templates.float() ** 2).sum((-2, -1))[None]  # (1, T)
    cross = torch.fft.irfft2(y_f * t_f.conj(), s=(n, n))  # (B, T, N, N): sum_p y(p + s) T(p)
    return (cross - 0.5 * norms[..., None, None]) / sigma2
