"""Decode images along the latent space of a trained run (generator at rotation 0, centre 0).

With one latent dimension: a row of --steps images from the 5th to the 95th percentile of the
posterior means. With two: a --steps x --steps grid (z1 along the columns, z2 down the rows).
With more: a grid of the first two principal components of the posterior means, or the latent
dimensions named by --dims (two: a grid; one or three and more: one row per dimension, the
others held at their median). --pcs makes --dims name principal components instead.
--between A B interpolates between the latents of particles A and B, numbered from 1 as the
rows of RUNDIR/particles.star.

Writes OUT/traversal.png (montage), OUT/traversal.gif (animation), OUT/traversal.mrcs (the
frames, with the run's pixel size) and OUT/traversal.csv (latent vector of each frame);
between_A_B.* with --between.

Example: cryovae traverse run1 --steps 10 -o run1/traversal
"""

from __future__ import annotations

from pathlib import Path

import click

from cryovae.errors import CryovaeError


def _parse_dims(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise CryovaeError(f"--dims takes comma-separated numbers from 1, e.g. 1,2; got {text!r}") from None
    if not dims:
        raise CryovaeError("--dims is empty")
    return dims


@click.command("traverse", help=__doc__)
@click.argument("rundir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dims", default=None, metavar="LIST", help="Latent dimensions (or PCs with --pcs) to traverse, from 1, e.g. 1,2.")
@click.option("--steps", default=10, show_default=True, type=int, help="Frames per traversed axis.")
@click.option("--pcs", is_flag=True, help="Traverse principal components of the posterior means.")
@click.option("--between", nargs=2, type=int, default=None, metavar="A B",
              help="Interpolate between particles A and B (1-based rows of RUNDIR/particles.star).")
@click.option("--percentiles", nargs=2, type=float, default=(5.0, 95.0), show_default=True, metavar="LOW HIGH",
              help="Range of each traversal, in percentiles of the posterior means.")
@click.option("-o", "--out", "outdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder [default: RUNDIR/traversal].")
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt or the last checkpoint.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def command(rundir, dims, steps, pcs, between, percentiles, outdir, weights, device) -> None:
    from cryovae.analysis.traverse_run import TraverseConfig, traverse_run
    from cryovae.inference import TrainedRun

    cfg = TraverseConfig(dims=_parse_dims(dims), steps=steps, pcs=pcs,
                         between=tuple(between) if between else None, lo=percentiles[0], hi=percentiles[1])
    if not 0 <= cfg.lo < cfg.hi <= 100:
        raise CryovaeError(f"--percentiles must satisfy 0 <= low < high <= 100, got {cfg.lo} {cfg.hi}")
    run = TrainedRun.load(rundir, device=device, weights=weights)
    out = traverse_run(run, outdir if outdir is not None else Path(rundir) / "traversal", cfg)
    for path in (out.png, out.gif, out.mrcs, out.csv):
        click.echo(str(path))
