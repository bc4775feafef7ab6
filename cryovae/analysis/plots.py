"""Figures of a trained run. Each function takes arrays and returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, Agg
rendering); saving them is the caller's job (:func:`cryovae.analysis.output.save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cryovae.analysis.images import display_range

_CMAP_CLUSTERS = "tab10"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def image_grid(images: np.ndarray, shape: tuple[int, int], titles: Sequence[str] | None = None,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               suptitle: str | None = None, vrange: tuple[float, float] | None = None,
               panel_inches: float = 1.3) -> Figure:
    """Images (n, box, box) on a ``(rows, cols)`` grid, row-major, one shared grey scale.

    ``vrange`` (vmin, vmax) defaults to the 1st-99th percentile of all pixels. Row 0 of an image is
    drawn at the top (the MRC file's order), as in RELION's and napari's displays.
    """
    images = np.asarray(images)
    rows, cols = shape
    vmin, vmax = vrange if vrange is not None else display_range(images)
    fig = _figure(panel_inches * cols + (0.6 if row_labels is not None else 0.2),
                  panel_inches * rows + (0.5 if suptitle else 0.2))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            if titles is not None and i < len(titles) and titles[i]:
                ax.set_title(titles[i], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, fontsize=8)
    if col_labels is not None:
        for c, label in enumerate(col_labels):
            axes[-1, c].set_xlabel(label, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


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
                   centers: np.ndarray | None = None, gridsize: int = 40) -> Figure:
    """Hexbin of 2-D points (n, 2) coloured by particle count (log scale); optional centres (k, 2)."""
    xy = np.asarray(xy)
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
                 centers: np.ndarray) -> Figure:
    """Particles coloured by cluster: stacked histograms for 1-D ``coords`` (n, 1), a scatter
    for (n, 2); ``centers`` (k, 1 or 2) in the same coordinates, numbered from 1."""
    coords = np.asarray(coords)
    labels = np.asarray(labels)
    k = len(centers)
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    if coords.shape[1] == 1:
        bins = np.histogram_bin_edges(coords[:, 0], bins=60)
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
    ax.set_title(f"k-means, k={k}")
    return fig


def pose_histograms(psi_deg: np.ndarray, origin_A: np.ndarray, prob: np.ndarray | None = None) -> Figure:
    """Histograms of the inferred in-plane rotations (degrees, RELION psi), the origin offsets
    (Å, rlnOriginX/YAngst) and, for TARGET-VAE, the probability of the chosen pose."""
    psi_deg = np.asarray(psi_deg)
    origin_A = np.asarray(origin_A).reshape(-1, 2)
    n = 3 if prob is None else 4
    fig = _figure(3.2 * n, 3.0)
    axes = fig.subplots(1, n)
    axes[0].hist(psi_deg, bins=np.linspace(-180, 180, 73), color="0.35")
    axes[0].set_xlabel("rlnAnglePsi (degrees)")
    axes[0].set_ylabel("particles")
    axes[0].set_xlim(-180, 180)
    for ax, col, name in ((axes[1], 0, "rlnOriginXAngst"), (axes[2], 1, "rlnOriginYAngst")):
        ax.hist(origin_A[:, col], bins=40, color="0.35")
        ax.set_xlabel(f"{name} (Å)")
    if prob is not None:
        axes[3].hist(np.asarray(prob), bins=np.linspace(0, 1, 41), color="0.35")
        axes[3].set_xlabel("probability of the chosen pose")
    fig.suptitle(f"inferred poses, {len(psi_deg)} particles", fontsize=10)
    return fig


def learning_curve(metrics: pd.DataFrame) -> Figure:
    """ELBO, reconstruction and KL per epoch from a run's metrics.csv, one line per split.

    ``metrics`` has the columns ``epoch`` and, optionally, ``split``; every other numeric column
    is a panel (``elbo``, ``recon``, ``kl`` first).
    """
    first = [c for c in ("elbo", "recon", "kl") if c in metrics.columns]
    rest = [c for c in metrics.columns if c not in first and c not in ("epoch", "split")
            and pd.api.types.is_numeric_dtype(metrics[c])]
    cols = first + rest
    n = max(len(cols), 1)
    ncol = min(n, 3)
    nrow = -(-n // ncol)
    fig = _figure(3.4 * ncol, 2.8 * nrow)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    groups = metrics.groupby("split", sort=True) if "split" in metrics.columns else [("all", metrics)]
    for ax, col in zip(axes, cols, strict=False):
        for split, df in groups:
            df = df.sort_values("epoch")
            ax.plot(df["epoch"], df[col], marker="o", ms=3, label=str(split))
        ax.set_xlabel("epoch")
        ax.set_title(col, fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(cols):]:
        ax.set_visible(False)
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
    fig = _figure(1.2 * n + 0.8, 4.2)
    axes = fig.subplots(3, n, squeeze=False)
    decoded_range = display_range(np.concatenate([reconstructions, pose_free]))
    input_range = display_range(inputs)
    rows = (("input", inputs, input_range), ("reconstruction", reconstructions, decoded_range),
            ("pose-free", pose_free, decoded_range))
    for r, (label, imgs, (vmin, vmax)) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"#{numbers[c]}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("example particles", fontsize=10)
    return fig
