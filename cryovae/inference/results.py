"""What ``train`` and ``encode`` write for RELION and cryoSPARC, and the CTF they read: one
module both commands use.

A star gets rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb; a cryoSPARC ``.cs``
the alignments2D pose and shift with cryovae/z1..n and cryovae/prob (+ a ``.csg``). Every
extra per-particle output of a model (:attr:`cryovae.runs.Latents.extras`, e.g. a class) becomes
one more column, ``cryovae<Name>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.io import ParticleStack, write_particles_cs, write_particles_star
from cryovae.models import check_ctf_finite, ctf_parameters
from cryovae.runs import Latents

#: output particle files cryovae writes, by suffix
OUTPUT_SUFFIXES = (".star", ".cs")


def _extra_columns(latents: Latents) -> dict[str, np.ndarray] | None:
    extra = {"cryovaeProb": latents.prob} if latents.prob is not None else {}
    for name, values in latents.extras.items():
        values = np.asarray(values)
        if values.ndim == 1:
            extra["cryovae" + name[:1].upper() + name[1:]] = values
        else:
            for i in range(values.shape[1]):
                extra[f"cryovae{name[:1].upper() + name[1:]}{i + 1}"] = values[:, i]
    return extra or None


def write_star(stack: ParticleStack, latents: Latents, out_star: Path, absolute_paths: bool = False) -> Path:
    """The input star plus rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb
    (``absolute_paths``: absolute stack paths in rlnImageName)."""
    write_particles_star(stack, Path(out_star), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                         latents=latents.z_mean if latents.z_mean.shape[1] else None,
                         extra=_extra_columns(latents), absolute_paths=absolute_paths)
    return Path(out_star)


def write_cs(stack: ParticleStack, latents: Latents, out_cs: Path) -> Path:
    """cryoSPARC results: ``out_cs`` (alignments2D pose/shift, cryovae/z1..n, cryovae/prob) + .csg."""
    write_particles_cs(stack, Path(out_cs), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                       latents=latents.z_mean if latents.z_mean.shape[1] else None,
                       extra=_extra_columns(latents))
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
