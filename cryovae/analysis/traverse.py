"""Latent traversals: which latent vectors to decode, and decoding them into frames.

A :class:`Traversal` is a grid of latent vectors (``rows x cols`` frames). It is built from the
posterior means of a run's particles and decoded by any ``decode(z (n, zdim)) -> (n, box, box)``
callable (for a trained run, :meth:`cryovae.inference.TrainedRun.decode` at theta = 0, t = 0).

* one latent axis: a row of ``steps`` frames from its 5th to its 95th percentile;
* two axes: a ``steps x steps`` grid (first axis along the columns, second down the rows);
* three or more axes: one row per axis, each varied alone.

An axis is a latent dimension (the others held at their median) or a principal component of
the posterior means (the others held at the mean). :func:`between_traversal` interpolates
between two particles' latents instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cryovae.analysis.embedding import fit_pca
from cryovae.errors import CryovaeError

Decoder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Traversal:
    """Latent vectors of the frames of a traversal, laid out as a grid.

    Attributes
    ----------
    z : (rows * cols, zdim) latent vector of each frame, row-major.
    shape : (rows, cols).
    values : (rows * cols, n_axes) coordinate of each frame along each traversed axis.
    axes : names of the traversed axes (``z1``, ``PC2``, ``particle 7 -> 12``...).
    kind : "dims", "pcs" or "between".
    grid : True when the two axes span the grid (axis 1 along columns, axis 2 down rows); False
        when each row varies one axis alone.
    """

    z: np.ndarray
    shape: tuple[int, int]
    values: np.ndarray
    axes: tuple[str, ...]
    kind: str
    grid: bool = False

    def __len__(self) -> int:
        return len(self.z)


def percentile_steps(values: np.ndarray, steps: int, lo: float = 5.0, hi: float = 95.0) -> np.ndarray:
    """``steps`` evenly spaced values from the ``lo``-th to the ``hi``-th percentile of ``values``."""
    if steps < 1:
        raise CryovaeError(f"--steps must be >= 1, got {steps}")
    a, b = np.percentile(np.asarray(values, np.float64), [lo, hi])
    return np.linspace(a, b, steps) if steps > 1 else np.array([(a + b) / 2])


def _layout(base: np.ndarray, directions: np.ndarray, ranges: list[np.ndarray], names: Sequence[str],
            kind: str) -> Traversal:
    """Frames ``base + sum_i v_i * directions[i]`` for the grid (2 axes) or rows (1 or >= 3 axes)."""
    n_axes = len(directions)
    if n_axes == 2:
        cols, rows = ranges
        v1, v2 = np.meshgrid(cols, rows)  # (rows, cols)
        values = np.stack([v1.ravel(), v2.ravel()], axis=1)
        z = base + values @ directions
        return Traversal(z=z, shape=(len(rows), len(cols)), values=values, axes=tuple(names), kind=kind,
                         grid=True)
    steps = len(ranges[0])
    values = np.full((n_axes * steps, n_axes), np.nan)
    z = np.repeat(base[None], n_axes * steps, axis=0)
    base_values = base @ directions.T
    for i in range(n_axes):
        sl = slice(i * steps, (i + 1) * steps)
        z[sl] += (ranges[i] - base_values[i])[:, None] * directions[i]
        values[sl] = base_values
        values[sl, i] = ranges[i]
    return Traversal(z=z, shape=(n_axes, steps), values=values, axes=tuple(names), kind=kind)


def dims_traversal(z_mean: np.ndarray, dims: Sequence[int], steps: int = 10, lo: float = 5.0,
                   hi: float = 95.0) -> Traversal:
    """Traverse latent dimensions ``dims`` (0-based) of the posterior means ``z_mean`` (n, zdim),
    each from its ``lo``-th to ``hi``-th percentile; the other dimensions stay at their median."""
    z_mean = _check_latents(z_mean)
    zdim = z_mean.shape[1]
    dims = list(dims)
    if not dims or any(not 0 <= d < zdim for d in dims) or len(set(dims)) != len(dims):
        raise CryovaeError(f"--dims must be distinct latent dimensions between 1 and {zdim}, got "
                           f"{','.join(str(d + 1) for d in dims)}")
    base = np.median(z_mean, axis=0)
    directions = np.eye(zdim)[dims]
    ranges = [percentile_steps(z_mean[:, d], steps, lo, hi) for d in dims]
    return _layout(base, directions, ranges, [f"z{d + 1}" for d in dims], "dims")


def pc_traversal(z_mean: np.ndarray, pcs: Sequence[int] = (0, 1), steps: int = 10, lo: float = 5.0,
                 hi: float = 95.0) -> Traversal:
    """Traverse principal components ``pcs`` (0-based) of ``z_mean`` (n, zdim), each from the
    ``lo``-th to the ``hi``-th percentile of its scores; the other components stay at the mean."""
    z_mean = _check_latents(z_mean)
    pcs = list(pcs)
    zdim = z_mean.shape[1]
    if not pcs or any(not 0 <= p < zdim for p in pcs) or len(set(pcs)) != len(pcs):
        raise CryovaeError(f"principal components must be distinct and between 1 and {zdim}, got "
                           f"{','.join(str(p + 1) for p in pcs)}")
    pca = fit_pca(z_mean, zdim)
    scores = pca.transform(z_mean)
    ranges = [percentile_steps(scores[:, p], steps, lo, hi) for p in pcs]
    return _layout(pca.mean, pca.components[pcs], ranges, [f"PC{p + 1}" for p in pcs], "pcs")


def between_traversal(z_a: np.ndarray, z_b: np.ndarray, steps: int = 10, label: str = "a -> b") -> Traversal:
    """``steps`` frames on the straight line from latent ``z_a`` to ``z_b`` (both (zdim,)), ends
    included (spatial-VAE Fig. 6)."""
    if steps < 2:
        raise CryovaeError(f"--steps must be >= 2 to interpolate, got {steps}")
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    t = np.linspace(0.0, 1.0, steps)
    z = z_a[None] + t[:, None] * (z_b - z_a)[None]
    return Traversal(z=z, shape=(1, steps), values=t[:, None], axes=(label,), kind="between")


def default_traversal(z_mean: np.ndarray, steps: int = 10) -> Traversal:
    """What ``cryovae traverse`` does without options: zdim 1 a row, zdim 2 a grid, more a grid
    of the first two principal components."""
    z_mean = _check_latents(z_mean)
    zdim = z_mean.shape[1]
    if zdim <= 2:
        return dims_traversal(z_mean, list(range(zdim)), steps)
    return pc_traversal(z_mean, (0, 1), steps)


def decode_frames(decode: Decoder, traversal: Traversal, batch_size: int = 256) -> np.ndarray:
    """Decode every frame of ``traversal`` -> (n_frames, box, box) float32."""
    out = [np.asarray(decode(traversal.z[s: s + batch_size].astype(np.float32)), np.float32)
           for s in range(0, len(traversal), batch_size)]
    return np.concatenate(out)


def _check_latents(z_mean: np.ndarray) -> np.ndarray:
    z_mean = np.asarray(z_mean, np.float64)
    if z_mean.ndim != 2 or z_mean.shape[1] == 0:
        raise CryovaeError("the run has no content latents (zdim = 0): there is nothing to traverse")
    if len(z_mean) == 0:
        raise CryovaeError("the run has no particles to take latent percentiles from")
    return z_mean
