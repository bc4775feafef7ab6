"""Writing per-particle results back into a star file RELION and cryoSPARC read.

See docs/conventions.md: every input column and the optics block are kept; the input's own
pose is kept as ``cryovaeInput*`` and cryovae's 2D pose goes into ``rlnAngleRot = rlnAngleTilt =
0``, ``rlnAnglePsi`` and ``rlnOriginXAngst``/``YAngst`` (RELION 3.1+ input) or
``rlnOriginX``/``Y`` in the input's pixels (RELION 3.0 input); latents into ``cryovaeZ1..n``.
``.cs`` and bare-stack input become a RELION 3.1 star. ``rlnImageName`` points at the original
stacks (1-based indices) by one rule, :func:`written_stack_paths`.
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


def path_for_star(target: Path, out_folder: str | Path, relion_cwd: Path | None = None,
                  absolute: bool = False) -> str:
    """The text that names file ``target`` in a star written into ``out_folder``.

    The path relative to ``out_folder`` (what cryoDRGN and cryovae try), unless ``relion_cwd``
    (the project folder RELION runs in) is given and that text does not lead to ``target`` from
    there too; then, and with ``absolute``, the absolute path.
    """
    if absolute:
        return os.path.abspath(target)
    rel = _relative_to(Path(target), Path(out_folder))
    if Path(rel).is_absolute() or (relion_cwd is not None and (relion_cwd / rel).resolve() != Path(target).resolve()):
        return os.path.abspath(target)
    return rel


def relion_project_folder(stack: ParticleStack) -> Path | None:
    """The folder RELION would open ``stack``'s file from: :attr:`ParticleStack.cwd` when a stack
    was found relative to it, else None."""
    return stack.cwd if "cwd" in stack.stack_found_via else None


def written_stack_paths(stack: ParticleStack, out_folder: str | Path, absolute: bool = False) -> list[str]:
    """The path to write for each of ``stack.stack_refs`` in a star in ``out_folder``.

    One rule (docs/conventions.md, "Paths in written stars"): the path relative to the new
    star's folder (what cryoDRGN and cryovae try), unless the input's path was found from the
    current (RELION project) folder and that relative text does not also lead there from that
    folder (what RELION tries) -- then the absolute path (:func:`path_for_star`). An absolute
    input path stays as written; a stack not found is kept as written; ``absolute=True`` writes
    every found stack's absolute path.

    Returns
    -------
    list of str, one per ``stack.stack_refs``.
    """
    paths = []
    for ref, found, how in zip(stack.stack_refs, stack.stack_paths, stack.stack_found_via, strict=True):
        if found is None:
            paths.append(ref)
        elif how == "absolute":
            paths.append(str(found) if absolute else ref)
        else:
            text = path_for_star(found, out_folder, stack.cwd if how == "cwd" else None, absolute)
            paths.append(ref if Path(text) == Path(ref) else text)
    return paths


def image_names_for(stack: ParticleStack, out_folder: Path, absolute: bool = False) -> list[str]:
    """``index@path`` (1-based) for every particle, paths by :func:`written_stack_paths`."""
    refs = written_stack_paths(stack, out_folder, absolute)
    return [f"{i + 1:06d}@{refs[f]}" for f, i in zip(stack.file_index, stack.image_index, strict=True)]


def _rewrite_image_names(stack: ParticleStack, particles: pd.DataFrame, out_folder: Path,
                         absolute: bool) -> pd.DataFrame:
    """A star's particle block with each ``rlnImageName``'s path part rewritten, index text kept."""
    refs = written_stack_paths(stack, out_folder, absolute)
    if refs == list(stack.stack_refs):
        return particles
    text = particles["rlnImageName"].astype(str).str.strip().to_numpy()
    names = []
    for name, f in zip(text, stack.file_index, strict=True):
        index, at, _ = name.partition("@")
        names.append(f"{index}@{refs[f]}" if at else refs[f])
    particles = particles.copy()
    particles["rlnImageName"] = names
    return particles


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


def relion31_blocks(stack: ParticleStack, out_folder: str | Path, absolute: bool = False) -> dict[str, pd.DataFrame]:
    """The particle file as RELION 3.1 ``{"optics": ..., "particles": ...}`` blocks for a star in
    ``out_folder``.

    RELION 3.1+ star: its own blocks (other blocks kept). RELION 3.0 star: optics groups built
    from the distinct (pixel size, voltage, Cs, amplitude contrast), pixel origins converted to
    Å, rlnDetectorPixelSize/rlnMagnification dropped. ``.cs`` or bare stack: the blocks built at
    read time. In every case ``rlnImageName`` points at the stacks from ``out_folder`` by
    :func:`written_stack_paths` (``absolute``: absolute paths).
    """
    out_folder = Path(out_folder)
    if stack.source_kind == "relion31":
        blocks = {name: df.copy() for name, df in stack.blocks.items()}
        blocks[stack.data_block] = _rewrite_image_names(stack, blocks[stack.data_block], out_folder, absolute)
        return blocks
    if stack.source_kind == "relion30":
        blocks = _convert_relion30(stack)
        blocks["particles"] = _rewrite_image_names(stack, blocks["particles"], out_folder, absolute)
        return blocks
    blocks = {name: df.copy() for name, df in stack.blocks.items()}
    if "rlnImagePixelSize" not in blocks["optics"].columns:
        if stack.pixel_sizes is None:
            raise CryovaeError(f"{stack.path}: pixel size unknown; pass --apix")
        blocks["optics"].insert(2, "rlnImagePixelSize", float(stack.pixel_sizes[0]))
    blocks["particles"]["rlnImageName"] = image_names_for(stack, out_folder, absolute)
    return blocks


def _written_floats(values) -> np.ndarray:
    """float64 values for a column cryovae writes: a float32 input becomes the float64 of its
    shortest decimal text (12.5, not 12.500000476837158), and -0.0 becomes 0.0."""
    arr = np.asarray(values)
    if arr.dtype == np.float32:
        arr = arr.astype(str).astype(np.float64)
    return np.asarray(arr, dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0


#: input pose column -> the column it is kept under in a star cryovae writes
INPUT_POSE_COLUMNS = {
    "rlnAngleRot": "cryovaeInputAngleRot",
    "rlnAngleTilt": "cryovaeInputAngleTilt",
    "rlnAnglePsi": "cryovaeInputAnglePsi",
    "rlnOriginXAngst": "cryovaeInputOriginXAngst",
    "rlnOriginYAngst": "cryovaeInputOriginYAngst",
    "rlnOriginX": "cryovaeInputOriginX",
    "rlnOriginY": "cryovaeInputOriginY",
}


def _keep_input_pose(particles: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Copy the input's pose columns to ``cryovaeInput*`` (see :data:`INPUT_POSE_COLUMNS`).

    A star cryovae wrote already holds them: its ``cryovaeInput*`` columns (the pose from
    before cryovae) are kept and its rlnAngle*/rlnOrigin* (cryovae's own) are not copied.
    """
    if any(c in particles.columns for c in INPUT_POSE_COLUMNS.values()):
        return particles
    kept = {src: dst for src, dst in INPUT_POSE_COLUMNS.items() if src in particles.columns}
    if not kept:
        return particles
    particles = particles.copy()
    for src, dst in kept.items():
        particles[dst] = particles[src]
    log.info("%s: kept the input's pose (%s) as %s; the star's pose is cryovae's 2D pose "
             "(rlnAngleRot = rlnAngleTilt = 0, psi and origin from cryovae)", path, ", ".join(kept),
             ", ".join(kept.values()))
    return particles


def _column(values, n: int, name: str, width: int | None = None) -> np.ndarray:
    arr = _written_floats(values)
    expected = (n,) if width is None else (n, width)
    if arr.shape != expected:
        raise CryovaeError(f"{name} has shape {arr.shape}, expected {expected}")
    return arr


def write_particles_star(stack: ParticleStack, out_path: str | Path, psi_deg, origin_A,
                         latents=None, extra: Mapping[str, np.ndarray] | None = None,
                         absolute_paths: bool = False) -> Path:
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
    extra : more per-particle columns, name -> (n,) values (use the ``cryovae`` prefix, or a
        RELION column such as ``rlnClassNumber``: the input's own values of it are kept as
        ``cryovaeInput<Name>``, e.g. ``cryovaeInputClassNumber``); integer values stay integers.
    absolute_paths : write absolute stack paths in ``rlnImageName`` (else the rule of
        :func:`written_stack_paths`).

    The input's own pose columns (rlnAngleRot/Tilt/Psi, rlnOriginX/YAngst or rlnOriginX/Y) are
    kept as ``cryovaeInput*`` (:data:`INPUT_POSE_COLUMNS`); the written pose is one 2D pose:
    rlnAngleRot = rlnAngleTilt = 0, rlnAnglePsi and the origin from ``psi_deg``/``origin_A``.

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
        particles = _rewrite_image_names(stack, blocks[stack.data_block], out_path.parent, absolute_paths)
        if stack.pixel_sizes is None:
            raise CryovaeError(f"{stack.path}: pixel size unknown, cannot write rlnOriginX/Y in pixels; pass --apix")
        origin_cols = {"rlnOriginX": origin[:, 0] / stack.pixel_sizes, "rlnOriginY": origin[:, 1] / stack.pixel_sizes}
        data_block = stack.data_block
    else:
        blocks = relion31_blocks(stack, out_path.parent, absolute_paths)
        data_block = stack.data_block if stack.source_kind == "relion31" else "particles"
        particles = blocks[data_block]
        origin_cols = {"rlnOriginXAngst": origin[:, 0], "rlnOriginYAngst": origin[:, 1]}
    particles = _keep_input_pose(particles.reset_index(drop=True), stack.path)
    for col in ("rlnAngleRot", "rlnAngleTilt"):
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
        if name.startswith("rln") and name in particles.columns and f"cryovaeInput{name[3:]}" not in particles.columns:
            particles[f"cryovaeInput{name[3:]}"] = particles[name]  # the input's own (e.g. a RELION class)
        if np.asarray(values).dtype.kind in "iu":  # integers (rlnClassNumber) stay integers
            particles[name] = _column(values, n, name).astype(np.int64)
        else:
            particles[name] = _column(values, n, name)
    blocks[data_block] = particles
    if stack.source_kind == "relion30":
        version = None
    else:
        version = stack.version_comment if stack.version_comment and stack.version_comment >= 30001 else 30001
    write_star(out_path, blocks, version=version)
    log.info("wrote %d particles to %s", n, out_path)
    return out_path
