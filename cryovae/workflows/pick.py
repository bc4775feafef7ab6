"""Pick particles in micrographs with a trained run (``cryovae pick``).

For every micrograph (an .mrc, or the micrographs of a RELION micrographs star) it writes

* ``OUTDIR/<stem>.star``: RELION coordinates of the picks at or above the threshold
  (rlnCoordinateX/Y in the micrograph's own pixels, rlnAutopickFigureOfMerit, rlnAnglePsi,
  cryovaeZ1..; docs/conventions.md "Picked particle coordinates");
* ``OUTDIR/<stem>_picks.png`` (unless ``overview=False``): the micrograph at the run's pixel size
  with a circle of the particle's size at each pick;

and then ``OUTDIR/autopick.star``, RELION 4's ``data_coordinate_files`` index of every micrograph
of the call (paths relative to OUTDIR). Every file is written atomically; inputs are only read.
A micrograph whose star already exists is not picked again (a stopped call resumes) unless
``overwrite``; the index always lists every micrograph of the call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.inference import (
    MicrographPicks,
    PickConfig,
    TrainedRun,
    has_attention,
    pick_micrograph,
)
from cryovae.inference.picking import no_attention_message, run_scale
from cryovae.io import (
    atomic_path,
    micrograph_paths,
    read_micrograph,
    write_autopick_index,
    write_coordinates,
)

log = logging.getLogger(__name__)

INDEX = "autopick.star"


@dataclass
class PickResult:
    """What :func:`pick_micrographs` did: the index, each micrograph's star and pick count
    (None for one kept from an earlier call), seconds per picked micrograph."""

    index: Path
    stars: list[Path] = field(default_factory=list)
    counts: list[int | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def coordinate_star(outdir: Path, micrograph: Path) -> Path:
    """``OUTDIR/<micrograph stem>.star``."""
    return Path(outdir) / f"{Path(micrograph).stem}.star"


def _check_stems(paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise CryovaeError(f"two micrographs share the name {p.stem!r} ({seen[p.stem]} and {p}): their "
                               "coordinate files would collide; pick them into different output folders")
        seen[p.stem] = p


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when both are on one drive, else absolute."""
    try:
        return os.path.relpath(Path(path).absolute(), Path(start).absolute())
    except ValueError:
        return str(Path(path).absolute())


def write_overview(path: Path, picks: MicrographPicks, image: np.ndarray, radius_px: float,
                   threshold: float | None = None) -> Path:
    """A PNG of ``image`` (the micrograph as read) shown at about the score map's size, a circle
    of ``radius_px`` micrograph pixels at each pick at or above the threshold. Atomic."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from cryovae.data import fourier_resample

    h, w = picks.score.shape
    small = fourier_resample(np.asarray(image, np.float32), (h, w)) if (h, w) != image.shape else image
    lo, hi = np.percentile(small, [1, 99])
    sel = picks.above(threshold)
    inch = max(w, h) / 100.0
    fig = Figure(figsize=(min(12.0, inch * w / max(w, h) + 0.1), min(12.0, inch * h / max(w, h) + 0.1)), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    sx, sy = picks.scale_xy
    ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, extent=(-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy))
    from matplotlib.patches import Circle

    for x, y in zip(sel["x_px"].to_numpy(), sel["y_px"].to_numpy(), strict=True):
        ax.add_patch(Circle((x, y), radius_px, fill=False, color="#ffcc00", lw=0.8))
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def pick_micrographs(rundir: str | Path, inputs: list[Path], outdir: str | Path, cfg: PickConfig = PickConfig(),
                     apix: float | None = None, device: str = "auto", overwrite: bool = False,
                     overview: bool = True, progress: bool = True,
                     on_picked: Callable[[Path, MicrographPicks | None], None] | None = None) -> PickResult:
    """Pick every micrograph of ``inputs`` with the run in ``rundir``; see the module docstring.

    Parameters
    ----------
    rundir : a TARGET-VAE training run.
    inputs : .mrc micrographs and/or RELION micrographs stars.
    outdir : output folder (created).
    cfg : threshold, distance (micrograph pixels), tile, figure of merit.
    apix : Å/px of every micrograph (overrides the star and the headers).
    device : ``--device``.  overwrite : pick again micrographs whose star exists.
    overview : write the PNGs.  progress : tqdm bars over micrographs and tiles.
    on_picked : called with (star, picks) after each micrograph (picks None when kept).
    """
    import time

    from tqdm.auto import tqdm

    outdir = Path(outdir)
    mics = micrograph_paths([Path(p) for p in inputs])
    if not mics:
        raise CryovaeError("no micrographs given")
    _check_stems([p for p, _ in mics])
    run = TrainedRun.load(rundir, device=device)
    if not has_attention(run):
        raise CryovaeError(no_attention_message(run))
    outdir.mkdir(parents=True, exist_ok=True)
    result = PickResult(index=outdir / INDEX)
    bar = tqdm(mics, desc="micrographs", unit="mic", disable=not progress or len(mics) < 2)
    for path, star_apix in bar:
        star = coordinate_star(outdir, path)
        result.stars.append(star)
        if star.exists() and not overwrite:
            log.info("%s: %s exists, kept (--overwrite picks it again)", path, star)
            result.counts.append(None)
            if on_picked is not None:
                on_picked(star, None)
            continue
        mic = read_micrograph(path)
        size = apix if apix is not None else star_apix if star_apix is not None else mic.apix
        if size is None:
            log.warning("%s: no pixel size in the header or star; assuming the run's %.4g Å (give --apix)",
                        path, run.pixel_size)
        try:
            run_scale(run, size)  # the pixel sizes' check, before any progress bar
        except CryovaeError as exc:
            raise CryovaeError(f"{path}: {exc}") from None
        t0 = time.perf_counter()
        with tqdm(total=1, desc=f"{path.name} tiles", unit="tile", leave=False, disable=not progress) as tbar:
            def tick(done: int, total: int, tbar=tbar) -> None:
                tbar.total = total
                tbar.update(done - tbar.n)

            try:
                picks = pick_micrograph(run, mic.data, size, cfg, progress=tick)
            except CryovaeError as exc:
                raise CryovaeError(f"{path}: {exc}") from None
        result.seconds.append(time.perf_counter() - t0)
        table = picks.coordinate_table()
        write_coordinates(star, table)
        if overview:
            write_overview(outdir / f"{path.stem}_picks.png", picks, mic.data, 0.5 * picks.distance_px)
        result.counts.append(len(table))
        log.info("%s: %d picks (%d candidates) in %.1f s -> %s", path, len(table), len(picks.table),
                 result.seconds[-1], star)
        if on_picked is not None:
            on_picked(star, picks)
    write_autopick_index(result.index, [(_relative(p, outdir), s.name) for (p, _), s in
                                        zip(mics, result.stars, strict=True)])
    return result

