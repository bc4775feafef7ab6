"""A ``.npy`` image stack read and written row by row, never whole and never memory-mapped.

A training run keeps its preprocessed particles in RUNDIR/images.npy (``(n, box, box)``
float32). A million particles do not fit in RAM, and a memory map of them counts every page
read as the process's resident memory until the map is closed. :class:`NpyRows` reads only the
rows asked for with ``os.pread`` (the page cache still serves repeated reads), so the resident
memory of a process streaming through the stack stays that of one batch. It pickles as its path,
so DataLoader workers open their own file. :func:`write_npy_rows` writes such a file in chunks,
atomically.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cryovae.errors import InputFileError
from cryovae.io.atomic import atomic_path


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data in bytes) of a C-ordered ``.npy`` file."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f".npy format version {version} is not read here")
            shape, fortran, dtype = read[version](fh)
            offset = fh.tell()
    except (OSError, ValueError, EOFError) as exc:
        raise InputFileError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if fortran or dtype.hasobject:
        raise InputFileError(f"{path}: a .npy image stack must be C-ordered numbers")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < need:
        raise InputFileError(f"{path}: truncated ({path.stat().st_size} bytes, its header needs {need})")
    return tuple(int(s) for s in shape), dtype, offset


class NpyRows:
    """Rows of a ``.npy`` array on disk: ``rows[idx]`` reads them.

    Parameters
    ----------
    path : a C-ordered ``.npy`` file of shape ``(n, ...)``.

    Attributes
    ----------
    shape, dtype : of the whole array.  ndim, nbytes : as numpy's.

    ``rows[i]`` (int), ``rows[a:b]`` (slice, step 1) and ``rows[idx]`` (integer array, any order,
    repeats allowed) return an ndarray; ``np.asarray(rows)`` reads everything.
    """

    def __init__(self, path: str | Path) -> None:
        self._fd: int | None = None
        self._pid = -1
        self.path = Path(path)
        self.shape, self.dtype, self._offset = _header(self.path)
        if not self.shape:
            raise InputFileError(f"{self.path}: a .npy image stack needs at least one axis")
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self._row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def view(self, start: int, stop: int) -> NpyRows:
        """Rows ``start .. stop`` (clipped like a slice) as an :class:`NpyRows` of the same file."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        new = object.__new__(NpyRows)
        new.__dict__.update(self.__getstate__())
        new._offset = self._offset + start * self._row_bytes
        new.shape = (max(stop - start, 0), *self.shape[1:])
        return new

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1  # a worker process opens its own
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read_run(self, out: np.ndarray, start: int, count: int) -> None:
        """Rows ``start .. start + count`` into the C-contiguous ``out`` (count rows)."""
        if not out.flags.c_contiguous:
            raise ValueError("rows are read into C-contiguous arrays only")
        want = count * self._row_bytes
        view = out.reshape(-1).view(np.uint8).data  # the memory of out itself
        got = 0
        while got < want:
            n = os.preadv(self._file(), [view[got:want]], self._offset + start * self._row_bytes + got)
            if n <= 0:
                raise InputFileError(f"{self.path}: truncated at row {start + got // self._row_bytes}")
            got += n

    def read(self, index: Iterable[int] | np.ndarray) -> np.ndarray:
        """Rows ``index`` (0-based integers) in the order given, as a new array."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        index = np.where(index < 0, index + n, index)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        if not len(index):
            return out
        order = np.argsort(index, kind="stable")
        rows = index[order]
        block = np.empty_like(out)
        # consecutive rows are one read each
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first, count = int(rows[run[0]]), len(run)
            self._read_run(block[run[0]: run[0] + count], first, count)
        out[order] = block
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                return self.read(np.arange(start, stop, step))
            out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
            if len(out):
                self._read_run(out, start, len(out))
            return out
        if np.ndim(key) == 0 and not isinstance(key, np.ndarray | list):
            return self.read([int(key)])[0]
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.read(key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype, copy=False)


class NpyRowsWriter:
    """Writes an ``(n, ...)`` ``.npy`` file in chunks of rows, in order (see :func:`write_npy_rows`)."""

    def __init__(self, fh, shape: tuple[int, ...], dtype) -> None:
        self._fh, self.shape, self.dtype = fh, tuple(shape), np.dtype(dtype)
        self.written = 0
        np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                  "fortran_order": False, "shape": self.shape})

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` ``(k, ...)`` (converted to the file's dtype)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.written + len(rows) > self.shape[0]:
            raise ValueError(f"rows {rows.shape} do not continue an array of shape {self.shape} "
                             f"after {self.written} rows")
        self._fh.write(rows.tobytes())
        self.written += len(rows)


@contextlib.contextmanager
def write_npy_rows(path: str | Path, shape: tuple[int, ...], dtype=np.float32) -> Iterator[NpyRowsWriter]:
    """``with write_npy_rows(path, shape, dtype) as w: w.write(chunk) ...``: an ``.npy`` file written
    chunk by chunk of rows (no whole array in memory), atomically: ``path`` appears only when every
    row was written; after an error, or when rows are missing, nothing is left."""
    shape = tuple(int(s) for s in shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer = NpyRowsWriter(fh, shape, dtype)
        yield writer
        if writer.written != shape[0]:
            raise ValueError(f"{path}: {writer.written} of {shape[0]} rows written")


def row_range(rows, start: int, stop: int):
    """Rows ``start .. stop`` of an array or :class:`NpyRows`, without reading them: a numpy
    view, or an :class:`NpyRows` of that range of the same file."""
    if isinstance(rows, NpyRows):
        return rows.view(start, stop)
    return rows[start:stop]
