"""``cryovae traverse``: decode a trained run along its latent space and write the pictures.

Writes, for a traversal named STEM (``traversal`` or ``between_A_B``), into the output folder:
``STEM.png`` (labelled montage), ``STEM.gif`` (animation), ``STEM.mrcs`` (the frames, with the
run's pixel size) and ``STEM.csv`` (frame number, grid position, axis values and the latent
vector of each frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.analysis.images import animation_order, display_range, to_uint8, upscale
from cryovae.analysis.traverse import (
    Traversal,
    between_traversal,
    decode_frames,
    dims_traversal,
    pc_traversal,
)
from cryovae.errors import CryovaeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraverseConfig:
    """Options of ``cryovae traverse``.

    Attributes
    ----------
    dims : 1-based latent dimensions (or principal components with ``pcs``) to traverse; None:
        all of them for zdim <= 2, PC1 and PC2 beyond.
    steps : frames per axis.
    pcs : traverse principal components of the posterior means instead of latent dimensions.
    between : 1-based particle numbers (rows of RUNDIR/particles.star) to interpolate between.
    lo, hi : percentiles of the posterior means spanned by a traversal.
    gif_scale : integer enlargement of the GIF frames (nearest neighbour).
    gif_ms : duration of one GIF frame, milliseconds.
    """

    dims: tuple[int, ...] | None = None
    steps: int = 10
    pcs: bool = False
    between: tuple[int, int] | None = None
    lo: float = 5.0
    hi: float = 95.0
    gif_scale: int = 4
    gif_ms: int = 120


@dataclass(frozen=True)
class TraversalOutputs:
    """What :func:`traverse_run` wrote, and the frames (n, box, box) it decoded."""

    traversal: Traversal
    frames: np.ndarray
    png: Path
    gif: Path
    mrcs: Path
    csv: Path


def build_traversal(z_mean: np.ndarray, cfg: TraverseConfig) -> tuple[Traversal, str]:
    """The :class:`Traversal` that ``cfg`` asks for on posterior means ``z_mean`` (n, zdim), and its
    file stem."""
    z_mean = np.asarray(z_mean, np.float64)
    n, zdim = z_mean.shape
    if zdim == 0:
        raise CryovaeError("the run has no content latents (zdim = 0): there is nothing to traverse")
    if cfg.between is not None:
        a, b = cfg.between
        for p in (a, b):
            if not 1 <= p <= n:
                raise CryovaeError(f"--between takes particle numbers from 1 to {n} (rows of particles.star), got {p}")
        return between_traversal(z_mean[a - 1], z_mean[b - 1], cfg.steps, f"particle {a} -> {b}"), f"between_{a}_{b}"
    if cfg.dims is not None:
        axes, use_pcs = [d - 1 for d in cfg.dims], cfg.pcs
    elif cfg.pcs or zdim > 2:
        axes, use_pcs = list(range(min(2, zdim))), True
    else:
        axes, use_pcs = list(range(zdim)), False
    if use_pcs:
        return pc_traversal(z_mean, axes, cfg.steps, cfg.lo, cfg.hi), "traversal"
    return dims_traversal(z_mean, axes, cfg.steps, cfg.lo, cfg.hi), "traversal"


def traversal_table(traversal: Traversal) -> pd.DataFrame:
    """One row per frame: ``frame`` (1-based, as in the .mrcs), ``row``, ``col`` (1-based), the
    traversed axes' values and ``z1..zn``."""
    rows, cols = traversal.shape
    idx = np.arange(len(traversal))
    df = pd.DataFrame({"frame": idx + 1, "row": idx // cols + 1, "col": idx % cols + 1})
    for i, name in enumerate(traversal.axes):
        df[name if traversal.kind != "between" else "t"] = traversal.values[:, i]
    for d in range(traversal.z.shape[1]):
        df[f"z{d + 1}"] = traversal.z[:, d]
    return df


def write_traversal(outdir: Path, stem: str, traversal: Traversal, frames: np.ndarray, pixel_size: float,
                    gif_scale: int = 4, gif_ms: int = 120) -> TraversalOutputs:
    """Write STEM.png, STEM.gif, STEM.mrcs and STEM.csv for decoded ``frames`` (n, box, box)."""
    from cryovae.analysis.output import save_figure, write_gif, write_text
    from cryovae.analysis.plots import traversal_figure
    from cryovae.io import write_stack

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    png = save_figure(traversal_figure(frames, traversal), outdir / f"{stem}.png")
    vmin, vmax = display_range(frames)
    gif_frames = upscale(to_uint8(frames, vmin, vmax), max(1, int(gif_scale)))
    gif = write_gif(gif_frames[animation_order(traversal.shape, traversal.grid)], outdir / f"{stem}.gif", gif_ms)
    mrcs = outdir / f"{stem}.mrcs"
    write_stack(mrcs, np.ascontiguousarray(frames, np.float32), pixel_size)
    csv = write_text(traversal_table(traversal).to_csv(index=False, float_format="%.6g"), outdir / f"{stem}.csv")
    return TraversalOutputs(traversal=traversal, frames=frames, png=png, gif=gif, mrcs=mrcs, csv=csv)


def traverse_run(run, outdir: str | Path, cfg: TraverseConfig) -> TraversalOutputs:
    """Decode a trained run along its latent space and write the pictures.

    Parameters
    ----------
    run : a :class:`cryovae.inference.TrainedRun` (anything with ``latents()``, ``decode(z)``
        and ``pixel_size``).
    outdir : output folder (created).
    cfg : what to traverse.
    """
    traversal, stem = build_traversal(run.latents().z_mean, cfg)
    log.info("decoding %d frames (%s)", len(traversal), ", ".join(traversal.axes))
    frames = decode_frames(run.decode, traversal)
    return write_traversal(Path(outdir), stem, traversal, frames, float(run.pixel_size), cfg.gif_scale, cfg.gif_ms)
