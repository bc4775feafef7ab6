"""``cryovae analyze``: pictures, clusters and an HTML page for a trained run.

:func:`analyze_run` writes into its output folder (RUNDIR/analysis by default):

* ``latent.png`` — histogram (zdim 1), hexbin (zdim 2) or PCA hexbin (more) of the posterior means;
  ``latent_<COLUMN>.png`` coloured by a star column; ``latent_umap.png`` when umap-learn is installed;
* ``clusters.png``, ``cluster_centers.png`` (each cluster centre decoded at theta = 0, t = 0; the
  clusters by k-means, a Gaussian mixture or Ward agglomerative clustering, ``--method``),
  ``cluster_01.star`` … (rows of RUNDIR/particles.star, every column and the optics block kept),
  ``clusters.csv`` (particle number, cluster, latents);
* ``traversal.png`` (the default traversal, see :mod:`cryovae.analysis.traverse`);
* ``poses.png`` (rotations, origins, pose probability), ``learning_curve.png`` (metrics.csv);
* ``examples.png`` (input, reconstruction, pose-free image of a few particles);
* for a model that assigns classes (MCE-VAE): ``classes.mrcs``, ``classes.star``, ``classes.png``
  (the class averages, :mod:`cryovae.analysis.class_averages`) and ``class_001.star`` … (each
  class's rows of RUNDIR/particles.star);
* ``summary.json`` (the numbers) and ``index.html`` showing all of it.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.analysis.clustering import METHOD_LABELS, Clusters, cluster, split_by_cluster
from cryovae.analysis.embedding import fit_pca, latent_view, umap_embedding
from cryovae.analysis.traverse import decode_frames, default_traversal
from cryovae.errors import CryovaeError, InputFileError
from cryovae.runs import RunDir

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class AnalyzeConfig:
    """Options of ``cryovae analyze``.

    Attributes
    ----------
    k : number of clusters of the posterior means.
    method : how they are clustered: ``kmeans``, ``gmm`` or ``agglomerative``
        (:func:`cryovae.analysis.clustering.cluster`).
    color_by : a column of RUNDIR/particles.star (particles or optics block, without the leading
        underscore) to colour the latent space by, or None.
    seed : seed of the clustering, the example choice and UMAP.
    n_examples : particles in the example sheet.
    steps : frames per axis of the traversal picture.
    umap : also draw a UMAP embedding when zdim > 2 and umap-learn is installed.
    """

    k: int = 4
    method: str = "kmeans"
    color_by: str | None = None
    seed: int = 0
    n_examples: int = 8
    steps: int = 8
    umap: bool = True


@dataclass
class Report:
    """Sections of index.html (title, picture file names, caption) and summary numbers."""

    title: str
    sections: list[tuple[str, list[str], str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def add(self, title: str, pictures: list[str], caption: str, files: list[str] | None = None) -> None:
        self.sections.append((title, pictures, caption))
        self.files += files or []


def read_run_star(path: Path, n: int):
    """The run's particles.star as :class:`cryovae.io.star.StarParticles`, checked to hold the
    ``n`` particles of latents.npz; InputFileError otherwise."""
    from cryovae.io import read_star_particles

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: missing (has the run finished?)")
    star = read_star_particles(path)
    if len(star.particles) != n:
        raise InputFileError(f"{path}: {len(star.particles)} particles but latents.npz has {n}")
    return star


def star_column(blocks: dict[str, pd.DataFrame], particles: str, column: str, path: Path) -> np.ndarray:
    """Values (n,) of a numeric column of the particle block or, through rlnOpticsGroup, of the
    optics block. ``column`` may be given with or without the leading ``_``."""
    col = column.lstrip("_")
    table = blocks[particles]
    if col in table.columns:
        values = table[col]
    elif "optics" in blocks and col in blocks["optics"].columns and "rlnOpticsGroup" in table.columns:
        optics = blocks["optics"].set_index("rlnOpticsGroup")[col]
        values = table["rlnOpticsGroup"].map(optics)
    else:
        cols = list(table.columns) + (list(blocks["optics"].columns) if "optics" in blocks else [])
        shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "")
        raise CryovaeError(f"{path}: no column {col} for --color-by (columns: {shown})")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        raise CryovaeError(f"{path}: column {col} is not numeric, cannot colour by it")
    return numeric.to_numpy(np.float64)


def write_cluster_stars(outdir: Path, blocks: dict[str, pd.DataFrame], particles: str,
                        clusters: Clusters) -> list[Path]:
    """cluster_01.star … : each cluster's rows of the particle block (every column, input order)
    with the other blocks (optics) unchanged. Together they hold every particle exactly once;
    cluster_NN.star files of an earlier analysis with more clusters are removed."""
    from cryovae.io import write_star

    width = max(2, len(str(clusters.k)))
    paths: list[Path] = []
    for j, table in enumerate(split_by_cluster(blocks[particles], clusters.labels, clusters.k)):
        out = {name: (table.reset_index(drop=True) if name == particles else df) for name, df in blocks.items()}
        path = outdir / f"cluster_{j + 1:0{width}d}.star"
        write_star(path, out)
        paths.append(path)
    for old in sorted(outdir.glob("cluster_*.star")):  # left by an earlier run with a larger k
        if old not in paths and old.stem[len("cluster_"):].isdigit():
            log.info("removing %s from an earlier analysis", old)
            old.unlink()
    return paths


def load_particle_images(run, idx: np.ndarray, n: int) -> np.ndarray:
    """Preprocessed images (len(idx), box, box) of the run's particles ``idx`` (0-based): from
    RUNDIR/images.npy (written by training) or else the run's input file and preprocessing.
    ``n``: number of particles of the run."""
    cache = RunDir(run.rundir).images
    if cache.exists():
        arr = np.load(cache, mmap_mode="r")
        if arr.shape == (n, run.box, run.box):
            return np.asarray(arr[idx], np.float32)
    from cryovae.io import read_run_particles

    source = run.config.input.get("particles")
    if not source:
        raise InputFileError(f"{run.rundir}/config.yaml: names no input particles")
    stack = read_run_particles(run.config.input)  # as train read it
    if len(stack) != n:
        raise InputFileError(f"{source}: {len(stack)} particles, the run has {n}")
    return run.preprocess(stack.images(np.asarray(idx)))


def example_indices(z_mean: np.ndarray, n_examples: int) -> np.ndarray:
    """``n_examples`` particles spread along the first principal axis of the latents (evenly
    spaced ranks, in order along the axis), or evenly spaced in the file for zdim 0. 0-based."""
    n = len(z_mean)
    m = min(n_examples, n)
    ranks = np.floor((np.arange(m) + 0.5) * n / m).astype(int).clip(0, n - 1)
    if z_mean.shape[1] == 0:
        return np.unique(ranks)
    order = np.argsort(fit_pca(z_mean, 1).transform(z_mean)[:, 0], kind="stable")
    return order[ranks]


def analyze_run(run, outdir: str | Path, cfg: AnalyzeConfig) -> Report:
    """Write every analysis picture, the cluster star files and index.html for a trained run.

    Parameters
    ----------
    run : :class:`cryovae.inference.TrainedRun`.
    outdir : output folder (created), e.g. RUNDIR/analysis.
    cfg : options.
    """
    from cryovae.analysis.output import write_json, write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rundir = Path(run.rundir)
    lat = run.latents()
    n, zdim = lat.z_mean.shape
    files = RunDir(rundir)
    star_path = files.star
    star = read_run_star(star_path, n)
    color = star_column(star.blocks, star.data_block, cfg.color_by, star_path) if cfg.color_by else None
    report = Report(title=f"cryovae analysis of {rundir.resolve().name}")
    report.summary = {"rundir": str(rundir), "n_particles": int(n), "zdim": int(zdim),
                      "model": getattr(run.config.model, "kind", None)}
    if zdim > 0:
        _latent_sections(run, outdir, cfg, report, np.asarray(lat.z_mean, np.float64), star, color)
    else:
        log.info("zdim = 0: no latent space to plot or cluster")
    _class_section(run, outdir, report, lat, star)
    _pose_section(outdir, report, lat, run.pixel_size)
    _learning_section(outdir, report, files.metrics)
    _example_section(run, outdir, cfg, report, lat)
    _capsule_section(run, outdir, report, lat)
    write_json(report.summary, outdir / "summary.json")
    write_text(render_html(report), outdir / "index.html")
    return report


def _save(fig, outdir: Path, name: str) -> str:
    from cryovae.analysis.output import save_figure

    save_figure(fig, outdir / name)
    return name


def _latent_sections(run, outdir: Path, cfg: AnalyzeConfig, report: Report, z: np.ndarray, star,
                     color: np.ndarray | None) -> None:
    """latent*.png, clusters.png, cluster_centers.png, cluster_NN.star, clusters.csv, traversal.png."""
    from cryovae.analysis import plots
    from cryovae.analysis.output import write_text

    n, zdim = z.shape
    view = latent_view(z)
    coords = view.project(z)
    label = METHOD_LABELS.get(cfg.method, cfg.method)
    log.info("%s clustering with k=%d on %d particles", label, cfg.k, n)
    clusters = cluster(z, cfg.k, method=cfg.method, seed=cfg.seed)
    centers_view = view.project(clusters.centers)
    if zdim == 1:
        pics = [_save(plots.latent_histogram(z[:, 0], "z1", clusters.centers[:, 0]), outdir, "latent.png")]
    else:
        title = "latent space" if view.pca is None else "latent space (PCA)"
        pics = [_save(plots.latent_density(coords, view.names, title, centers_view), outdir, "latent.png")]
    if color is not None and cfg.color_by:
        col = cfg.color_by.lstrip("_")
        pics.append(_save(plots.latent_colored(coords, view.names, color, col), outdir, f"latent_{col}.png"))
    if view.pca is not None and cfg.umap:
        emb = umap_embedding(z, seed=cfg.seed)
        if emb is not None:
            pics.append(_save(plots.latent_density(emb, ["UMAP 1", "UMAP 2"], "UMAP"), outdir, "latent_umap.png"))
    report.add("Latent space", pics, "Posterior means of the content latents"
               + (", projected on their first two principal components" if view.pca is not None else "")
               + f"; crosses / lines mark the {label} centres.")

    frames = np.asarray(run.decode(clusters.centers.astype(np.float32)), np.float32)
    sizes = clusters.sizes()
    titles = [f"cluster {j + 1}\n{sizes[j]} particles" for j in range(clusters.k)]
    ncols = min(clusters.k, 8)
    pics = [_save(plots.cluster_plot(coords, view.names, clusters.labels, centers_view, label), outdir,
                  "clusters.png"),
            _save(plots.image_grid(frames, (-(-clusters.k // ncols), ncols), titles=titles,
                                   suptitle=f"{label} centres decoded (pose-free)"),
                  outdir, "cluster_centers.png")]
    stars = write_cluster_stars(outdir, star.blocks, star.data_block, clusters)
    table = pd.DataFrame({"particle": np.arange(1, n + 1), "cluster": clusters.labels + 1})
    for d in range(zdim):
        table[f"z{d + 1}"] = z[:, d]
    write_text(table.to_csv(index=False, float_format="%.6g"), outdir / "clusters.csv")
    report.add(f"{label} clusters (k = {clusters.k})", pics,
               "One star file per cluster (rows of particles.star with all columns and the optics "
               "block), ready to import into RELION or cryoSPARC.", [p.name for p in stars] + ["clusters.csv"])
    report.summary["clusters"] = {"method": clusters.method, "k": clusters.k, "sizes": [int(s) for s in sizes],
                                  "inertia": clusters.inertia, "centers": np.round(clusters.centers, 6).tolist()}

    traversal = default_traversal(z, cfg.steps)
    tframes = decode_frames(run.decode, traversal)
    report.add("Latent traversal", [_save(plots.traversal_figure(tframes, traversal), outdir, "traversal.png")],
               "Images decoded at rotation 0 and centre 0 from the 5th to the 95th percentile of the "
               "posterior means (cryovae traverse writes the frames as .mrcs and GIF).")


def _class_section(run, outdir: Path, report: Report, lat, star) -> None:
    """classes.mrcs / .star / .png and class_NNN.star for a model that assigns classes."""
    from cryovae.analysis.class_averages import (
        class_averages,
        run_classes,
        write_class_files,
        write_class_stars,
    )

    classes = run_classes(lat)
    if classes is None:
        return
    avg = class_averages(run.model, classes, run.pixel_size)
    if avg is None:
        return
    write_class_files(avg, outdir / RunDir.CLASS_STACK, outdir / RunDir.CLASS_STAR, outdir / RunDir.CLASS_PNG)
    stars = write_class_stars(outdir, star.blocks, star.data_block, classes, avg.k)
    report.add(f"2D classes (K = {avg.k})", [RunDir.CLASS_PNG],
               "Each class's canonical image (the generator at rotation 0, centre 0, the class's mixture "
               "mean), largest class first, with its particle count. classes.mrcs holds them in class "
               "order, classes.star their shares; class_NNN.star are each class's particles.",
               [RunDir.CLASS_STACK, RunDir.CLASS_STAR] + [p.name for p in stars])
    report.summary["classes"] = {"k": avg.k, "counts": [int(c) for c in avg.counts]}


def _pose_section(outdir: Path, report: Report, lat, pixel_size_A: float) -> None:
    from cryovae.analysis import plots

    pic = _save(plots.pose_histograms(lat.psi_deg, lat.origin_A, lat.prob, pixel_size_A), outdir, "poses.png")
    report.add("Inferred poses", [pic], "RELION convention: rlnAnglePsi in degrees, rlnOriginX/YAngst in Å.")


def _learning_section(outdir: Path, report: Report, metrics_path: Path) -> None:
    from cryovae.analysis import plots

    if not metrics_path.exists():
        log.warning("%s missing: no learning curve", metrics_path)
        return
    metrics = pd.read_csv(metrics_path)
    report.add("Learning curve", [_save(plots.learning_curve(metrics), outdir, "learning_curve.png")],
               "ELBO, reconstruction and KL terms per particle and epoch, as logged in metrics.csv.")
    if "epoch" in metrics.columns:
        report.summary["epochs"] = int(metrics["epoch"].max())


def _example_section(run, outdir: Path, cfg: AnalyzeConfig, report: Report, lat) -> None:
    from cryovae.analysis import plots

    n = len(lat.z_mean)
    idx = example_indices(np.asarray(lat.z_mean), cfg.n_examples)
    images = load_particle_images(run, idx, n)
    recon = run.reconstruct(images)
    pose_free = run.decode(np.asarray(lat.z_mean[idx], np.float32))
    pic = _save(plots.example_sheet(images, recon, pose_free, list(idx + 1)), outdir, "examples.png")
    report.add("Example particles", [pic],
               "Preprocessed input, its reconstruction at the inferred pose, and the pose-free image "
               "(the generator at rotation 0, centre 0). Numbers are rows of particles.star.")
    report.summary["examples"] = [int(i + 1) for i in idx]


#: particles whose rotation sequences the capsule metrics of ``analyze`` are measured on
CAPSULE_PARTICLES = 256


def _capsule_section(run, outdir: Path, report: Report, lat) -> None:
    """capsule_map.png, capsule_roll.png and the capsule metrics (summary.json ``capsules``), for a
    model with capsules (:meth:`cryovae.models.PoseVAE.capsule_sequence`; others: nothing)."""
    from cryovae.analysis.capsules import capsule_section, has_capsules

    model = getattr(run, "model", None)  # a TrainedRun has one (a stand-in run may not)
    if model is None or not has_capsules(model, run.box, run.device):
        return
    n = len(lat.z_mean)
    idx = np.unique(np.linspace(0, n - 1, min(n, CAPSULE_PARTICLES)).round().astype(int))
    section = capsule_section(run.model, load_particle_images(run, idx, n), idx, run.device)
    if section is None:
        return
    figures, scores, caption = section
    report.add("Capsules", [_save(fig, outdir, name) for name, fig in figures.items()], caption)
    report.summary["capsules"] = scores


def render_html(report: Report) -> str:
    """A self-contained HTML page: one section per picture group, links to the other files."""
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(report.title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd;margin:4px 0}figure{margin:0}"
             "code{background:#f4f4f4}</style></head><body>",
             f"<h1>{esc(report.title)}</h1>",
             "<p>" + esc(", ".join(f"{k}: {v}" for k, v in report.summary.items()
                                  if k in ("n_particles", "zdim", "model", "epochs"))) + "</p>"]
    for title, pictures, caption in report.sections:
        parts.append(f"<h2>{esc(title)}</h2>")
        for p in pictures:
            parts.append(f'<figure><img src="{esc(p)}" alt="{esc(title)}"></figure>')
        parts.append(f"<p>{esc(caption)}</p>")
    if report.files:
        parts.append("<h2>Files</h2><ul>")
        parts += [f'<li><a href="{esc(f)}">{esc(f)}</a></li>' for f in report.files + ["summary.json"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
