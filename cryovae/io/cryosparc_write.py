"""Writing per-particle results as cryoSPARC results: a ``.cs`` particle table plus a ``.csg``.

The ``.cs`` is a numpy structured array written with cryosparc-tools
(:class:`cryosparc.dataset.Dataset`), the layout cryoSPARC itself writes; the ``.csg`` is the
YAML result group cryoSPARC's "Import Result Group" job reads. See docs/conventions.md
(``## cryoSPARC output``) for the pose convention and how it was checked:

* ``alignments2D/pose = radians(rlnAnglePsi)`` wrapped to [0, 2π) (radians),
* ``alignments2D/shift = (rlnOriginX, rlnOriginY)`` in pixels of the images (same sign),
* ``alignments2D/psize_A`` = the pixel size those shifts are in.

A ``.cs`` input is passed through: every field in the input's order and dtype (``uid``,
``alignments3D/*``, ``location/*``, ...); cryovae overwrites only ``alignments2D/pose``,
``alignments2D/shift``, ``alignments2D/psize_A``, ``blob/path`` of the stacks it found, and
its own ``cryovae/*`` fields. A star or stack input gets fresh uids and ``blob/*``, ``ctf/*``
built from the star in cryoSPARC's units.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from cryovae.errors import CryovaeError
from cryovae.io.atomic import atomic_path, refuse_overwrite_input
from cryovae.io.particle_stack import ParticleStack

log = logging.getLogger(__name__)

#: Suffixes of what :func:`write_particles_cs` writes.
CS_SUFFIX = ".cs"
CSG_SUFFIX = ".csg"

#: ``alignments2D`` fields cryoSPARC's 2D classification writes (names, dtypes and order as in
#: the cryoSPARC file tests/data/cryosparc_J2_particles_exported.cs), with the value cryovae
#: gives each when the input has none: one class, posterior 1, scale 1, no error statistics.
ALIGNMENTS2D_FIELDS: tuple[tuple[str, str, tuple[int, ...], float], ...] = (
    ("alignments2D/split", "<u4", (), 0),
    ("alignments2D/shift", "<f4", (2,), 0.0),
    ("alignments2D/pose", "<f4", (), 0.0),
    ("alignments2D/psize_A", "<f4", (), 0.0),
    ("alignments2D/error", "<f4", (), 0.0),
    ("alignments2D/error_min", "<f4", (), 0.0),
    ("alignments2D/resid_pow", "<f4", (), 0.0),
    ("alignments2D/slice_pow", "<f4", (), 0.0),
    ("alignments2D/image_pow", "<f4", (), 0.0),
    ("alignments2D/cross_cor", "<f4", (), 0.0),
    ("alignments2D/alpha", "<f4", (), 1.0),
    ("alignments2D/alpha_min", "<f4", (), 1.0),
    ("alignments2D/weight", "<f4", (), 0.0),
    ("alignments2D/pose_ess", "<f4", (), 0.0),
    ("alignments2D/shift_ess", "<f4", (), 0.0),
    ("alignments2D/class_posterior", "<f4", (), 1.0),
    ("alignments2D/class", "<u4", (), 0),
    ("alignments2D/class_ess", "<f4", (), 1.0),
)

#: Field prefixes declared as results in the ``.csg`` (cryoSPARC's particle result types
#: ``particle.<prefix>``); fields under other prefixes stay in the ``.cs`` only.
CSG_RESULTS = ("blob", "ctf", "alignments2D", "alignments3D", "location", "pick_stats")


def cs_field_name(name: str) -> str:
    """``cryovaeZ3`` -> ``cryovae/z3``, ``cryovaeProb`` -> ``cryovae/prob``; others unchanged."""
    if name.startswith("cryovae") and not name.startswith("cryovae/") and len(name) > len("cryovae"):
        rest = name[len("cryovae"):]
        return f"cryovae/{rest[0].lower()}{rest[1:]}"
    return name


def _per_particle(values, n: int, name: str, width: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    expected = (n,) if width is None else (n, width)
    if arr.shape != expected:
        raise CryovaeError(f"{name} has shape {arr.shape}, expected {expected}")
    return arr


def _blob_paths(stack: ParticleStack) -> list[str | None]:
    """Absolute path of every stack found (None: not found, keep what the input said)."""
    return [None if p is None else os.path.abspath(p) for p in stack.stack_paths]


def _import_signatures(paths: list[str]) -> np.ndarray:
    from cryosparc.tools import get_import_signatures

    return np.asarray(get_import_signatures(paths), dtype=np.uint64)


def _ctf_fields(stack: ParticleStack) -> dict[str, np.ndarray]:
    """cryoSPARC ``ctf/*`` fields from the RELION columns of ``stack.table`` (empty if no CTF)."""
    t = stack.table
    n = len(stack)
    needed = ("rlnDefocusU", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
    missing = [c for c in needed if c not in t.columns]
    if missing:
        if "rlnDefocusU" in t.columns:
            log.warning("%s: no %s column, so the .cs gets no ctf/* fields", stack.path, missing[0])
        return {}

    def col(name: str, default: float) -> np.ndarray:
        if name in t.columns:
            return np.asarray(t[name], dtype=np.float64)
        return np.full(n, default)

    df1 = col("rlnDefocusU", 0.0)
    cs_mm = col("rlnSphericalAberration", 0.0)
    tilt = np.zeros((n, 2))
    for k, axis in enumerate(("X", "Y")):
        # RELION beam tilt in mrad -> cryoSPARC tilt_A (the inverse of pyem's conversion)
        tilt[:, k] = np.sin(col(f"rlnBeamTilt{axis}", 0.0) * 1e-3) * cs_mm * 1e7
    group = np.asarray(t["rlnOpticsGroup"], dtype=np.int64) - 1 if "rlnOpticsGroup" in t.columns \
        else np.zeros(n, dtype=np.int64)
    return {
        "ctf/type": np.full(n, "imported", dtype=object),
        "ctf/exp_group_id": group.astype(np.uint32),
        "ctf/accel_kv": col("rlnVoltage", 0.0).astype(np.float32),
        "ctf/cs_mm": cs_mm.astype(np.float32),
        "ctf/amp_contrast": col("rlnAmplitudeContrast", 0.0).astype(np.float32),
        "ctf/df1_A": df1.astype(np.float32),
        "ctf/df2_A": col("rlnDefocusV", 0.0).astype(np.float32) if "rlnDefocusV" in t.columns
        else df1.astype(np.float32),
        "ctf/df_angle_rad": np.radians(col("rlnDefocusAngle", 0.0)).astype(np.float32),
        "ctf/phase_shift_rad": np.radians(col("rlnPhaseShift", 0.0)).astype(np.float32),
        "ctf/scale": col("rlnCtfScalefactor", 1.0).astype(np.float32),
        "ctf/scale_const": np.zeros(n, np.float32),
        "ctf/shift_A": np.zeros((n, 2), np.float32),
        "ctf/tilt_A": tilt.astype(np.float32),
        "ctf/trefoil_A": np.zeros((n, 2), np.float32),
        "ctf/tetra_A": np.zeros((n, 4), np.float32),
        "ctf/anisomag": np.zeros((n, 4), np.float32),
        "ctf/bfactor": col("rlnCtfBfactor", 0.0).astype(np.float32),
    }


def _fields_from_star(stack: ParticleStack):
    """A fresh cryosparc-tools Dataset (new uids) with ``blob/*`` and ``ctf/*`` from the star."""
    from cryosparc.dataset import Dataset, generate_uids

    n = len(stack)
    if stack.box_known is None:
        raise CryovaeError(f"{stack.path}: image size unknown (no stack found, no rlnImageSize); "
                           "cannot write blob/shape; pass --datadir")
    if stack.pixel_sizes is None:
        raise CryovaeError(f"{stack.path}: pixel size unknown; cannot write blob/psize_A")
    found = _blob_paths(stack)
    paths = [found[f] if found[f] is not None else stack.stack_refs[f] for f in range(len(found))]
    sigs = _import_signatures([str(p) for p in paths])
    fields: dict[str, np.ndarray] = {
        "blob/path": np.array([paths[f] for f in stack.file_index], dtype=object),
        "blob/idx": np.asarray(stack.image_index, dtype=np.uint32),
        "blob/shape": np.tile(np.array([stack.box_known, stack.box_known], dtype=np.uint32), (n, 1)),
        "blob/psize_A": np.asarray(stack.pixel_sizes, dtype=np.float32),
        "blob/sign": np.full(n, -1.0, dtype=np.float32),
        "blob/import_sig": sigs[stack.file_index],
    }
    fields.update(_ctf_fields(stack))
    return Dataset({"uid": generate_uids(n), **fields})


def _fields_from_cs(stack: ParticleStack):
    """The input ``.cs`` as a cryosparc-tools Dataset, ``blob/path`` of found stacks absolute."""
    from cryosparc.dataset import Dataset

    assert stack.cs_array is not None
    dset = Dataset(stack.cs_array)
    dset.drop_fields([f for f in dset.fields() if f.startswith("cryovae/")])
    found = _blob_paths(stack)
    if any(p is not None for p in found):
        paths = np.array(dset["blob/path"], dtype=object)
        for f, p in enumerate(found):
            if p is not None:
                paths[stack.file_index == f] = p
        dset["blob/path"] = paths
    return dset


def _write_csg(csg_path: Path, cs_name: str, fields: list[str], n: int) -> None:
    prefixes = {f.split("/", 1)[0] for f in fields if "/" in f}
    results = {p: {"metafile": f">{cs_name}", "num_items": int(n), "type": f"particle.{p}"}
               for p in CSG_RESULTS if p in prefixes}
    from cryovae import __version__

    doc = {
        "created": datetime.datetime.now().replace(microsecond=0),
        "group": {"description": "Particles with cryovae in-plane poses (alignments2D) and "
                                 "latents (cryovae/* fields of the .cs)",
                  "name": "particles", "title": "cryovae particles", "type": "particle"},
        "results": results,
        "version": f"cryovae-{__version__}",
    }
    with atomic_path(csg_path) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_particles_cs(stack: ParticleStack, out_path: str | Path, psi_deg, origin_A,
                       latents=None, extra: Mapping[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """Write ``out.cs`` + ``out.csg`` (cryoSPARC particle results), atomically.

    Parameters
    ----------
    stack : the particles the results belong to (same order, same count).
    out_path : the output ``.cs``; the ``.csg`` goes beside it with the same stem. Refused when
        either is an input file.
    psi_deg : (n,) in-plane angle in degrees, RELION convention (``rlnAnglePsi``).
    origin_A : (n, 2) origin (x, y) in Å, RELION convention (``rlnOriginX/YAngst``).
    latents : (n, k) content latents -> scalar float32 fields ``cryovae/z1 .. cryovae/zk``.
    extra : more per-particle values, name -> (n,); ``cryovaeProb`` becomes ``cryovae/prob``
        (see :func:`cs_field_name`); a field the .cs already has (``alignments2D/class``,
        ``alignments2D/class_posterior``) is overwritten in its own dtype.

    Returns
    -------
    (Path, Path)
        The ``.cs`` and ``.csg`` written.

    Raises
    ------
    CryovaeError
        Wrong suffix, output onto an input, unknown pixel size or box, a write that fails.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != CS_SUFFIX:
        raise CryovaeError(f"{out_path}: a cryoSPARC output must end in .cs")
    csg_path = out_path.with_suffix(CSG_SUFFIX)
    inputs = [stack.path, *[p for p in stack.stack_paths if p is not None]]
    refuse_overwrite_input(out_path, inputs)
    refuse_overwrite_input(csg_path, inputs)
    n = len(stack)
    psi = _per_particle(psi_deg, n, "psi_deg")
    origin = _per_particle(origin_A, n, "origin_A", 2)
    if stack.pixel_sizes is None:
        raise CryovaeError(f"{stack.path}: pixel size unknown, cannot write alignments2D/shift in pixels; "
                           "pass --apix")
    apix = np.asarray(stack.pixel_sizes, dtype=np.float64)

    dset = _fields_from_cs(stack) if stack.cs_array is not None else _fields_from_star(stack)
    for name, dt, shape, default in ALIGNMENTS2D_FIELDS:
        if name not in dset.fields():
            dset.add_fields([(name, dt, shape)] if shape else [(name, dt)])
            dset[name] = default
    dset["alignments2D/pose"] = np.mod(np.radians(psi), 2 * np.pi).astype(np.float32)
    dset["alignments2D/shift"] = (origin / apix[:, None]).astype(np.float32)
    dset["alignments2D/psize_A"] = apix.astype(np.float32)

    own: dict[str, np.ndarray] = {}
    if latents is not None:
        z = np.asarray(latents, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] != n:
            raise CryovaeError(f"latents have shape {z.shape}, expected ({n}, k)")
        own.update({f"cryovae/z{j + 1}": z[:, j] for j in range(z.shape[1])})
    for name, values in (extra or {}).items():
        own[cs_field_name(name)] = _per_particle(values, n, name)
    for name, values in own.items():
        if name in dset.fields():  # one of cryoSPARC's own (alignments2D/class ...): its dtype
            dset[name] = values.astype(dset[name].dtype)
        else:
            dset.add_fields([(name, "<f4")])
            dset[name] = values.astype(np.float32)

    try:
        with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
            dset.save(fh)
        try:
            _write_csg(csg_path, out_path.name, list(dset.fields()), n)
        except BaseException:
            out_path.unlink(missing_ok=True)  # no .cs without its .csg
            raise
    except OSError as exc:
        raise CryovaeError(f"{exc.filename or out_path}: cannot write ({exc.strerror or exc})") from None
    log.info("wrote %d particles to %s and %s", n, out_path, csg_path)
    return out_path, csg_path
