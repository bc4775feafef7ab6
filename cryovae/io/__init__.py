"""cryovae.io: the only code that touches paths.

Read any particle file (RELION 3.0/3.1+ star, cryoSPARC .cs, bare .mrcs/.mrc) with
:func:`read_particles`; write results with :func:`write_particles_star`,
:func:`write_particles_cs` (cryoSPARC ``.cs`` + ``.csg``), :func:`write_stack` and
:func:`write_star`. Micrographs: :func:`read_micrograph`, :func:`micrograph_paths`;
particle coordinates: :func:`read_coordinates`, :func:`write_coordinates` and the autopick index
(:func:`read_autopick_index`, :func:`write_autopick_index`). Every writer is atomic (:mod:`cryovae.io.atomic`).
"""

from cryovae.io.atomic import atomic_path, refuse_overwrite_input
from cryovae.io.coordinates import (
    read_autopick_index,
    read_coordinates,
    write_autopick_index,
    write_coordinates,
)
from cryovae.io.cryosparc_write import write_particles_cs
from cryovae.io.micrographs import Micrograph, micrograph_paths, read_micrograph, write_micrograph
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
    "Micrograph",
    "NpyRows",
    "ParticleStack",
    "atomic_path",
    "micrograph_paths",
    "open_stack_for_writing",
    "read_autopick_index",
    "read_coordinates",
    "read_micrograph",
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
    "write_autopick_index",
    "write_coordinates",
    "write_micrograph",
    "write_npy_rows",
    "write_particles_star",
    "write_stack",
    "write_star",
]
