"""Figures of a trained run. Each function takes arrays and returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, Agg
rendering); saving them is the caller's job (:func:`cryovae.analysis.output.save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cryovae.analysis.images import display_range

_CMAP_CLUSTERS = "tab10"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _mosaic_figure(panels: np.ndarray, shape: tuple[int, int], titles: Sequence[str] | None = None,
                   row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                   suptitle: str | None = None, panel_inches: float = 1.3) -> Figure:
    """Images already scaled to [0, 1] (n, h, w) drawn as ONE mosaic on one axes (fast for large
    grids), white gaps between them, text labels around."""
    rows, cols = shape
    n, h, w = panels.shape
    ntitle = max((str(t).count("\n") + 1 for t in titles), default=0) if titles else 0
    gap_c = max(1, w // 10)
    gap_r = max(1, h // 10) + (int(np.ceil(0.17 * ntitle * h)) if ntitle else 0)
    mosaic = np.full((rows * h + (rows - 1) * gap_r + (gap_r - max(1, h // 10) if ntitle else 0),
                      cols * w + (cols - 1) * gap_c), np.nan)
    top = gap_r - max(1, h // 10) if ntitle else 0
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        y0, x0 = top + r * (h + gap_r), c * (w + gap_c)
        mosaic[y0: y0 + h, x0: x0 + w] = panels[i]
    left = 0.35 if row_labels is not None else 0.05
    bottom = 0.3 if col_labels is not None else 0.05
    head = 0.35 if suptitle else 0.05
    width = panel_inches * mosaic.shape[1] / w
    height = panel_inches * mosaic.shape[0] / h
    fig = Figure(figsize=(width + left + 0.05, height + bottom + head))
    W, H = fig.get_size_inches()
    ax = fig.add_axes((left / W, bottom / H, width / W, height / H))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        x = c * (w + gap_c) + w / 2 - 0.5
        y0 = top + r * (h + gap_r)
        if titles is not None and i < len(titles) and titles[i]:
            ax.text(x, y0 - 1.0, str(titles[i]), ha="center", va="bottom", fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:rows]):
            ax.text(-1.5, top + r * (h + gap_r) + h / 2, label, ha="right", va="center", rotation=90, fontsize=8)
    if col_labels is not None:
        for c, label in enumerate(col_labels[:cols]):
            ax.text(c * (w + gap_c) + w / 2 - 0.5, mosaic.shape[0] + 0.5, label, ha="center", va="top",
                    fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1 - 0.05 / H, va="top")
    return fig


def _scaled(images: np.ndarray, vrange: tuple[float, float] | None = None) -> np.ndarray:
    vmin, vmax = vrange if vrange is not None else display_range(images)
    return np.clip((np.asarray(images, np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)


def image_grid(images: np.ndarray, shape: tuple[int, int], titles: Sequence[str] | None = None,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               suptitle: str | None = None, vrange: tuple[float, float] | None = None,
               panel_inches: float = 1.3) -> Figure:
    """Images (n, box, box) on a ``(rows, cols)`` grid, row-major, one shared grey scale.

    ``vrange`` (vmin, vmax) defaults to the 1st-99th percentile of all pixels. Row 0 of an image is
    drawn at the top (the MRC file's order), as in RELION's and napari's displays.
    """
    images = np.asarray(images)
    if len(images) > shape[0] * shape[1]:
        raise ValueError(f"{len(images)} images do not fit a {shape[0]}x{shape[1]} grid")
    return _mosaic_figure(_scaled(images, vrange), shape, titles, row_labels, col_labels, suptitle, panel_inches)


def traversal_figure(frames: np.ndarray, traversal) -> Figure:
    """The montage of a :class:`cryovae.analysis.traverse.Traversal`'s decoded frames, each
    labelled with its coordinates along the traversed axes."""
    rows, cols = traversal.shape
    v = traversal.values
    if traversal.kind == "between":
        titles = [f"t={t:.2f}" for t in v[:, 0]]
        return image_grid(frames, (rows, cols), titles=titles, suptitle=f"interpolation {traversal.axes[0]}")
    if traversal.grid:
        a, b = traversal.axes
        col_labels = [f"{a}={x:.2f}" for x in v[:cols, 0]]
        row_labels = [f"{b}={y:.2f}" for y in v[::cols, 1]]
        return image_grid(frames, (rows, cols), row_labels=row_labels, col_labels=col_labels,
                          suptitle=f"{a} along columns, {b} down the rows")
    titles = [f"{traversal.axes[i // cols]}={v[i, i // cols]:.2f}" for i in range(len(frames))]
    return image_grid(frames, (rows, cols), titles=titles, row_labels=list(traversal.axes),
                      suptitle="latent traversal, " + ", ".join(traversal.axes) + " (5th-95th percentile)")


def latent_histogram(z: np.ndarray, name: str = "z1", centers: np.ndarray | None = None,
                     bins: int = 60) -> Figure:
    """Histogram of one latent coordinate (n,); optional cluster centres (k,) as vertical lines."""
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    ax.hist(np.asarray(z), bins=bins, color="0.35")
    if centers is not None:
        for j, c in enumerate(np.asarray(centers).ravel()):
            ax.axvline(c, color=f"C{j % 10}", lw=1.5, label=f"cluster {j + 1}")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel(f"{name} (posterior mean)")
    ax.set_ylabel("particles")
    ax.set_title(f"latent space, {len(z)} particles")
    return fig


def latent_density(xy: np.ndarray, names: Sequence[str], title: str = "latent space",
                   centers: np.ndarray | None = None, gridsize: int | None = None) -> Figure:
    """Hexbin of 2-D points (n, 2) coloured by particle count (log scale); optional centres (k, 2).
    ``gridsize`` (hexagons across) defaults to ``sqrt(n) / 1.5`` within 8..50."""
    xy = np.asarray(xy)
    if gridsize is None:
        gridsize = int(np.clip(np.sqrt(len(xy)) / 1.5, 8, 50))
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    hb = ax.hexbin(xy[:, 0], xy[:, 1], gridsize=gridsize, bins="log", cmap="viridis", mincnt=1)
    fig.colorbar(hb, ax=ax, label="particles per bin")
    if centers is not None:
        c = np.asarray(centers)
        ax.scatter(c[:, 0], c[:, 1], marker="x", s=60, color="red")
        for j, (cx, cy) in enumerate(c[:, :2]):
            ax.annotate(str(j + 1), (cx, cy), xytext=(4, 4), textcoords="offset points", color="red", fontsize=8)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"{title}, {len(xy)} particles")
    return fig


def latent_colored(coords: np.ndarray, names: Sequence[str], values: np.ndarray, value_name: str,
                   title: str = "latent space") -> Figure:
    """The latent space coloured by a per-particle value (e.g. a star column).

    ``coords`` (n, 2): scatter coloured by ``values`` (n,); ``coords`` (n, 1): ``values`` against
    the latent, so a dependence shows as a trend.
    """
    coords = np.asarray(coords)
    values = np.asarray(values, np.float64)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    order = np.random.default_rng(0).permutation(len(coords))  # no colour hides under another
    if coords.shape[1] == 1:
        ax.scatter(coords[order, 0], values[order], s=4, alpha=0.5, color="0.3", linewidths=0)
        ax.set_xlabel(names[0])
        ax.set_ylabel(value_name)
    else:
        sc = ax.scatter(coords[order, 0], coords[order, 1], c=values[order], s=4, cmap="plasma", linewidths=0)
        fig.colorbar(sc, ax=ax, label=value_name)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    ax.set_title(f"{title} by {value_name}")
    return fig


def cluster_plot(coords: np.ndarray, names: Sequence[str], labels: np.ndarray,
                 centers: np.ndarray, method: str = "k-means") -> Figure:
    """Particles coloured by cluster: stacked histograms for 1-D ``coords`` (n, 1), a scatter
    for (n, 2); ``centers`` (k, 1 or 2) in the same coordinates, numbered from 1; ``method``
    names the clustering in the title."""
    coords = np.asarray(coords)
    labels = np.asarray(labels)
    k = len(centers)
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    if coords.shape[1] == 1:
        bins = np.histogram_bin_edges(coords[:, 0], bins=60).tolist()
        ax.hist([coords[labels == j, 0] for j in range(k)], bins=bins, stacked=True,
                color=[f"C{j % 10}" for j in range(k)],
                label=[f"{j + 1}: {int((labels == j).sum())}" for j in range(k)])
        ax.set_xlabel(names[0])
        ax.set_ylabel("particles")
    else:
        for j in range(k):
            m = labels == j
            ax.scatter(coords[m, 0], coords[m, 1], s=3, color=f"C{j % 10}", linewidths=0,
                       label=f"{j + 1}: {int(m.sum())}")
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=60, color="black")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    ax.legend(title="cluster: particles", fontsize=7, title_fontsize=7, frameon=False, markerscale=3)
    ax.set_title(f"{method}, k={k}")
    return fig


def _origin_bins(values_A: np.ndarray, pixel_size_A: float | None) -> np.ndarray | int:
    """One bin per pixel when the origins lie on the pixel grid (TARGET-VAE's attention picks
    whole-pixel centres), else 40 bins."""
    if pixel_size_A and values_A.size:
        steps = values_A / pixel_size_A
        if np.allclose(steps, np.round(steps), atol=1e-3):
            lo, hi = int(np.round(steps.min())), int(np.round(steps.max()))
            return (np.arange(lo, hi + 2) - 0.5) * pixel_size_A
    return 40


def pose_histograms(psi_deg: np.ndarray, origin_A: np.ndarray, prob: np.ndarray | None = None,
                    pixel_size_A: float | None = None) -> Figure:
    """Histograms of the inferred in-plane rotations (degrees, RELION psi), the origin offsets
    (Å, rlnOriginX/YAngst; one bin per pixel of ``pixel_size_A`` Å when they lie on the pixel
    grid) and, for TARGET-VAE, the probability of the chosen pose."""
    psi_deg = np.asarray(psi_deg)
    origin_A = np.asarray(origin_A).reshape(-1, 2)
    n = 3 if prob is None else 4
    fig = Figure(figsize=(3.0 * n, 3.0))
    fig.subplots_adjust(left=0.25 / n, right=1 - 0.08 / n, bottom=0.17, top=0.86, wspace=0.3)
    axes = fig.subplots(1, n)
    axes[0].hist(psi_deg, bins=np.linspace(-180, 180, 73), color="0.35")
    axes[0].set_xlabel("rlnAnglePsi (degrees)")
    axes[0].set_ylabel("particles")
    axes[0].set_xlim(-180, 180)
    for ax, col, name in ((axes[1], 0, "rlnOriginXAngst"), (axes[2], 1, "rlnOriginYAngst")):
        ax.hist(origin_A[:, col], bins=_origin_bins(origin_A[:, col], pixel_size_A), color="0.35")
        ax.set_xlabel(f"{name} (Å)")
    if prob is not None:
        axes[3].hist(np.asarray(prob), bins=np.linspace(0, 1, 41), color="0.35")
        axes[3].set_xlabel("probability of the chosen pose")
    fig.suptitle(f"inferred poses, {len(psi_deg)} particles", fontsize=10)
    return fig


def learning_curve(metrics: pd.DataFrame) -> Figure:
    """Loss terms per epoch from a run's metrics.csv, one line per split (train / val).

    ``metrics`` has the columns ``epoch``, optionally ``split``, and loss columns: ``elbo``,
    ``recon`` and ``kl`` get a panel each (the ``kl_*`` parts join the ``kl`` panel, dashed), and
    ``lr`` a log-scale panel; other columns (timings) are not drawn.
    """
    panels = [c for c in ("elbo", "recon", "kl", "lr") if c in metrics.columns]
    parts = [c for c in metrics.columns if c.startswith("kl_") and pd.api.types.is_numeric_dtype(metrics[c])]
    if not panels:
        panels = [c for c in metrics.columns if c not in ("epoch", "split")
                  and pd.api.types.is_numeric_dtype(metrics[c])][:4]
    n = max(len(panels), 1)
    fig = Figure(figsize=(3.0 * n, 3.0))
    fig.subplots_adjust(left=0.3 / n, right=1 - 0.08 / n, bottom=0.17, top=0.84, wspace=0.35)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    groups = list(metrics.groupby("split", sort=True)) if "split" in metrics.columns else [("all", metrics)]
    for ax, col in zip(axes, panels, strict=False):
        for g, (split, df) in enumerate(groups):
            df = df.sort_values("epoch")
            ax.plot(df["epoch"], df[col], marker="o", ms=3, color=f"C{g}", label=str(split))
            if col == "kl":
                for part in parts:
                    ax.plot(df["epoch"], df[part], ls="--", lw=1, color=f"C{g}", alpha=0.6)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(col + (" (dashed: " + ", ".join(parts) + ")" if col == "kl" and parts else ""), fontsize=8)
        if col == "lr":
            ax.set_yscale("log")
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("learning curve (per particle)", fontsize=10)
    return fig


def example_sheet(inputs: np.ndarray, reconstructions: np.ndarray, pose_free: np.ndarray,
                  numbers: Sequence[int]) -> Figure:
    """Three rows per example particle (columns): the preprocessed input, its reconstruction at
    the inferred pose, and the pose-free image (generator at theta = 0, t = 0).

    ``numbers``: the particles' 1-based row numbers in the star file (column titles). Inputs use
    their own grey scale; the two decoded rows share one.
    """
    n = len(inputs)
    decoded = _scaled(np.concatenate([reconstructions, pose_free]))
    panels = np.concatenate([_scaled(inputs), decoded])
    titles = [f"#{k}" for k in numbers] + [""] * (2 * n)
    return _mosaic_figure(panels, (3, n), titles=titles, row_labels=["input", "reconstruction", "pose-free"],
                          suptitle="example particles", panel_inches=1.1)
