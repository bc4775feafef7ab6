"""Summarise a particle file: count, box, pixel size, optics groups, stacks, CTF columns.

Example: cryovae info particles.star --datadir Extract/ --json
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cryovae.cli.options import particle_reading_options


@click.command(name="info")
@click.argument("particles", type=click.Path(path_type=Path))
@particle_reading_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def command(particles: Path, datadir: Path | None, apix: float | None, skip_bad: bool, as_json: bool) -> None:
    """Summarise PARTICLES (.star, .cs, .mrcs, .mrc): count, box, pixel size, optics groups,
    stacks found or missing, CTF columns; with --skip-bad, the bad particles (read every image).

    Example: cryovae info particles.star --datadir Extract/ --json
    """
    from cryovae.io import read_particles, summarize, summary_lines

    stack = read_particles(particles, datadir=datadir, apix=apix, skip_bad=skip_bad)
    summary = summarize(stack)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for line in summary_lines(summary):
            click.echo(line)
