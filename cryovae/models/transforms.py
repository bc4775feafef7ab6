"""Differentiable in-plane rotation of image batches in the internal convention."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotate_images(images: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Turn each image by ``gamma`` about pixel (N//2, N//2): ``out(p) = img(R(gamma) p)``.

    A particle ``template(R(theta)(p - c))`` becomes ``template(R(theta + gamma)(p - R(-gamma) c))``:
    its rotation grows by gamma (``np.rot90`` is gamma = +90 deg). Bilinear, zeros outside.

    images : (B, N, N).  gamma : (B,) radians.  Returns (B, N, N).
    """
    b, n, _ = images.shape
    idx = torch.arange(n, device=images.device, dtype=images.dtype) - n // 2
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    cos, sin = torch.cos(gamma)[:, None, None], torch.sin(gamma)[:, None, None]
    sx = cos * xx - sin * yy
    sy = sin * xx + cos * yy
    # grid_sample with align_corners=True: -1 -> index 0, +1 -> index n-1
    gx = (sx + n // 2) / (n - 1) * 2 - 1
    gy = (sy + n // 2) / (n - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
