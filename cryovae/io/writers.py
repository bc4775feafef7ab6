"""Atomic writers of image stacks (.mrcs) and star files."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryovae.errors import CryovaeError, OutputFileError
from cryovae.io.atomic import atomic_path
from cryovae.io.mrc import release_pages

log = logging.getLogger(__name__)


def _float_repr(value: float) -> str:
    """Shortest text that reads back as the same float64 (so star round trips are exact)."""
    return repr(float(value))


def _star_ready(df: pd.DataFrame) -> pd.DataFrame:
    """float32 columns become the float64 of their shortest decimal text (0.1, not 0.10000000149)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == np.float32:
            out[col] = np.asarray(out[col], dtype=np.float32).astype(str).astype(np.float64)
    return out


def _add_version_lines(src: Path, dst: Path, version: int) -> None:
    """Copy ``src`` to ``dst`` with ``# version N`` before every ``data_`` line (as RELION writes)."""
    previous = ""
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            header = line.startswith("data_") and len(line.split()) == 1 and not previous.strip()
            if header:
                fout.write(f"# version {version}\n\n")
            fout.write(line)
            previous = line


def write_star(path: str | Path, blocks: Mapping[str, pd.DataFrame], version: int | str | None = "auto") -> Path:
    """Write data blocks to a STAR file, atomically, through ``starfile``.

    Parameters
    ----------
    path : output ``.star`` file (its folder must exist).
    blocks : block name (without ``data_``) -> DataFrame, in file order, e.g.
        ``{"optics": optics_df, "particles": particles_df}``. Column names are written without
        the leading underscore (``rlnImageName``).
    version : ``# version N`` line written before every block, as RELION 3.1+ does (30001 for
        RELION 3.1/4, 50001 for 5); ``"auto"`` writes 30001 when there is an ``optics`` block
        and nothing otherwise; None writes none.

    Floats are written with the shortest text that reads back identically.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    data = {name: _star_ready(df) for name, df in blocks.items()}
    if version == "auto":
        version = 30001 if "optics" in data else None
    with atomic_path(path) as tmp:
        if version is None:
            starfile.write(data, tmp, float_format=_float_repr)
        else:
            plain = tmp.with_name(tmp.name + ".plain")
            try:
                starfile.write(data, plain, float_format=_float_repr)
                _add_version_lines(plain, tmp, int(version))
            finally:
                plain.unlink(missing_ok=True)
    return path


def _check_images(images: np.ndarray, path: Path) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise CryovaeError(f"{path}: a stack needs (n, N, N) images, got shape {arr.shape}")
    return arr


def write_stack(path: str | Path, images: np.ndarray, pixel_size: float) -> Path:
    """Write images as an MRC stack (mode 2, float32), atomically.

    Parameters
    ----------
    path : output ``.mrcs`` (or ``.mrc``) file.
    images : ``(n, N, N)`` (or one ``(N, N)``) array, any real dtype; stored as float32.
    pixel_size : Å/pixel, stored as the header's voxel size.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    arr = _check_images(images, path)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr, dtype=np.float32))
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
    return path


class StackStats:
    """Running min, max, mean and rms of the pixels written, for the MRC header."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        b = np.asarray(block, dtype=np.float64)
        self.n += b.size
        self.total += float(b.sum())
        self.total_sq += float(np.square(b).sum())
        self.lo = min(self.lo, float(b.min()))
        self.hi = max(self.hi, float(b.max()))

    def write_header(self, header) -> None:
        if self.n == 0:
            return
        mean = self.total / self.n
        header.dmin, header.dmax, header.dmean = self.lo, self.hi, mean
        header.rms = float(np.sqrt(max(self.total_sq / self.n - mean * mean, 0.0)))


class StackWriter:
    """An ``(n, box, box)`` float32 MRC stack being filled chunk by chunk (see
    :func:`open_stack_for_writing`)."""

    def __init__(self, data: np.ndarray):
        self._data = data
        self.stats = StackStats()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    def __setitem__(self, key, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        self._data[key] = block
        self.stats.update(block)
        release_pages(self._data)  # written through to the file; RSS stays that of one chunk


#: bytes of an MRC header without extended header
MRC_HEADER_BYTES = 1024


def check_free_space(path: str | Path, nbytes: int) -> None:
    """:class:`OutputFileError` (``cannot write PATH: No space left on device ...``) when the
    folder of ``path`` has less than ``nbytes`` free; silent when the free space is unknown."""
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if free < nbytes:
        raise OutputFileError(path, f"{os.strerror(errno.ENOSPC)} (needs {nbytes / 2**20:.1f} MiB, "
                                    f"{free / 2**20:.1f} MiB free in {path.parent})")


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now (``posix_fallocate``), so a full disk is an
    OSError(ENOSPC) here and not a SIGBUS later from a store into the memory map."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the filesystem cannot preallocate; the free-space check stands alone
        exc.filename = str(path)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_stack_for_writing(path: str | Path, n: int, box: int, pixel_size: float) -> Iterator[StackWriter]:
    """Create an ``(n, box, box)`` float32 MRC stack on disk and yield a writer for it.

    Assign chunks to the writer (``writer[i:j] = images``): they go straight into a memory
    map, so a big stack never sits in RAM; header statistics are accumulated on the way. On a
    clean exit the file is moved onto ``path`` atomically; if the block raises, nothing is
    left behind. Each particle should be written exactly once.

    The free space is checked first and the file's blocks are reserved before any pixel is
    mapped, so a full disk is one line (:class:`cryovae.errors.OutputFileError`) and never a
    bus error from the memory map.
    """
    path = Path(path)
    check_free_space(path, MRC_HEADER_BYTES + 4 * int(n) * int(box) * int(box))
    with atomic_path(path) as tmp:
        with mrcfile.new_mmap(tmp, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            _reserve(tmp)
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            writer = StackWriter(mrc.data)
            yield writer
            writer.stats.write_header(mrc.header)
