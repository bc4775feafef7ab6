"""MRC image stacks opened as memory maps through ``mrcfile``.

Only the header is read when a stack is opened; pixels are read on demand, in batches, so a
stack larger than RAM can be used. Headers that only open in mrcfile's permissive mode are
accepted with a logged warning; truncated or unreadable files, and files whose size does not
match their header (``1024 + extended header + nx * ny * nz * bytes per voxel of the mode``),
raise :class:`~cryovae.errors.InputFileError` naming the file.
"""

from __future__ import annotations

import logging
import mmap
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from cryovae.errors import InputFileError

log = logging.getLogger(__name__)

#: IMOD's header stamp; with bit 0 of imodFlags set, mode 0 holds unsigned bytes.
IMOD_STAMP = 1146047817
_WARNED: set[Path] = set()
#: MRC mode -> (bytes per voxel, name); modes 3 and 101 have no numpy dtype and are not read.
MODE_BYTES = {0: (1, "int8"), 1: (2, "int16"), 2: (4, "float32"), 4: (8, "complex64"), 6: (2, "uint16"),
              12: (2, "float16")}
#: bytes per voxel -> the usual mode with that size, named when the data fits another mode.
_MODE_FOR_BYTES = {1: 0, 2: 1, 4: 2, 8: 4}


@dataclass(frozen=True)
class StackHeader:
    """What a stack's header says.

    n : number of images (nz).  ny, nx : image rows, columns (pixels).
    voxel_size : Å/pixel from the header (0.0 when unset).  mode : MRC mode.
    permissive : True when the header only opened in permissive mode.
    """

    n: int
    ny: int
    nx: int
    voxel_size: float
    mode: int
    permissive: bool


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _mode_text(mode: int) -> str:
    return f"mode {mode} ({MODE_BYTES[mode][1]})" if mode in MODE_BYTES else f"mode {mode}"


def check_data_size(path: Path, header, file_size: int) -> None:
    """Raise :class:`InputFileError` unless the file holds exactly the data its header describes.

    Parameters
    ----------
    path : named in the message.
    header : the mrcfile header record (``nx``, ``ny``, ``nz``, ``mode``, ``nsymbt``).
    file_size : the file's size in bytes.

    The data block must be ``nx * ny * nz * bytes-per-voxel(mode)`` bytes after the 1024-byte
    header and the ``nsymbt``-byte extended header. A shorter file is truncated; a longer one is
    refused too (it usually holds pixels of another mode than the header says, or more images):
    when the size matches another mode, or a whole number of images, the message says so.
    Unknown modes are left to mrcfile.
    """
    mode = int(header.mode)
    if mode not in MODE_BYTES:
        return
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    bpv = MODE_BYTES[mode][0]
    voxels = nx * ny * nz
    expected = voxels * bpv
    data = file_size - 1024 - max(int(header.nsymbt), 0)
    if data == expected or voxels <= 0:
        return
    says = f"header says {nz} x {ny} x {nx} {_mode_text(mode)}"
    if data > 0 and data % voxels == 0 and data // voxels in _MODE_FOR_BYTES:
        other = _MODE_FOR_BYTES[data // voxels]
        raise InputFileError(f"{path}: {says} but the file holds {data} bytes of data, as "
                             f"{_mode_text(other)} would (pixels written in another mode?)")
    image = nx * ny * bpv
    if data > 0 and data % image == 0:
        raise InputFileError(f"{path}: {says} ({expected} bytes of data) but the file holds {data} bytes, "
                             f"as {data // image} images would")
    if data < expected:
        raise InputFileError(f"{path}: the file is shorter than its header says (truncated?): {says}, "
                             f"{expected} bytes of data, but it holds {max(data, 0)}")
    raise InputFileError(f"{path}: {says} ({expected} bytes of data) but the file holds {data} bytes "
                         f"({data - expected} more than the header describes)")


def open_mrc(path: str | Path):
    """Open ``path`` as a read-only ``mrcfile`` memory map.

    Tries the strict reader first; if the header is malformed, retries in permissive mode and
    logs a warning naming the file.

    Returns
    -------
    (mrcfile.mrcmemmap.MrcMemmap, bool)
        The open file (close it when done) and whether permissive mode was needed.

    Raises
    ------
    InputFileError
        Missing, empty, truncated or unreadable file, or a size that does not match the header
        (see :func:`check_data_size`), in one line naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MRC file is .* than expected")  # checked below
            mrc = mrcfile.mmap(path, mode="r")
    except (ValueError, OSError) as strict_exc:
        reason = _first_line(strict_exc)
    else:
        _checked(mrc, path, size)
        return mrc, False
    if size < 1024:
        raise InputFileError(f"{path}: not an MRC file or corrupt header ({reason})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except (ValueError, OSError) as exc:
            raise InputFileError(f"{path}: unreadable MRC file ({_first_line(exc)})") from None
    msgs = [str(w.message) for w in caught if "than expected" not in str(w.message)]
    _checked(mrc, path, size)
    if mrc.data is None:
        mrc.close()
        detail = "; ".join(m for m in msgs if m) or reason
        if "memmap" in detail.lower():
            detail = "the file is shorter than its header says (truncated?)"
        raise InputFileError(f"{path}: corrupt or truncated MRC file ({detail})")
    if path not in _WARNED:
        _WARNED.add(path)
        log.warning("%s: malformed MRC header, read in permissive mode (%s)", path, "; ".join(msgs) or reason)
    return mrc, True


def _checked(mrc, path: Path, size: int):
    """``mrc`` after :func:`check_data_size`; closed when the check fails."""
    try:
        check_data_size(path, mrc.header, size)
    except InputFileError:
        mrc.close()
        raise
    return mrc


def _as_image_array(mrc, path: Path) -> np.ndarray:
    data = mrc.data
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputFileError(f"{path}: expected a 2D image or a stack, got a {data.ndim}D array")
    if int(mrc.header.mode) == 0 and _imod_unsigned(mrc.header):
        data = data.view(np.uint8)
    return data


def _imod_unsigned(header) -> bool:
    """IMOD marks mode-0 data as unsigned bytes: imodStamp (bytes 152-155) and bit 0 of imodFlags."""
    raw = np.asarray(header.extra2).tobytes()
    stamp, flags = np.frombuffer(raw[40:48], dtype=header.nx.dtype)
    return int(stamp) == IMOD_STAMP and bool(int(flags) & 1)


def imod_unsigned_header_bytes(byteorder: str = "<") -> bytes:
    """The 8 bytes (stamp, flags) to put at header offset 152 to mark mode 0 as unsigned."""
    return np.array([IMOD_STAMP, 1], dtype=f"{byteorder}i4").tobytes()


def read_header(path: str | Path) -> StackHeader:
    """Open ``path``, read its header and close it (see :func:`open_mrc` for errors)."""
    path = Path(path)
    mrc, permissive = open_mrc(path)
    try:
        data = _as_image_array(mrc, path)
        vs = float(mrc.voxel_size.x)
        return StackHeader(n=int(data.shape[0]), ny=int(data.shape[1]), nx=int(data.shape[2]),
                           voxel_size=vs if np.isfinite(vs) else 0.0, mode=int(mrc.header.mode),
                           permissive=permissive)
    finally:
        mrc.close()


def release_pages(arr: np.ndarray) -> None:
    """Drop the pages of a read-only memory map from this process's resident memory.

    The pixels were copied out already; the kernel keeps them in its page cache, so a later read
    is still served from memory, but streaming through a stack larger than RAM no longer makes the
    process's RSS grow with the stack. A no-op for arrays that are not memory-mapped.
    """
    base: object = arr
    while base is not None and getattr(base, "_mmap", None) is None:
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a closed map, or a kernel without madvise
            pass


class MrcCache:
    """A small least-recently-used set of open memory-mapped stacks.

    Parameters
    ----------
    max_open : how many files stay open at once (RELION projects may reference thousands).
    """

    def __init__(self, max_open: int = 32):
        self.max_open = max_open
        self._open: OrderedDict[Path, tuple[object, np.ndarray]] = OrderedDict()
        self._lock = threading.RLock()  # dask/napari read chunks from several threads

    def __reduce__(self):
        """Pickle as an empty cache: open files and locks stay in their process."""
        return (MrcCache, (self.max_open,))

    def array(self, path: Path) -> np.ndarray:
        """The ``(n, ny, nx)`` memory-mapped array of ``path`` (native dtype)."""
        with self._lock:
            return self._array(path)

    def _array(self, path: Path) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path][1]
        mrc, _ = open_mrc(path)
        arr = _as_image_array(mrc, path)
        self._open[path] = (mrc, arr)
        while len(self._open) > self.max_open:
            _, (old, _) = self._open.popitem(last=False)
            old.close()  # type: ignore[attr-defined]
        return arr

    def read(self, path: Path, index: np.ndarray) -> np.ndarray:
        """Images ``index`` (0-based int array) of ``path`` as float32 ``(len(index), ny, nx)``.

        Reads in ascending index order (sequential on disk) and returns them in the order given.
        """
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        with self._lock:  # no other thread may close this file while it is read
            arr = self._array(path)
            try:
                block = np.asarray(arr[index[order]], dtype=np.float32)  # a copy (fancy index)
            except (OSError, ValueError) as exc:
                raise InputFileError(f"{path}: cannot read images ({_first_line(exc)})") from None
            release_pages(arr)
        out = np.empty_like(block)
        out[order] = block
        return out

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            while self._open:
                _, (mrc, _) = self._open.popitem()
                mrc.close()  # type: ignore[attr-defined]
