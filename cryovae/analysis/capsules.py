"""Capsule metrics and pictures of a model with capsules (the Topographic VAE, ``--model tvae``).

Input: capsule activations of rotation sequences, ``t`` (n, S, K, C): n particles, each turned
through a full turn in S steps (frame l by ``l * 360 / S`` degrees), K capsules of C dimensions
(what :meth:`cryovae.models.PoseVAE.capsule_sequence` returns). ``Roll_d`` moves a capsule's
pattern d dimensions up (``np.roll(t, d, axis=-1)``), the way the model's capsules roll when the
particle turns one step (:mod:`cryovae.models.capsules`).

Metrics (Keller & Welling 2021, section 6.1):

* :func:`equivariance_error`, eq. 13: ``sum_{l<l'} || Roll_{l'-l}(t_l / |t_l|) - t_{l'} / |t_{l'}| ||_1``
  per sequence (0 for capsules that roll exactly with the rotation; the norm is over all K x C
  activations of a frame).
* :func:`capsule_correlation`, eq. 14: the Pearson correlation, over every pair of frames of every
  sequence, between the roll observed from frame l to frame l' (the mode over the capsules of the
  argmax of their periodic cross-correlation) and the true shift ``l' - l`` of the rotation, in
  steps (1 for equivariant capsules, about 0 for capsules that do not roll with the rotation).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def _unit(t: np.ndarray) -> np.ndarray:
    """Each frame's activations (..., K, C) divided by their L2 norm over K x C."""
    norm = np.sqrt((t**2).sum(axis=(-2, -1), keepdims=True))
    return t / np.where(norm > 0, norm, 1.0)


def equivariance_error(t: np.ndarray) -> np.ndarray:
    """Eq. 13 of each sequence of capsule activations ``t`` (n, S, K, C) -> (n,) float64."""
    t = _unit(np.asarray(t, dtype=np.float64))
    n, s = t.shape[:2]
    err = np.zeros(n)
    for l in range(s - 1):  # noqa: E741 (the paper's index)
        for d in range(1, s - l):
            err += np.abs(np.roll(t[:, l], d, axis=-1) - t[:, l + d]).sum(axis=(-2, -1))
    return err


def observed_roll(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """The roll from ``t_a`` to ``t_b`` (each (n, K, C)): per capsule the argmax over d of the
    periodic cross-correlation ``sum_i t_a[i] t_b[i + d]``, then the mode over the K capsules
    (the smallest of tied modes); (n,) int in [0, C)."""
    a = np.asarray(t_a, dtype=np.float64)
    b = np.asarray(t_b, dtype=np.float64)
    # circular cross-correlation via the FFT: corr[d] = sum_i a[i] b[i + d]
    corr = np.fft.irfft(np.conj(np.fft.rfft(a, axis=-1)) * np.fft.rfft(b, axis=-1), n=a.shape[-1], axis=-1)
    best = corr.argmax(axis=-1)  # (n, K)
    c = a.shape[-1]
    counts = np.stack([(best == d).sum(axis=1) for d in range(c)], axis=1)
    return counts.argmax(axis=1)


def capsule_correlation(t: np.ndarray) -> float:
    """Eq. 14 over every pair of frames l < l' of every sequence ``t`` (n, S, K, C): Pearson
    correlation of :func:`observed_roll` with the true shift ``l' - l`` (steps); nan when the
    observed roll is constant."""
    t = np.asarray(t, dtype=np.float64)
    s = t.shape[1]
    observed, true = [], []
    for l in range(s - 1):  # noqa: E741
        for d in range(1, s - l):
            observed.append(observed_roll(t[:, l], t[:, l + d]))
            true.append(np.full(len(t), d))
    x, y = np.concatenate(observed).astype(np.float64), np.concatenate(true).astype(np.float64)
    xd, yd = x - x.mean(), y - y.mean()
    den = np.sqrt((xd**2).sum() * (yd**2).sum())
    return float((xd * yd).sum() / den) if den > 0 else float("nan")


def capsule_scores(t: np.ndarray) -> dict:
    """``equivariance_error`` (mean and median over the sequences) and ``capcorr`` of ``t``
    (n, S, K, C), with the sizes they were measured on."""
    err = equivariance_error(t)
    n, s, k, c = np.shape(t)
    return {"equivariance_error_mean": float(err.mean()), "equivariance_error_median": float(np.median(err)),
            "capcorr": capsule_correlation(t), "particles": int(n), "frames": int(s), "capsules": int(k),
            "capsule_size": int(c)}


def topographic_map_figure(t0: np.ndarray, labels: list[str] | None = None) -> Figure:
    """The topographic map of capsule activations of a few particles: one panel per particle,
    its K capsules as rows and their C dimensions as columns. t0 : (m, K, C)."""
    t0 = np.asarray(t0, dtype=np.float64)
    m = len(t0)
    cols = min(m, 4)
    rows = -(-m // cols)
    fig = Figure(figsize=(2.6 * cols, 0.35 * t0.shape[1] * rows + 0.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= m:
            ax.set_axis_off()
            continue
        im = ax.imshow(t0[i], cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(labels[i] if labels else f"particle {i + 1}", fontsize=9)
        ax.set_xlabel("capsule dimension", fontsize=8)
        ax.set_ylabel("capsule", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Capsule activations T (rows: capsules; a turn of the particle rolls each row)", fontsize=10)
    return fig


def capsule_roll_figure(frames: np.ndarray, t: np.ndarray, label: str = "") -> Figure:
    """One particle turned in S steps (top row: the masked frames) and its capsule activations
    in each frame (below: capsules as rows, dimensions as columns), one shared colour scale; with
    equivariant capsules the pattern moves one column right per step.

    frames : (S, box, box).  t : (S, K, C).
    """
    frames = np.asarray(frames, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    s = len(frames)
    fig = Figure(figsize=(1.25 * s, 1.3 + 0.16 * t.shape[1]), layout="constrained")
    axes = fig.subplots(2, s, squeeze=False, height_ratios=[1.0, max(0.5, 0.12 * t.shape[1])])
    lo, hi = np.percentile(frames, [1, 99])
    vmin, vmax = float(t.min()), float(t.max())
    step = 360.0 / s
    for l in range(s):  # noqa: E741
        axes[0, l].imshow(frames[l], cmap="gray", vmin=lo, vmax=hi)
        axes[0, l].set_title(f"{l * step:.0f}°", fontsize=8)
        axes[0, l].set_axis_off()
        axes[1, l].imshow(t[l], cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        axes[1, l].set_xticks([])
        axes[1, l].set_yticks([])
    axes[1, 0].set_ylabel("capsules", fontsize=8)
    fig.suptitle(f"Capsule roll{' of ' + label if label else ''}: turned by {step:g}° per step", fontsize=10)
    return fig


def has_capsules(model, box: int, device) -> bool:
    """Whether ``model`` has capsules: its ``capsule_sequence`` of one blank image is not None."""
    import torch

    return model.capsule_sequence(torch.zeros(1, box, box, device=device)) is not None


def capsule_section(model, images: np.ndarray, rows: np.ndarray, device, batch_size: int = 64
                    ) -> tuple[dict[str, Figure], dict, str] | None:
    """The capsule pictures and metrics of ``cryovae analyze``: ``capsule_map.png`` (the map of
    the first four particles), ``capsule_roll.png`` (the first particle turned through a full
    turn) and :func:`capsule_scores` over all of ``images`` (n, box, box) preprocessed particles
    (``rows``: their 0-based rows in the run's star, for the labels). None for a model without
    capsules (its ``capsule_sequence`` returns None)."""
    import torch

    first, acts = None, []
    for s in range(0, len(images), batch_size):
        seq = model.capsule_sequence(torch.as_tensor(np.asarray(images[s: s + batch_size], np.float32), device=device))
        if seq is None:
            return None
        if first is None:
            first = seq[0][0].float().cpu().numpy()
        acts.append(seq[1].float().cpu().numpy())
    if first is None:
        return None
    t = np.concatenate(acts)
    labels = [f"particle {r + 1}" for r in rows[:4]]
    figures = {"capsule_map.png": topographic_map_figure(t[:4, 0], labels),
               "capsule_roll.png": capsule_roll_figure(first, t[0], labels[0])}
    scores = capsule_scores(t)
    caption = (f"Capsule activations T of particles as given (map) and of particle {rows[0] + 1} turned through a "
               f"full turn in {t.shape[1]} steps (roll). Over the rotation sequences of {len(t)} particles: "
               f"equivariance error (Keller & Welling eq. 13) {scores['equivariance_error_mean']:.1f} (mean), "
               f"CapCorr (eq. 14) {scores['capcorr']:.3f}.")
    return figures, scores, caption
