"""Atomic file writing: write a temporary file beside the target, then ``os.replace`` it.

A reader never sees a half-written output, and a crash leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryovae.errors import CryovaeError


def temporary_path(path: str | Path) -> Path:
    """The temporary name used for ``path`` while it is written (same folder, ``.tmp`` added).

    The original suffix is kept before ``.tmp`` only as part of the name; writers that pick a
    format from the suffix must be told the format explicitly.
    """
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Context manager yielding a temporary path to write ``path`` through.

    On a clean exit the temporary file is moved onto ``path`` with :func:`os.replace` (atomic
    on one filesystem); if the block raises, the temporary file is removed and ``path`` is left
    as it was.

    Parameters
    ----------
    path : the final output file. Its folder must exist.

    Raises
    ------
    CryovaeError
        When the output folder does not exist.

    Examples
    --------
    >>> with atomic_path("out.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CryovaeError(f"{path}: output folder {path.parent} does not exist")
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return a.resolve() == b.resolve()


def refuse_overwrite_input(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Raise :class:`CryovaeError` if ``out`` is the same file as any of ``inputs``.

    Input files are never modified; a command that would write onto its own input stops
    before touching anything. ``None`` entries in ``inputs`` are ignored.
    """
    out = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        if _same_file(out, Path(inp)):
            raise CryovaeError(f"{out}: output would overwrite the input file {inp}; choose another output path")
