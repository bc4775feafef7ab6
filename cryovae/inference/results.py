"""What ``train`` and ``encode`` write for RELION and cryoSPARC, and the CTF they read: one
module both commands use.

A star gets rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb; a cryoSPARC ``.cs``
the alignments2D pose and shift with cryovae/z1..n and cryovae/prob (+ a ``.csg``). Every
extra per-particle output of a model (:attr:`cryovae.runs.Latents.extras`) becomes one more
column, ``cryovae<Name>`` (``class_prob`` -> ``cryovaeClassProb``), except a class: RELION's
``rlnClassNumber`` (1-based) in a star, cryoSPARC's ``alignments2D/class`` (0-based) and
``alignments2D/class_posterior`` (its probability) in a .cs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.io import ParticleStack, write_particles_cs, write_particles_star
from cryovae.models import CLASS_EXTRA, CLASS_PROB_EXTRA, check_ctf_finite, ctf_parameters
from cryovae.runs import Latents

#: output particle files cryovae writes, by suffix
OUTPUT_SUFFIXES = (".star", ".cs")


#: model extras written under RELION's own column in a star (the class: 1-based, as RELION counts)
STAR_COLUMNS = {CLASS_EXTRA: "rlnClassNumber"}
#: model extras written under cryoSPARC's own field in a .cs, and how their values convert:
#: the class 0-based (cryoSPARC's ``alignments2D/class``), its probability as the class posterior
CS_FIELDS = {CLASS_EXTRA: ("alignments2D/class", lambda v: np.asarray(v, np.int64) - 1),
             CLASS_PROB_EXTRA: ("alignments2D/class_posterior", lambda v: np.asarray(v, np.float64))}


def _camel(name: str) -> str:
    """``class_prob`` -> ``ClassProb``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _extra_columns(latents: Latents, own: dict[str, str] | None = None) -> dict[str, np.ndarray] | None:
    """The per-particle columns beyond pose and z: ``cryovaeProb`` and one ``cryovae<Name>`` per
    extra (``cryovae<Name>1..k`` for a (n, k) one); an extra named in ``own`` goes under that
    column instead, unchanged."""
    extra = {"cryovaeProb": latents.prob} if latents.prob is not None else {}
    for name, values in latents.extras.items():
        values = np.asarray(values)
        if own and name in own:
            extra[own[name]] = values
        elif values.ndim == 1:
            extra["cryovae" + _camel(name)] = values
        else:
            for i in range(values.shape[1]):
                extra[f"cryovae{_camel(name)}{i + 1}"] = values[:, i]
    return extra or None


def _cs_extra_columns(latents: Latents) -> dict[str, np.ndarray] | None:
    """:func:`_extra_columns` for a .cs: the class and its probability in cryoSPARC's
    ``alignments2D`` fields (:data:`CS_FIELDS`), the rest as ``cryovae/*``."""
    extra = _extra_columns(latents, {k: f for k, (f, _) in CS_FIELDS.items()}) or {}
    for fld, convert in CS_FIELDS.values():
        if fld in extra:
            extra[fld] = convert(extra[fld])
    return extra or None


def write_star(stack: ParticleStack, latents: Latents, out_star: Path, absolute_paths: bool = False) -> Path:
    """The input star plus rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb
    (``absolute_paths``: absolute stack paths in rlnImageName)."""
    write_particles_star(stack, Path(out_star), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                         latents=latents.z_mean if latents.z_mean.shape[1] else None,
                         extra=_extra_columns(latents, STAR_COLUMNS), absolute_paths=absolute_paths)
    return Path(out_star)


def write_cs(stack: ParticleStack, latents: Latents, out_cs: Path) -> Path:
    """cryoSPARC results: ``out_cs`` (alignments2D pose/shift, cryovae/z1..n, cryovae/prob) + .csg."""
    write_particles_cs(stack, Path(out_cs), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                       latents=latents.z_mean if latents.z_mean.shape[1] else None,
                       extra=_cs_extra_columns(latents))
    return Path(out_cs)


def check_output(path: str | Path) -> Path:
    """``path`` if cryovae writes its kind (.star, .cs), else a one-line CryovaeError."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CryovaeError(f"{path}: unknown output type '{path.suffix}' (use .star for RELION or .cs for "
                           "cryoSPARC)")
    return path


def write_particles(stack: ParticleStack, latents: Latents, out: Path, absolute_paths: bool = False) -> Path:
    """Write ``out`` as a RELION star or cryoSPARC .cs (+ .csg), chosen by its suffix.

    ``absolute_paths`` applies to a star; a .cs always holds absolute paths to the stacks found.
    """
    out = check_output(out)
    if out.suffix.lower() == ".cs":
        return write_cs(stack, latents, out)
    return write_star(stack, latents, out, absolute_paths)


def stack_ctf(stack: ParticleStack, source: str) -> np.ndarray:
    """(n, 7) CTF parameters of a stack; CryovaeError naming a missing column, or a column and
    the first particle where a value is NaN or infinite."""
    try:
        params = ctf_parameters(stack.table)
    except KeyError as exc:
        raise CryovaeError(f"{source}: --ctf needs the column _{exc.args[0]} in the particle table") from None
    check_ctf_finite(params, source, stack.rows)
    return params
