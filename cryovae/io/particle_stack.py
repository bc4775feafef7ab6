"""The :class:`ParticleStack`: particle images read lazily plus one table row per particle."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io.bad_particles import BadParticles, bad_masks
from cryovae.io.mrc import MrcCache


class ParticleStack:
    """Particle images plus one table row per particle.

    Attributes
    ----------
    path : the particle file read.
    source_kind : ``"relion30"``, ``"relion31"``, ``"cryosparc"`` or ``"mrcs"``.
    table : DataFrame, one row per particle in file order; for RELION 3.1+ the optics columns
        are merged in; for ``.cs`` the RELION-named CTF/optics columns then every scalar field.
    blocks : the RELION data blocks (name -> DataFrame) as read (star) or built (``.cs``, stack).
    data_block, optics_block : names of the particle and optics blocks in ``blocks``.
    relion_version : ``"3.0"`` or ``"3.1"`` for star input, else None.
    stack_refs : the image files as written in the particle file, one per distinct file.
    stack_paths : where each was found (None when missing).
    stack_found_via : how each was found, one of ``cryovae.io.particles.FOUND_VIA``
        (``"cwd"``: relative to :attr:`cwd`, RELION's project convention; ``"file"``: relative
        to the particle file's folder; ``"project"``: relative to a ``.cs`` file's folder's
        parent; ``"datadir"``/``"datadir-basename"``; ``"absolute"``), None when missing.
    cwd : the (absolute) project folder relative paths were tried from first.
    file_index : (n,) int, which of ``stack_refs`` each particle lives in.
    image_index : (n,) int, 0-based image number inside that file.
    pixel_sizes : (n,) float Å/pixel of each particle, or None when unknown.
    box_known : image size in pixels, or None when no stack was found and the table has no size.
    cs_array : ``.cs`` input only: the (n,) structured array as read (all fields, input order and
        dtypes), passed through by :func:`cryovae.io.write_particles_cs`; None otherwise.
    rows : (n,) int, 0-based row of each particle in the file's particle table (``arange(n)``
        unless the stack is a :meth:`subset`); messages name particles by these rows, 1-based.
    skipped : the particles ``read_particles(..., skip_bad=True)`` left out, or None.
    """

    def __init__(self, path: Path, source_kind: str, table: pd.DataFrame, blocks: dict[str, pd.DataFrame],
                 data_block: str, optics_block: str | None, relion_version: str | None,
                 stack_refs: list[str], stack_paths: list[Path | None], file_index: np.ndarray,
                 image_index: np.ndarray, pixel_sizes: np.ndarray | None, box_known: int | None,
                 version_comment: int | None = None, stack_found_via: list[str | None] | None = None,
                 cwd: Path | None = None, cs_array: np.ndarray | None = None):
        self.path = path
        self.source_kind = source_kind
        self.table = table
        self.blocks = blocks
        self.data_block = data_block
        self.optics_block = optics_block
        self.relion_version = relion_version
        self.version_comment = version_comment
        self.cs_array = cs_array
        self.stack_refs = stack_refs
        self.stack_paths = stack_paths
        self.stack_found_via = (list(stack_found_via) if stack_found_via is not None
                                else ["file" if p is not None else None for p in stack_paths])
        self.cwd = (Path.cwd() if cwd is None else Path(cwd)).absolute()
        self.file_index = file_index
        self.image_index = image_index
        self.pixel_sizes = pixel_sizes
        self.box_known = box_known
        self.rows = np.arange(len(table), dtype=np.int64)
        self.skipped: BadParticles | None = None
        self._cache = MrcCache()
        self._preloaded: np.ndarray | None = None

    # ----------------------------------------------------------------- summary
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (f"ParticleStack({str(self.path)!r}, kind={self.source_kind}, n={len(self)}, "
                f"box={self.box_known}, stacks={len(self.stack_refs)})")

    @property
    def box(self) -> int:
        """Square image size in pixels."""
        if self.box_known is None:
            raise InputFileError(f"{self.path}: image size unknown (no stack found; pass --datadir)")
        return self.box_known

    @property
    def pixel_size(self) -> float:
        """Å/pixel of the images (one value for the whole file)."""
        if self.pixel_sizes is None:
            raise CryovaeError(f"{self.path}: pixel size unknown (no rlnImagePixelSize, "
                               "rlnDetectorPixelSize/rlnMagnification or header value); pass --apix")
        values = np.unique(np.round(self.pixel_sizes, 6))
        if len(values) > 1:
            raise CryovaeError(f"{self.path}: particles have different pixel sizes "
                               f"({', '.join(f'{v:g}' for v in values[:5])} Å); split the file by optics group")
        return float(self.pixel_sizes[0])

    @property
    def n_optics_groups(self) -> int:
        if "rlnOpticsGroup" in self.table.columns:
            return int(self.table["rlnOpticsGroup"].nunique())
        return 1

    @property
    def stacks_missing(self) -> list[str]:
        """Image files referenced but not found, as written."""
        return [ref for ref, p in zip(self.stack_refs, self.stack_paths, strict=True) if p is None]

    def check_stacks(self) -> None:
        """Raise :class:`InputFileError` if any referenced image file is missing."""
        missing = self.stacks_missing
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise InputFileError(f"{self.path}: stack {missing[0]}{more} not found "
                                 "(looked in the current folder, beside the file and under --datadir)")

    # ----------------------------------------------------------------- images
    def images(self, idx, check: bool = True) -> np.ndarray:
        """Images of particles ``idx`` as float32.

        Parameters
        ----------
        idx : int, slice, integer array or boolean mask over particles (0-based, file order).
        check : refuse NaN/infinite pixels (False: return them as read).

        Returns
        -------
        np.ndarray
            ``(len(idx), box, box)`` float32 (``(box, box)`` for an int), in the order asked.

        Raises
        ------
        InputFileError
            A needed stack is missing or unreadable, or an image has NaN/infinite pixels (the
            message counts every bad particle of the file and points to ``--skip-bad``).
        """
        sel = np.arange(len(self))[idx]
        if np.ndim(sel) == 0:
            return self.images(np.array([int(sel)]), check)[0]
        out = self._read(np.asarray(sel, dtype=np.int64))
        if check and not np.isfinite(out).all():
            raise self._bad_pixels_error()
        return out

    def _read(self, sel: np.ndarray) -> np.ndarray:
        """Images ``sel`` (0-based int array) as float32, unchecked."""
        if self._preloaded is not None:
            return self._preloaded[sel]
        out = np.empty((len(sel), self.box, self.box), dtype=np.float32)
        files = self.file_index[sel]
        for f in np.unique(files):
            where = np.flatnonzero(files == f)
            stack_path = self.stack_paths[f]
            if stack_path is None:
                raise InputFileError(f"{self.path}: stack {self.stack_refs[f]} not found "
                                     "(looked in the current folder, beside the file and under --datadir)")
            out[where] = self._cache.read(stack_path, self.image_index[sel[where]])
        return out

    def _image_name(self, k: int) -> str:
        return f"{int(self.image_index[k]) + 1}@{self.stack_refs[int(self.file_index[k])]}"

    def find_bad(self, batch_size: int = 1024) -> BadParticles:
        """Read every image once and find the bad ones: NaN/infinite pixels or one value only.

        Returns
        -------
        BadParticles
            Rows (of the particle file), image names and reasons; empty when all are good.
        """
        nonfinite = np.zeros(len(self), dtype=bool)
        constant = np.zeros(len(self), dtype=bool)
        values = np.full(len(self), np.nan)
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            block = self._read(idx)
            nonfinite[idx], constant[idx] = bad_masks(block)
            values[idx[constant[idx]]] = block[constant[idx], 0, 0]
        bad = np.flatnonzero(nonfinite | constant)
        return BadParticles(source=self.path, n_total=len(self), rows=self.rows[bad],
                            image_names=[self._image_name(int(k)) for k in bad], nonfinite=nonfinite[bad],
                            values=values[bad])

    def _bad_pixels_error(self) -> InputFileError:
        """The error for NaN/infinite pixels: how many particles are bad, the first, --skip-bad."""
        bad = self.find_bad()
        first = int(np.flatnonzero(bad.nonfinite)[0])
        return InputFileError(
            f"{self.path}: particle {int(bad.rows[first]) + 1} ({bad.image_names[first]}) has NaN or infinite "
            f"pixels; {bad.summary()}; pass --skip-bad to leave them out (and list them)")

    def subset(self, keep) -> ParticleStack:
        """The particles ``keep`` (0-based int array, in the order given) as a new stack.

        The table, the particle block of ``blocks``, the per-particle arrays and ``rows`` are
        indexed (so messages and lists still name rows of the original file); the optics block
        and the stack lists are shared. Any other array or table attribute with one row per
        particle is indexed too.
        """
        keep = np.asarray(keep, dtype=np.int64)
        n = len(self)
        new = copy.copy(self)
        for name, value in vars(self).items():
            if name.startswith("_") or name == "table":
                continue
            if isinstance(value, np.ndarray) and value.ndim and len(value) == n:
                setattr(new, name, value[keep])
            elif isinstance(value, pd.DataFrame) and len(value) == n:
                setattr(new, name, value.iloc[keep].reset_index(drop=True))
        new.table = self.table.iloc[keep].reset_index(drop=True)
        new.blocks = dict(self.blocks)
        new.blocks[self.data_block] = self.blocks[self.data_block].iloc[keep].reset_index(drop=True)
        new._cache = MrcCache()
        new._preloaded = None if self._preloaded is None else self._preloaded[keep]
        return new

    def chunks(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over ``(idx, images)`` in file order, ``batch_size`` particles at a time.

        ``idx`` is the (b,) int array of particle numbers, ``images`` (b, box, box) float32.
        """
        if batch_size < 1:
            raise CryovaeError(f"batch size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            yield idx, self.images(idx)

    def preload(self) -> None:
        """Read every image into RAM now (later reads come from memory)."""
        if self._preloaded is None:
            out = np.empty((len(self), self.box, self.box), dtype=np.float32)
            for idx, images in self.chunks(4096):
                out[idx] = images
            self._preloaded = out
            self.close()

    def close(self) -> None:
        """Close the memory-mapped stacks (they reopen on the next read)."""
        self._cache.close()

    def __enter__(self) -> ParticleStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
