"""Topographic capsules (Keller & Welling, "Topographic VAEs learn equivariant capsules"): the
construction of the topographic latent T from Gaussian Z and U (eq. 6-11), the roll of a
capsule, and reading a rotation and a rotation-invariant content from the roll.

Shapes: a batch of sequences of capsule activations is (B, S, K, C): S frames (time), K capsules,
C dimensions per capsule (circular). ``Roll`` moves a capsule's pattern to higher indices:
``roll(t, s)[i] = t[i - s]`` (``torch.roll(t, s)``); with the shifted neighbourhood of
:func:`topographic_t`, frame l + 1 (the particle turned one step further) is coherent with frame l
rolled by +1.
"""

from __future__ import annotations

import math

import torch

#: added under the square root of the neighbourhood energy (as the authors' code)
EPS = 1e-6


def neighbourhood_energy(u: torch.Tensor, neighbourhood: int, window: int, shift: bool = True) -> torch.Tensor:
    """``W [U_{l+L}^2; ...; U_{l-L}^2]`` of eq. 7-9 for every frame and capsule dimension.

    ``E[b, l, k, i] = sum_{d=-L..L} sum_{j=-h..h} U[b, (l+d) mod S, k, (i + d + j) mod C]^2`` with
    ``h = (neighbourhood - 1) / 2``: the 1-D circular neighbourhood W of width ``neighbourhood``
    inside each capsule, shared with the frames up to ``window`` = L steps away, each rolled by its
    time offset d (eq. 9, shifting temporal coherence; ``shift=False``: eq. 8, the stationary
    'Bubbles' coherence). The frame axis is circular (a sequence is a full turn).

    u : (B, S, K, C).  Returns (B, S, K, C).
    """
    u2 = u.float() ** 2
    h = (neighbourhood - 1) // 2
    energy = sum(torch.roll(u2, -j, dims=-1) for j in range(-h, h + 1))
    if window == 0:
        return energy
    return sum(torch.roll(torch.roll(energy, -d, dims=1), -d if shift else 0, dims=-1)
               for d in range(-window, window + 1))


def topographic_t(z: torch.Tensor, u: torch.Tensor, mu: torch.Tensor | float, neighbourhood: int,
                  window: int, shift: bool = True) -> torch.Tensor:
    """``T = (Z - mu) / sqrt(W U^2)`` (eq. 6; eq. 7-9 over a sequence), (B, S, K, C).

    z, u : (B, S, K, C) samples (or means) of the Gaussian latents.  mu : scalar.
    neighbourhood, window, shift : see :func:`neighbourhood_energy`.
    """
    return (z.float() - mu) / torch.sqrt(neighbourhood_energy(u, neighbourhood, window, shift) + EPS)


def first_harmonic(t: torch.Tensor) -> torch.Tensor:
    """``F1 = sum_i t[..., i] exp(-2 pi i i / C)`` of each capsule (complex, t's shape without C).
    Rolling a capsule by s multiplies it by ``exp(-2 pi i s / C)``."""
    c = t.shape[-1]
    ang = torch.arange(c, device=t.device, dtype=torch.float32) * (2 * math.pi / c)
    t = t.float()
    return torch.complex((t * torch.cos(ang)).sum(-1), -(t * torch.sin(ang)).sum(-1))


def capsule_roll_angle(t: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation read from the roll of the capsules relative to a reference pattern.

    ``theta = -arg sum_k F1(t_k) conj(F1(ref_k))``: if every capsule is the reference rolled by s
    steps, theta = ``2 pi s / C``; so turning a particle by ``a`` (which rolls its capsules by
    ``a C / 2 pi``) turns theta by ``a``. The capsules are combined weighted by their first
    harmonic's size (a flat capsule says nothing about the roll).

    t : (B, K, C).  reference : (K, C).

    Returns
    -------
    theta : (B,) radians in (-pi, pi] (0 when there is no first harmonic, e.g. a zero reference).
    agreement : (B,) in [0, 1], ``|sum_k ...| / sum_k |...|``: 1 when every capsule reads the same
        roll.
    """
    cross = first_harmonic(t) * torch.conj(first_harmonic(reference))[None]
    total = cross.sum(-1)
    theta = -torch.angle(total)
    theta = torch.where(theta <= -math.pi, theta + 2 * math.pi, theta)
    agreement = total.abs() / cross.abs().sum(-1).clamp_min(1e-12)
    return theta, agreement


def fractional_roll(t: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Roll every capsule by ``steps`` (B,) capsule dimensions (any real number), band-limited
    (a Fourier phase ramp): ``roll(t, s)[i] = t[i - s]`` for whole s. t : (B, ..., C)."""
    c = t.shape[-1]
    freq = torch.fft.rfftfreq(c, device=t.device).to(torch.float32) * c  # cycles per capsule
    shape = (-1,) + (1,) * (t.dim() - 1)
    s = steps.to(device=t.device, dtype=torch.float32).reshape(shape)
    phase = torch.exp(-2j * math.pi * s * freq / c)
    return torch.fft.irfft(torch.fft.rfft(t.float(), dim=-1) * phase, n=c, dim=-1)
