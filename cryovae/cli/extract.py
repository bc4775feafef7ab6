"""Cut particle boxes at the picks of PICKDIR (cryovae pick's output folder, or any folder with a
RELION autopick.star) into a stack and a RELION 3.1 star that cryovae train (and RELION) read.

Each box of --box micrograph pixels is centred on the pick (the pick lands on pixel box//2); a
box that does not fit inside its micrograph is skipped and counted, as RELION does. The stack
(same stem, .mrcs) goes beside the star. Pixels are written as read (train normalises).

Example: cryovae extract picks -o particles.star --box 64

Example: cryovae extract picks -o best.star --box 64 --threshold 6
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("extract", help=__doc__)
@click.argument("pickdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Particle star to write (the .mrcs stack goes beside it).")
@click.option("--box", type=int, required=True, help="Box size, micrograph pixels.")
@click.option("--threshold", type=float, default=None,
              help="Keep picks with rlnAutopickFigureOfMerit at least this [default: every pick].")
@click.option("--apix", type=float, default=None, help="Pixel size of the micrographs in Å (overrides the headers).")
def command(pickdir, output, box, threshold, apix) -> None:
    from cryovae.workflows.extract import extract_particles

    res = extract_particles(pickdir, output, box, threshold=threshold, apix=apix)
    click.echo(f"extracted {res.written} particles ({res.skipped_edge} too close to an edge"
               + (f", {res.skipped_threshold} below the threshold" if threshold is not None else "")
               + f"): {res.star}")
