"""Score a cryovae star against simulated ground truth (truth.csv from ``cryovae simulate``).

Reads the content latents (cryovaeZ*), rlnAnglePsi and rlnOriginXAngst/YAngst (or rlnOriginX/Y
in pixels) from OUT.star, pairs rows with TRUTH.csv (by the rlnImageName index, else by row
order), prints the metrics and writes DIR/metrics.json, DIR/rotation.png, DIR/latents.png and
DIR/translation.png. When TRUTH.csv has a class column (cryovae simulate classes) and OUT.star
a predicted class (rlnClassNumber, else cryovaeClass), it also reports the class accuracy after
the best matching of predicted to true classes, ARI and NMI, with DIR/classes.png (the confusion
table); the rotation is then also scored within each true class. Rotation errors are after the best global offset; the circular correlation
is Fisher & Lee's (1983), with Jammalamadaka & SenGupta's r_c (cited by spatial-VAE) in the JSON.

Example: cryovae evaluate run1/particles.star sim_hinge/truth.csv -o run1/evaluation
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from cryovae.errors import CryovaeError, InputFileError


@click.command("evaluate", help=__doc__)
@click.argument("star", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("truth", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "outdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory [default: <STAR stem>_evaluation beside STAR].")
@click.option("--apix", default=None, type=float,
              help="Pixel size (Å) for pixel origins (rlnOriginX/Y) when the star has none.")
def command(star: Path, truth: Path, outdir: Path | None, apix: float | None) -> None:
    from cryovae.analysis.evaluation import (
        check_predictions_finite,
        check_truth_finite,
        evaluation_report,
    )
    from cryovae.analysis.metrics import align_predictions
    from cryovae.simulate import read_truth

    truth_table = read_truth(truth)
    table = _read_star_table(star)
    try:
        predicted, aligned, how = align_predictions(table, truth_table, apix)
    except ValueError as exc:
        raise InputFileError(f"{star}: {exc}") from None
    check_truth_finite(truth_table, truth, with_origins=predicted["origin_A"] is not None)  # never NaN metrics
    check_predictions_finite(predicted, star)
    outdir = outdir if outdir is not None else star.with_name(star.stem + "_evaluation")
    metrics, figures = evaluation_report(predicted, aligned)
    metrics["join"] = how
    metrics["star"], metrics["truth"] = str(star), str(truth)
    paths = _save(outdir, metrics, figures)
    for line in summary_lines(metrics):
        click.echo(line)
    for path in paths:
        click.echo(f"  wrote {path}")


def summary_lines(metrics: dict) -> list[str]:
    """Human-readable lines of an evaluation's metrics."""
    lines = [f"{metrics['n']} particles (joined by {metrics.get('join', 'row order')})"]
    conf = metrics.get("conformation")
    if conf:
        for name, r in conf["multiple_correlation"].items():
            per = ", ".join(f"{z} {conf['pearson'][z][name]:+.3f}" for z in conf["pearson"])
            lines.append(f"{name}: multiple correlation R {r:.3f}; Pearson {per}")
    rot = metrics["rotation"]
    lines.append(f"rotation: circular correlation {rot['circular_correlation']:.3f} (Fisher-Lee), median error "
                 f"{rot['median_error_deg']:.1f}°, {rot['fraction_within_15deg']:.1%} within 15° "
                 f"(offset {rot['offset_deg']:.1f}°); best fit: {rot['best_fit']}"
                 + (f" (mirror median error {rot['mirror']['median_error_deg']:.1f}°)"
                    if rot["best_fit"] == "mirror" else ""))
    axial = rot.get("modulo_180")
    if axial:
        lines.append(f"rotation modulo 180°: circular correlation of 2·psi {axial['circular_correlation']:.3f}, "
                     f"median error {axial['median_error_deg']:.1f}°, {axial['fraction_within_15deg']:.1%} within 15°")
    within = metrics.get("rotation_within_classes")
    if within:
        lines.append(f"rotation within each true class: circular correlation {_fmt(within['circular_correlation'])} "
                     f"(mean weighted by class size), median error {within['median_error_deg']:.1f}°")
    cls = metrics.get("classes")
    if cls:
        lines.append(f"classes: accuracy {cls['accuracy']:.3f} (best matching of {len(cls['predicted_classes'])} "
                     f"predicted to {len(cls['true_classes'])} true classes), ARI {cls['ari']:.3f}, NMI {cls['nmi']:.3f}")
        lines.append("  predicted -> true (recall): " + ", ".join(
            f"{p} -> {t} ({cls['recall'][str(t)]:.2f})" for p, t in cls["matching"].items()))
    tr = metrics.get("translation")
    if tr:
        lines.append(f"translation: Pearson x {_fmt(tr['pearson_x'])}, y {_fmt(tr['pearson_y'])}; RMSE "
                     f"{tr['rmse_A']:.2f} Å ({tr['rmse_after_template_offset_A']:.2f} Å after the template offset)")
    return lines


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _read_star_table(star: Path):
    from cryovae.io import read_star_table

    if not star.is_file():
        raise InputFileError(f"{star}: no such file")
    return read_star_table(star)


def _save(outdir: Path, metrics: dict, figures: dict) -> list[Path]:
    from cryovae.analysis.output import save_figure, write_json

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CryovaeError(f"{outdir}: cannot create the output directory ({exc.strerror})") from None
    paths = [write_json(metrics, outdir / "metrics.json")]
    for name, fig in figures.items():
        paths.append(save_figure(fig, outdir / f"{name}.png", dpi=110))
    return paths
