"""Pick particles in micrographs with a trained TARGET-VAE run's attention map.

MICROGRAPH... are .mrc micrographs or RELION micrographs stars (micrographs.star,
micrographs_ctf.star). Each is binned to the run's pixel size (header voxel size, the star's
rlnMicrographPixelSize, or --apix), normalised like the run's particles and scored tile by tile;
peaks at least --distance apart with a figure of merit at or above --threshold are written to
OUTDIR/<stem>.star (RELION coordinates in the micrograph's own pixels, rlnAutopickFigureOfMerit,
rlnAnglePsi, cryovaeZ1..), with OUTDIR/<stem>_picks.png and the index OUTDIR/autopick.star.
Micrographs whose star exists are kept (--overwrite picks them again). docs/picking.md has the
defaults and what they were chosen on.

Example: cryovae pick run1 micrographs/*.mrc -o picks

Example: cryovae pick run1 CtfFind/job003/micrographs_ctf.star -o picks --extract 64
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("pick", help=__doc__)
@click.argument("rundir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("micrographs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created).")
@click.option("--apix", type=float, default=None,
              help="Pixel size of the micrographs in Å (overrides the star and the headers).")
@click.option("--threshold", type=float, default=None,
              help="Figure of merit a pick needs [default: per micrograph, Otsu of the candidates, at least 2.5].")
@click.option("--distance", type=float, default=None,
              help="Minimum distance between picks, micrograph pixels [default: half the run's box].")
@click.option("--fom", type=click.Choice(["combined", "zscore", "likelihood", "explained"]), default=None,
              help="Figure of merit [default: combined, see docs/picking.md].")
@click.option("--tile", type=int, default=512, show_default=True, help="Tile size, run pixels (bounds memory).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Pick again micrographs whose star exists in OUTDIR.")
@click.option("--no-png", is_flag=True, help="Do not write the OUTDIR/<stem>_picks.png overviews.")
@click.option("--extract", "extract_box", type=int, default=None,
              help="Then extract boxes of this many micrograph pixels: OUTDIR/particles.star + .mrcs.")
def command(rundir, micrographs, outdir, apix, threshold, distance, fom, tile, device, overwrite, no_png,
            extract_box) -> None:
    from cryovae.inference import DEFAULT_FOM, PickConfig
    from cryovae.workflows.pick import pick_micrographs

    cfg = PickConfig(threshold=threshold, distance_px=distance, tile=tile, fom=fom or DEFAULT_FOM)
    result = pick_micrographs(rundir, list(micrographs), outdir, cfg, apix=apix, device=device,
                              overwrite=overwrite, overview=not no_png)
    picked = [c for c in result.counts if c is not None]
    kept = len(result.counts) - len(picked)
    line = f"{sum(picked)} picks in {len(picked)} micrographs"
    if result.seconds:
        line += f" ({sum(result.seconds) / len(result.seconds):.1f} s each)"
    if kept:
        line += f"; {kept} kept from before"
    click.echo(f"{line}: {result.index}")
    if extract_box is not None:
        from cryovae.workflows.extract import extract_particles

        ext = extract_particles(outdir, Path(outdir) / "particles.star", extract_box, apix=apix)
        click.echo(f"extracted {ext.written} particles ({ext.skipped_edge} too close to an edge): {ext.star}")
