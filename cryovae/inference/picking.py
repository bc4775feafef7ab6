"""Find particles in a micrograph with a trained run's attention map (``cryovae pick``).

:func:`pick_micrograph` takes a micrograph as read (H, W) and its pixel size, and

1. brings it to the run's pixel size by Fourier cropping (:func:`cryovae.data.fourier_resample`,
   rows and columns separately, so non-square micrographs keep their shape); a run whose
   pixels are finer than the micrograph's (by more than 1 %) is an error: upsampling would
   invent the detail the model was trained on;
2. applies the run's preprocessing, as far as it means anything on a micrograph
   (:func:`normalize_micrograph`): contrast inversion when the run inverted, then, unless the
   run did not normalise, removal of the smooth background (a Gaussian high-pass of
   ``sigma = box`` run pixels, which also removes gradients and the carbon's mean level) and
   division by the noise standard deviation (a robust estimate: 1.4826 x the median absolute
   deviation), the micrograph-wide counterpart of the per-particle background normalisation;
   a run's soft mask is not applied (it belongs to a box);
3. runs the model's :meth:`cryovae.models.PoseVAE.attention_map` over tiles of ``cfg.tile``
   run pixels, each read with ``model.attention_context_px`` pixels of the neighbouring image
   around it, so the tiled map equals the untiled one and memory stays bounded;
4. standardises the score over the micrograph (robust z-score: (score - median) / (1.4826 x
   MAD)), finds its peaks at least ``distance`` apart (a disc-shaped
   :func:`scipy.ndimage.maximum_filter`) and keeps every peak above ``PickConfig.floor``;
5. gives each a figure of merit (``PickConfig.fom``; see :data:`FOMS` and docs/picking.md for
   what was measured; the default "combined" checks the attention against the generator's
   particle at the peak's pose and z, :func:`candidate_fit`) and its rotation and content latent
   read at the peak; the default threshold is per micrograph (:func:`auto_threshold`).

Coordinates follow docs/conventions.md "Picked particle coordinates": ``x_px``, ``y_px`` are
the particle centre in pixels of the micrograph as given (x along columns, y along rows,
pixel (row 0, col 0) is (0, 0)); a box of N cut with its pixel N//2 there is centred like the
run's training particles (the generator's template centre is added, see
:class:`cryovae.models.AttentionMap`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from cryovae.data import fourier_resample
from cryovae.errors import CryovaeError
from cryovae.geometry import wrap_degrees
from cryovae.inference.trained_run import TrainedRun

log = logging.getLogger(__name__)

#: figures of merit (docs/picking.md has what was measured): "zscore" — the peak's attention
#: score as a robust z-score over the micrograph; "combined" — that z-score, down-weighted where the
#: generator's particle at the peak's pose and z leaves energy unexplained (:func:`fit_checked`:
#: junk the generator cannot draw); "likelihood" — the log likelihood ratio per pixel of the box,
#: particle against background only; "explained" — the same with each hypothesis's noise level
#: fitted to the box
FOMS = ("combined", "zscore", "likelihood", "explained")
#: default figure of merit
DEFAULT_FOM = "combined"
#: the automatic threshold (``PickConfig.threshold`` None) is Otsu's threshold of the micrograph's
#: candidates' figures of merit, but never below this (a micrograph without particles)
#: (2.5, not the 5 first chosen on tiny models: at the default model size particles scored z 2.9-8
#: and noise peaks up to 3.2 in benchmarks/picking.py, and a floor of 5 dropped every particle
#: at SNR 0.1)
MIN_AUTO_THRESHOLD = {"combined": 2.5, "zscore": 2.5, "likelihood": 0.0, "explained": 0.0}
#: the generator's fit (llr, explained, misfit) is computed for candidates with an attention
#: z-score at least this (all of them for the "likelihood" and "explained" figures of merit);
#: the others have NaN there, and their "combined" figure of merit is their z-score
FIT_MIN_Z = 4.0
#: candidates kept below the threshold (for a UI that lowers it live): robust z-score floor of
#: the attention score
DEFAULT_FLOOR = 1.0
#: unexplained energy per pixel (in units of the noise variance) that the "combined" figure of
#: merit tolerates before it down-weights a candidate
MISFIT_TOLERANCE = 0.5
#: a micrograph pixel size within this fraction of the run's is used without resampling
APIX_TOLERANCE = 0.01


@dataclass(frozen=True)
class PickConfig:
    """How :func:`pick_micrograph` picks.

    Attributes
    ----------
    threshold : figure of merit a pick must reach (None: automatic, per micrograph:
        :func:`auto_threshold`).
    distance_px : minimum distance between picks, micrograph pixels (None: half the run's box,
        i.e. about one particle diameter for a box twice the particle, at the micrograph's pixel
        size).
    tile : tile edge in run pixels (each tile is read with the encoder's context around it).
    fom : figure of merit, one of :data:`FOMS`.
    floor : candidates whose attention z-score is below this are dropped (all others are kept
        in :attr:`MicrographPicks.table`, below the threshold too).
    """

    threshold: float | None = None
    distance_px: float | None = None
    tile: int = 512
    fom: str = DEFAULT_FOM
    floor: float = DEFAULT_FLOOR

    def __post_init__(self) -> None:
        if self.fom not in FOMS:
            raise CryovaeError(f"--fom {self.fom!r}: choose one of {', '.join(FOMS)}")
        if self.tile < 16:
            raise CryovaeError(f"--tile {self.tile}: must be at least 16 pixels")
        if self.distance_px is not None and not self.distance_px > 0:
            raise CryovaeError(f"--distance {self.distance_px}: must be > 0 pixels")

    def threshold_for(self, fom: np.ndarray) -> float:
        """The threshold in effect for candidates with figures of merit ``fom``."""
        return auto_threshold(fom, self.fom) if self.threshold is None else float(self.threshold)


@dataclass
class MicrographPicks:
    """Every candidate particle of one micrograph, and the map they came from.

    Attributes
    ----------
    table : one row per candidate peak (above the floor; below the threshold too), best first:
        ``x_px``, ``y_px`` (particle centre, micrograph pixels, convention of docs/conventions.md),
        ``fom`` (the figure of merit, higher = more particle-like), ``psi_deg`` (RELION's
        rlnAnglePsi, degrees), the parts of the figures of merit: ``score_z`` (attention robust
        z-score), ``llr``, ``explained``, ``misfit`` (:func:`candidate_fit`; NaN where not
        computed, see :data:`FIT_MIN_Z`), then ``z_1 .. z_k`` (content latent).
    score : (h, w) float32 attention robust z-score at the run's pixel size.
    scale : micrograph pixels per score pixel (the mean of :attr:`scale_xy`).
    scale_xy : (sx, sy) exact micrograph pixels per score pixel along x (columns) and y (rows):
        score pixel (i, j) is centred at micrograph ``(x, y) = (j * sx, i * sy)``; sx and sy differ
        from the requested ratio by less than half a pixel over the micrograph's width / height.
    threshold : the figure of merit in effect for :meth:`above` and :meth:`coordinate_table`.
    distance_px : the minimum distance between candidates, micrograph pixels.
    fom : the figure of merit's name (:data:`FOMS`).
    """

    table: pd.DataFrame
    score: np.ndarray
    scale: float
    scale_xy: tuple[float, float]
    threshold: float
    distance_px: float
    fom: str = DEFAULT_FOM

    def above(self, threshold: float | None = None) -> pd.DataFrame:
        """The rows of :attr:`table` with ``fom >= threshold`` (None: :attr:`threshold`)."""
        t = self.threshold if threshold is None else float(threshold)
        return self.table[self.table["fom"] >= t].reset_index(drop=True)

    def coordinate_table(self, threshold: float | None = None) -> pd.DataFrame:
        """:meth:`above` with RELION's column names: rlnCoordinateX, rlnCoordinateY,
        rlnAutopickFigureOfMerit, rlnAnglePsi, cryovaeZ1 .. (what ``cryovae pick`` writes)."""
        return coordinate_columns(self.above(threshold))


def coordinate_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A picks table (``x_px, y_px, fom, psi_deg, z_1..``) with RELION's column names."""
    out = pd.DataFrame({"rlnCoordinateX": table["x_px"].to_numpy(float),
                        "rlnCoordinateY": table["y_px"].to_numpy(float),
                        "rlnAutopickFigureOfMerit": table["fom"].to_numpy(float),
                        "rlnAnglePsi": table["psi_deg"].to_numpy(float)})
    for c in z_columns(table):
        out[f"cryovaeZ{c[2:]}"] = table[c].to_numpy(float)
    return out


def z_columns(table: pd.DataFrame) -> list[str]:
    """The ``z_1 .. z_k`` columns of a picks table, in order."""
    cols = [c for c in table.columns if c.startswith("z_") and c[2:].isdigit()]
    return sorted(cols, key=lambda c: int(c[2:]))


# -- the micrograph at the run's pixel size -------------------------------------------------------
def run_scale(run: TrainedRun, apix: float | None) -> float:
    """Micrograph pixels per run pixel: ``run.pixel_size / apix`` (1 when ``apix`` is None or
    within :data:`APIX_TOLERANCE` of the run's).

    Raises
    ------
    CryovaeError
        When the run's pixels are finer than the micrograph's.
    """
    if apix is None:
        return 1.0
    if not apix > 0:
        raise CryovaeError(f"micrograph pixel size {apix} Å: must be > 0 (give --apix)")
    s = float(run.pixel_size) / float(apix)
    if abs(s - 1.0) <= APIX_TOLERANCE:
        return 1.0
    if s < 1.0:
        raise CryovaeError(f"the run's pixels ({run.pixel_size:g} Å) are finer than the micrograph's "
                           f"({apix:g} Å): cryovae only bins micrographs; train on particles at "
                           f"{apix:g} Å/px or coarser (or give the right --apix)")
    return s


def resample_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of an (H, W) micrograph binned by ``scale``."""
    return max(1, int(round(shape[0] / scale))), max(1, int(round(shape[1] / scale)))


def normalize_micrograph(image: np.ndarray, box: int, invert: bool, normalize: str) -> np.ndarray:
    """A micrograph at the run's pixel size as the run's particles were prepared (see the module
    docstring): invert, remove the smooth background (Gaussian high-pass, sigma ``box`` px) and
    divide by the robust noise std; ``normalize == "none"`` only inverts.

    image : (h, w) float.  box : the run's box, pixels.  Returns (h, w) float32.
    """
    img = np.asarray(image, dtype=np.float32)
    if invert:
        img = -img
    if normalize == "none":
        return img.astype(np.float32, copy=True)
    img = img - ndimage.gaussian_filter(img, sigma=float(box), mode="reflect")
    return (img / robust_std(img)).astype(np.float32, copy=False)


def robust_std(x: np.ndarray, max_samples: int = 1_000_000) -> float:
    """1.4826 x the median absolute deviation (from the median) of ``x``: its std for Gaussian
    noise, little moved by particles and junk. Evaluated on an evenly strided subsample of at
    most ``max_samples`` values. 1 for a constant array."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    flat = flat[:: max(1, flat.size // max_samples)]
    flat = flat[np.isfinite(flat)]
    if not flat.size:
        return 1.0
    med = np.median(flat)
    mad = 1.4826 * float(np.median(np.abs(flat - med)))
    if mad > 0:
        return mad
    std = float(flat.std())
    return std if std > 0 else 1.0


def _remove_plane(image: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane (a gradient and the mean) before the Fourier crop, so the
    crop's periodic boundary sees no step."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h:max(1, h // 64), 0:w:max(1, w // 64)]
    a = np.stack([np.ones(xx.size), xx.ravel(), yy.ravel()], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, image[yy, xx].ravel().astype(np.float64), rcond=None)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    return (image - (coef[0] + coef[1] * cols + coef[2] * rows)).astype(np.float32)


def prepare_micrograph(run: TrainedRun, image: np.ndarray, apix: float | None
                       ) -> tuple[np.ndarray, tuple[float, float]]:
    """A micrograph (H, W) at the run's pixel size with the run's preprocessing.

    Returns
    -------
    image : (h, w) float32.
    scale_xy : (W / w, H / h), micrograph pixels per run pixel along x and y.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise CryovaeError(f"a micrograph is a 2D image; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CryovaeError("the micrograph has NaN or infinite pixels")
    s = run_scale(run, apix)
    h, w = resample_shape(arr.shape, s)
    if min(h, w) < run.box:
        raise CryovaeError(f"the micrograph is {arr.shape[1]} x {arr.shape[0]} px, {w} x {h} px at the run's "
                           f"{run.pixel_size:g} Å/px: smaller than the run's {run.box} px box")
    binned = fourier_resample(_remove_plane(arr.astype(np.float32)), (h, w))
    pre = run.config.preprocess
    out = normalize_micrograph(binned, run.box, bool(pre.get("invert", False)),
                               str(pre.get("normalize", "background")))
    return out, (arr.shape[1] / w, arr.shape[0] / h)


# -- the attention map, tile by tile ----------------------------------------------------------
@dataclass
class AttentionMaps:
    """The model's attention map of a whole micrograph as numpy arrays (see
    :class:`cryovae.models.AttentionMap`): score, theta (h, w); z (zdim, h, w);
    center_offset (2, h, w)."""

    score: np.ndarray
    theta: np.ndarray
    z: np.ndarray
    center_offset: np.ndarray


def tiles(shape: tuple[int, int], tile: int) -> list[tuple[slice, slice]]:
    """The (rows, cols) cores of a grid of ``tile`` x ``tile`` tiles covering ``shape`` (the
    last ones smaller)."""
    h, w = shape
    return [(slice(r, min(r + tile, h)), slice(c, min(c + tile, w)))
            for r in range(0, h, tile) for c in range(0, w, tile)]


@torch.no_grad()
def has_attention(run: TrainedRun) -> bool:
    """Whether the run's model gives an attention map (what picking needs)."""
    probe = torch.zeros(1, run.box, run.box, device=run.device)
    return run.model.attention_map(probe) is not None


def no_attention_message(run: TrainedRun) -> str:
    return (f"{run.rundir}: picking needs TARGET-VAE's attention (train with --model target); "
            f"this run's model is {run.model.title or type(run.model).__name__}")


@torch.no_grad()
def attention_maps(run: TrainedRun, image: np.ndarray, tile: int = 512,
                   progress: Callable[[int, int], None] | None = None) -> AttentionMaps:
    """:meth:`cryovae.models.PoseVAE.attention_map` of a prepared micrograph (h, w), tile by tile.

    Each tile's core (``tile`` x ``tile``) is computed from the image around it widened by the
    model's ``attention_context_px`` (clipped at the micrograph's edge, where the encoder's own
    zero padding applies, as in one pass over the whole image), so the result equals the untiled
    map up to float rounding. ``progress(done, total)`` is called after each tile.

    Raises
    ------
    CryovaeError
        When the run's model has no attention map.
    """
    model = run.model
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    ctx = int(model.attention_context_px)
    grid = tiles((h, w), int(tile))
    out: AttentionMaps | None = None
    for k, (rs, cs) in enumerate(grid):
        r0, r1 = max(rs.start - ctx, 0), min(rs.stop + ctx, h)
        c0, c1 = max(cs.start - ctx, 0), min(cs.stop + ctx, w)
        x = torch.from_numpy(np.ascontiguousarray(img[r0:r1, c0:c1]))[None].to(run.device)
        amap = model.attention_map(x)
        if amap is None:
            raise CryovaeError(no_attention_message(run))
        core = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
        if out is None:
            zdim = amap.z.shape[1]
            out = AttentionMaps(score=np.zeros((h, w), np.float32), theta=np.zeros((h, w), np.float32),
                                z=np.zeros((zdim, h, w), np.float32),
                                center_offset=np.zeros((2, h, w), np.float32))
        out.score[rs, cs] = amap.score[0][core].float().cpu().numpy()
        out.theta[rs, cs] = amap.theta[0][core].float().cpu().numpy()
        out.z[:, rs, cs] = amap.z[0][(slice(None), *core)].float().cpu().numpy()
        out.center_offset[:, rs, cs] = amap.center_offset[0][(slice(None), *core)].float().cpu().numpy()
        if progress is not None:
            progress(k + 1, len(grid))
    assert out is not None
    return out


# -- peaks and figures of merit --------------------------------------------------------------------
def robust_zscore(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """``(x - median) / (1.4826 MAD)`` with the median and MAD of ``ref`` (default ``x``)."""
    ref = np.asarray(x if ref is None else ref, dtype=np.float64)
    if not ref.size:
        return np.asarray(x, dtype=np.float32)
    med = float(np.median(ref.ravel()[:: max(1, ref.size // 1_000_000)]))
    return ((np.asarray(x, dtype=np.float64) - med) / robust_std(ref)).astype(np.float32)


def find_peaks(score: np.ndarray, radius: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the peaks of ``score`` (h, w) above ``floor``, no two closer than
    ``radius`` pixels, best first.

    Candidates are the maxima of the square inscribed in the disc of ``radius`` (a separable, fast
    :func:`scipy.ndimage.maximum_filter`; every maximum of the disc is one of them); then, best
    first, a candidate is kept unless a kept one lies within ``radius`` (greedy non-maximum
    suppression; of a plateau one pixel is kept).
    """
    half = max(1, int(math.floor(radius / math.sqrt(2.0))))
    mx = ndimage.maximum_filter(score, size=2 * half + 1, mode="constant", cval=-np.inf)
    rows, cols = np.nonzero((score >= mx) & (score > floor))
    order = np.argsort(-score[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    if len(rows) < 2:
        return rows, cols
    pts = np.stack([rows, cols], 1).astype(np.float64)
    neighbours: dict[int, list[int]] = {}
    for a, b in cKDTree(pts).query_pairs(r=radius - 1e-9):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    keep = np.ones(len(rows), bool)
    for k in range(len(rows)):
        if keep[k]:
            for j in neighbours.get(k, ()):
                if j > k:
                    keep[j] = False
    return rows[keep], cols[keep]


def subpixel(score: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parabolic refinement of peak positions: (drow, dcol) in (-0.5, 0.5) pixels (0 at an edge)."""
    h, w = score.shape

    def along(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        den = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    inner_r = (rows > 0) & (rows < h - 1)
    inner_c = (cols > 0) & (cols < w - 1)
    rm, rp = np.clip(rows - 1, 0, h - 1), np.clip(rows + 1, 0, h - 1)
    cm, cp = np.clip(cols - 1, 0, w - 1), np.clip(cols + 1, 0, w - 1)
    dr = np.where(inner_r, along(score[rm, cols], score[rows, cols], score[rp, cols]), 0.0)
    dc = np.where(inner_c, along(score[rows, cm], score[rows, cols], score[rows, cp]), 0.0)
    return dr, dc


@torch.no_grad()
def candidate_fit(run: TrainedRun, image: np.ndarray, rows: np.ndarray, cols: np.ndarray, theta: np.ndarray,
                  z: np.ndarray, offset: np.ndarray, batch_size: int = 256
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How well the generator's particle at each candidate's pose and z explains its box.

    image : (h, w) prepared micrograph.  rows, cols : (n,) encoder-frame centres (pixels).
    theta : (n,) radians.  z : (n, zdim).  offset : (n, 2) template-centre offsets (pixels).

    Returns
    -------
    llr : (n,) log likelihood ratio per pixel of the box, nats: the particle (generator mean
        ``mu``, the model's noise) against background only (mean 0, same noise),
        ``sum (y mu - mu^2 / 2) / sigma^2 / box^2``.
    explained : (n,) the same ratio with the noise level of each hypothesis fitted to the box
        (profile likelihood), per pixel: ``0.5 log(sum y^2 / sum (y - mu)^2)``. Positive when the
        particle explains part of the box's energy; near 0 for a bright object the generator
        cannot draw (its energy stays in the residual); negative for noise.
    misfit : (n,) ``mean((y - mu)^2 / sigma^2) - 1`` over the box: about 0 when the particle and
        the model's noise explain the box, large for bright junk the generator cannot draw.
    """
    box = run.box
    half = box // 2
    padded = np.pad(np.asarray(image, np.float32), half, mode="constant")
    model = run.model
    llr_out = np.zeros(len(rows), np.float32)
    expl_out = np.zeros(len(rows), np.float32)
    misfit_out = np.zeros(len(rows), np.float32)
    for s in range(0, len(rows), batch_size):
        sl = slice(s, s + batch_size)
        idx_r = rows[sl][:, None] + np.arange(box)[None, :]  # padded index of row r - half + k
        idx_c = cols[sl][:, None] + np.arange(box)[None, :]
        patches = padded[idx_r[:, :, None], idx_c[:, None, :]]  # (b, box, box), centre pixel = box//2
        y = torch.from_numpy(np.ascontiguousarray(patches)).to(run.device)
        zz = torch.from_numpy(np.ascontiguousarray(z[sl], dtype=np.float32)).to(run.device)
        th = torch.from_numpy(np.ascontiguousarray(theta[sl], dtype=np.float32)).to(run.device)
        cc = torch.from_numpy(np.ascontiguousarray(offset[sl], dtype=np.float32)).to(run.device)
        mean, log_sigma = model.decode(zz if run.zdim else None, th, cc)
        mean = mean.float()
        inv_var = torch.exp(-2 * log_sigma.float()).expand_as(mean)
        llr = ((y * mean - 0.5 * mean**2) * inv_var).flatten(1).sum(1) / (box * box)
        e0 = (y**2).flatten(1).sum(1)
        e1 = ((y - mean) ** 2).flatten(1).sum(1)
        llr_out[sl] = llr.cpu().numpy()
        expl_out[sl] = (0.5 * torch.log(e0.clamp_min(1e-12) / e1.clamp_min(1e-12))).cpu().numpy()
        misfit_out[sl] = (((y - mean) ** 2 * inv_var).flatten(1).mean(1) - 1.0).cpu().numpy()
    return llr_out, expl_out, misfit_out


def fit_checked(score_z: np.ndarray, misfit: np.ndarray, tolerance: float | None = None) -> np.ndarray:
    """The attention z-score, down-weighted where the generator's particle leaves more than
    ``tolerance`` (default :data:`MISFIT_TOLERANCE`) of unexplained energy per pixel in the box:
    ``score_z * min(1, (tolerance / misfit)^2)`` (a NaN misfit, not computed, counts as 0)."""
    tol = MISFIT_TOLERANCE if tolerance is None else float(tolerance)
    m = np.nan_to_num(np.asarray(misfit, np.float64), nan=0.0)
    with np.errstate(divide="ignore"):
        w = np.where(m > tol, (tol / np.maximum(m, 1e-12)) ** 2, 1.0)
    return np.asarray(score_z, np.float64) * w


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (n,): the split of the sorted values that maximises the
    between-class variance, halfway between the two values it falls between (nan for n < 2)."""
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    n = len(v)
    if n < 2:
        return float("nan")
    k = np.arange(1, n)
    csum = np.cumsum(v)[:-1]
    mean_a = csum / k
    mean_b = (v.sum() - csum) / (n - k)
    between = k * (n - k) * (mean_a - mean_b) ** 2
    j = int(np.argmax(between))
    return float(0.5 * (v[j] + v[j + 1]))


def auto_threshold(fom: np.ndarray, kind: str = DEFAULT_FOM) -> float:
    """The default threshold of one micrograph: Otsu's threshold of its candidates' figures of
    merit (candidates are mostly noise peaks and particles: two groups), at least
    :data:`MIN_AUTO_THRESHOLD` of the figure of merit ``kind``."""
    t = otsu_threshold(fom)
    low = MIN_AUTO_THRESHOLD[kind]
    return low if not np.isfinite(t) else max(low, t)


def default_distance(run: TrainedRun, scale: float) -> float:
    """Half the run's box, in micrograph pixels (``scale`` micrograph px per run px)."""
    return 0.5 * run.box * scale


def pick_micrograph(run: TrainedRun, image: np.ndarray, apix: float | None, cfg: PickConfig = PickConfig(),
                    progress: Callable[[int, int], None] | None = None) -> MicrographPicks:
    """Every candidate particle of one micrograph (see the module docstring for the steps).

    Parameters
    ----------
    run : a trained run whose model has an attention map (TARGET-VAE).
    image : (H, W) micrograph as read (row 0 = the file's first row), any real dtype.
    apix : its pixel size, Å (None: assume the run's).
    cfg : thresholds, distance, tiles, figure of merit.
    progress : called as ``progress(done_tiles, total_tiles)``.

    Returns
    -------
    MicrographPicks
        All candidates above ``cfg.floor`` (best first), the score map, the scale.

    Raises
    ------
    CryovaeError
        One line: a model without attention, a run with finer pixels than the micrograph, a
        micrograph smaller than the box, non-finite pixels.
    """
    if not has_attention(run):
        raise CryovaeError(no_attention_message(run))
    prepared, (sx, sy) = prepare_micrograph(run, image, apix)
    scale = 0.5 * (sx + sy)
    maps = attention_maps(run, prepared, cfg.tile, progress)
    zmap = robust_zscore(maps.score)
    distance = default_distance(run, scale) if cfg.distance_px is None else float(cfg.distance_px)
    rows, cols = find_peaks(zmap, distance / scale, cfg.floor)
    dr, dc = subpixel(zmap, rows, cols)
    theta = maps.theta[rows, cols].astype(np.float64)
    z = maps.z[:, rows, cols].T.astype(np.float64)
    offset = maps.center_offset[:, rows, cols].T.astype(np.float64)  # (n, 2) (dx, dy)
    x_run = cols + dc + offset[:, 0]
    y_run = rows + dr + offset[:, 1]
    score_z = zmap[rows, cols].astype(np.float64)
    # the generator's fit, for the candidates that can reach a threshold (all for the fit's own FOMs)
    fit = np.ones(len(rows), bool) if cfg.fom in ("likelihood", "explained") else score_z >= FIT_MIN_Z
    llr, explained, misfit = (np.full(len(rows), np.nan, np.float32) for _ in range(3))
    if fit.any():
        llr[fit], explained[fit], misfit[fit] = candidate_fit(run, prepared, rows[fit], cols[fit], theta[fit],
                                                              z[fit], offset[fit])
    fom = {"zscore": score_z, "likelihood": llr, "explained": explained,
           "combined": fit_checked(score_z, misfit)}[cfg.fom]
    table = pd.DataFrame({"x_px": x_run * sx, "y_px": y_run * sy, "fom": np.asarray(fom, np.float64),
                          "psi_deg": wrap_degrees(np.degrees(theta)), "score_z": score_z,
                          "llr": llr.astype(np.float64), "explained": explained.astype(np.float64),
                          "misfit": misfit.astype(np.float64)})
    for k in range(z.shape[1]):
        table[f"z_{k + 1}"] = z[:, k]
    table = table.sort_values("fom", ascending=False, kind="stable").reset_index(drop=True)
    threshold = cfg.threshold_for(table["fom"].to_numpy())
    log.info("%d candidates above z-score %.1f, %d with %s >= %.4g", len(table), cfg.floor,
             int((table["fom"] >= threshold).sum()), cfg.fom, threshold)
    return MicrographPicks(table=table, score=zmap, scale=float(scale), scale_xy=(float(sx), float(sy)),
                           threshold=threshold, distance_px=float(distance), fom=cfg.fom)
