"""Score particle picks against the true particles: precision, recall, F1, AP, rotation error.

PICKDIR and TRUTH are folders of RELION coordinate stars (an autopick.star index, or one
<micrograph stem>.star per micrograph), paired by micrograph stem; a micrograph with truth but
no picks counts its particles as missed. Picks and true particles match one to one (Hungarian)
when their centres are at most --radius micrograph pixels apart (default: half the particle
diameter from the simulation.json of `cryovae simulate micrographs` in TRUTH or its parent).
Precision, recall and F1 are for the picks with rlnAutopickFigureOfMerit >= --threshold (default:
every pick in the stars); the average precision ranks all picks by figure of merit (greedy
matching in that order, the step-wise area under the precision-recall curve); the rotation error
is the median over matched picks after the best global psi offset. Writes OUT/metrics.json,
OUT/metrics.csv (one row per micrograph and an overall row) and OUT/pr_curve.png.

Example: cryovae evaluate-picks picks/ sim_mics/truth -o picks_eval
"""

from __future__ import annotations

from pathlib import Path

import click

from cryovae.errors import CryovaeError


@click.command("evaluate-picks", help=__doc__)
@click.argument("pickdir", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option("-o", "--out", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (created).")
@click.option("--radius", default=None, type=float,
              help="Matching radius, micrograph pixels [half the particle diameter from TRUTH's simulation.json].")
@click.option("--threshold", default=None, type=float,
              help="Keep picks with a figure of merit >= this for precision/recall/F1 [all picks].")
def command(pickdir: Path, truth: Path, outdir: Path, radius: float | None, threshold: float | None) -> None:
    from cryovae.analysis.output import save_figure, write_json
    from cryovae.analysis.picking import (
        default_radius,
        evaluate_pick_folders,
        pr_curve_figure,
        summary_lines,
    )
    from cryovae.io import atomic_path

    if radius is None:
        radius = default_radius(truth)
        if radius is None:
            raise CryovaeError(f"{truth}: no simulation.json with particle_diameter_px here or in its parent; "
                               "pass --radius (pixels)")
    evaluation = evaluate_pick_folders(pickdir, truth, radius, threshold)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CryovaeError(f"{outdir}: cannot create the output directory ({exc.strerror})") from None
    report = {"pickdir": str(pickdir), "truth": str(truth), **evaluation.to_dict()}
    paths = [write_json(report, outdir / "metrics.json")]
    with atomic_path(outdir / "metrics.csv") as tmp:
        evaluation.table().to_csv(tmp, index=False, float_format="%.6g")
    paths.append(outdir / "metrics.csv")
    paths.append(save_figure(pr_curve_figure(evaluation), outdir / "pr_curve.png", dpi=110))
    for line in summary_lines(evaluation):
        click.echo(line)
    for path in paths:
        click.echo(f"  wrote {path}")
