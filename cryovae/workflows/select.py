"""Select particles of a run by their latents, cluster, class, pose probability or index, and
write them back for RELION or cryoSPARC (``cryovae select``, and napari's "Save selection").

A selection is a boolean mask over the run's particles (in the order of its latents.npz and
particles.star). Criteria combine with AND; ``invert`` then takes the complement. The written
file holds exactly those particles, as ``cryovae train`` wrote them (every input column, the
optics block, psi / origins / cryovaeZ..., stack paths resolvable from the new file):
:func:`write_selection` is the one writer both the command and napari use.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.inference import write_particles
from cryovae.io import ParticleStack, read_run_particles
from cryovae.runs import Latents, RunDir

log = logging.getLogger(__name__)

#: the extra per-particle output a class-producing model writes (1-based class numbers)
CLASS_EXTRA = "class"
_BOUND = re.compile(r"^\s*(-?[0-9.eE+-]*)\s*(%?)\s*$")


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` with either side open (None); ``percent``: the bounds are
    percentiles of the value over all particles, not values."""

    low: float | None
    high: float | None
    percent: bool = False

    @classmethod
    def parse(cls, text: str, option: str = "range") -> Range:
        """``"LOW:HIGH"``, ``"LOW:"``, ``":HIGH"``; ``"10%:90%"`` for percentiles."""
        if text.count(":") != 1:
            raise CryovaeError(f"{option} {text!r}: expected LOW:HIGH (either may be empty; 10%:90% for percentiles)")
        parts = [_BOUND.match(p) for p in text.split(":")]
        if not all(parts):
            raise CryovaeError(f"{option} {text!r}: expected numbers LOW:HIGH (10%:90% for percentiles)")
        try:
            values = [float(m.group(1)) if m.group(1) else None for m in parts]  # type: ignore[union-attr]
        except ValueError:
            raise CryovaeError(f"{option} {text!r}: expected numbers LOW:HIGH (10%:90% for percentiles)") from None
        signs = {m.group(2) for m, v in zip(parts, values, strict=True) if v is not None}  # type: ignore[union-attr]
        if len(signs) > 1:
            raise CryovaeError(f"{option} {text!r}: give both bounds in z units or both in percent")
        percent = signs == {"%"}
        if all(v is None for v in values):
            raise CryovaeError(f"{option} {text!r}: give at least one bound")
        low, high = values
        if percent and any(v is not None and not 0 <= v <= 100 for v in values):
            raise CryovaeError(f"{option} {text!r}: percentiles must lie in 0..100")
        if low is not None and high is not None and low > high:
            raise CryovaeError(f"{option} {text!r}: LOW is above HIGH")
        return cls(low, high, percent)

    def mask(self, values: np.ndarray) -> np.ndarray:
        low, high = self.low, self.high
        if self.percent:
            low = None if low is None else float(np.percentile(values, low))
            high = None if high is None else float(np.percentile(values, high))
        keep = np.ones(len(values), bool)
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
        return keep


@dataclass(frozen=True)
class SelectionCriteria:
    """What to keep (every given criterion must hold; then ``invert``).

    Attributes
    ----------
    clusters : 1-based cluster numbers of the run's last ``cryovae analyze`` (analysis/clusters.csv).
    z_ranges : latent dimension (1-based) -> :class:`Range` of its posterior mean.
    classes : 1-based class numbers (models that write a class).
    prob_min : the pose probability (cryovaeProb) at least this.
    indices : particle indices, 0-based (convert 1-based ones before).
    invert : keep the particles the criteria do not select.
    """

    clusters: tuple[int, ...] | None = None
    z_ranges: dict[int, Range] = field(default_factory=dict)
    classes: tuple[int, ...] | None = None
    prob_min: float | None = None
    indices: np.ndarray | None = None
    invert: bool = False

    def is_empty(self) -> bool:
        return (self.clusters is None and not self.z_ranges and self.classes is None and self.prob_min is None
                and self.indices is None)


def read_indices(path: str | Path, base: int) -> np.ndarray:
    """0-based particle indices from a text file (integers separated by spaces, commas or new
    lines; ``#`` starts a comment) or a ``.npy`` array, holding ``base``-based (0 or 1) numbers."""
    path = Path(path)
    if base not in (0, 1):
        raise CryovaeError(f"--index-base must be 0 or 1, got {base}")
    if not path.is_file():
        raise InputFileError(f"{path}: no such index file")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False).ravel()
        else:
            text = "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())
            values = np.array([int(t) for t in re.split(r"[\s,]+", text) if t], dtype=np.int64)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a list of particle numbers ({type(exc).__name__})") from None
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise InputFileError(f"{path}: particle numbers must be integers")
    return values.astype(np.int64) - base


def read_clusters(analysis_dir: str | Path, n: int) -> np.ndarray:
    """(n,) 1-based cluster of each particle from ANALYSIS/clusters.csv (``cryovae analyze``)."""
    path = Path(analysis_dir) / "clusters.csv"
    if not path.is_file():
        raise InputFileError(f"{path}: no clusters (run cryovae analyze first, or give --analysis)")
    try:
        table = pd.read_csv(path)
        particle, cluster = table["particle"].to_numpy(np.int64), table["cluster"].to_numpy(np.int64)
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(f"{path}: damaged clusters table ({type(exc).__name__})") from None
    if len(table) != n or not np.array_equal(particle, np.arange(1, n + 1)):
        raise InputFileError(f"{path}: lists {len(table)} particles, the run has {n} (an analysis of another run?)")
    return cluster


def selection_mask(latents: Latents, criteria: SelectionCriteria, clusters: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: the particles ``criteria`` select. ``clusters``: (n,) 1-based cluster labels,
    needed when ``criteria.clusters`` is given."""
    n = len(latents)
    keep = np.ones(n, bool)
    if criteria.clusters is not None:
        if clusters is None:
            raise CryovaeError("--cluster needs the run's clusters (cryovae analyze)")
        known = set(np.unique(clusters).tolist())
        unknown = sorted(set(criteria.clusters) - known)
        if unknown:
            raise CryovaeError(f"--cluster {','.join(map(str, unknown))}: no such cluster "
                               f"(the analysis has clusters {min(known)}..{max(known)})")
        keep &= np.isin(clusters, criteria.clusters)
    zdim = latents.z_mean.shape[1]
    for d, rng in sorted(criteria.z_ranges.items()):
        if not 1 <= d <= zdim:
            raise CryovaeError(f"--z{d}: the run has {zdim} latent dimension(s)")
        keep &= rng.mask(np.asarray(latents.z_mean[:, d - 1], np.float64))
    if criteria.classes is not None:
        if CLASS_EXTRA not in latents.extras:
            raise CryovaeError("--class: this run's model writes no classes")
        keep &= np.isin(np.asarray(latents.extras[CLASS_EXTRA]), criteria.classes)
    if criteria.prob_min is not None:
        if latents.prob is None:
            raise CryovaeError("--prob-min: this run's model writes no pose probability (cryovaeProb)")
        keep &= latents.prob >= criteria.prob_min
    if criteria.indices is not None:
        idx = np.asarray(criteria.indices, np.int64)
        bad = idx[(idx < 0) | (idx >= n)]
        if len(bad):
            raise CryovaeError(f"--indices: particle {int(bad[0])} (0-based) is out of range for the run's {n} "
                               "particles (is the file 0- or 1-based?)")
        in_list = np.zeros(n, bool)
        in_list[idx] = True
        keep &= in_list
    return ~keep if criteria.invert else keep


def write_selection(stack: ParticleStack, latents: Latents, mask: np.ndarray, out: str | Path,
                    absolute_paths: bool = False) -> Path:
    """Write the particles of ``mask`` (n,) bool, with their latents, to ``out`` (.star or .cs).

    ``stack`` and ``latents`` are a run's particles and their results, in the same order (as
    ``cryovae train`` or ``encode`` wrote them). An empty selection is an error (nothing is
    written)."""
    mask = np.asarray(mask, bool)
    if len(mask) != len(stack) or len(latents) != len(stack):
        raise CryovaeError(f"the selection has {len(mask)} entries, the latents {len(latents)}, the particles "
                           f"{len(stack)}")
    idx = np.flatnonzero(mask)
    if not len(idx):
        raise CryovaeError("the selection is empty; nothing written")
    return write_particles(stack.subset(idx), latents.take(idx), Path(out), absolute_paths=absolute_paths)


@dataclass(frozen=True)
class SelectionResult:
    path: Path
    kept: int
    total: int


def select_run(rundir: str | Path, criteria: SelectionCriteria, out: str | Path,
               analysis_dir: str | Path | None = None, absolute_paths: bool = False,
               particles: ParticleStack | None = None) -> SelectionResult:
    """Select particles of the run in ``rundir`` and write them to ``out`` (see the module docstring).

    particles : the particle file the run's latents.npz belongs to; default: read as ``train``
        read it (config.yaml's ``input``).
    analysis_dir : the folder with clusters.csv for ``criteria.clusters`` (default RUNDIR/analysis).
    """
    if criteria.is_empty():
        raise CryovaeError("say what to keep: --cluster, --zN, --class, --prob-min or --indices")
    run = RunDir(rundir)
    config = run.read_config()
    latents = run.read_latents()
    clusters = None
    if criteria.clusters is not None:
        clusters = read_clusters(run.path / "analysis" if analysis_dir is None else analysis_dir, len(latents))
    mask = selection_mask(latents, criteria, clusters)
    stack = read_run_particles(config.input) if particles is None else particles
    if len(stack) != len(latents):
        raise CryovaeError(f"{stack.path}: {len(stack)} particles but {run.latents_file} has {len(latents)}")
    path = write_selection(stack, latents, mask, out, absolute_paths=absolute_paths)
    log.info("kept %d of %d particles in %s", int(mask.sum()), len(mask), path)
    return SelectionResult(path=path, kept=int(mask.sum()), total=len(mask))
