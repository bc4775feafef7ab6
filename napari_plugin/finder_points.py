"""What the particle finder computes, without Qt: picks as napari points, hand edits, the star.

Coordinates. napari points of a micrograph are ``(row, col) = (y, x)`` in the data coordinates of
the micrograph layer (pixels of the micrograph as read, row 0 = the file's first row). A RELION
coordinate star holds ``rlnCoordinateX = col`` and ``rlnCoordinateY = row`` in the same pixels
(docs/conventions.md, "Picked particle coordinates"), so the mapping is a swap of the two
columns, with no offset and no scale: :func:`star_table` and :func:`points_from_star`.

Unknown values. A point added by hand has no figure of merit, angle or latent: they are NaN in
the layer's features and ``-999`` in the star (``rlnAutopickFigureOfMerit`` and
``rlnAnglePsi``), the value RELION's own manual picker writes for a hand pick; reading a star,
``-999`` becomes NaN again. The content latents (``cryovaeZ1..``) of a hand pick are written as
``nan``.

Psi. ``rlnAnglePsi`` (degrees) of a pick is drawn as a line from the centre along the reference's
+x axis as it lies in the micrograph: with cryovae's convention ``particle(p) = template(R(psi)
p)`` (:mod:`cryovae.geometry`), the template's +x axis points along ``(x, y) = (cos psi, -sin
psi)``, i.e. ``(row, col) = (-sin psi, cos psi)`` (y runs down the rows):
:func:`psi_directions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: RELION's value for "not known" in a coordinate star (what its manual picker writes).
RELION_UNKNOWN = -999.0
#: the feature of a point saying which candidate of the picker it is; hand-added points: -1.
CANDIDATE = "candidate"
#: the feature columns every finder point has (plus ``z_1 .. z_k``).
BASE_FEATURES = ("fom", "psi_deg", CANDIDATE)
FOM_COLUMN = "rlnAutopickFigureOfMerit"
PSI_COLUMN = "rlnAnglePsi"
#: cryovae's particle stars name the content latents ``cryovaeZ1 .. cryovaeZk``.
Z_PREFIX = "cryovaeZ"


def z_columns(table: pd.DataFrame) -> list[str]:
    """The ``z_1 .. z_k`` columns of a picker table, in order."""
    cols = [c for c in table.columns if str(c).startswith("z_") and str(c)[2:].isdigit()]
    return sorted(cols, key=lambda c: int(str(c)[2:]))


def _unknown_to_nan(values) -> np.ndarray:
    out = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64, copy=True)
    out[np.isclose(out, RELION_UNKNOWN)] = np.nan
    return out


# --------------------------------------------------------------------------- points <-> tables
def candidate_points(candidates: pd.DataFrame, ids: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Points of the picker's candidates ``candidates.iloc[ids]`` (all when None).

    Parameters
    ----------
    candidates : the picker's table (``x_px, y_px`` micrograph pixels, ``fom``, ``psi_deg``,
        ``z_1..z_k``), one row per candidate.
    ids : (m,) positions of the rows to show.

    Returns
    -------
    data : (m, 2) float64 ``(row, col) = (y_px, x_px)``.
    features : ``fom``, ``psi_deg``, ``candidate`` (= the id) and ``z_1..z_k``.
    """
    ids = np.arange(len(candidates)) if ids is None else np.asarray(ids, dtype=np.int64)
    rows = candidates.iloc[ids]
    data = np.stack([rows["y_px"].to_numpy(np.float64), rows["x_px"].to_numpy(np.float64)], axis=1)
    features = pd.DataFrame({"fom": rows["fom"].to_numpy(np.float64),
                             "psi_deg": rows["psi_deg"].to_numpy(np.float64),
                             CANDIDATE: ids})
    for col in z_columns(candidates):
        features[col] = rows[col].to_numpy(np.float64)
    return data.reshape(-1, 2), features


def hand_features(n: int, zcols: list[str]) -> pd.DataFrame:
    """Features of ``n`` hand-added points: fom, psi and z NaN, candidate -1."""
    features = pd.DataFrame({"fom": np.full(n, np.nan), "psi_deg": np.full(n, np.nan),
                             CANDIDATE: np.full(n, -1, dtype=np.int64)})
    for col in zcols:
        features[col] = np.full(n, np.nan)
    return features


def star_table(data: np.ndarray, features: pd.DataFrame | None = None) -> pd.DataFrame:
    """The RELION coordinate table of points ``data`` (n, 2) ``(row, col)`` with ``features``.

    Returns ``rlnCoordinateX`` (= col), ``rlnCoordinateY`` (= row), ``rlnAutopickFigureOfMerit``
    and ``rlnAnglePsi`` (``-999`` where unknown) and ``cryovaeZ1..`` (from ``z_1..``, NaN for a
    hand pick) when the features have them.
    """
    data = np.asarray(data, np.float64).reshape(-1, 2)
    table = pd.DataFrame({"rlnCoordinateX": data[:, 1], "rlnCoordinateY": data[:, 0]})
    if features is None:
        return table
    for name, column in (("fom", FOM_COLUMN), ("psi_deg", PSI_COLUMN)):
        if name in features.columns:
            values = features[name].to_numpy(np.float64)
            table[column] = np.where(np.isfinite(values), values, RELION_UNKNOWN)
    for col in z_columns(features):
        table[f"{Z_PREFIX}{col[2:]}"] = features[col].to_numpy(np.float64)
    return table


def points_from_star(table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Points and features of a coordinate star's table (:func:`cryovae.io.read_coordinates`).

    ``data`` (n, 2) is ``(rlnCoordinateY, rlnCoordinateX)``; the features are ``fom`` and
    ``psi_deg`` (NaN where the star has no such column or says ``-999``), ``candidate`` (-1:
    these are not the finder's candidates), ``z_1..`` from ``cryovaeZ1..``, and every other
    column of the star under its own name.
    """
    data = np.stack([table["rlnCoordinateY"].to_numpy(np.float64),
                     table["rlnCoordinateX"].to_numpy(np.float64)], axis=1).reshape(-1, 2)
    n = len(table)
    features = pd.DataFrame({
        "fom": _unknown_to_nan(table[FOM_COLUMN]) if FOM_COLUMN in table else np.full(n, np.nan),
        "psi_deg": _unknown_to_nan(table[PSI_COLUMN]) if PSI_COLUMN in table else np.full(n, np.nan),
        CANDIDATE: np.full(n, -1, dtype=np.int64),
    })
    zs = sorted((c for c in table.columns if str(c).startswith(Z_PREFIX) and str(c)[len(Z_PREFIX):].isdigit()),
                key=lambda c: int(str(c)[len(Z_PREFIX):]))
    for col in zs:
        features[f"z_{str(col)[len(Z_PREFIX):]}"] = pd.to_numeric(table[col], errors="coerce").to_numpy(np.float64)
    skip = {"rlnCoordinateX", "rlnCoordinateY", FOM_COLUMN, PSI_COLUMN, *zs}
    for col in table.columns:
        if col not in skip and col not in features.columns:
            features[col] = table[col].to_numpy()
    return data, features


#: edge colours of the finder's points (RGBA): the picker's, and those added by hand.
PICK_COLOUR = (1.0, 0.85, 0.0, 1.0)  # yellow
HAND_COLOUR = (0.0, 1.0, 1.0, 1.0)  # cyan


def border_colours(features: pd.DataFrame):
    """Edge colours (n, 4) of points: :data:`HAND_COLOUR` where ``fom`` is unknown (a hand pick),
    else :data:`PICK_COLOUR`; the single colour when there are no points (napari refuses an
    empty colour array)."""
    if len(features) == 0:
        return list(PICK_COLOUR)
    hand = ~np.isfinite(features["fom"].to_numpy(np.float64))
    return np.where(hand[:, None], np.asarray(HAND_COLOUR), np.asarray(PICK_COLOUR))


# --------------------------------------------------------------------------- psi
def psi_directions(psi_deg: np.ndarray) -> np.ndarray:
    """Unit vectors ``(drow, dcol) = (-sin psi, cos psi)`` (n, 2) of RELION angles ``psi_deg``
    (n,): the reference's +x axis in the micrograph (module docstring)."""
    psi = np.deg2rad(np.asarray(psi_deg, np.float64))
    return np.stack([-np.sin(psi), np.cos(psi)], axis=-1).reshape(-1, 2)


def psi_vectors(data: np.ndarray, psi_deg: np.ndarray, length: float) -> np.ndarray:
    """napari Vectors data (m, 2, 2) of the points with a known psi: ``[[row, col], [drow,
    dcol]]``, a line of ``length`` pixels from each centre in its psi direction."""
    data = np.asarray(data, np.float64).reshape(-1, 2)
    psi = np.asarray(psi_deg, np.float64).reshape(-1)
    known = np.isfinite(psi)
    out = np.zeros((int(known.sum()), 2, 2))
    out[:, 0] = data[known]
    out[:, 1] = psi_directions(psi[known]) * float(length)
    return out


# --------------------------------------------------------------------------- threshold and edits
@dataclass
class PickEdits:
    """The picker's candidates and what the user did to them by hand.

    The Points layer shows the candidates whose ``fom`` reaches the threshold, minus those the
    user deleted, at their moved position where the user dragged them, plus the points the user
    added. :meth:`absorb` reads the edits back from the layer before the threshold changes, so a
    new threshold keeps them (and moving the threshold back restores the same points).

    Attributes
    ----------
    candidates : the picker's table (all candidates, see :func:`candidate_points`).
    deleted : candidate ids the user removed.
    moved : candidate id -> ``(row, col)`` where the user dragged it.
    added : (m, 2) ``(row, col)`` of the hand-added points.
    """

    candidates: pd.DataFrame
    deleted: set[int] = field(default_factory=set)
    moved: dict[int, tuple[float, float]] = field(default_factory=dict)
    added: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def zcols(self) -> list[str]:
        return z_columns(self.candidates)

    def shown_ids(self, threshold: float) -> np.ndarray:
        """Candidate ids (sorted) shown at ``threshold``: fom >= threshold, not deleted."""
        fom = self.candidates["fom"].to_numpy(np.float64)
        ids = np.flatnonzero(fom >= threshold)
        if self.deleted:
            ids = ids[~np.isin(ids, list(self.deleted))]
        return ids

    def points(self, threshold: float) -> tuple[np.ndarray, pd.DataFrame]:
        """``(data (n, 2), features)`` to show at ``threshold``: the candidates, then the
        hand-added points."""
        ids = self.shown_ids(threshold)
        data, features = candidate_points(self.candidates, ids)
        for k, cid in enumerate(ids):
            if int(cid) in self.moved:
                data[k] = self.moved[int(cid)]
        hand = hand_features(len(self.added), self.zcols)
        return (np.concatenate([data, self.added.reshape(-1, 2)], axis=0),
                pd.concat([features, hand], ignore_index=True))

    def absorb(self, data: np.ndarray, features: pd.DataFrame, threshold: float) -> None:
        """Take the layer's current points (shown at ``threshold``) as the user left them."""
        data = np.asarray(data, np.float64).reshape(-1, 2)
        ids = features[CANDIDATE].to_numpy() if len(features) else np.zeros(0)
        ids = np.asarray(pd.to_numeric(pd.Series(ids), errors="coerce").fillna(-1), dtype=np.int64)
        present = ids >= 0
        self.deleted |= set(self.shown_ids(threshold).tolist()) - set(ids[present].tolist())
        cand = self.candidates
        for k in np.flatnonzero(present):
            cid = int(ids[k])
            home = (float(cand["y_px"].iloc[cid]), float(cand["x_px"].iloc[cid]))
            if np.allclose(data[k], home):
                self.moved.pop(cid, None)
            else:
                self.moved[cid] = (float(data[k, 0]), float(data[k, 1]))
        self.added = data[~present].copy()


def fom_range(candidates: pd.DataFrame) -> tuple[float, float]:
    """(lowest, highest) figure of merit of the candidates (a never-empty interval)."""
    fom = candidates["fom"].to_numpy(np.float64)
    fom = fom[np.isfinite(fom)]
    if fom.size == 0:
        return 0.0, 1.0
    lo, hi = float(fom.min()), float(fom.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def slider_threshold(pos: int, lo_hi: tuple[float, float], steps: int) -> float:
    """Threshold at integer slider position ``pos`` of ``steps`` over ``lo_hi``."""
    lo, hi = lo_hi
    return lo + (hi - lo) * min(max(pos, 0), steps) / steps


def threshold_position(threshold: float, lo_hi: tuple[float, float], steps: int) -> int:
    """Nearest slider position of ``threshold`` (clipped to the range)."""
    lo, hi = lo_hi
    return int(round(min(max((threshold - lo) / (hi - lo), 0.0), 1.0) * steps))
