"""Score particle picks against true particle positions: precision, recall, F1, AP, rotation error.

Matching. A pick and a true particle can match when their centres are at most ``radius`` pixels
apart (micrograph pixels; the default of ``cryovae evaluate-picks`` is half the particle
diameter). Each pick matches at most one true particle and each true particle at most one pick.

* At a threshold (or for the picks as given), :func:`match_picks` finds the one-to-one matching
  with the most pairs, and among those the smallest total distance (the Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``, run on each connected group of picks and truths
  within ``radius`` of one another). precision = matched / picks, recall = matched / truths,
  F1 = 2 P R / (P + R).
* Average precision (AP, the area under the precision-recall curve) ranks all picks by
  descending figure of merit (FOM) and labels them greedily, as detection benchmarks (PASCAL
  VOC, COCO) do: in that order each pick takes the nearest still unmatched true particle within
  ``radius`` (a true positive), else it is a false positive. After the picks with FOM >= t, for
  each distinct FOM value t, precision p(t) = TP / picks and recall r(t) = TP / truths; AP =
  sum over those thresholds, in descending order, of ``(r_k - r_{k-1}) p_k`` with ``r_0 = 0``
  (the step-wise area without interpolation, as ``sklearn.metrics.average_precision_score``).
  Recall that is never reached adds nothing, so AP <= the largest recall.
* Rotation error: over the matched pairs (Hungarian), the median of
  ``|wrap(psi_pick - psi_true - c)|`` after the best global offset ``c``
  (:func:`cryovae.analysis.metrics.best_rotation_offset`: a model's canonical frame is arbitrary).

Several micrographs are scored together by giving each pick and each true particle a group (the
micrograph): matching stays within a group; the counts, the FOM ranking (one ranking over all
picks) and the rotation offset (one for all) are pooled.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from cryovae.analysis.metrics import angular_errors, best_rotation_offset
from cryovae.errors import CryovaeError, InputFileError
from cryovae.io import read_autopick_index, read_coordinates

log = logging.getLogger(__name__)

FOM_COLUMN = "rlnAutopickFigureOfMerit"
PSI_COLUMN = "rlnAnglePsi"


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching of picks to true particles.

    pick_index, truth_index : (k,) int, matched pairs (indices into the picks and the truths).
    distance : (k,) float, their centre distances in pixels (all <= the radius).
    n_picks, n_truth : how many there were.
    """

    pick_index: np.ndarray
    truth_index: np.ndarray
    distance: np.ndarray
    n_picks: int
    n_truth: int

    @property
    def n_matched(self) -> int:
        return int(len(self.pick_index))


def _as_xy(values, name: str) -> np.ndarray:
    xy = np.asarray(values, dtype=np.float64)
    if xy.size == 0:
        return xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{name} must be (n, 2) x, y, got shape {xy.shape}")
    return xy


def _groups(group, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if group is None else np.asarray(group).reshape(-1)


def _candidate_pairs(picks: np.ndarray, truth: np.ndarray, radius: float, pick_group: np.ndarray,
                     truth_group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (pick, truth, distance) pairs within ``radius`` and within one group."""
    if not len(picks) or not len(truth):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    tree = cKDTree(truth)
    lists = tree.query_ball_point(picks, r=radius)
    rows = np.repeat(np.arange(len(picks)), [len(v) for v in lists])
    cols = np.fromiter((j for v in lists for j in v), dtype=np.int64, count=len(rows))
    keep = pick_group[rows] == truth_group[cols]
    rows, cols = rows[keep], cols[keep]
    dist = np.hypot(*(picks[rows] - truth[cols]).T) if len(rows) else np.zeros(0)
    return rows, cols, dist


def match_picks(picks_xy, truth_xy, radius: float, pick_group=None, truth_group=None) -> Matching:
    """One-to-one matching of picks to true particles within ``radius`` (Hungarian).

    Parameters
    ----------
    picks_xy : (n, 2) pick centres ``(x, y)``, micrograph pixels.
    truth_xy : (m, 2) true centres, same frame.
    radius : largest centre distance of a match, pixels.
    pick_group, truth_group : (n,), (m,) micrograph labels (matching stays within one); None: one group.

    Returns
    -------
    Matching
        The most pairs possible, and among those the smallest total distance.
    """
    if not radius > 0:
        raise CryovaeError(f"the matching radius must be > 0 pixels, got {radius}")
    picks, truth = _as_xy(picks_xy, "picks_xy"), _as_xy(truth_xy, "truth_xy")
    pg, tg = _groups(pick_group, len(picks)), _groups(truth_group, len(truth))
    rows, cols, dist = _candidate_pairs(picks, truth, radius, pg, tg)
    out_p, out_t, out_d = [], [], []
    if len(rows):
        n, m = len(picks), len(truth)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols + n)), shape=(n + m, n + m))
        _, label = connected_components(graph, directed=False)
        comp = label[rows]
        order = np.argsort(comp, kind="stable")
        rows, cols, dist, comp = rows[order], cols[order], dist[order], comp[order]
        bounds = np.flatnonzero(np.diff(comp)) + 1
        big = 1e6 * (radius + 1.0)  # any real pair beats every missing one: most pairs first
        for r, c, d in zip(np.split(rows, bounds), np.split(cols, bounds), np.split(dist, bounds), strict=True):
            if len(r) == 1:
                out_p.append(r), out_t.append(c), out_d.append(d)
                continue
            pu, pi = np.unique(r, return_inverse=True)
            tu, ti = np.unique(c, return_inverse=True)
            cost = np.full((len(pu), len(tu)), big)
            cost[pi, ti] = d
            a, b = linear_sum_assignment(cost)
            real = cost[a, b] < big
            out_p.append(pu[a[real]]), out_t.append(tu[b[real]]), out_d.append(cost[a, b][real])
    pick_index = np.concatenate(out_p).astype(np.int64) if out_p else np.zeros(0, np.int64)
    truth_index = np.concatenate(out_t).astype(np.int64) if out_t else np.zeros(0, np.int64)
    distance = np.concatenate(out_d) if out_d else np.zeros(0)
    order = np.argsort(pick_index, kind="stable")
    return Matching(pick_index=pick_index[order], truth_index=truth_index[order], distance=distance[order],
                    n_picks=len(picks), n_truth=len(truth))


def greedy_true_positives(picks_xy, truth_xy, radius: float, fom, pick_group=None, truth_group=None) -> np.ndarray:
    """(n,) bool: which picks are true positives when, in order of descending FOM (stable for
    ties), each takes the nearest still unmatched true particle within ``radius``."""
    picks, truth = _as_xy(picks_xy, "picks_xy"), _as_xy(truth_xy, "truth_xy")
    pg, tg = _groups(pick_group, len(picks)), _groups(truth_group, len(truth))
    rows, cols, dist = _candidate_pairs(picks, truth, radius, pg, tg)
    tp = np.zeros(len(picks), bool)
    if not len(rows):
        return tp
    order = np.lexsort((dist, rows))  # by pick, nearest truth first
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(len(picks)))
    ends = np.searchsorted(rows, np.arange(len(picks)), side="right")
    taken = np.zeros(len(truth), bool)
    for i in np.argsort(-np.asarray(fom, dtype=np.float64), kind="stable"):
        for j in cols[starts[i]:ends[i]]:
            if not taken[j]:
                taken[j] = True
                tp[i] = True
                break
    return tp


def precision_recall_curve(fom, true_positive, n_truth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of the picks with FOM >= t, for each distinct FOM t (descending).

    Returns
    -------
    (precision, recall, thresholds) : (k,) each.
    """
    fom = np.asarray(fom, dtype=np.float64)
    order = np.argsort(-fom, kind="stable")
    f, tp = fom[order], np.asarray(true_positive, bool)[order]
    if not len(f):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    last = np.r_[np.flatnonzero(np.diff(f) != 0), len(f) - 1]  # the last pick of each distinct FOM
    cum_tp = np.cumsum(tp)[last]
    n_sel = last + 1
    precision = cum_tp / n_sel
    recall = cum_tp / n_truth if n_truth else np.full(len(last), np.nan)
    return precision, recall, f[last]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """``sum_k (r_k - r_{k-1}) p_k`` with ``r_0 = 0`` (nan when there is no truth; 0 without picks)."""
    if len(recall) and not np.isfinite(recall).all():
        return math.nan
    if not len(recall):
        return 0.0
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class PickMetrics:
    """Scores of picks against the truth (module docstring says how each is computed).

    n_picks, n_truth, n_matched : counts at the threshold (n_picks: picks kept).
    precision, recall, f1 : at the threshold (precision nan without picks, recall nan without
        truth; f1 0 when precision + recall is 0, nan when either is nan).
    threshold : the FOM threshold in effect, or None (all picks).
    average_precision : over the FOM ranking of all picks given (nan without truth).
    rotation_error_median_deg : median angular error of matched pairs after the best global
        offset (nan without psi or without matches). rotation_offset_deg : that offset.
    pr_precision, pr_recall, pr_thresholds : the precision-recall curve (descending FOM).
    """

    n_picks: int
    n_truth: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    threshold: float | None
    average_precision: float
    rotation_error_median_deg: float
    rotation_offset_deg: float
    pr_precision: np.ndarray = field(repr=False)
    pr_recall: np.ndarray = field(repr=False)
    pr_thresholds: np.ndarray = field(repr=False)

    def to_dict(self, curve: bool = False) -> dict:
        """Plain numbers (and the curve as lists with ``curve``)."""
        out = {"n_picks": self.n_picks, "n_truth": self.n_truth, "n_matched": self.n_matched,
               "precision": self.precision, "recall": self.recall, "f1": self.f1, "threshold": self.threshold,
               "average_precision": self.average_precision,
               "rotation_error_median_deg": self.rotation_error_median_deg,
               "rotation_offset_deg": self.rotation_offset_deg}
        if curve:
            out["pr_curve"] = {"precision": self.pr_precision.tolist(), "recall": self.pr_recall.tolist(),
                               "threshold": self.pr_thresholds.tolist()}
        return out


def pick_metrics(picks_xy, truth_xy, radius: float, fom=None, threshold: float | None = None, pick_psi=None,
                 truth_psi=None, pick_group=None, truth_group=None) -> PickMetrics:
    """Score picks against true particle centres (and rotations).

    Parameters
    ----------
    picks_xy : (n, 2) pick centres, micrograph pixels.  truth_xy : (m, 2) true centres.
    radius : matching radius, pixels.
    fom : (n,) figure of merit (higher = more particle-like); None: every pick ranks equal.
    threshold : keep picks with ``fom >= threshold`` for precision/recall/F1 (None: all).
        AP always uses every pick given.
    pick_psi, truth_psi : (n,), (m,) RELION psi in degrees, or None (no rotation error).
    pick_group, truth_group : micrograph labels (see the module docstring), or None.

    Returns
    -------
    PickMetrics
    """
    picks, truth = _as_xy(picks_xy, "picks_xy"), _as_xy(truth_xy, "truth_xy")
    n = len(picks)
    fom_all = np.zeros(n) if fom is None else np.asarray(fom, dtype=np.float64).reshape(-1)
    pg, tg = _groups(pick_group, n), _groups(truth_group, len(truth))
    keep = np.ones(n, bool) if threshold is None else fom_all >= threshold
    matching = match_picks(picks[keep], truth, radius, pg[keep], tg)
    precision = _ratio(matching.n_matched, int(keep.sum()))
    recall = _ratio(matching.n_matched, len(truth))
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    tp = greedy_true_positives(picks, truth, radius, fom_all, pg, tg)
    pr_p, pr_r, pr_t = precision_recall_curve(fom_all, tp, len(truth))
    ap = average_precision(pr_p, pr_r) if len(truth) else math.nan
    rot_err, rot_off = math.nan, math.nan
    if pick_psi is not None and truth_psi is not None and matching.n_matched:
        pred = np.asarray(pick_psi, dtype=np.float64).reshape(-1)[keep][matching.pick_index]
        true = np.asarray(truth_psi, dtype=np.float64).reshape(-1)[matching.truth_index]
        ok = np.isfinite(pred) & np.isfinite(true)
        if ok.any():
            rot_off = best_rotation_offset(pred[ok], true[ok])
            rot_err = float(np.median(angular_errors(pred[ok], true[ok], rot_off)))
    return PickMetrics(n_picks=int(keep.sum()), n_truth=len(truth), n_matched=matching.n_matched,
                       precision=precision, recall=recall, f1=f1, threshold=threshold, average_precision=ap,
                       rotation_error_median_deg=rot_err, rotation_offset_deg=rot_off, pr_precision=pr_p,
                       pr_recall=pr_r, pr_thresholds=pr_t)


# --- folders of coordinate stars ---------------------------------------------------------------

@dataclass
class PickEvaluation:
    """Per micrograph and overall scores of a folder of picks against a folder of truth.

    per_micrograph : micrograph stem -> PickMetrics.  overall : pooled (module docstring).
    radius : the matching radius used (pixels).  missing_picks : stems with truth but no picks.
    """

    per_micrograph: dict[str, PickMetrics]
    overall: PickMetrics
    radius: float
    missing_picks: list[str]

    def to_dict(self) -> dict:
        return {"radius_px": self.radius, "overall": self.overall.to_dict(curve=True),
                "micrographs": {stem: m.to_dict() for stem, m in self.per_micrograph.items()},
                "micrographs_without_picks": self.missing_picks}

    def table(self) -> pd.DataFrame:
        """One row per micrograph and a last ``overall`` row (metrics.csv)."""
        rows = [{"micrograph": stem, **m.to_dict()} for stem, m in self.per_micrograph.items()]
        rows.append({"micrograph": "overall", **self.overall.to_dict()})
        return pd.DataFrame(rows)


def coordinate_files(folder: str | Path) -> dict[str, Path]:
    """Micrograph stem -> coordinate star of a folder: from its ``autopick.star`` (stem of
    ``rlnMicrographName``) when there is one, else every ``*.star`` in it by its own stem
    (RELION's ``_autopick`` suffix dropped).

    Raises
    ------
    InputFileError
        When ``folder`` is not a folder or holds no coordinate star.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: no such folder (give a folder of coordinate stars with an autopick.star)")
    index = folder / "autopick.star"
    if index.is_file():
        return {mic.stem: coords for mic, coords in read_autopick_index(index)}
    stars = sorted(p for p in folder.glob("*.star") if p.name != "autopick.star")
    if not stars:
        raise InputFileError(f"{folder}: no autopick.star and no coordinate .star files")
    return {p.stem.removesuffix("_autopick"): p for p in stars}


def default_radius(truth_dir: str | Path) -> float | None:
    """Half the particle diameter from the ``simulation.json`` of ``cryovae simulate micrographs``
    (in ``truth_dir`` or its parent folder), or None when there is none."""
    for candidate in (Path(truth_dir) / "simulation.json", Path(truth_dir).parent / "simulation.json"):
        if candidate.is_file():
            try:
                diameter = json.loads(candidate.read_text()).get("particle_diameter_px")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise InputFileError(f"{candidate}: not a readable simulation.json") from None
            if diameter is not None and float(diameter) > 0:
                return float(diameter) / 2
    return None


def evaluate_pick_folders(pick_dir: str | Path, truth_dir: str | Path, radius: float,
                          threshold: float | None = None) -> PickEvaluation:
    """Score the coordinate stars of ``pick_dir`` against those of ``truth_dir``, paired by stem.

    A micrograph with truth but no picks counts its particles as missed; picks of a micrograph
    without truth are left out (and logged).
    """
    picks_files, truth_files = coordinate_files(pick_dir), coordinate_files(truth_dir)
    extra = sorted(set(picks_files) - set(truth_files))
    if extra:
        log.warning("%d pick files have no truth and are left out (%s)", len(extra), ", ".join(extra[:5]))
    per: dict[str, PickMetrics] = {}
    pooled: dict[str, list] = {k: [] for k in ("pxy", "txy", "fom", "ppsi", "tpsi", "pg", "tg")}
    missing = []
    has_fom = has_psi = True
    for g, stem in enumerate(sorted(truth_files)):
        truth = read_coordinates(truth_files[stem])
        if stem in picks_files:
            picks = read_coordinates(picks_files[stem])
        else:
            missing.append(stem)
            picks = pd.DataFrame({"rlnCoordinateX": [], "rlnCoordinateY": []})
        pxy = picks[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        txy = truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        fom = picks[FOM_COLUMN].to_numpy(dtype=np.float64) if FOM_COLUMN in picks.columns else None
        has_fom &= fom is not None or len(picks) == 0
        ppsi = picks[PSI_COLUMN].to_numpy(dtype=np.float64) if PSI_COLUMN in picks.columns else None
        tpsi = truth[PSI_COLUMN].to_numpy(dtype=np.float64) if PSI_COLUMN in truth.columns else None
        has_psi &= (ppsi is not None or len(picks) == 0) and tpsi is not None
        per[stem] = pick_metrics(pxy, txy, radius, fom, threshold, ppsi, tpsi)
        pooled["pxy"].append(pxy)
        pooled["txy"].append(txy)
        pooled["fom"].append(fom if fom is not None else np.zeros(len(pxy)))
        pooled["ppsi"].append(ppsi if ppsi is not None else np.full(len(pxy), np.nan))
        pooled["tpsi"].append(tpsi if tpsi is not None else np.full(len(txy), np.nan))
        pooled["pg"].append(np.full(len(pxy), g))
        pooled["tg"].append(np.full(len(txy), g))
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    if not has_fom:
        log.warning("some picks have no %s; they rank equal for the average precision", FOM_COLUMN)
    overall = pick_metrics(cat["pxy"].reshape(-1, 2), cat["txy"].reshape(-1, 2), radius, cat["fom"], threshold,
                           cat["ppsi"] if has_psi else None, cat["tpsi"] if has_psi else None, cat["pg"], cat["tg"])
    return PickEvaluation(per_micrograph=per, overall=overall, radius=radius, missing_picks=missing)


def pr_curve_figure(evaluation: PickEvaluation) -> Figure:
    """The precision-recall curve: overall (thick) and per micrograph (thin)."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for m in evaluation.per_micrograph.values():
        if len(m.pr_recall):
            ax.step(m.pr_recall, m.pr_precision, where="post", color="0.7", lw=0.8)
    o = evaluation.overall
    if len(o.pr_recall):
        ax.step(o.pr_recall, o.pr_precision, where="post", color="C0", lw=2,
                label=f"overall, AP {o.average_precision:.3f}")
        if np.isfinite(o.recall) and np.isfinite(o.precision):
            ax.plot([o.recall], [o.precision], "o", color="C3", label=f"at threshold: F1 {o.f1:.3f}")
        ax.legend(loc="lower left")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"picks vs truth (radius {evaluation.radius:.3g} px)")
    fig.tight_layout()
    return fig


def summary_lines(evaluation: PickEvaluation) -> list[str]:
    """A one-screen summary: per micrograph and overall."""
    def fmt(v) -> str:
        return "   n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:6.3f}"

    lines = [f"{'micrograph':20s} {'picks':>6s} {'truth':>6s} {'match':>6s} {'prec':>6s} {'recall':>6s} "
             f"{'F1':>6s} {'AP':>6s} {'rot°':>6s}"]
    rows = [*evaluation.per_micrograph.items(), ("overall", evaluation.overall)]
    for stem, m in rows:
        rot = m.rotation_error_median_deg
        lines.append(f"{stem[:20]:20s} {m.n_picks:6d} {m.n_truth:6d} {m.n_matched:6d} {fmt(m.precision)} "
                     f"{fmt(m.recall)} {fmt(m.f1)} {fmt(m.average_precision)} "
                     f"{'   n/a' if not math.isfinite(rot) else f'{rot:6.1f}'}")
    if evaluation.missing_picks:
        lines.append(f"no picks for {len(evaluation.missing_picks)} micrographs (their particles count as missed)")
    return lines
