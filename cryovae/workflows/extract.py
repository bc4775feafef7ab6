"""Cut particle boxes at picked coordinates: a stack + RELION 3.1 star (``cryovae extract``).

Reads ``PICKDIR/autopick.star`` (RELION 4's index, as ``cryovae pick`` writes it, or RELION's
own), each micrograph and its coordinate star, and cuts an N x N box around every pick with
docs/conventions.md "Picked particle coordinates": rows ``round(y) - N//2 ... + N - 1``, so the
pick lands on pixel N//2 of the box (cryovae's centre). A box that does not lie wholly inside
its micrograph is skipped and counted, as RELION does. Pixels are written as read (no
normalisation, no inversion: ``cryovae train`` normalises and ``--invert``\\ s).

The output star (RELION 3.1) has ``data_optics`` (one group: rlnOpticsGroup, rlnOpticsGroupName,
rlnMicrographOriginalPixelSize, rlnImagePixelSize, rlnImageSize, rlnImageDimensionality) and
``data_particles`` (rlnImageName ``k@<stack>`` 1-based, rlnMicrographName, rlnCoordinateX/Y,
rlnAutopickFigureOfMerit and rlnAnglePsiPrior when the picks have them, rlnOpticsGroup); the
stack ``<star stem>.mrcs`` is written beside it and named relative to the star's folder, as is
each micrograph. Both files are atomic.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io import (
    open_stack_for_writing,
    read_autopick_index,
    read_coordinates,
    read_micrograph,
    write_star,
)
from cryovae.io.coordinates import box_corner

log = logging.getLogger(__name__)

#: columns carried from a coordinate star into the particle star, when present
CARRIED = {"rlnAutopickFigureOfMerit": "rlnAutopickFigureOfMerit", "rlnAnglePsi": "rlnAnglePsiPrior"}


@dataclass
class ExtractResult:
    """The written star and stack, particles written, picks skipped (edge, threshold)."""

    star: Path
    stack: Path
    written: int
    skipped_edge: int
    skipped_threshold: int


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(Path(path).absolute(), Path(start).absolute())
    except ValueError:
        return str(Path(path).absolute())


def _picks(coords: Path, threshold: float | None) -> tuple[pd.DataFrame, int]:
    table = read_coordinates(coords)
    if threshold is None or not len(table):
        return table, 0
    if "rlnAutopickFigureOfMerit" not in table.columns:
        raise InputFileError(f"{coords}: no rlnAutopickFigureOfMerit column for --threshold")
    keep = pd.to_numeric(table["rlnAutopickFigureOfMerit"], errors="coerce").to_numpy(float) >= threshold
    return table[keep].reset_index(drop=True), int((~keep).sum())


def _inside(table: pd.DataFrame, shape: tuple[int, int], box: int) -> np.ndarray:
    row0, col0 = box_corner(table["rlnCoordinateX"].to_numpy(float), table["rlnCoordinateY"].to_numpy(float), box)
    return (row0 >= 0) & (col0 >= 0) & (row0 + box <= shape[0]) & (col0 + box <= shape[1])


def extract_particles(pickdir: str | Path, out_star: str | Path, box: int, threshold: float | None = None,
                      apix: float | None = None, progress: bool = True) -> ExtractResult:
    """Cut ``box`` x ``box`` particles at the picks of ``pickdir`` into ``out_star`` (+ .mrcs).

    Parameters
    ----------
    pickdir : a folder with autopick.star (``cryovae pick``'s OUTDIR, or a RELION AutoPick job).
    out_star : the particle star to write (the stack goes beside it, same stem, ``.mrcs``).
    box : box size in micrograph pixels (>= 2).
    threshold : keep only picks with rlnAutopickFigureOfMerit >= this (None: every pick).
    apix : Å/px of the micrographs (None: their headers; all must agree).

    Raises
    ------
    CryovaeError
        One line: no index, a bad box, no pixel size, micrographs of different pixel sizes, no
        pick left to extract.
    """
    from tqdm.auto import tqdm

    pickdir, out_star = Path(pickdir), Path(out_star)
    if box < 2:
        raise CryovaeError(f"--box {box}: must be at least 2 pixels")
    if out_star.suffix != ".star":
        raise CryovaeError(f"{out_star}: the output must be a .star file")
    index = pickdir / "autopick.star"
    if not index.is_file():
        raise InputFileError(f"{pickdir}: no autopick.star (is it the output folder of cryovae pick?)")
    pairs = read_autopick_index(index)
    plan: list[tuple[Path, pd.DataFrame]] = []
    skipped_edge = skipped_thr = 0
    sizes: set[float] = set()
    for mic_path, coords in tqdm(pairs, desc="reading picks", unit="mic", disable=not progress or len(pairs) < 2):
        if not coords.is_file():
            raise InputFileError(f"{index}: {coords} (coordinates of {mic_path}) does not exist")
        table, below = _picks(coords, threshold)
        skipped_thr += below
        mic = read_micrograph(mic_path)
        size = apix if apix is not None else mic.apix
        if size is None:
            raise CryovaeError(f"{mic_path}: no pixel size in the header; give --apix")
        sizes.add(round(float(size), 4))
        inside = _inside(table, mic.data.shape, box) if len(table) else np.zeros(0, bool)
        if (~inside).any():
            log.info("%s: %d of %d picks too close to the edge for a %d px box, skipped", mic_path,
                     int((~inside).sum()), len(table), box)
        skipped_edge += int((~inside).sum())
        plan.append((mic_path, table[inside].reset_index(drop=True)))
    if len(sizes) > 1:
        raise CryovaeError(f"{index}: the micrographs have different pixel sizes ({', '.join(map(str, sorted(sizes)))} Å); "
                           "extract them separately")
    n = sum(len(t) for _, t in plan)
    if n == 0:
        raise CryovaeError(f"{index}: no pick to extract ({skipped_edge} too close to an edge, "
                           f"{skipped_thr} below the threshold)")
    pixel = float(sizes.pop())
    out_star.parent.mkdir(parents=True, exist_ok=True)
    stack = out_star.with_suffix(".mrcs")
    stack_name = _relative(stack, out_star.parent)
    rows = []
    k = 0
    with open_stack_for_writing(stack, n, box, pixel) as writer:
        for mic_path, table in tqdm(plan, desc="extracting", unit="mic", disable=not progress or len(plan) < 2):
            if not len(table):
                continue
            data = read_micrograph(mic_path).data
            row0, col0 = box_corner(table["rlnCoordinateX"].to_numpy(float), table["rlnCoordinateY"].to_numpy(float), box)
            boxes = np.stack([data[r: r + box, c: c + box] for r, c in zip(row0, col0, strict=True)])
            writer[k: k + len(boxes)] = boxes.astype(np.float32)
            part = pd.DataFrame({
                "rlnImageName": [f"{i:06d}@{stack_name}" for i in range(k + 1, k + len(boxes) + 1)],
                "rlnMicrographName": _relative(mic_path, out_star.parent),
                "rlnCoordinateX": table["rlnCoordinateX"].to_numpy(float),
                "rlnCoordinateY": table["rlnCoordinateY"].to_numpy(float)})
            for src, dst in CARRIED.items():
                if src in table.columns:
                    part[dst] = pd.to_numeric(table[src], errors="coerce").to_numpy(float)
            part["rlnOpticsGroup"] = 1
            rows.append(part)
            k += len(boxes)
    particles = pd.concat(rows, ignore_index=True)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnMicrographOriginalPixelSize": [pixel], "rlnImagePixelSize": [pixel],
                           "rlnImageSize": [int(box)], "rlnImageDimensionality": [2]})
    write_star(out_star, {"optics": optics, "particles": particles})
    log.info("extracted %d particles of %d px at %.4g Å/px from %d micrographs -> %s (%d too close to an "
             "edge, %d below the threshold)", n, box, pixel, len(plan), out_star, skipped_edge, skipped_thr)
    return ExtractResult(star=out_star, stack=stack, written=n, skipped_edge=skipped_edge,
                         skipped_threshold=skipped_thr)
