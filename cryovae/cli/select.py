"""Write a subset of a run's particles, chosen in its latent space, for RELION or cryoSPARC.

Criteria combine with AND (``--invert`` takes the rest):

  --cluster 1,3        clusters of the last ``cryovae analyze`` (RUNDIR/analysis/clusters.csv)
  --zN LOW:HIGH        latent dimension N (1-based) between LOW and HIGH, in z units, or in
                       percentiles with 10%:90%; either side may be empty (--z1 0.5:)
  --class 2,5          classes of a class-producing model
  --prob-min P         pose probability (cryovaeProb) at least P
  --indices FILE       particle numbers in a text (or .npy) file; --index-base says 0 or 1

Without --particles the run's own training file is read (as train read it).

Example: cryovae select run1 --z1 1.0: -o open.star
         cryovae select run1 --cluster 2 --invert -o without_cluster2.cs
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from cryovae.cli.options import particle_reading_options
from cryovae.errors import CryovaeError

_Z_OPTION = re.compile(r"^--z([1-9][0-9]*)(?:=(.*))?$")


def _numbers(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CryovaeError(f"{option} {text!r}: expected comma-separated numbers, e.g. 1,3") from None
    if not values:
        raise CryovaeError(f"{option}: give at least one number")
    return values


def _z_ranges(args: list[str]) -> dict:
    """``--zN LOW:HIGH`` (or ``--zN=LOW:HIGH``) pairs from the arguments click left over."""
    from cryovae.workflows import Range

    ranges, i = {}, 0
    while i < len(args):
        m = _Z_OPTION.match(args[i])
        if not m:
            raise CryovaeError(f"no such option: {args[i]} (latent ranges are --z1 LOW:HIGH, --z2 ...)")
        value = m.group(2)
        if value is None:
            if i + 1 >= len(args):
                raise CryovaeError(f"{args[i]} needs LOW:HIGH")
            value, i = args[i + 1], i + 1
        d = int(m.group(1))
        if d in ranges:
            raise CryovaeError(f"--z{d} given twice")
        ranges[d] = Range.parse(value, f"--z{d}")
        i += 1
    return ranges


@click.command("select", help=__doc__,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("rundir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output: .star (RELION) or .cs (cryoSPARC; a .csg goes beside it).")
@click.option("--cluster", "clusters", default=None, help="Clusters of the last analyze, e.g. 1,3.")
@click.option("--class", "classes", default=None, help="Classes, e.g. 2,5 (class-producing models).")
@click.option("--prob-min", type=float, default=None, help="Minimum pose probability (cryovaeProb).")
@click.option("--indices", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File of particle numbers to keep (text or .npy).")
@click.option("--index-base", type=click.IntRange(0, 1), default=None,
              help="Whether the numbers in --indices count from 0 or from 1 (required with --indices).")
@click.option("--invert", is_flag=True, help="Keep the particles the criteria do not select.")
@click.option("--analysis", "analysis_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The analyze folder with clusters.csv [default: RUNDIR/analysis].")
@click.option("--particles", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The particle file the run's latents belong to [default: the file it was trained on].")
@particle_reading_options
@click.option("--absolute-paths", is_flag=True, help="Write absolute stack paths in rlnImageName.")
@click.pass_context
def command(ctx, rundir, output, clusters, classes, prob_min, indices, index_base, invert, analysis_dir,
            particles, datadir, apix, skip_bad, absolute_paths) -> None:
    from cryovae.inference import check_output
    from cryovae.io import read_particles
    from cryovae.workflows import SelectionCriteria, read_indices, select_run

    check_output(output)
    if indices is not None and index_base is None:
        raise CryovaeError("--indices: say whether its numbers count from 0 or 1 (--index-base 0 or 1)")
    criteria = SelectionCriteria(
        clusters=_numbers(clusters, "--cluster"), z_ranges=_z_ranges(list(ctx.args)),
        classes=_numbers(classes, "--class"), prob_min=prob_min,
        indices=None if indices is None else read_indices(indices, index_base), invert=invert)
    stack = None if particles is None else read_particles(particles, datadir=datadir, apix=apix, skip_bad=skip_bad)
    result = select_run(rundir, criteria, output, analysis_dir=analysis_dir, absolute_paths=absolute_paths,
                        particles=stack)
    click.echo(f"kept {result.kept} of {result.total} particles: {result.path}")
