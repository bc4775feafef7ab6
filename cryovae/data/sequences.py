"""Rotation sequences of particles (the Topographic VAE's training sequences), in torch.

Every particle is masked with a soft circular mask and turned by ``360 / S`` degrees per step,
``S`` frames (frame ``l`` turned by ``l * 360 / S``). The rotation is band-limited and exact up to
float rounding: quarter turns are pixel permutations about pixel (N//2, N//2), the rest (at most
45°) three Fourier shears (Paeth's decomposition ``R = Sx Sy Sx``, each shear a phase ramp along
one axis). So white noise stays white with the same variance in every frame (a bilinear
rotation would smooth it by an amount that depends on the angle), and turning by ``a`` then
``-a`` gives the image back. The shears move the content of a disc of radius ``r`` at most
``1.08 r`` from the centre, so inside the default mask (outer radius 0.9 of the box half-width,
``0.45 N``) nothing wraps around the box.

Convention: that of :mod:`cryovae.geometry` and :func:`cryovae.models.transforms.rotate_images`,
``out(p) = img(R(gamma) p)`` with ``p = (col - N//2, row - N//2)``: a particle's rotation grows by
``gamma`` (content at ``q`` moves to ``R(-gamma) q``).
"""

from __future__ import annotations

import math

import torch

from cryovae.data.preprocess import soft_circular_mask

#: the mask's outer radius as a fraction of the box half-width (see the module docstring)
DEFAULT_MASK_RADIUS = 0.9
#: width of the mask's raised-cosine edge, as a fraction of the box half-width
MASK_EDGE = 0.15


def sequence_mask(box: int, radius: float = DEFAULT_MASK_RADIUS, edge: float = MASK_EDGE,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The (box, box) float32 soft circular mask of a sequence (:func:`cryovae.data.soft_circular_mask`
    about pixel (box//2, box//2)): 1 out to ``radius - edge``, a raised cosine down to 0 at
    ``radius``; radii as fractions of the box half-width ``box / 2``."""
    half = box / 2
    inner = max(radius - edge, 0.0) * half
    return torch.from_numpy(soft_circular_mask(box, inner, (radius * half) - inner)).to(device)


def _centre_permutation(n: int, device) -> torch.Tensor:
    """Index ``2c - i`` (mod n) of every row ``i`` with c = n//2: the reflection about the centre pixel."""
    return (2 * (n // 2) - torch.arange(n, device=device)) % n


def _quarter_turns(images: torch.Tensor, k: int) -> torch.Tensor:
    """``out(p) = img(R(k pi/2) p)`` about pixel (N//2, N//2), exactly (a permutation of pixels)."""
    k %= 4
    if k == 0:
        return images
    n = images.shape[-1]
    flip = _centre_permutation(n, images.device)
    if k == 2:  # out(x, y) = img(-x, -y)
        return images[..., flip, :][..., :, flip]
    # k = 1: out(x, y) = img(-y, x): out[i, j] = img[j, 2c - i];  k = 3: out[i, j] = img[2c - j, i]
    t = images.transpose(-1, -2)
    return t[..., flip, :] if k == 1 else t[..., :, flip]


def _shear(images: torch.Tensor, amount: torch.Tensor, along: int) -> torch.Tensor:
    """``out(x, y) = img(x + a y, y)`` (``along=-1``: rows sheared along x) or ``img(x, y + a x)``
    (``along=-2``), by a Fourier phase ramp; ``amount`` (B,) per image of (B, N, N)."""
    n = images.shape[-1]
    coord = torch.arange(n, device=images.device, dtype=torch.float32) - n // 2
    freq = torch.fft.rfftfreq(n, device=images.device).to(torch.float32)
    # the shift of each line (B, N): g(s) = f(s + d) <=> G(k) = F(k) exp(2 pi i k d)
    d = amount.to(torch.float32)[:, None] * coord[None, :]
    phase = torch.exp(2j * math.pi * d[:, :, None] * freq[None, None, :])
    if along == -1:
        spec = torch.fft.rfft(images, dim=-1) * phase
        return torch.fft.irfft(spec, n=n, dim=-1)
    spec = torch.fft.rfft(images.transpose(-1, -2), dim=-1) * phase
    return torch.fft.irfft(spec, n=n, dim=-1).transpose(-1, -2)


def rotate_band_limited(images: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Turn each image by ``gamma`` about pixel (N//2, N//2): ``out(p) = img(R(gamma) p)``.

    Quarter turns exactly, the remaining angle in [-45°, 45°] by three Fourier shears (see the
    module docstring); content must lie inside a disc of radius ~0.46 N (mask it first).

    images : (B, N, N) float.  gamma : (B,) radians.  Returns (B, N, N) float32.
    """
    images = images.float()
    gamma = gamma.to(device=images.device, dtype=torch.float32).reshape(-1)
    quarter = torch.round(gamma / (math.pi / 2))
    rest = gamma - quarter * (math.pi / 2)
    k = quarter.to(torch.int64) % 4
    out = images
    if bool((k != 0).any()):
        out = images.clone()
        for j in (1, 2, 3):
            sel = k == j
            if bool(sel.any()):
                out[sel] = _quarter_turns(images[sel], j)
    if bool((rest != 0).any()):
        a, b = -torch.tan(rest / 2), torch.sin(rest)
        # out = f o Sx(a) o Sy(b) o Sx(a): resample with Sx first, then Sy, then Sx
        out = _shear(_shear(_shear(out, a, -1), b, -2), a, -1)
    return out


def shift_images(images: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Move each image's content by ``shift_px`` (B, 2) = (dx, dy) pixels: ``out(p) = img(p - d)``,
    a Fourier phase ramp (periodic, band-limited). images (B, N, N) -> (B, N, N) float32."""
    n = images.shape[-1]
    fy = torch.fft.fftfreq(n, device=images.device).to(torch.float32)
    fx = torch.fft.rfftfreq(n, device=images.device).to(torch.float32)
    d = shift_px.to(device=images.device, dtype=torch.float32)
    phase = torch.exp(-2j * math.pi * (d[:, 0, None, None] * fx[None, None, :] + d[:, 1, None, None] * fy[None, :, None]))
    return torch.fft.irfft2(torch.fft.rfft2(images.float()) * phase, s=(n, n))


def rotation_sequence(images: torch.Tensor, frames: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each particle masked and turned by ``360 / frames`` degrees per step, ``frames`` steps.

    Parameters
    ----------
    images : (B, N, N) particles (on the model's device).
    frames : S, frames per full turn (frame l is turned by ``l * 2 pi / S`` radians; frame 0 is the
        masked particle itself).
    mask : (N, N) multiplied in before turning (:func:`sequence_mask`), or None.

    Returns
    -------
    (B, S, N, N) float32.
    """
    b, n, _ = images.shape
    x = images.float() if mask is None else images.float() * mask
    angles = torch.arange(frames, device=x.device, dtype=torch.float32) * (2 * math.pi / frames)
    rep = x[:, None].expand(b, frames, n, n).reshape(b * frames, n, n)
    return rotate_band_limited(rep, angles.repeat(b)).reshape(b, frames, n, n)
