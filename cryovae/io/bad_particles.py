"""Bad particles: images with NaN/infinite pixels or a single value, found, described and listed.

``read_particles(..., skip_bad=True)`` scans every image once (:meth:`ParticleStack.find_bad`),
leaves the bad ones out and keeps them in ``stack.skipped``; the command that writes results
lists them with :func:`write_bad_particles` beside its output (:func:`bad_list_path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryovae.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: name of the list in a run folder; beside an output file it is ``<stem>_bad_particles.txt``
BAD_LIST = "bad_particles.txt"


def bad_masks(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which images of a batch are bad.

    Parameters
    ----------
    images : (b, N, N) float images.

    Returns
    -------
    (nonfinite, constant)
        (b,) bool each: some pixel is NaN or infinite; every pixel has the same finite value.
    """
    flat = np.asarray(images).reshape(len(images), -1)
    nonfinite = ~np.isfinite(flat).all(axis=1)
    constant = np.zeros(len(flat), dtype=bool)
    ok = ~nonfinite
    if ok.any() and flat.shape[1]:
        constant[ok] = flat[ok].max(axis=1) == flat[ok].min(axis=1)
    return nonfinite, constant


@dataclass(frozen=True)
class BadParticles:
    """The bad particles of one particle file.

    source : the particle file.  n_total : particles in it.
    rows : (k,) int, 0-based rows of the bad particles in the file's particle table.
    image_names : k ``index@stack`` names (1-based index, stack as written).
    nonfinite : (k,) bool, True for NaN/infinite pixels, False for a constant image.
    values : (k,) float, the constant images' value (NaN for the non-finite ones).
    """

    source: Path
    n_total: int
    rows: np.ndarray
    image_names: list[str]
    nonfinite: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def reason(self, i: int) -> str:
        """Why particle ``i`` of this list is bad, in words."""
        if self.nonfinite[i]:
            return "NaN or infinite pixels"
        return f"constant image (all pixels {float(self.values[i])!r})"

    def counts_text(self) -> str:
        """``"2 with NaN or infinite pixels, 1 constant"``."""
        parts = []
        k_nan = int(self.nonfinite.sum())
        if k_nan:
            parts.append(f"{k_nan} with NaN or infinite pixels")
        if len(self) - k_nan:
            parts.append(f"{len(self) - k_nan} constant")
        return ", ".join(parts)

    def rows_text(self, first: int = 5) -> str:
        """The first ``first`` 1-based rows: ``"rows 4, 9 and 12"`` / ``"rows 4, 9, ... and 7 more"``."""
        shown = [str(int(r) + 1) for r in self.rows[:first]]
        word = "row" if len(self) == 1 else "rows"
        more = len(self) - len(shown)
        if more:
            return f"{word} {', '.join(shown)} and {more} more"
        if len(shown) > 1:
            return f"{word} {', '.join(shown[:-1])} and {shown[-1]}"
        return f"{word} {shown[0]}" if shown else "no rows"

    def summary(self) -> str:
        """``"3 of 100 particles are bad (2 with NaN or infinite pixels, 1 constant): rows 4, 9 and 12"``."""
        verb = "is" if len(self) == 1 else "are"
        return f"{len(self)} of {self.n_total} particles {verb} bad ({self.counts_text()}): {self.rows_text()}"


def bad_list_path(output: str | Path) -> Path:
    """Where the list of skipped particles goes for an output file: ``<stem>_bad_particles.txt``
    beside it (a run folder gets ``RUNDIR/bad_particles.txt``)."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{BAD_LIST}")


def write_bad_particles(bad: BadParticles, path: str | Path) -> Path:
    """List ``bad`` in a tab-separated text file, atomically.

    Two ``#`` comment lines, then one line per particle: the 1-based row in the particle file,
    its ``index@stack`` image name and the reason.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"# particles of {bad.source} left out by --skip-bad ({len(bad)} of {bad.n_total}); "
                 "rows are 1-based rows of its particle table\n")
        fh.write("# row\timage\treason\n")
        for i, (row, name) in enumerate(zip(bad.rows, bad.image_names, strict=True)):
            fh.write(f"{int(row) + 1}\t{name}\t{bad.reason(i)}\n")
    return path


def report_skipped(stack, list_path: str | Path) -> Path | None:
    """Write the list of particles ``stack`` left out (``stack.skipped``) to ``list_path`` and say
    so in one log line; None (nothing written) when none were left out."""
    bad = getattr(stack, "skipped", None)
    if not bad:
        return None
    path = write_bad_particles(bad, list_path)
    log.warning("%s: --skip-bad: %s; left out (listed in %s), the outputs hold only the %d others",
                bad.source, bad.summary(), path, len(stack))
    return path
