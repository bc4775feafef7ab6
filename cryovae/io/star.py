"""Reading RELION star files into data blocks, with one-line errors naming the file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import starfile

from cryovae.errors import InputFileError

OPTICS = "optics"
_VERSION = re.compile(r"#\s*(?:RELION;\s*)?version\s+(\d+)")


@dataclass
class StarParticles:
    """The particle part of a star file.

    blocks : every data block, in file order (block name -> DataFrame), as read.
    data_block : name of the block holding ``rlnImageName``.
    optics_block : ``"optics"`` when the file has a ``data_optics`` block (RELION 3.1+), else None.
    version : ``"3.1"`` with an optics block, else ``"3.0"``.
    version_comment : the number after ``# version`` (30001, 50001) if the file has one.
    """

    blocks: dict[str, pd.DataFrame]
    data_block: str
    optics_block: str | None
    version: str
    version_comment: int | None

    @property
    def particles(self) -> pd.DataFrame:
        return self.blocks[self.data_block]

    @property
    def optics(self) -> pd.DataFrame | None:
        return self.blocks[self.optics_block] if self.optics_block else None


def _version_comment(path: Path) -> int | None:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _, line in zip(range(50), fh, strict=False):
            m = _VERSION.search(line)
            if m:
                return int(m.group(1))
    return None


def read_star_blocks(path: str | Path) -> dict[str, pd.DataFrame | dict]:
    """All data blocks of a star file (``starfile.read(..., always_dict=True)``).

    Raises
    ------
    InputFileError
        Missing, unreadable or empty file (no data block), or a loop that names a column twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, IndexError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: not a readable star file ({first})") from None
    if not blocks:
        raise InputFileError(f"{path}: empty star file (no data_ block with a loop)")
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame) and block.columns.duplicated().any():
            dup = str(block.columns[block.columns.duplicated()][0])
            count = int((block.columns == dup).sum())
            times = "twice" if count == 2 else f"{count} times"
            raise InputFileError(f"{path}: data_{name} lists the column _{dup} {times}; "
                                 "a loop may name each column once")
    return dict(blocks)


def read_star_particles(path: str | Path) -> StarParticles:
    """Find the particle block (the one with ``rlnImageName``) and the optics block.

    Raises
    ------
    InputFileError
        Empty file, empty loop, no ``rlnImageName`` column, or an unreadable file.
    """
    path = Path(path)
    raw = read_star_blocks(path)
    blocks = {name: df for name, df in raw.items() if isinstance(df, pd.DataFrame)}
    # key/value blocks (one row) come back as dicts; keep them as one-row frames
    for name, value in raw.items():
        if isinstance(value, dict):
            blocks[name] = pd.DataFrame([value])
    blocks = {name: blocks[name] for name in raw}
    candidates = [name for name, df in blocks.items() if name != OPTICS and "rlnImageName" in df.columns]
    if not candidates:
        if all(len(df) == 0 for df in blocks.values()):
            raise InputFileError(f"{path}: empty loop (no particles)")
        raise InputFileError(f"{path}: no _rlnImageName column, so no particle images to read")
    data_block = "particles" if "particles" in candidates else candidates[0]
    if len(blocks[data_block]) == 0:
        raise InputFileError(f"{path}: empty loop in data_{data_block} (no particles)")
    optics_block = OPTICS if OPTICS in blocks else None
    if optics_block is not None and len(blocks[optics_block]) == 0:
        raise InputFileError(f"{path}: empty data_optics block")
    return StarParticles(blocks=blocks, data_block=data_block, optics_block=optics_block,
                         version="3.1" if optics_block else "3.0", version_comment=_version_comment(path))
