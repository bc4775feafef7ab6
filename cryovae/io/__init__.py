"""cryovae.io: the only code that touches paths.

Read any particle file (RELION 3.0/3.1+ star, cryoSPARC .cs, bare .mrcs/.mrc) with
:func:`read_particles`; write results with :func:`write_particles_star`,
:func:`write_particles_cs` (cryoSPARC ``.cs`` + ``.csg``), :func:`write_stack` and
:func:`write_star`. Every writer is atomic (:mod:`cryovae.io.atomic`).
"""

from cryovae.io.atomic import atomic_path, refuse_overwrite_input
from cryovae.io.cryosparc_write import write_particles_cs
from cryovae.io.npy_rows import NpyRows, row_range, write_npy_rows
from cryovae.io.particles import (
    ParticleStack,
    read_particles,
    read_run_particles,
    read_star_table,
    resolve_stack,
)
from cryovae.io.particles_star import relion31_blocks, write_particles_star
from cryovae.io.star import read_star_particles
from cryovae.io.summary import summarize, summary_lines
from cryovae.io.writers import open_stack_for_writing, write_stack, write_star

__all__ = [
    "NpyRows",
    "ParticleStack",
    "atomic_path",
    "open_stack_for_writing",
    "read_particles",
    "read_run_particles",
    "read_star_particles",
    "read_star_table",
    "refuse_overwrite_input",
    "relion31_blocks",
    "resolve_stack",
    "row_range",
    "summarize",
    "summary_lines",
    "write_particles_cs",
    "write_npy_rows",
    "write_particles_star",
    "write_stack",
    "write_star",
]
