"""Writing per-particle results back into a star file RELION and cryoSPARC read.

See ../shared/CONVENTIONS.md: every input column and the optics block are kept; the pose goes
into ``rlnAnglePsi`` and ``rlnOriginXAngst``/``YAngst`` (RELION 3.1+ input) or
``rlnOriginX``/``Y`` in the input's pixels (RELION 3.0 input); latents into
``cryovaeZ1..n``. ``.cs`` and bare-stack input become a RELION 3.1 star whose ``rlnImageName``
points at the original stacks (1-based indices).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError
from cryovae.io.atomic import refuse_overwrite_input
from cryovae.io.particles import ParticleStack
from cryovae.io.writers import write_star

log = logging.getLogger(__name__)

#: RELION 3.0 per-particle columns that belong to the optics block in 3.1.
OPTICS_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
#: 3.0 columns that only carried the pixel size; they are dropped on conversion to 3.1.
PIXEL_SIZE_COLUMNS = ("rlnDetectorPixelSize", "rlnMagnification")


def _relative_to(target: Path, folder: Path) -> str:
    try:
        return os.path.relpath(target.resolve(), folder.resolve())
    except ValueError:  # another drive on Windows
        return str(target.resolve())


def image_names_for(stack: ParticleStack, out_folder: Path) -> list[str]:
    """``index@path`` (1-based) for every particle, paths relative to ``out_folder`` where found."""
    refs = []
    for ref, found in zip(stack.stack_refs, stack.stack_paths, strict=True):
        refs.append(_relative_to(found, out_folder) if found is not None else ref)
    return [f"{i + 1:06d}@{refs[f]}" for f, i in zip(stack.file_index, stack.image_index, strict=True)]


def _convert_relion30(stack: ParticleStack) -> dict[str, pd.DataFrame]:
    """A RELION 3.0 particle block as RELION 3.1 ``optics`` + ``particles`` blocks."""
    particles = stack.blocks[stack.data_block].copy()
    if stack.pixel_sizes is None:
        raise CryovaeError(f"{stack.path}: pixel size unknown; pass --apix")
    keys = pd.DataFrame({"rlnImagePixelSize": stack.pixel_sizes})
    for col in OPTICS_COLUMNS:
        if col in particles.columns:
            keys[col] = np.asarray(particles[col], dtype=np.float64)
    codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    optics = keys.drop_duplicates().reset_index(drop=True)
    optics.insert(0, "rlnOpticsGroup", np.arange(1, len(optics) + 1))
    optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    if stack.box_known is not None:
        optics["rlnImageSize"] = stack.box_known
    optics["rlnImageDimensionality"] = 2
    apix = stack.pixel_sizes
    for axis in ("X", "Y"):
        if f"rlnOrigin{axis}" in particles.columns:
            particles[f"rlnOrigin{axis}Angst"] = np.asarray(particles[f"rlnOrigin{axis}"], np.float64) * apix
            particles = particles.drop(columns=f"rlnOrigin{axis}")
    particles = particles.drop(columns=[c for c in PIXEL_SIZE_COLUMNS if c in particles.columns])
    particles["rlnOpticsGroup"] = codes + 1
    return {"optics": optics, "particles": particles}


def relion31_blocks(stack: ParticleStack, out_folder: str | Path) -> dict[str, pd.DataFrame]:
    """The particle file as RELION 3.1 ``{"optics": ..., "particles": ...}`` blocks.

    RELION 3.1+ star: its own blocks, unchanged (other blocks kept). RELION 3.0 star: optics
    groups built from the distinct (pixel size, voltage, Cs, amplitude contrast), pixel origins
    converted to Å, rlnDetectorPixelSize/rlnMagnification dropped. ``.cs`` or bare stack: the
    blocks built at read time, ``rlnImageName`` pointing at the stacks relative to
    ``out_folder``.
    """
    if stack.source_kind == "relion31":
        return {name: df.copy() for name, df in stack.blocks.items()}
    if stack.source_kind == "relion30":
        return _convert_relion30(stack)
    blocks = {name: df.copy() for name, df in stack.blocks.items()}
    if "rlnImagePixelSize" not in blocks["optics"].columns:
        if stack.pixel_sizes is None:
            raise CryovaeError(f"{stack.path}: pixel size unknown; pass --apix")
        blocks["optics"].insert(2, "rlnImagePixelSize", float(stack.pixel_sizes[0]))
    blocks["particles"]["rlnImageName"] = image_names_for(stack, Path(out_folder))
    return blocks


def _written_floats(values) -> np.ndarray:
    """float64 values for a column cryovae writes: a float32 input becomes the float64 of its
    shortest decimal text (12.5, not 12.500000476837158), and -0.0 becomes 0.0."""
    arr = np.asarray(values)
    if arr.dtype == np.float32:
        arr = arr.astype(str).astype(np.float64)
    return np.asarray(arr, dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0


def _column(values, n: int, name: str, width: int | None = None) -> np.ndarray:
    arr = _written_floats(values)
    expected = (n,) if width is None else (n, width)
    if arr.shape != expected:
        raise CryovaeError(f"{name} has shape {arr.shape}, expected {expected}")
    return arr


def write_particles_star(stack: ParticleStack, out_path: str | Path, psi_deg, origin_A,
                         latents=None, extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write the input particle file plus per-particle results, atomically.

    Parameters
    ----------
    stack : the particles the results belong to (same order, same count).
    out_path : the output ``.star``; refused when it is the input file.
    psi_deg : (n,) in-plane angle ``rlnAnglePsi`` in degrees (RELION convention).
    origin_A : (n, 2) origin (x, y) in Å (RELION convention); written as
        ``rlnOriginXAngst``/``YAngst``, or for RELION 3.0 input as ``rlnOriginX``/``Y`` in pixels
        of the input's pixel size.
    latents : (n, k) content latents (posterior means) -> ``cryovaeZ1 .. cryovaeZk``.
    extra : more per-particle columns, name -> (n,) values (use the ``cryovae`` prefix).

    Returns
    -------
    Path
        ``out_path``.
    """
    out_path = Path(out_path)
    refuse_overwrite_input(out_path, [stack.path, *[p for p in stack.stack_paths if p is not None]])
    n = len(stack)
    psi = _column(psi_deg, n, "psi_deg")
    origin = _column(origin_A, n, "origin_A", 2)
    if stack.source_kind == "relion30":
        blocks = {name: df.copy() for name, df in stack.blocks.items()}
        particles = blocks[stack.data_block]
        if stack.pixel_sizes is None:
            raise CryovaeError(f"{stack.path}: pixel size unknown, cannot write rlnOriginX/Y in pixels; pass --apix")
        origin_cols = {"rlnOriginX": origin[:, 0] / stack.pixel_sizes, "rlnOriginY": origin[:, 1] / stack.pixel_sizes}
        data_block = stack.data_block
    else:
        blocks = relion31_blocks(stack, out_path.parent)
        data_block = stack.data_block if stack.source_kind == "relion31" else "particles"
        particles = blocks[data_block]
        origin_cols = {"rlnOriginXAngst": origin[:, 0], "rlnOriginYAngst": origin[:, 1]}
    particles = particles.reset_index(drop=True)
    for col in ("rlnAngleRot", "rlnAngleTilt"):
        if col not in particles.columns:
            particles[col] = 0.0
    particles["rlnAnglePsi"] = psi
    for col, values in origin_cols.items():
        particles[col] = values
    if latents is not None:
        z = _written_floats(latents)
        if z.ndim != 2 or z.shape[0] != n:
            raise CryovaeError(f"latents have shape {z.shape}, expected ({n}, k)")
        for j in range(z.shape[1]):
            particles[f"cryovaeZ{j + 1}"] = z[:, j]
    for name, values in (extra or {}).items():
        particles[name] = _column(values, n, name)
    blocks[data_block] = particles
    if stack.source_kind == "relion30":
        version = None
    else:
        version = stack.version_comment if stack.version_comment and stack.version_comment >= 30001 else 30001
    write_star(out_path, blocks, version=version)
    log.info("wrote %d particles to %s", n, out_path)
    return out_path
