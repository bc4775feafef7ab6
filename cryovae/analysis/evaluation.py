"""Pictures of an evaluation against simulated ground truth.

Each function takes arrays and returns a :class:`matplotlib.figure.Figure` (Agg canvas, no
pyplot state); the caller saves it (``fig.savefig(path)``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from cryovae.analysis.metrics import angular_errors, pearson
from cryovae.geometry import wrap_degrees


def _points(n: int) -> dict:
    """Scatter style: bigger, more opaque points for few particles."""
    return dict(s=12 if n < 500 else 4, alpha=float(np.clip(150.0 / max(n, 1), 0.15, 0.8)), linewidths=0,
                rasterized=True)


def rotation_figure(true_psi_deg: np.ndarray, pred_psi_deg: np.ndarray, offset_deg: float = 0.0,
                    circular_correlation: float | None = None, title: str | None = None) -> Figure:
    """Predicted vs true in-plane rotation (as TARGET-VAE Fig. 2) and the error histogram.

    Parameters
    ----------
    true_psi_deg, pred_psi_deg : (n,) degrees.
    offset_deg : global offset removed from the prediction before plotting (best fit).
    circular_correlation : shown in the title when given.

    Left: ``wrap(pred - offset)`` against true, both in (-180, 180]; a perfect prediction lies
    on the diagonal (points at the corners are the same angle wrapped). Right: histogram of
    the absolute angular error, with the 15-degree threshold and the median marked.
    """
    true = wrap_degrees(true_psi_deg)
    pred = wrap_degrees(np.asarray(pred_psi_deg, dtype=np.float64) - offset_deg)
    err = angular_errors(pred, true)
    fig = Figure(figsize=(9.5, 4.2), constrained_layout=True)
    ax, hx = fig.subplots(1, 2)
    ax.scatter(true, pred, c="tab:blue", **_points(len(true)))
    ax.plot([-180, 180], [-180, 180], color="k", lw=0.8, ls="--")
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="true psi (deg)",
           ylabel=f"predicted psi - {offset_deg:.1f} (deg)", aspect="equal")
    ax.set_xticks(range(-180, 181, 90))
    ax.set_yticks(range(-180, 181, 90))
    ax.set_title("rotation" + (f": circular corr {circular_correlation:.3f}" if circular_correlation is not None else ""))
    hx.hist(err, bins=np.linspace(0, 180, 73), color="tab:gray")
    med = float(np.median(err))
    hx.axvline(15.0, color="tab:red", lw=1, label=f"15°: {np.mean(err <= 15):.1%} within")
    hx.axvline(med, color="tab:blue", lw=1, ls="--", label=f"median {med:.1f}°")
    hx.set(xlabel="|angular error| (deg)", ylabel="particles", xlim=(0, 180))
    hx.legend(frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def latent_figure(latents: np.ndarray, conformation: np.ndarray,
                  latent_names: list[str] | None = None, conformation_names: list[str] | None = None,
                  title: str | None = None) -> Figure:
    """Every content latent against every true conformation coordinate, with Pearson r.

    latents : (n, k).  conformation : (n, m).  One scatter panel per (latent, coordinate).
    """
    z = np.asarray(latents, dtype=np.float64)
    z = z.reshape(len(z), -1)
    conf = np.asarray(conformation, dtype=np.float64).reshape(len(z), -1)
    k, m = z.shape[1], conf.shape[1]
    zn = latent_names or [f"z{i + 1}" for i in range(k)]
    cn = conformation_names or [f"conformation_{j + 1}" for j in range(m)]
    fig = Figure(figsize=(3.6 * m + 0.6, 3.2 * k + 0.4), constrained_layout=True)
    axes = np.atleast_2d(fig.subplots(k, m, squeeze=False))
    for i in range(k):
        for j in range(m):
            ax = axes[i, j]
            ax.scatter(conf[:, j], z[:, i], c="tab:green", **_points(len(z)))
            ax.set(xlabel=f"true {cn[j]}", ylabel=zn[i])
            ax.set_title(f"Pearson r = {pearson(z[:, i], conf[:, j]):.3f}")
    if title:
        fig.suptitle(title)
    return fig


def translation_figure(true_origin_A: np.ndarray, pred_origin_A: np.ndarray, title: str | None = None) -> Figure:
    """Predicted vs true origin along x and y (Å), one panel each, with Pearson r."""
    true = np.asarray(true_origin_A, dtype=np.float64).reshape(-1, 2)
    pred = np.asarray(pred_origin_A, dtype=np.float64).reshape(-1, 2)
    fig = Figure(figsize=(8.5, 4.0), constrained_layout=True)
    for axis, ax in enumerate(fig.subplots(1, 2)):
        ax.scatter(true[:, axis], pred[:, axis], c="tab:purple", **_points(len(true)))
        lo = float(min(true[:, axis].min(), pred[:, axis].min()))
        hi = float(max(true[:, axis].max(), pred[:, axis].max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
        name = "xy"[axis]
        ax.set(xlabel=f"true origin {name} (Å)", ylabel=f"predicted origin {name} (Å)")
        ax.set_title(f"Pearson r = {pearson(pred[:, axis], true[:, axis]):.3f}")
    if title:
        fig.suptitle(title)
    return fig


def _nonfinite(values: dict[str, np.ndarray], source, what: str) -> None:
    """Raise InputFileError naming ``source``, the rows and the columns with NaN/inf values.

    values : column name -> (n,) floats (rows in file order).  what : "rows" or "particles".
    """
    from cryovae.errors import InputFileError

    bad_cols = [name for name, v in values.items() if not np.isfinite(v).all()]
    if not bad_cols:
        return
    bad = np.zeros(len(next(iter(values.values()))), dtype=bool)
    for name in bad_cols:
        bad |= ~np.isfinite(values[name])
    rows = np.flatnonzero(bad) + 1
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    raise InputFileError(f"{source}: NaN or infinite values in {len(rows)} of {len(bad)} {what} "
                         f"(row{'s' if len(rows) > 1 else ''} {shown}, 1-based; column{'s' if len(bad_cols) > 1 else ''} "
                         f"{', '.join(bad_cols)}): the metrics would be NaN; fix or remove those rows")


def check_truth_finite(truth, source, with_origins: bool = True) -> None:
    """Refuse a truth table with NaN/inf in a scored column (``conformation_*``, ``psi_deg``,
    ``origin_x_A``/``origin_y_A`` when ``with_origins``, ``class``): one line naming ``source``, the rows
    (1-based data rows, every row of the file) and the columns."""
    cols = [c for c in truth.columns if c.startswith("conformation_") or c == "class"] + ["psi_deg"]
    if with_origins:
        cols += [c for c in ("origin_x_A", "origin_y_A") if c in truth.columns]
    import pandas as pd

    _nonfinite({c: pd.to_numeric(truth[c], errors="coerce").to_numpy(dtype=np.float64) for c in cols}, source,
               "rows")


def check_predictions_finite(predicted: dict, source) -> None:
    """Refuse predictions (from :func:`~cryovae.analysis.metrics.align_predictions`) with NaN/inf
    latents, psi, origins or class: one line naming ``source`` (the star), the particles and columns."""
    z = np.asarray(predicted["z"], dtype=np.float64)
    z = z.reshape(len(z), -1)
    values = {f"cryovaeZ{k + 1}": z[:, k] for k in range(z.shape[1])}
    values["rlnAnglePsi"] = np.asarray(predicted["psi_deg"], dtype=np.float64)
    if predicted.get("origin_A") is not None:
        origin = np.asarray(predicted["origin_A"], dtype=np.float64)
        values["origin x"], values["origin y"] = origin[:, 0], origin[:, 1]
    if predicted.get("class") is not None:
        values["class number"] = np.asarray(predicted["class"], dtype=np.float64)
    _nonfinite(values, source, "particles")
    if "class number" in values:
        classes = values["class number"]
        bad = np.flatnonzero(classes != np.round(classes))
        if len(bad):
            from cryovae.errors import InputFileError

            raise InputFileError(f"{source}: the class number of particle {bad[0] + 1} (1-based) is "
                                 f"{classes[bad[0]]:g}, not a whole number")


def evaluation_report(predicted: dict, truth) -> tuple[dict, dict[str, Figure]]:
    """Metrics and figures of predictions aligned row by row with a truth table.

    Parameters
    ----------
    predicted : ``{"z": (n, k), "psi_deg": (n,), "origin_A": (n, 2) or None, "class": (n,) or None}``.
    truth : pandas DataFrame from ``truth.csv`` (n rows, same order).

    Returns
    -------
    (metrics from :func:`cryovae.analysis.metrics.score_against_truth`,
    ``{"rotation": Figure, "latents": Figure (when the truth has conformations),
    "translation": Figure (when origins are known), "classes": Figure (the confusion table, when
    the truth has classes and a class is predicted)}``).
    """
    from cryovae.analysis.metrics import score_against_truth

    metrics = score_against_truth(predicted, truth)
    rot = metrics["rotation"]
    true_psi = truth["psi_deg"].to_numpy(dtype=np.float64)
    figures = {"rotation": rotation_figure(true_psi, predicted["psi_deg"], rot["offset_deg"],
                                           rot["circular_correlation"])}
    conf_cols = [c for c in truth.columns if c.startswith("conformation_")]
    if conf_cols:
        z = np.asarray(predicted["z"], dtype=np.float64)
        figures["latents"] = latent_figure(z, truth[conf_cols].to_numpy(dtype=np.float64),
                                           [f"cryovaeZ{k + 1}" for k in range(z.reshape(len(z), -1).shape[1])],
                                           conf_cols)
    if "translation" in metrics:
        figures["translation"] = translation_figure(
            truth[["origin_x_A", "origin_y_A"]].to_numpy(dtype=np.float64), predicted["origin_A"])
    if "classes" in metrics:
        figures["classes"] = class_figure(metrics["classes"])
    return metrics, figures


def class_figure(classes: dict, title: str | None = None) -> Figure:
    """The confusion table of predicted vs true classes as a heat map with counts.

    classes : :meth:`cryovae.analysis.metrics.ClassAgreement.to_dict`. Rows are the true classes;
    the predicted classes are in the order of their matched true class (matched ones first), so
    a perfect classification is the diagonal. Each row is coloured by the fraction of its class.
    """
    confusion = np.asarray(classes["confusion"], dtype=np.float64)
    true, pred = classes["true_classes"], classes["predicted_classes"]
    to_true = {int(p): t for p, t in classes["matching"].items()}
    order = sorted(range(len(pred)), key=lambda j: (true.index(to_true[pred[j]]) if pred[j] in to_true else len(true), j))
    conf = confusion[:, order]
    frac = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.0 + 0.7 * len(pred), 1.0 + 0.6 * len(true)), constrained_layout=True)
    ax = fig.subplots()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(order)), [str(pred[j]) for j in order])
    ax.set_yticks(range(len(true)), [str(t) for t in true])
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title or f"accuracy {classes['accuracy']:.3f}, ARI {classes['ari']:.3f}, NMI {classes['nmi']:.3f}",
                 fontsize=9)
    return fig


def motion_figure(rows: list[tuple[str, np.ndarray, list[str]]], title: str | None = None) -> Figure:
    """Rows of image strips, e.g. the true conformational motion above a learned traversal.

    Parameters
    ----------
    rows : ``(label, frames (k, N, N), frame titles)`` per row; each row is shown with its own
        1st-99th percentile grey range (a model's images and the truth have different scales).
    """
    ncols = max(len(f) for _, f, _ in rows)
    fig = Figure(figsize=(1.25 * ncols + 1.4, 1.45 * len(rows) + (0.4 if title else 0.1)), constrained_layout=True)
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, (label, frames, titles) in enumerate(rows):
        frames = np.asarray(frames, dtype=np.float64)
        lo, hi = np.percentile(frames, [1.0, 99.0])
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(frames):
                ax.imshow(frames[c], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
                if titles and c < len(titles):
                    ax.set_title(titles[c], fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
