"""Micrographs: one 2D MRC image each, and RELION micrograph stars listing them.

:func:`read_micrograph` reads one ``.mrc`` (through :func:`cryovae.io.mrc.open_mrc`: strict
mrcfile first, permissive with a warning for a damaged header) into a float32 ``(H, W)`` array;
row 0 is the first row of the file, so pixel (row i, column j) is the micrograph coordinate
(x, y) = (j, i) of the coordinate convention (:mod:`cryovae.io.coordinates`).

:func:`micrograph_paths` expands command-line arguments (micrographs, or RELION
``micrographs.star`` / ``micrographs_ctf.star`` files) into ``(micrograph, Å/px or None)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io.atomic import atomic_path
from cryovae.io.mrc import _as_image_array, open_mrc, read_header
from cryovae.io.particles import locate_stack
from cryovae.io.star import OPTICS, read_star_blocks

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".map")
STAR_SUFFIXES = (".star",)


@dataclass(frozen=True)
class Micrograph:
    """One micrograph as read.

    path : the file.
    data : ``(H, W)`` float32; row 0 is the file's first row (y = 0), column 0 its first column.
    apix : Å/px from the header's voxel size; None when the header says 0 (mrcfile's unset value)
        or holds no finite number. A header of 1 Å/px is taken as written (real detectors give
        pixels near 1 Å); a file from a program that writes 1 for "unknown" needs ``--apix``.
    """

    path: Path
    data: np.ndarray
    apix: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def _header_apix(value: float) -> float | None:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        return None
    return value


def read_micrograph(path: str | Path) -> Micrograph:
    """Read one micrograph into memory.

    Parameters
    ----------
    path : an MRC file holding one 2D image (a 3D file with one section is accepted).

    Returns
    -------
    Micrograph
        ``data`` is a float32 copy ``(H, W)``; the file is closed.

    Raises
    ------
    InputFileError
        Missing, truncated or unreadable file, more than one section (a movie or a stack), or
        pixels that are NaN or infinite; one line naming the file.
    """
    path = Path(path)
    mrc, _ = open_mrc(path)
    try:
        arr = _as_image_array(mrc, path)
        if arr.shape[0] != 1:
            raise InputFileError(f"{path}: holds {arr.shape[0]} sections of {arr.shape[1]} x {arr.shape[2]}; "
                                 "a micrograph is one 2D image (sum a movie's frames first)")
        data = np.array(arr[0], dtype=np.float32)
        apix = _header_apix(mrc.voxel_size.x)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read the micrograph ({exc})") from None
    finally:
        mrc.close()
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise InputFileError(f"{path}: {n_bad} pixels are NaN or infinite (first at row {i}, column {j})")
    return Micrograph(path=path, data=data, apix=apix)


def write_micrograph(path: str | Path, data: np.ndarray, apix: float) -> Path:
    """Write one micrograph as a 2D MRC image (mode 2, float32), atomically.

    Parameters
    ----------
    path : output ``.mrc``.
    data : ``(H, W)`` image; row 0 becomes the file's first row.
    apix : Å/px, stored as the header's voxel size.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise CryovaeError(f"{path}: a micrograph is a 2D (H, W) image, got shape {arr.shape}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr, dtype=np.float32))
            mrc.voxel_size = float(apix)
            mrc.update_header_stats()
    return path


def _optics_frame(value: pd.DataFrame | dict) -> pd.DataFrame:
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame([value])


def _row_pixel_sizes(path: Path, table: pd.DataFrame, optics: pd.DataFrame | None) -> list[float | None]:
    """Å/px per micrograph: the row's ``rlnMicrographPixelSize``, else its optics group's, else
    RELION 3.0's ``rlnDetectorPixelSize`` (µm) * 1e4 / ``rlnMagnification``, else None."""
    n = len(table)
    sizes = np.full(n, np.nan)
    if "rlnMicrographPixelSize" in table.columns:
        sizes = pd.to_numeric(table["rlnMicrographPixelSize"], errors="coerce").to_numpy(dtype=np.float64)
    if optics is not None and "rlnMicrographPixelSize" in optics.columns:
        if "rlnOpticsGroup" in optics.columns and "rlnOpticsGroup" in table.columns:
            by_group = dict(zip(pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce"),
                                pd.to_numeric(optics["rlnMicrographPixelSize"], errors="coerce"), strict=True))
            groups = pd.to_numeric(table["rlnOpticsGroup"], errors="coerce")
            unknown = sorted({g for g in groups if g not in by_group})
            if unknown:
                raise InputFileError(f"{path}: rlnOpticsGroup {unknown[0]:g} is not in data_optics")
            from_optics = np.array([by_group[g] for g in groups], dtype=np.float64)
        elif len(optics) == 1:
            from_optics = np.full(n, float(pd.to_numeric(optics["rlnMicrographPixelSize"], errors="coerce").iloc[0]))
        else:
            raise InputFileError(f"{path}: data_optics has {len(optics)} groups but the micrographs have no "
                                 "rlnOpticsGroup column")
        sizes = np.where(np.isfinite(sizes), sizes, from_optics)
    if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):
        det = pd.to_numeric(table["rlnDetectorPixelSize"], errors="coerce").to_numpy(dtype=np.float64)
        mag = pd.to_numeric(table["rlnMagnification"], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sizes = np.where(np.isfinite(sizes), sizes, det * 1e4 / mag)
    return [float(s) if np.isfinite(s) and s > 0 else None for s in sizes]


def _star_micrographs(path: Path, cwd: Path | None) -> list[tuple[Path, float | None]]:
    raw = read_star_blocks(path)
    blocks = {name: _optics_frame(value) for name, value in raw.items()}
    found = [name for name, df in blocks.items() if name != OPTICS and "rlnMicrographName" in df.columns]
    if not found:
        if "rlnImageName" in set().union(*(df.columns for df in blocks.values())):
            raise InputFileError(f"{path}: a particle star (rlnImageName), not a micrograph star; "
                                 "give the micrographs (.mrc) or a micrographs.star")
        raise InputFileError(f"{path}: no _rlnMicrographName column, so no micrographs to read")
    name = "micrographs" if "micrographs" in found else found[0]
    table = blocks[name]
    if len(table) == 0:
        raise InputFileError(f"{path}: empty loop in data_{name} (no micrographs)")
    optics = blocks.get(OPTICS)
    sizes = _row_pixel_sizes(path, table, optics)
    out: list[tuple[Path, float | None]] = []
    for k, ref in enumerate(table["rlnMicrographName"].astype(str).str.strip()):
        found_path, _ = locate_stack(ref, path.parent, None, cwd)
        if found_path is None:
            raise InputFileError(f"{path}: micrograph {k + 1}: {ref} not found (looked in the current folder "
                                 f"and in {path.parent})")
        out.append((found_path, sizes[k]))
    return out


def micrograph_paths(args: list[Path], cwd: str | Path | None = None) -> list[tuple[Path, float | None]]:
    """Expand micrograph arguments into ``(micrograph path, Å/px or None)``, in order.

    Parameters
    ----------
    args : each an MRC micrograph (``.mrc``; ``.mrcs``/``.map`` too) or a RELION micrograph star:
        ``micrographs.star`` / ``micrographs_ctf.star`` with ``data_optics`` and
        ``data_micrographs`` (RELION 3.1+), or one block (RELION 3.0), with ``rlnMicrographName``.
    cwd : the project folder relative micrograph names are tried from first (None: the current
        folder); then the star's folder, as for particle stacks
        (:func:`cryovae.io.particles.locate_stack`).

    Returns
    -------
    list of (Path, float or None)
        For a micrograph argument, the path and its header's pixel size (None when unset). For a
        star, each listed micrograph and its pixel size from ``rlnMicrographPixelSize`` (the row's,
        else its optics group's; RELION 3.0: ``rlnDetectorPixelSize * 1e4 / rlnMagnification``),
        None when the star has none. Only headers are read.

    Raises
    ------
    InputFileError
        A missing file, an unknown suffix, a star without micrographs (no ``rlnMicrographName``
        column, or an empty loop), or a listed micrograph that is nowhere; one line naming it.
    """
    base = None if cwd is None else Path(cwd)
    out: list[tuple[Path, float | None]] = []
    for arg in args:
        path = Path(arg)
        if not path.is_file():
            raise InputFileError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix in STAR_SUFFIXES:
            out.extend(_star_micrographs(path, base))
        elif suffix in MICROGRAPH_SUFFIXES:
            out.append((path, _header_apix(read_header(path).voxel_size)))
        else:
            raise InputFileError(f"{path}: not a micrograph (.mrc) or a micrograph star (.star)")
    return out
