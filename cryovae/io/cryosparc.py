"""cryoSPARC ``.cs`` particle tables (numpy structured arrays) as RELION-named columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import InputFileError

#: .cs field -> (RELION column, factor): per-particle CTF values.
_PARTICLE_FIELDS = {
    "ctf/df1_A": ("rlnDefocusU", 1.0),
    "ctf/df2_A": ("rlnDefocusV", 1.0),
    "ctf/df_angle_rad": ("rlnDefocusAngle", 180.0 / np.pi),
    "ctf/phase_shift_rad": ("rlnPhaseShift", 180.0 / np.pi),
}
#: .cs field -> RELION optics column.
_OPTICS_FIELDS = {
    "ctf/accel_kv": "rlnVoltage",
    "ctf/cs_mm": "rlnSphericalAberration",
    "ctf/amp_contrast": "rlnAmplitudeContrast",
}


@dataclass
class CsParticles:
    """A ``.cs`` file read as RELION-like tables.

    stack_refs : (n,) image file of each particle, as written, leading ``>`` stripped.
    image_index : (n,) 0-based index into that file (``blob/idx``).
    particles : per-particle RELION columns (rlnOpticsGroup, CTF) followed by every scalar
        ``.cs`` field under its own name (``blob/idx``, ``alignments2D/pose``, ...).
    optics : one row per optics group: rlnOpticsGroup, rlnOpticsGroupName, rlnImagePixelSize,
        rlnImageSize, rlnImageDimensionality and the CTF optics values present.
    array : (n,) the structured array as read (every field, its order and dtype), so a writer
        can pass the fields cryovae does not use through unchanged.
    """

    stack_refs: np.ndarray
    image_index: np.ndarray
    particles: pd.DataFrame
    optics: pd.DataFrame
    array: np.ndarray


def _f64(values: np.ndarray) -> np.ndarray:
    """float32 -> float64 through the shortest decimal text, so 1.345 stays 1.345."""
    return np.asarray(values, dtype=np.float32).astype(str).astype(np.float64)


def read_cs(path: str | Path) -> CsParticles:
    """Read a cryoSPARC particle ``.cs`` file.

    Raises
    ------
    InputFileError
        Not a numpy structured array, no ``blob/path``/``blob/idx`` fields, or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: not a cryoSPARC .cs file ({first})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None:
        raise InputFileError(f"{path}: not a cryoSPARC .cs file (no named fields)")
    names = arr.dtype.names
    for field in ("blob/path", "blob/idx"):
        if field not in names:
            raise InputFileError(f"{path}: no {field} field, so no particle images to read")
    if arr.shape[0] == 0:
        raise InputFileError(f"{path}: no particles (0 rows)")
    refs = np.array([p.decode() if isinstance(p, bytes) else str(p) for p in arr["blob/path"]], dtype=object)
    refs = np.array([r.lstrip(">") for r in refs], dtype=object)
    n = arr.shape[0]

    group = (np.asarray(arr["ctf/exp_group_id"], dtype=np.int64) + 1) if "ctf/exp_group_id" in names \
        else np.ones(n, dtype=np.int64)
    particles = pd.DataFrame({"rlnOpticsGroup": group})
    for field, (col, factor) in _PARTICLE_FIELDS.items():
        if field in names:
            # a unit conversion keeps the field's float32 precision: 0.092153385 rad -> 5.28 deg
            particles[col] = _f64(arr[field].astype(np.float64) * factor)
    for field in names:
        if arr.dtype[field].shape == ():
            values = arr[field]
            if values.dtype.kind == "S":
                particles[field] = [v.decode(errors="replace") for v in values]
            elif values.dtype.kind == "f":
                particles[field] = _f64(values) if values.dtype == np.float32 else values.astype(np.float64)
            else:
                particles[field] = values.astype(np.int64) if values.dtype.kind in "iu" else values
    per_particle = pd.DataFrame({"rlnOpticsGroup": group})
    if "blob/psize_A" in names:
        per_particle["rlnImagePixelSize"] = _f64(arr["blob/psize_A"])
    if "blob/shape" in names:
        per_particle["rlnImageSize"] = np.asarray(arr["blob/shape"])[:, -1].astype(np.int64)
    for field, col in _OPTICS_FIELDS.items():
        if field in names:
            per_particle[col] = _f64(arr[field])
    optics = per_particle.drop_duplicates("rlnOpticsGroup").sort_values("rlnOpticsGroup").reset_index(drop=True)
    optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    optics["rlnImageDimensionality"] = 2
    return CsParticles(stack_refs=refs, image_index=np.asarray(arr["blob/idx"], dtype=np.int64),
                       particles=particles, optics=optics, array=arr)
