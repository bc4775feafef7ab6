"""Micrographs composed in a test from the particle simulator: clean particles pasted into a
noise field at known centres, optional junk (bright blobs the size of a particle, and a
carbon-like step) and a background gradient.

``compose(sim, shape, n, ...)`` -> (image (H, W) float32, truth DataFrame with x_px, y_px
(the particle centre, micrograph pixels, docs/conventions.md "Picked particle coordinates"),
psi_deg, conformation_1 ...). The SNR is that of the particle simulator at the pixel size of
the run that will pick it (``bin`` micrograph pixels per run pixel): noise sigma^2 =
mean var_box(clean) / snr at the binned size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def centres(rng: np.random.Generator, shape: tuple[int, int], n: int, margin: int, min_dist: float
            ) -> np.ndarray:
    """(k <= n, 2) integer (row, col) centres at least ``min_dist`` apart, ``margin`` from the edge."""
    out: list[tuple[int, int]] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        p = (int(rng.integers(margin, shape[0] - margin)), int(rng.integers(margin, shape[1] - margin)))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_dist**2 for q in out):
            out.append(p)
    return np.array(out, dtype=int).reshape(-1, 2)


def compose(sim, shape: tuple[int, int], n: int, snr: float | None, seed: int = 0, junk: int = 0,
            min_dist: float | None = None, gradient: float = 0.0, bin: int = 1, carbon: bool = False):
    """A micrograph of the first ``n`` (at most) particles of ``sim`` (``sim.clean``, their centre
    offsets ``sim.center_px``) and its truth. Junk: ``junk`` Gaussian blobs (sigma 0.15-0.3 box,
    peak 1-3 x the particles' max) at least ``min_dist`` from every particle; ``carbon``: a step
    of 2 x the particles' std over a third of the image."""
    rng = np.random.default_rng(seed)
    box = sim.config.box
    min_dist = box if min_dist is None else min_dist
    pts = centres(rng, shape, n + junk, box // 2 + 1, min_dist)
    parts, blobs = pts[:n], pts[n:]
    img = np.zeros(shape, np.float64)
    h = box // 2
    for k, (r, c) in enumerate(parts):
        img[r - h: r - h + box, c - h: c - h + box] += sim.clean[k]
    peak = float(sim.clean[: len(parts)].max())
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for r, c in blobs:
        s = box * rng.uniform(0.15, 0.3)
        img += peak * rng.uniform(1.0, 3.0) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
    signal_var = float(sim.clean[: len(parts)].reshape(len(parts), -1).var(axis=1).mean())
    if carbon:
        img += 2.0 * np.sqrt(signal_var) * (xx > 2 * shape[1] / 3)
    if gradient:
        img += gradient * np.sqrt(signal_var) * (xx / shape[1] + yy / shape[0])
    if snr is not None:
        img += rng.normal(0.0, np.sqrt(signal_var / snr) * bin, size=shape)
    truth = pd.DataFrame({"x_px": parts[:, 1] + sim.center_px[: len(parts), 0],
                          "y_px": parts[:, 0] + sim.center_px[: len(parts), 1],
                          "psi_deg": sim.truth["psi_deg"].to_numpy()[: len(parts)]})
    for col in sim.truth.columns:
        if col.startswith("conformation_"):
            truth[col] = sim.truth[col].to_numpy()[: len(parts)]
    junk_xy = pd.DataFrame({"x_px": blobs[:, 1].astype(float), "y_px": blobs[:, 0].astype(float)})
    return img.astype(np.float32), truth, junk_xy


def match(picks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of picks (best first) to truth within ``radius`` px:
    (is_true_positive (n_picks,) bool, matched truth index (n_picks,), -1 when none)."""
    taken = np.zeros(len(truth), bool)
    tp = np.zeros(len(picks), bool)
    idx = np.full(len(picks), -1)
    tx, ty = truth["x_px"].to_numpy(), truth["y_px"].to_numpy()
    for k, (x, y) in enumerate(zip(picks["x_px"].to_numpy(), picks["y_px"].to_numpy(), strict=True)):
        d = np.hypot(tx - x, ty - y)
        d[taken] = np.inf
        if len(d) and d.min() <= radius:
            j = int(d.argmin())
            taken[j], tp[k], idx[k] = True, True, j
    return tp, idx


def average_precision(picks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> float:
    """Area under the precision-recall curve of picks ranked by ``fom``."""
    order = picks.sort_values("fom", ascending=False)
    tp, _ = match(order, truth, radius)
    if not len(truth):
        return float("nan")
    cum = np.cumsum(tp)
    precision = cum / np.arange(1, len(tp) + 1)
    return float((precision * tp).sum() / len(truth))
