"""RELION particle coordinate files: per-micrograph coordinate stars and RELION 4's autopick index.

Convention (docs/conventions.md, "Picked particle coordinates"): ``rlnCoordinateX`` and
``rlnCoordinateY`` are the particle centre in pixels of the micrograph as given (not binned),
x along columns and y along rows, with pixel (row 0, column 0) at (0, 0); floats are allowed.
A box of N pixels at (x, y) takes rows ``round(y) - N // 2 ... round(y) - N // 2 + N - 1`` (and
the same for columns), so the centre lands on pixel ``N // 2`` of the box. ``rlnAnglePsi`` is
RELION's in-plane angle in degrees.

A coordinate star holds one ``data_`` block (RELION 4 writes ``# version 30001`` before it) with
at least ``rlnCoordinateX`` and ``rlnCoordinateY``; a micrograph without picks has an empty
loop, or an empty file. The autopick index (``autopick.star``) is one ``data_coordinate_files``
block pairing ``rlnMicrographName`` with ``rlnMicrographCoordinates``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io.star import read_star_blocks
from cryovae.io.writers import write_star

COORDINATE_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY")
INDEX_BLOCK = "coordinate_files"
INDEX_COLUMNS = ("rlnMicrographName", "rlnMicrographCoordinates")
#: the ``# version`` RELION 3.1 and 4 write before each block
RELION_VERSION = 30001


def box_corner(x: np.ndarray | float, y: np.ndarray | float, box: int) -> tuple[np.ndarray, np.ndarray]:
    """First row and column of the ``box x box`` window centred at micrograph ``(x, y)``.

    Parameters
    ----------
    x, y : particle centres in micrograph pixels (scalars or ``(n,)``; convention above).
    box : window size N in pixels.

    Returns
    -------
    (row0, col0) : int64 arrays; the window is ``rows row0 ... row0 + N - 1``, ``columns
        col0 ... col0 + N - 1``, with ``row0 = round(y) - N // 2`` (round half to even, as numpy and
        Python do), so the centre falls on pixel ``N // 2`` of the window. May lie outside the
        micrograph; the caller decides what to do at the edge.
    """
    row0 = np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64) - box // 2
    col0 = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64) - box // 2
    return row0, col0


def _has_loop_or_pairs(path: Path) -> bool:
    """False when the file holds nothing but comments, blank lines and ``data_`` headers."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if not text or text.startswith("#") or text.startswith("data_"):
                continue
            return True
    return False


def _blocks(path: Path) -> dict[str, pd.DataFrame]:
    """The star's blocks as frames (key/value blocks become one-row frames)."""
    try:
        raw = read_star_blocks(path)
    except TypeError:  # starfile on a header without a loop
        raise InputFileError(f"{path}: not a readable star file (a data_ block without a loop)") from None
    return {name: value if isinstance(value, pd.DataFrame) else pd.DataFrame([value])
            for name, value in raw.items()}


def write_coordinates(path: str | Path, table: pd.DataFrame) -> Path:
    """Write one micrograph's particle coordinates as a RELION coordinate star, atomically.

    Parameters
    ----------
    path : output ``.star`` (its folder must exist).
    table : one row per particle; must hold ``rlnCoordinateX`` and ``rlnCoordinateY`` (micrograph
        pixels, convention above); every column is written as given, in order. An empty table
        writes an empty loop.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    CryovaeError
        When a coordinate column is missing or holds a value that is not a finite number.
    """
    path = Path(path)
    missing = [c for c in COORDINATE_COLUMNS if c not in table.columns]
    if missing:
        raise CryovaeError(f"{path}: a coordinate table needs the columns {', '.join(missing)}")
    out = table.reset_index(drop=True).copy()
    for col in COORDINATE_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise CryovaeError(f"{path}: {col} holds a value that is not a finite number")
        out[col] = values
    return write_star(path, {"": out}, version=RELION_VERSION)


def read_coordinates(path: str | Path) -> pd.DataFrame:
    """Read a RELION coordinate star (any block name; RELION 3.0 ``data_`` files too).

    Parameters
    ----------
    path : a ``.star`` holding ``rlnCoordinateX`` and ``rlnCoordinateY`` in a loop (the first block
        that has both is read; other blocks are ignored).

    Returns
    -------
    pandas.DataFrame
        The block as read, index 0..n-1, the coordinate columns as float64. An empty file, or an
        empty loop, gives an empty table (a micrograph with no picks is legal); an empty file's
        table has just the two coordinate columns.

    Raises
    ------
    InputFileError
        Missing or unreadable file, no block with both coordinate columns, or a coordinate that
        is not a finite number; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    if not _has_loop_or_pairs(path):
        return pd.DataFrame({c: pd.Series([], dtype=np.float64) for c in COORDINATE_COLUMNS})
    blocks = _blocks(path)
    found = [name for name, df in blocks.items() if all(c in df.columns for c in COORDINATE_COLUMNS)]
    if not found:
        raise InputFileError(f"{path}: no data block with both _rlnCoordinateX and _rlnCoordinateY columns, "
                             "so not a coordinate file")
    table = blocks[found[0]].reset_index(drop=True).copy()
    for col in COORDINATE_COLUMNS:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputFileError(f"{path}: row {k + 1}: {col} '{table[col].iloc[k]}' is not a finite number")
        table[col] = values
    return table


def write_autopick_index(path: str | Path, rows: list[tuple[str, str]]) -> Path:
    """Write RELION 4's ``autopick.star`` index, atomically.

    Parameters
    ----------
    path : output ``.star``.
    rows : ``(micrograph name, coordinate file)`` pairs, written as given. Write them relative to
        the index's folder (or absolute) so :func:`read_autopick_index` finds them from anywhere;
        RELION itself writes them relative to its project folder, which the reader also accepts.

    Returns
    -------
    Path
        ``path``.
    """
    table = pd.DataFrame({INDEX_COLUMNS[0]: [str(m) for m, _ in rows],
                          INDEX_COLUMNS[1]: [str(c) for _, c in rows]})
    return write_star(path, {INDEX_BLOCK: table}, version=RELION_VERSION)


def _resolve(ref: str, index_dir: Path, cwd: Path) -> Path:
    written = Path(ref)
    if written.is_absolute():
        return written
    beside = index_dir / written
    if beside.exists():
        return beside
    project = cwd / written
    return project if project.exists() else beside


def read_autopick_index(path: str | Path, cwd: str | Path | None = None) -> list[tuple[Path, Path]]:
    """Read an autopick index: ``(micrograph, coordinate file)`` pairs in file order.

    Parameters
    ----------
    path : the index (``data_coordinate_files``, or any block with ``rlnMicrographName`` and
        ``rlnMicrographCoordinates``).
    cwd : the project folder (None: the current folder).

    Returns
    -------
    list of (Path, Path)
        An absolute path is kept as written. A relative one is taken from the index's folder when
        it exists there (what cryovae writes), else from the project folder when it exists there
        (what RELION writes: paths relative to its project folder), else from the index's folder
        (so a later read names a path beside the index). The index's folder goes first so that
        two indexes listing the same relative names (picks and truth) never read each other's
        files. The files are not opened.

    Raises
    ------
    InputFileError
        Missing or unreadable file, no block with both columns, or an empty loop.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    if not _has_loop_or_pairs(path):
        raise InputFileError(f"{path}: empty autopick index (no micrographs)")
    blocks = _blocks(path)
    found = [name for name, df in blocks.items() if all(c in df.columns for c in INDEX_COLUMNS)]
    if not found:
        raise InputFileError(f"{path}: no data block with _rlnMicrographName and _rlnMicrographCoordinates "
                             "columns, so not an autopick index")
    name = INDEX_BLOCK if INDEX_BLOCK in found else found[0]
    table = blocks[name]
    if len(table) == 0:
        raise InputFileError(f"{path}: empty loop in data_{name} (no micrographs)")
    index_dir = path.parent
    here = (Path.cwd() if cwd is None else Path(cwd)).absolute()
    return [(_resolve(str(m).strip(), index_dir, here), _resolve(str(c).strip(), index_dir, here))
            for m, c in zip(table[INDEX_COLUMNS[0]], table[INDEX_COLUMNS[1]], strict=True)]
