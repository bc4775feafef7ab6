"""Plots, clusters and an HTML report for a trained run.

Writes into OUT (default RUNDIR/analysis): the latent space (histogram, hexbin or PCA; UMAP when
umap-learn is installed; optionally coloured by a star column), clusters (scikit-learn's
k-means, Gaussian mixture or Ward agglomerative clustering, --method) with each centre decoded
and one star file per cluster (cluster_01.star ..., rows of RUNDIR/particles.star
with every column and the optics block), a latent traversal, histograms of the inferred poses,
the learning curve, example particles (input, reconstruction, pose-free image), summary.json and
index.html. Open OUT/index.html in a browser.

Example: cryovae analyze run1 --k 4 --method gmm --color-by rlnDefocusU
"""

from __future__ import annotations

from pathlib import Path

import click

from cryovae.analysis.clustering import AGGLOMERATIVE_MAX_POINTS, METHODS


@click.command("analyze", help=__doc__)
@click.argument("rundir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--k", "k", default=4, show_default=True, type=int, help="Number of clusters.")
@click.option("--method", default="kmeans", show_default=True, metavar="|".join(METHODS),
              help="Clustering: k-means, a Gaussian mixture (full covariances) or Ward agglomerative "
                   f"(fitted on at most {AGGLOMERATIVE_MAX_POINTS:,} particles chosen at random, the "
                   "others join the nearest centre).")
@click.option("--color-by", default=None, help="Star column to colour the latent space by, e.g. rlnDefocusU.")
@click.option("--examples", "n_examples", default=8, show_default=True, type=int,
              help="Particles in the example sheet.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the clustering, UMAP and examples.")
@click.option("--no-umap", is_flag=True, help="Skip UMAP even when umap-learn is installed.")
@click.option("-o", "--out", "outdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder [default: RUNDIR/analysis].")
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt or the last checkpoint.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def command(rundir, k, method, color_by, n_examples, seed, no_umap, outdir, weights, device) -> None:
    from cryovae.analysis.report import AnalyzeConfig, analyze_run
    from cryovae.errors import CryovaeError
    from cryovae.inference import TrainedRun

    if k < 1:
        raise CryovaeError(f"--k must be >= 1, got {k}")
    if method not in METHODS:
        raise CryovaeError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if n_examples < 1:
        raise CryovaeError(f"--examples must be >= 1, got {n_examples}")
    cfg = AnalyzeConfig(k=k, method=method, color_by=color_by, seed=seed, n_examples=n_examples,
                        umap=not no_umap)
    run = TrainedRun.load(rundir, device=device, weights=weights)
    out = Path(outdir) if outdir is not None else Path(rundir) / "analysis"
    analyze_run(run, out, cfg)
    click.echo(str(out / "index.html"))
