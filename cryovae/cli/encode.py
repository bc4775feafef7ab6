"""Apply a trained run to a particle file; write a star (or cryoSPARC .cs) with poses and latents.

Example: cryovae encode run1 more_particles.star -o more_encoded.star
         cryovae encode run1 particles.cs -o encoded.cs   (writes encoded.cs + encoded.csg)
"""

from __future__ import annotations

from pathlib import Path

import click

from cryovae.cli.options import particle_reading_options
from cryovae.errors import CryovaeError


@click.command("encode")
@click.argument("rundir", type=click.Path(file_okay=False))
@click.argument("particles", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output: .star (RELION) or .cs (cryoSPARC; a .csg result group goes beside it).")
@click.option("--latents", "latents_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the latents (.npz).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@particle_reading_options
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--refine-steps", type=int, default=None,
              help="Steps of per-particle pose and z refinement (0: the encoder's) [the run's, 20].")
@click.option("--posterior-grid/--no-posterior-grid", default=None,
              help="Then z, psi and origins as posterior means over a grid of z x rotation x shift [the run's].")
@click.option("--absolute-paths", is_flag=True, help="Write absolute stack paths in rlnImageName.")
def command(rundir, particles, output, latents_path, device, batch_size, datadir, apix, skip_bad, weights,
            refine_steps, posterior_grid, absolute_paths) -> None:
    """Encode PARTICLES with the model in RUNDIR (preprocessed to the run's box and pixel size)."""
    from cryovae.inference import (
        RefineConfig,
        TrainedRun,
        check_output,
        encode_stack,
        stack_ctf,
        write_particles,
    )
    from cryovae.io import read_particles
    from cryovae.io.bad_particles import bad_list_path, report_skipped
    from cryovae.runs import RunDir

    check_output(output)
    if RunDir(rundir).reframe.exists():
        raise CryovaeError(f"{rundir}: made by cryovae reframe, whose rotations were held, not inferred; encode "
                           "with the run it was made from, then reframe that")
    run = TrainedRun.load(rundir, device=device, weights=weights)
    refine = RefineConfig(steps=run.config.train.refine_steps if refine_steps is None else refine_steps)
    refine.validate()
    stack = read_particles(particles, datadir=datadir, apix=apix, skip_bad=skip_bad)
    ctf = stack_ctf(stack, str(particles)) if run.config.model.ctf else None
    grid = run.config.train.posterior_grid if posterior_grid is None else posterior_grid
    latents = encode_stack(run, stack, batch_size=batch_size, refine=refine, ctf_params=ctf, posterior_grid=grid)
    write_particles(stack, latents, Path(output), absolute_paths=absolute_paths)
    report_skipped(stack, bad_list_path(output))
    if latents_path:
        latents.save(Path(latents_path))
    click.echo(output)
