"""Ground-truth metrics: how well inferred latents and poses recover a simulation's truth.

All functions take numpy arrays (angles in degrees unless the name says ``_rad``, shifts in Å)
and return floats / dicts of floats; ``nan`` where a quantity is undefined (e.g. a constant
input). :func:`score_against_truth` joins a cryovae particle table to ``truth.csv`` and runs
them all.

Rotation: the zero of a learned rotation is arbitrary (the model's template may be turned by a
constant), so angular errors are measured after the best global offset
``c* = argmin_c median |wrap(pred - true - c)|``. A model may also learn the mirror-image
handedness, ``pred ~ -true + c``; that fit is reported too, but the headline numbers are the
direct ones. A particle that looks alike turned by 180° (a near two-fold, such as a
two-domain hinge seen flat) may be placed either way round; ``modulo_180`` scores the angles
as axes (errors folded to [0, 90], the circular correlation of the doubled angles), so such a
flip shows as a good ``modulo_180`` beside a poor direct score.

Circular correlation: the headline is Fisher & Lee's T-linear association (Biometrika 70:327,
1983), with ``x_i = (cos a_i, sin a_i)``, ``y_i = (cos b_i, sin b_i)``::

    rho_T = det(sum x_i y_i^T) / sqrt(det(sum x_i x_i^T) det(sum y_i y_i^T))

It is 1 when ``b = a + c``, -1 when ``b = -a + c`` (mirror), near 0 for unrelated angles, and
it is well defined for *uniformly* distributed angles (our poses). Spatial-VAE's Table 1 cites
Jammalamadaka & SenGupta (Topics in Circular Statistics, 2001) for "the circular correlation";
their ``r_c = sum sin(a - abar) sin(b - bbar) / sqrt(sum sin^2(a - abar) sum sin^2(b - bbar))``
is reported too (``circular_correlation_js``), but it centres on the circular means, which are
arbitrary for uniform angles, so with noise it can be far from 1 (even negative) for clearly
related angles. Compare with the papers knowing this.

Classes: :func:`class_agreement` scores predicted discrete classes against true ones with the
accuracy after the best one-to-one matching of predicted to true classes (the Hungarian
algorithm on the contingency table), the adjusted Rand index and the normalised mutual
information; the class numbers themselves are arbitrary. The rotation of a class set is scored
within each true class (:func:`rotation_within_classes`): every class's template has its own
arbitrary zero angle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryovae.geometry import rotation_matrix, wrap_degrees

CIRCULAR_CORRELATION_REFERENCE = (
    "circular_correlation: Fisher & Lee (1983) T-linear association; circular_correlation_js: "
    "Jammalamadaka & SenGupta (2001) r_c (cited by spatial-VAE Table 1; unstable for uniform angles)")
#: the accuracy threshold of :func:`rotation_accuracy`, degrees.
WITHIN_DEG = 15.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (n,) arrays; nan if either is constant."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    xd, yd = x - x.mean(), y - y.mean()
    den = np.sqrt((xd * xd).sum() * (yd * yd).sum())
    return float((xd * yd).sum() / den) if den > 0 else float("nan")


def multiple_correlation(latents: np.ndarray, target: np.ndarray) -> float:
    """Multiple correlation R: Pearson correlation of ``target`` (n,) with its least-squares fit
    by an affine function of all latents (n, k) (R^2 is the fit's coefficient of determination)."""
    z = np.asarray(latents, dtype=np.float64).reshape(len(target), -1)
    y = np.asarray(target, dtype=np.float64).ravel()
    design = np.column_stack([z, np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    r = pearson(design @ coef, y)
    return max(r, 0.0) if np.isfinite(r) else r


def circular_correlation(a_rad: np.ndarray, b_rad: np.ndarray) -> float:
    """Fisher-Lee circular correlation (T-linear association) of two (n,) angle arrays, radians."""
    a = np.asarray(a_rad, dtype=np.float64).ravel()
    b = np.asarray(b_rad, dtype=np.float64).ravel()
    x = np.stack([np.cos(a), np.sin(a)], axis=1)
    y = np.stack([np.cos(b), np.sin(b)], axis=1)
    den = np.sqrt(np.linalg.det(x.T @ x) * np.linalg.det(y.T @ y))
    return float(np.linalg.det(x.T @ y) / den) if den > 1e-12 * len(a) ** 2 else float("nan")


def circular_correlation_js(a_rad: np.ndarray, b_rad: np.ndarray) -> float:
    """Jammalamadaka-SenGupta circular correlation r_c of two (n,) angle arrays in radians."""
    a = np.asarray(a_rad, dtype=np.float64).ravel()
    b = np.asarray(b_rad, dtype=np.float64).ravel()
    sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
    sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
    den = np.sqrt((sa * sa).sum() * (sb * sb).sum())
    return float((sa * sb).sum() / den) if den > 0 else float("nan")


def angular_errors(pred_deg: np.ndarray, true_deg: np.ndarray, offset_deg: float = 0.0) -> np.ndarray:
    """``|wrap(pred - true - offset)|`` in degrees, (n,) in [0, 180]."""
    d = np.asarray(pred_deg, dtype=np.float64) - np.asarray(true_deg, dtype=np.float64) - offset_deg
    return np.abs(wrap_degrees(d))


def best_rotation_offset(pred_deg: np.ndarray, true_deg: np.ndarray, mirror: bool = False) -> float:
    """The global offset c (degrees, in (-180, 180]) minimising the median of
    ``|wrap(pred - true - c)|`` (or of ``|wrap(pred + true - c)|`` with ``mirror``).

    Searched on a 1-degree grid (on up to 5000 particles), then refined to 0.01 degree.
    """
    pred = np.asarray(pred_deg, dtype=np.float64).ravel()
    true = np.asarray(true_deg, dtype=np.float64).ravel()
    d = wrap_degrees(pred + true if mirror else pred - true)
    sub = d if len(d) <= 5000 else d[np.random.default_rng(0).choice(len(d), 5000, replace=False)]

    def cost(candidates: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.median(np.abs(wrap_degrees(values[None, :] - candidates[:, None])), axis=1)

    grid = np.arange(-179.0, 181.0, 1.0)
    c0 = grid[np.argmin(cost(grid, sub))]
    fine = c0 + np.arange(-1.5, 1.5001, 0.01)
    return float(wrap_degrees(fine[np.argmin(cost(fine, d))]))


def rotation_accuracy(pred_deg: np.ndarray, true_deg: np.ndarray) -> dict:
    """Rotation scores of predicted vs true in-plane angles (degrees, (n,) each).

    Returns
    -------
    dict with ``circular_correlation`` (Fisher-Lee), ``circular_correlation_js``, ``offset_deg`` (best global offset),
    ``median_error_deg`` and ``fraction_within_15deg`` after that offset (the direct fit),
    ``mirror`` (the same four for ``pred ~ -true + c``), ``best_fit`` (``"direct"`` or
    ``"mirror"``, whichever has the smaller median error) and ``modulo_180`` (the direct fit
    with angles taken modulo 180°: ``circular_correlation`` of the doubled angles, and the median
    error and fraction within 15° with errors folded to [0, 90]).
    """
    pred = np.asarray(pred_deg, dtype=np.float64).ravel()
    true = np.asarray(true_deg, dtype=np.float64).ravel()
    out = {}
    for name, sign in (("direct", 1.0), ("mirror", -1.0)):
        off = best_rotation_offset(pred, true, mirror=sign < 0)
        err = angular_errors(pred, sign * true, off)
        out[name] = {
            "circular_correlation": circular_correlation(np.radians(pred), np.radians(sign * true)),
            "circular_correlation_js": circular_correlation_js(np.radians(pred), np.radians(sign * true)),
            "offset_deg": off,
            "median_error_deg": float(np.median(err)),
            "fraction_within_15deg": float(np.mean(err <= WITHIN_DEG)),
        }
    result = dict(out["direct"])
    result["mirror"] = out["mirror"]
    result["best_fit"] = "mirror" if out["mirror"]["median_error_deg"] < out["direct"]["median_error_deg"] else "direct"
    # axes: a 180-degree flip is no error; the offset is found on the doubled angles
    off2 = best_rotation_offset(2 * pred, 2 * true) / 2
    err = angular_errors(pred, true, off2)
    err = np.minimum(err, 180.0 - err)
    result["modulo_180"] = {
        "circular_correlation": circular_correlation(np.radians(2 * pred), np.radians(2 * true)),
        "offset_deg": float(off2),
        "median_error_deg": float(np.median(err)),
        "fraction_within_15deg": float(np.mean(err <= WITHIN_DEG)),
    }
    return result


def translation_accuracy(pred_origin_A: np.ndarray, true_origin_A: np.ndarray, true_psi_deg: np.ndarray) -> dict:
    """Scores of predicted vs true RELION origins (n, 2) in Å.

    A learned template may sit off-centre by a vector t (its frame), which shifts every origin
    by ``-R(-psi) t`` (:mod:`cryovae.geometry`). Besides the raw RMSE, the RMSE after the
    least-squares ``t`` is reported (``rmse_after_template_offset_A``, with ``template_offset_A``).

    Returns
    -------
    dict: ``pearson_x``, ``pearson_y``, ``pearson`` (both axes pooled), ``rmse_A``
    (sqrt of the mean squared 2D error), ``template_offset_A`` [tx, ty],
    ``rmse_after_template_offset_A``.
    """
    pred = np.asarray(pred_origin_A, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true_origin_A, dtype=np.float64).reshape(-1, 2)
    diff = pred - true
    # diff_i = -R(-psi_i) t  =>  t = -mean_i R(psi_i) diff_i
    rot = rotation_matrix(np.radians(np.asarray(true_psi_deg, dtype=np.float64).ravel()))
    t = -np.einsum("nij,nj->ni", rot, diff).mean(axis=0)
    resid = diff + np.einsum("nij,j->ni", rotation_matrix(-np.radians(np.asarray(true_psi_deg, dtype=np.float64))), t)
    return {
        "pearson_x": pearson(pred[:, 0], true[:, 0]),
        "pearson_y": pearson(pred[:, 1], true[:, 1]),
        "pearson": pearson(pred.ravel(), true.ravel()),
        "rmse_A": float(np.sqrt((diff**2).sum(axis=1).mean())),
        "template_offset_A": [float(t[0]), float(t[1])],
        "rmse_after_template_offset_A": float(np.sqrt((resid**2).sum(axis=1).mean())),
    }


def conformation_accuracy(latents: np.ndarray, conformation: np.ndarray,
                          latent_names: list[str] | None = None,
                          conformation_names: list[str] | None = None) -> dict:
    """Correlation of content latents (n, k) with true conformation coordinates (n, m).

    Returns
    -------
    dict: ``pearson`` {latent: {conformation: r}}, ``multiple_correlation`` {conformation: R}
    (R of the linear regression of that coordinate on all latents), ``best_abs_pearson``
    {conformation: max_k |r|}.
    """
    z = np.asarray(latents, dtype=np.float64)
    z = z.reshape(len(z), -1)
    conf = np.asarray(conformation, dtype=np.float64).reshape(len(z), -1)
    zn = latent_names or [f"z{k + 1}" for k in range(z.shape[1])]
    cn = conformation_names or [f"conformation_{j + 1}" for j in range(conf.shape[1])]
    table = {zn[k]: {cn[j]: pearson(z[:, k], conf[:, j]) for j in range(conf.shape[1])} for k in range(z.shape[1])}
    return {
        "pearson": table,
        "multiple_correlation": {cn[j]: multiple_correlation(z, conf[:, j]) for j in range(conf.shape[1])},
        "best_abs_pearson": {cn[j]: float(np.nanmax([abs(table[k][cn[j]]) for k in zn])) for j in range(conf.shape[1])},
    }


@dataclass(frozen=True, eq=False)
class ClassAgreement:
    """How well predicted discrete classes recover the true ones.

    Attributes
    ----------
    n : number of particles.
    accuracy : fraction of particles whose predicted class is matched to their true class, under
        the one-to-one matching that maximises it (Hungarian algorithm; with more predicted than
        true classes the unmatched predicted classes count as wrong, with fewer the unmatched true
        classes do).
    ari : adjusted Rand index (sklearn.metrics.adjusted_rand_score): 1 for identical partitions,
        about 0 for a random one.
    nmi : normalised mutual information (sklearn.metrics.normalized_mutual_info_score,
        arithmetic normalisation), in [0, 1].
    true_classes : (K_true,) the true class labels, sorted (the rows of ``confusion``).
    pred_classes : (K_pred,) the predicted class labels, sorted (its columns).
    confusion : (K_true, K_pred) int counts, ``confusion[i, j]`` particles of true class
        ``true_classes[i]`` predicted as ``pred_classes[j]``.
    matching : ``{predicted label: true label}`` for the matched pairs.
    """

    n: int
    accuracy: float
    ari: float
    nmi: float
    true_classes: np.ndarray
    pred_classes: np.ndarray
    confusion: np.ndarray
    matching: dict[int, int]

    def recall(self) -> dict[int, float]:
        """``{true label: fraction of its particles in its matched predicted class}`` (0 unmatched)."""
        to_pred = {t: p for p, t in self.matching.items()}
        col = {int(p): j for j, p in enumerate(self.pred_classes)}
        out = {}
        for i, t in enumerate(self.true_classes):
            total = self.confusion[i].sum()
            hit = self.confusion[i, col[to_pred[int(t)]]] if int(t) in to_pred else 0
            out[int(t)] = float(hit / total) if total else float("nan")
        return out

    def confusion_table(self) -> pd.DataFrame:
        """``confusion`` as a DataFrame: index ``true <label>``, columns ``predicted <label>``."""
        return pd.DataFrame(self.confusion, index=[f"true {t}" for t in self.true_classes],
                            columns=[f"predicted {p}" for p in self.pred_classes])

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field (and the per-class recall)."""
        return {"n": self.n, "accuracy": self.accuracy, "ari": self.ari, "nmi": self.nmi,
                "true_classes": [int(t) for t in self.true_classes],
                "predicted_classes": [int(p) for p in self.pred_classes],
                "confusion": self.confusion.tolist(),
                "matching": {str(p): int(t) for p, t in sorted(self.matching.items())},
                "recall": {str(t): r for t, r in self.recall().items()}}


def class_agreement(truth: np.ndarray, pred: np.ndarray) -> ClassAgreement:
    """Accuracy after the Hungarian matching, ARI and NMI of predicted vs true classes.

    Parameters
    ----------
    truth : (n,) true class labels (any integers, e.g. ``truth.csv``'s 1-based ``class``).
    pred : (n,) predicted class labels (any integers; their number may differ from the truth's).

    Returns
    -------
    ClassAgreement. The matching maximises the matched counts of the (K_true, K_pred)
    contingency table (scipy.optimize.linear_sum_assignment).

    Raises
    ------
    ValueError : lengths differ, no particles, or labels that are not whole numbers.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _class_labels(truth, "truth"), _class_labels(pred, "pred")
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true classes but {len(p)} predicted ones")
    if not len(t):
        raise ValueError("no particles to compare")
    true_classes, ti = np.unique(t, return_inverse=True)
    pred_classes, pi = np.unique(p, return_inverse=True)
    confusion = np.zeros((len(true_classes), len(pred_classes)), dtype=np.int64)
    np.add.at(confusion, (ti, pi), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    matching = {int(pred_classes[c]): int(true_classes[r]) for r, c in zip(rows, cols, strict=True)}
    return ClassAgreement(
        n=len(t), accuracy=float(confusion[rows, cols].sum() / len(t)),
        ari=float(adjusted_rand_score(t, p)), nmi=float(normalized_mutual_info_score(t, p)),
        true_classes=true_classes, pred_classes=pred_classes, confusion=confusion, matching=matching)


def _class_labels(values, name: str) -> np.ndarray:
    v = np.asarray(values).ravel()
    if v.dtype.kind in "iu":
        return v.astype(np.int64)
    f = v.astype(np.float64)
    if not (np.isfinite(f).all() and (f == np.round(f)).all()):
        raise ValueError(f"{name}: class labels must be whole numbers")
    return f.astype(np.int64)


def rotation_within_classes(pred_deg: np.ndarray, true_deg: np.ndarray, classes: np.ndarray) -> dict:
    """Rotation recovery scored separately in each true class (each has its own zero angle).

    Parameters
    ----------
    pred_deg, true_deg : (n,) predicted and true in-plane angles, degrees.
    classes : (n,) true class labels.

    Returns
    -------
    dict: ``circular_correlation`` (the Fisher-Lee correlation in each class, averaged with the
    classes' particle counts as weights, over classes where it is defined), ``median_error_deg``
    (the median over all particles of the error after each class's own best offset) and
    ``per_class`` ``{label: {"n", "circular_correlation", "offset_deg", "median_error_deg"}}``.
    """
    pred = np.asarray(pred_deg, dtype=np.float64).ravel()
    true = np.asarray(true_deg, dtype=np.float64).ravel()
    labels = _class_labels(classes, "classes")
    per, errors, weights, corr = {}, [], [], []
    for label in np.unique(labels):
        sel = labels == label
        rho = circular_correlation(np.radians(pred[sel]), np.radians(true[sel])) if sel.sum() >= 3 else float("nan")
        off = best_rotation_offset(pred[sel], true[sel])
        err = angular_errors(pred[sel], true[sel], off)
        errors.append(err)
        per[str(int(label))] = {"n": int(sel.sum()), "circular_correlation": rho, "offset_deg": off,
                                "median_error_deg": float(np.median(err))}
        if np.isfinite(rho):
            corr.append(rho)
            weights.append(sel.sum())
    return {"circular_correlation": float(np.average(corr, weights=weights)) if corr else float("nan"),
            "median_error_deg": float(np.median(np.concatenate(errors))), "per_class": per}


_Z_COLUMN = re.compile(r"^(?:rln)?cryovaeZ(\d+)$")


def latent_columns(table: pd.DataFrame) -> list[str]:
    """The ``cryovaeZ1..n`` columns of a particle table (with or without the star's ``_``), in order."""
    found = [(int(m.group(1)), c) for c in table.columns if (m := _Z_COLUMN.match(str(c).lstrip("_")))]
    return [c for _, c in sorted(found)]


def score_against_truth(predicted: dict[str, np.ndarray], truth: pd.DataFrame) -> dict:
    """Every metric, for predictions already aligned row by row with ``truth``.

    Parameters
    ----------
    predicted : ``{"z": (n, k), "psi_deg": (n,), "origin_A": (n, 2) or None, "class": (n,) or
        None}`` (``class`` optional: a model's predicted class numbers).
    truth : the simulation's truth table (``conformation_*`` or ``class``, ``psi_deg``,
        ``origin_x_A``, ``origin_y_A``), n rows.

    Returns
    -------
    dict with ``n``, ``conformation`` (absent when the truth has none), ``rotation``,
    ``translation`` (absent when ``origin_A`` is None), and when the truth has ``class``:
    ``rotation_within_classes`` (:func:`rotation_within_classes`) and, when a class is predicted,
    ``classes`` (:meth:`ClassAgreement.to_dict`); nan where undefined.
    """
    n = len(truth)
    out: dict = {"n": int(n)}
    conf_cols = [c for c in truth.columns if c.startswith("conformation_")]
    z = np.asarray(predicted["z"], dtype=np.float64).reshape(n, -1)
    if conf_cols:
        out["conformation"] = conformation_accuracy(
            z, truth[conf_cols].to_numpy(), [f"cryovaeZ{k + 1}" for k in range(z.shape[1])], conf_cols)
    true_psi = truth["psi_deg"].to_numpy(dtype=np.float64)
    out["rotation"] = rotation_accuracy(predicted["psi_deg"], true_psi)
    out["rotation"]["circular_correlation_reference"] = CIRCULAR_CORRELATION_REFERENCE
    if predicted.get("origin_A") is not None:
        out["translation"] = translation_accuracy(
            predicted["origin_A"], truth[["origin_x_A", "origin_y_A"]].to_numpy(dtype=np.float64), true_psi)
    if "class" in truth.columns:
        true_class = truth["class"].to_numpy()
        out["rotation_within_classes"] = rotation_within_classes(predicted["psi_deg"], true_psi, true_class)
        if predicted.get("class") is not None:
            out["classes"] = class_agreement(true_class, predicted["class"]).to_dict()
    return out


#: star columns read as a model's predicted class, in this order: RELION's class number (what a
#: class-producing model writes), then the generic extra column of an ``extras["class"]``
CLASS_COLUMNS = ("rlnClassNumber", "cryovaeClass")

_IMAGE_NAME = re.compile(r"^\s*0*(\d+)@(.+?)\s*$")


def align_predictions(table: pd.DataFrame, truth: pd.DataFrame,
                      pixel_size_A: float | None = None) -> tuple[dict, pd.DataFrame, str]:
    """Pair each row of a cryovae particle table with its row of ``truth``.

    Join rule: when every ``rlnImageName`` is ``k@stack`` with one stack name and each k is a
    distinct index in ``1..len(truth)``, row k-1 of the truth (``truth.csv`` is in stack order);
    otherwise row order, which needs equal row counts.

    Parameters
    ----------
    table : star table with ``cryovaeZ*``, ``rlnAnglePsi`` and ``rlnOriginXAngst/YAngst`` (or
        ``rlnOriginX/Y`` in pixels, converted with ``pixel_size_A`` or the table's
        ``rlnImagePixelSize``; origins are optional) and optionally a predicted class
        (:data:`CLASS_COLUMNS`, the first one present).
    truth : truth table.

    Returns
    -------
    (predicted for :func:`score_against_truth`, truth rows in table order, join description).

    Raises
    ------
    ValueError with a one-line reason (missing columns, row counts that do not match).
    """
    zcols = latent_columns(table)
    if not zcols:
        raise ValueError("no cryovaeZ columns (is this a star written by cryovae train/encode?)")
    if "rlnAnglePsi" not in table.columns:
        raise ValueError("no rlnAnglePsi column")
    if "psi_deg" not in truth.columns:
        raise ValueError("truth has no psi_deg column")
    idx = _image_indices(table, len(truth))
    if idx is not None:
        aligned, how = truth.iloc[idx].reset_index(drop=True), "rlnImageName index"
    elif len(table) == len(truth):
        aligned, how = truth.reset_index(drop=True), "row order"
    else:
        raise ValueError(f"{len(table)} particles but the truth has {len(truth)} rows "
                         "(and rlnImageName indices do not identify truth rows)")
    origin = None
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(table.columns):
        origin = table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(dtype=np.float64)
    elif {"rlnOriginX", "rlnOriginY"} <= set(table.columns):
        apix = pixel_size_A
        if apix is None and "rlnImagePixelSize" in table.columns:
            apix = float(table["rlnImagePixelSize"].iloc[0])
        if apix is None:
            raise ValueError("origins are in pixels (rlnOriginX/Y) and no pixel size is known (give --apix)")
        origin = table[["rlnOriginX", "rlnOriginY"]].to_numpy(dtype=np.float64) * apix
    if origin is not None and not {"origin_x_A", "origin_y_A"} <= set(truth.columns):
        origin = None
    class_col = next((c for c in CLASS_COLUMNS if c in table.columns), None)
    predicted = {"z": table[zcols].to_numpy(dtype=np.float64),
                 "psi_deg": table["rlnAnglePsi"].to_numpy(dtype=np.float64), "origin_A": origin,
                 "class": None if class_col is None else pd.to_numeric(table[class_col], errors="coerce").to_numpy()}
    return predicted, aligned, how


def _image_indices(table: pd.DataFrame, n_truth: int) -> np.ndarray | None:
    """0-based truth rows from ``k@stack`` image names, or None when they do not identify rows."""
    if "rlnImageName" not in table.columns:
        return None
    parsed = [_IMAGE_NAME.match(str(v)) for v in table["rlnImageName"]]
    if not all(parsed) or len({m.group(2).rsplit("/", 1)[-1] for m in parsed}) != 1:
        return None
    k = np.array([int(m.group(1)) for m in parsed]) - 1
    if k.min() < 0 or k.max() >= n_truth or len(np.unique(k)) != len(k):
        return None
    return k
