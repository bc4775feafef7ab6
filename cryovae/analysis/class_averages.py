"""2D class averages of a class model's run, as RELION and cryoSPARC show 2D classes.

For a model that assigns classes (:meth:`cryovae.models.PoseVAE.class_images` is not None):

* ``classes.mrcs``: (K, box, box) float32, image k is class k + 1's canonical decoded image
  (pose 0, centre 0, no CTF), the model's pixel size in the header;
* ``classes.star``: a RELION ``_model.star``-like block ``model_classes`` with one row per class:
  ``rlnReferenceImage`` (``000001@classes.mrcs`` ...), ``rlnClassDistribution`` (the fraction of
  particles in the class) and ``cryovaeClassParticles`` (their number);
* ``classes.png``: the gallery, classes sorted by size (largest first), each with its number and
  particle count underneath;
* per-class particle stars ``class_001.star`` ... (``cryovae analyze``): the rows of
  particles.star in each class, with every column and the optics block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.analysis.clustering import split_by_cluster
from cryovae.models import CLASS_EXTRA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassAverages:
    """Class images and how many particles each class holds.

    images : (K, box, box) float32, index k is class k + 1.  counts : (K,) int64.
    pixel_size : Å per pixel of the images.
    """

    images: np.ndarray
    counts: np.ndarray
    pixel_size: float

    @property
    def k(self) -> int:
        return len(self.images)

    @property
    def fractions(self) -> np.ndarray:
        """(K,) share of the particles in each class (0 when there are none)."""
        total = int(self.counts.sum())
        return self.counts / total if total else np.zeros(self.k)

    def order(self) -> np.ndarray:
        """0-based classes from the largest to the smallest (ties: lower number first)."""
        return np.argsort(-self.counts, kind="stable")


def class_averages(model, classes: np.ndarray | None, pixel_size: float) -> ClassAverages | None:
    """The class averages of ``model`` (None when it assigns no classes).

    classes : (n,) 1-based class of each particle (``Latents.extras["class"]``), or None.
    pixel_size : Å per model pixel.
    """
    images = model.class_images()
    if images is None:
        return None
    images = np.asarray(images.detach().float().cpu().numpy(), np.float32)
    k = len(images)
    if classes is None:
        counts = np.zeros(k, np.int64)
    else:
        classes = np.asarray(classes, np.int64)
        counts = np.bincount(classes, minlength=k + 1)[1: k + 1].astype(np.int64)
    return ClassAverages(images=images, counts=counts, pixel_size=float(pixel_size))


def classes_table(avg: ClassAverages, stack_name: str) -> pd.DataFrame:
    """The ``model_classes`` block of classes.star (one row per class, class order)."""
    return pd.DataFrame({
        "rlnReferenceImage": [f"{k + 1:06d}@{stack_name}" for k in range(avg.k)],
        "rlnClassDistribution": np.round(avg.fractions, 6),
        "cryovaeClassParticles": avg.counts.astype(np.int64),
    })


def class_gallery(avg: ClassAverages, panel_inches: float = 1.3):
    """The classes as a gallery Figure: sorted by size (largest first), up to 8 per row, each
    image (row 0 at the top, as RELION shows it; its own grey scale) with ``class k`` and its
    particle count and share underneath."""
    import matplotlib
    from matplotlib.figure import Figure

    from cryovae.analysis.images import display_range

    order = avg.order()
    cols = min(avg.k, 8)
    rows = -(-avg.k // cols)
    fig = Figure(figsize=(panel_inches * cols + 0.2, (panel_inches + 0.45) * rows + 0.4), layout="constrained")
    fig.suptitle(f"{avg.k} classes, largest first", fontsize=10)
    cmap = matplotlib.colormaps["gray"]
    for i, k in enumerate(order):
        ax = fig.add_subplot(rows, cols, i + 1)
        vmin, vmax = display_range(avg.images[k])
        ax.imshow(avg.images[k], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"class {k + 1}\n{int(avg.counts[k])} ({100 * avg.fractions[k]:.0f}%)", fontsize=8)
    return fig


def write_class_files(avg: ClassAverages, stack: Path, star: Path, png: Path) -> list[Path]:
    """Write classes.mrcs, classes.star and classes.png (atomic); returns the paths."""
    from cryovae.analysis.output import save_figure
    from cryovae.io import write_stack, write_star

    stack, star, png = Path(stack), Path(star), Path(png)
    write_stack(stack, avg.images, avg.pixel_size)
    write_star(star, {"model_classes": classes_table(avg, stack.name)})
    save_figure(class_gallery(avg), png)
    log.info("wrote %d class averages to %s, %s and %s", avg.k, stack, star, png)
    return [stack, star, png]


def write_class_stars(outdir: Path, blocks: dict[str, pd.DataFrame], particles: str, classes: np.ndarray,
                      k: int) -> list[Path]:
    """class_001.star ...: each class's rows of the particle block (every column, input order)
    with the other blocks (optics) unchanged; one file per class that has particles. Files of an
    earlier analysis that this one does not write are removed."""
    from cryovae.io import write_star

    paths: list[Path] = []
    for j, table in enumerate(split_by_cluster(blocks[particles], np.asarray(classes) - 1, k)):
        if not len(table):
            continue
        out = {name: (table.reset_index(drop=True) if name == particles else df) for name, df in blocks.items()}
        path = Path(outdir) / f"class_{j + 1:03d}.star"
        write_star(path, out)
        paths.append(path)
    for old in sorted(Path(outdir).glob("class_*.star")):
        if old not in paths and old.stem[len("class_"):].isdigit():
            log.info("removing %s from an earlier analysis", old)
            old.unlink()
    return paths


def run_classes(latents) -> np.ndarray | None:
    """(n,) 1-based classes of a run's latents, or None when its model writes none."""
    values = latents.extras.get(CLASS_EXTRA)
    return None if values is None else np.asarray(values, np.int64)
