"""Turn float images into 8-bit pictures: a shared display range, tiling, animation frames.

Every frame of one picture shares a display range, so a change of density between frames shows
as a change of grey level instead of being normalised away.
"""

from __future__ import annotations

import numpy as np


def display_range(images: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """(vmin, vmax): the ``lo``-th and ``hi``-th percentiles of all pixels (never equal)."""
    a, b = np.percentile(np.asarray(images, np.float64), [lo, hi])
    if not b > a:
        a, b = float(np.min(images)), float(np.max(images))
        if not b > a:
            a, b = a - 0.5, a + 0.5
    return float(a), float(b)


def to_uint8(images: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map [vmin, vmax] linearly onto 0..255 (clipped); same shape, uint8."""
    scaled = (np.asarray(images, np.float64) - vmin) / (vmax - vmin)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def tile(images: np.ndarray, shape: tuple[int, int], pad: int = 2, fill: float = 0.0) -> np.ndarray:
    """Lay ``images`` (n, h, w) out row-major on a ``shape = (rows, cols)`` grid with ``pad``
    pixels of ``fill`` between them -> (rows*h + (rows-1)*pad, cols*w + (cols-1)*pad)."""
    images = np.asarray(images)
    rows, cols = shape
    n, h, w = images.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), fill, dtype=images.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = images[i]
    return out


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of the last two axes by an integer ``factor``."""
    return np.repeat(np.repeat(images, factor, axis=-2), factor, axis=-1)


def animation_order(shape: tuple[int, int], grid: bool) -> np.ndarray:
    """Frame indices for an animation of a traversal laid out as ``shape``.

    A row (or rows of separate axes): each row forwards then backwards, row after row.
    A 2-axis grid: a snake through the grid (left to right, then right to left on the next row),
    so consecutive frames are always neighbours.
    """
    rows, cols = shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    if grid:
        return np.concatenate([r if i % 2 == 0 else r[::-1] for i, r in enumerate(idx)])
    parts = [np.concatenate([r, r[-2:0:-1]]) if cols > 2 else r for r in idx]
    return np.concatenate(parts)
