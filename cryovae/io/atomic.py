"""Atomic file writing: write a temporary file beside the target, then ``os.replace`` it.

A reader never sees a half-written output, and a crash leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryovae.errors import CryovaeError, OutputFileError


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
    OutputFileError
        When writing fails with an :class:`OSError` about the output (read-only or immutable
        folder, full disk, quota): one line ``cannot write PATH: <reason>``; the temporary file
        is removed.

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
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and _about_output(exc, path, tmp):
            raise OutputFileError(path, _reason(exc, path)) from exc
        raise


def _reason(exc: OSError, path: Path) -> str:
    """The OS's reason; a failed write without one (numpy's ``tofile``: "N requested and M
    written") on a full disk is called what it is."""
    if exc.strerror:
        return exc.strerror
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return str(exc)
    if free < 2**20:
        return f"{os.strerror(errno.ENOSPC)} ({exc}; {free} bytes free)"
    return str(exc)


def _about_output(exc: OSError, path: Path, tmp: Path) -> bool:
    """True when ``exc`` concerns the file being written (no file named, or ``path``/``tmp``/a
    helper file beside ``tmp``), not an input read inside the ``with`` block."""
    if exc.filename is None:
        return True
    name = str(exc.filename)
    return name in (str(path), str(tmp)) or name.startswith(str(tmp))


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
