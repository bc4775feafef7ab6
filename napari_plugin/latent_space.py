"""What the latent explorer computes, without Qt: run sessions, plot views, decoded images.

Everything here takes a :class:`cryovae.inference.TrainedRun` (or a ``decode(z) -> images``
callable) and numpy arrays, so it is tested without a viewer. Images are ``(box, box)``
float32 in the model's pixels (``run.pixel_size`` Å each); latents are ``(n, zdim)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath

from cryovae.analysis import (
    ClassAverages,
    Traversal,
    class_averages,
    decode_frames,
    dims_traversal,
    fit_pca,
    pc_traversal,
    run_classes,
)
from cryovae.errors import CryovaeError
from cryovae.geometry import apply_relion_alignment
from cryovae.inference import Latents, TrainedRun
from cryovae.io import ParticleStack, read_particles, read_run_particles
from cryovae.workflows import SelectionCriteria, selection_mask, write_selection

log = logging.getLogger(__name__)

Decoder = Callable[[np.ndarray], np.ndarray]

#: the plot mode of the principal components (other modes are latent pairs ``(i, j)``).
PCA_MODE = "pca"


# --------------------------------------------------------------------------- session
@dataclass
class Session:
    """A loaded run: model, per-particle latents and (when found) its particle images.

    Attributes
    ----------
    run : the trained run.
    latents : posterior summaries of the particles, or None until encoded.
    stack : the particle file the latents belong to, or None when it was not found.
    """

    run: TrainedRun
    latents: Latents | None
    stack: ParticleStack | None

    @property
    def zdim(self) -> int:
        return self.run.zdim

    @property
    def n_particles(self) -> int:
        return 0 if self.latents is None else len(self.latents)


def load_session(rundir: str | Path, particles: str | Path | None = None, device: str = "cpu") -> Session:
    """Load a run directory, its latents.npz and its particle file.

    Parameters
    ----------
    rundir : a ``cryovae train`` output directory.
    particles : the particle file the run's latents belong to (default: the training file
        recorded in config.yaml, when it still exists).
    device : torch device for decoding.

    Raises
    ------
    CryovaeError
        Not a run directory, or a particle file whose count differs from the latents.
    """
    run = TrainedRun.load(rundir, device=device)
    latents = run.latents() if run.run.latents_file.exists() else None
    if particles is None:
        stack = read_run_particles(run.config.input, missing_ok=True)  # read as train read them
    else:
        stack = read_particles(particles)
    if stack is not None and latents is not None and len(stack) != len(latents):
        raise CryovaeError(f"{stack.path}: {len(stack)} particles but {run.run.latents_file} "
                           f"has {len(latents)}; choose the run's particle file or encode this one")
    return Session(run=run, latents=latents, stack=stack)


def encode_session_stack(run: TrainedRun, stack: ParticleStack, batch_size: int = 128) -> Iterator[int | Latents]:
    """Encode every particle of ``stack`` with ``run`` (its own preprocessing), chunk by chunk.

    A generator: yields the number of particles done after each chunk, then the
    :class:`Latents` of the whole stack as its last item (made for a napari ``thread_worker``).
    """
    parts = []
    for idx, images in stack.chunks(batch_size):
        parts.append(run.encode(run.preprocess(images)))
        yield int(idx[-1]) + 1
    prob = None if parts[0].prob is None else np.concatenate([p.prob for p in parts])
    yield Latents.from_pose(np.concatenate([p.z_mean for p in parts]), np.concatenate([p.z_std for p in parts]),
                            np.concatenate([p.theta for p in parts]), np.concatenate([p.center_px for p in parts]),
                            run.pixel_size, prob=prob)


# --------------------------------------------------------------------------- sliders
def latent_ranges(z_mean: np.ndarray, lo: float = 0.5, hi: float = 99.5, pad: float = 0.15) -> np.ndarray:
    """(zdim, 2) slider range of each latent dimension: its lo..hi percentiles widened by ``pad``
    of their span on each side; ±3 (prior std units) around the value when the span is 0."""
    z_mean = np.asarray(z_mean, np.float64)
    a, b = np.percentile(z_mean, [lo, hi], axis=0)
    span = b - a
    flat = ~(span > 1e-6)
    a = np.where(flat, a - 3.0, a - pad * span)
    b = np.where(flat, b + 3.0, b + pad * span)
    return np.stack([a, b], axis=1)


def slider_value(position: int, value_range: tuple[float, float], steps: int) -> float:
    """Latent value of integer slider ``position`` in ``0..steps``."""
    a, b = value_range
    return float(a + (b - a) * position / steps)


def slider_position(value: float, value_range: tuple[float, float], steps: int) -> int:
    """Nearest integer slider position (clipped to ``0..steps``) of a latent value."""
    a, b = value_range
    return int(np.clip(round((value - a) / (b - a) * steps), 0, steps))


# --------------------------------------------------------------------------- plot views
@dataclass(frozen=True)
class LatentView:
    """A 1-D or 2-D picture of the latent space and the way back from it to a latent vector.

    Attributes
    ----------
    coords : (n, 1) (histogram of z1 when zdim = 1) or (n, 2) plotted coordinates.
    names : axis names, e.g. ``("z1",)``, ``("z1", "z3")`` or ``("PC1", "PC2")``.
    dims : the latent dimensions plotted (pairs), or None for principal components.
    mean, components : the PCA basis, (zdim,) and (2, zdim), for principal components.
    """

    coords: np.ndarray
    names: tuple[str, ...]
    dims: tuple[int, ...] | None = None
    mean: np.ndarray | None = None
    components: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return self.coords.shape[1]

    def project(self, z: np.ndarray) -> np.ndarray:
        """Plot coordinates (ndim,) of one latent vector z (zdim,)."""
        z = np.asarray(z, np.float64)
        if self.dims is not None:
            return z[list(self.dims)]
        return (z - self.mean) @ self.components.T

    def to_latent(self, point, z_current: np.ndarray) -> np.ndarray:
        """The latent vector at plot point ``point`` (ndim,) that keeps ``z_current`` (zdim,) in
        every direction the plot does not show."""
        z = np.array(z_current, np.float64)
        point = np.atleast_1d(np.asarray(point, np.float64))[: self.ndim]
        if self.dims is not None:
            z[list(self.dims)] = point
            return z
        return z + (point - self.project(z)) @ self.components

    def nearest(self, point) -> int:
        """Index of the particle plotted nearest ``point`` (axes scaled by their spread)."""
        point = np.atleast_1d(np.asarray(point, np.float64))[: self.ndim]
        spread = self.coords.std(axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        d = (((self.coords - point) / spread) ** 2).sum(axis=1)
        return int(np.argmin(d))


def plot_modes(zdim: int) -> list[str | tuple[int, int]]:
    """Views offered for ``zdim`` latents: z1 (1-D), (z1, z2) (2-D), PCA then every pair (more)."""
    if zdim <= 0:
        return []
    if zdim == 1:
        return [(0, 0)]
    if zdim == 2:
        return [(0, 1)]
    return [PCA_MODE] + [(i, j) for i in range(zdim) for j in range(i + 1, zdim)]


def mode_label(mode) -> str:
    return "PCA (PC1, PC2)" if mode == PCA_MODE else (
        f"z{mode[0] + 1}" if mode[0] == mode[1] else f"z{mode[0] + 1} vs z{mode[1] + 1}")


def latent_view(z_mean: np.ndarray, mode) -> LatentView:
    """The :class:`LatentView` of posterior means ``z_mean`` (n, zdim) in plot ``mode``
    (one of :func:`plot_modes`)."""
    z_mean = np.asarray(z_mean, np.float64)
    if mode == PCA_MODE:
        pca = fit_pca(z_mean, 2)
        if pca.components.shape[0] < 2:
            raise CryovaeError("PCA needs at least two particles and two latent dimensions")
        return LatentView(coords=pca.transform(z_mean), names=("PC1", "PC2"), mean=pca.mean,
                          components=pca.components)
    i, j = mode
    if i == j:
        return LatentView(coords=z_mean[:, [i]], names=(f"z{i + 1}",), dims=(i,))
    return LatentView(coords=z_mean[:, [i, j]], names=(f"z{i + 1}", f"z{j + 1}"), dims=(i, j))


# --------------------------------------------------------------------------- images
def decode_one(decode: Decoder, z: np.ndarray) -> np.ndarray:
    """The pose-free image (box, box) of one latent vector z (zdim,)."""
    return np.asarray(decode(np.asarray(z, np.float32)[None]), np.float32)[0]


def decoded_range(decode: Decoder, z_mean: np.ndarray, steps: int = 5) -> tuple[float, float]:
    """A display range that holds the decoded images over the latent space: min..max of the
    images at the 5..95th percentile of each dimension (others at the median)."""
    z_mean = np.asarray(z_mean, np.float64)
    if z_mean.shape[1] == 0:
        img = decode_one(decode, np.zeros(0))
        return float(img.min()), float(max(img.max(), img.min() + 1e-6))
    frames = decode_frames(decode, dims_traversal(z_mean, [0], steps))
    for d in range(1, z_mean.shape[1]):
        frames = np.concatenate([frames, decode_frames(decode, dims_traversal(z_mean, [d], steps))])
    lo, hi = float(frames.min()), float(frames.max())
    return lo, hi if hi > lo else lo + 1e-6


def traversal_for(z_mean: np.ndarray, mode, steps: int) -> Traversal:
    """The traversal matching plot ``mode``: a row along z (1-D), a grid over the two plotted
    dimensions or the first two principal components."""
    if mode == PCA_MODE:
        return pc_traversal(z_mean, (0, 1), steps)
    i, j = mode
    return dims_traversal(z_mean, [i] if i == j else [i, j], steps)


def traversal_stack(decode: Decoder, traversal: Traversal) -> np.ndarray:
    """Decoded frames as a stack: (cols, box, box) for one row, (rows, cols, box, box) for a grid."""
    frames = decode_frames(decode, traversal)
    rows, cols = traversal.shape
    if rows == 1:
        return frames
    return frames.reshape(rows, cols, *frames.shape[1:])


@dataclass(frozen=True)
class ParticlePanels:
    """One particle as the model sees it (each (box, box) float32, model pixels).

    raw : the particle after the run's preprocessing.
    reconstruction : the generator at the particle's latent, rotation and centre.
    pose_free : the generator at the particle's latent with theta = 0, c = 0.
    """

    raw: np.ndarray
    reconstruction: np.ndarray
    pose_free: np.ndarray


def particle_panels(session: Session, index: int) -> ParticlePanels:
    """Raw, reconstructed and pose-free images of particle ``index`` (0-based)."""
    if session.stack is None or session.latents is None:
        raise CryovaeError("no particles loaded: choose the run's particle file")
    if not 0 <= index < session.n_particles:
        raise CryovaeError(f"particle {index + 1} is out of range 1..{session.n_particles}")
    run, lat = session.run, session.latents
    raw = run.preprocess(session.stack.images(np.array([index])))[0]
    recon = run.decode(lat.z_mean[[index]], lat.theta[[index]], lat.center_px[[index]])[0]
    pose_free = run.decode(lat.z_mean[[index]])[0]
    return ParticlePanels(raw=raw, reconstruction=recon, pose_free=pose_free)


# --------------------------------------------------------------------------- selections
#: what the latent scatter can be coloured by, besides the latents themselves
COLOUR_POSE = ("psi", "prob")


def colour_options(session: Session) -> list[str]:
    """Quantities the 2-D latent plot can be coloured by: none, each z, psi, the pose
    probability (when the model writes one), each extra output (e.g. a class)."""
    lat = session.latents
    if lat is None:
        return []
    names = ["none", *(f"z{d + 1}" for d in range(session.zdim)), "psi"]
    if lat.prob is not None:
        names.append("prob")
    names += [name for name, v in lat.extras.items() if np.ndim(v) == 1]
    return names


def colour_values(session: Session, name: str) -> np.ndarray | None:
    """(n,) values of colour option ``name`` (None for "none")."""
    lat = session.latents
    if lat is None or name == "none":
        return None
    if name == "psi":
        return np.asarray(lat.psi_deg, np.float64)
    if name == "prob":
        return None if lat.prob is None else np.asarray(lat.prob, np.float64)
    if name.startswith("z") and name[1:].isdigit():
        return np.asarray(lat.z_mean[:, int(name[1:]) - 1], np.float64)
    if name in lat.extras:
        return np.asarray(lat.extras[name], np.float64)
    raise CryovaeError(f"unknown colour {name!r}")


def region_mask(view: LatentView, vertices: np.ndarray) -> np.ndarray:
    """(n,) bool: the particles of ``view`` inside a region drawn on the plot.

    vertices : (m, 2) plot coordinates of a box's corners or a lasso's path. On a 1-D view
        (histogram) the region is the interval of x it spans; on a 2-D view the polygon.
    """
    vertices = np.asarray(vertices, np.float64).reshape(-1, 2)
    if view.ndim == 1:
        lo, hi = vertices[:, 0].min(), vertices[:, 0].max()
        x = view.coords[:, 0]
        return (x >= lo) & (x <= hi)
    if len(vertices) < 3:
        return np.zeros(len(view.coords), bool)
    return PolygonPath(vertices).contains_points(view.coords)


@dataclass(frozen=True)
class SelectionImages:
    """What a selection looks like (each (box, box) float32, model pixels).

    average : the mean of the selected particles, preprocessed and aligned by their inferred
        pose (turned by -psi, shifted by -origin: RELION's --apply_transformation), over up to
        ``limit`` of them evenly spread through the selection; None without the particle file.
    decoded_mean : the generator's pose-free image at the selection's mean latent.
    used : how many particles the average holds.
    """

    average: np.ndarray | None
    decoded_mean: np.ndarray
    used: int


def selection_images(session: Session, mask: np.ndarray, limit: int = 400) -> SelectionImages:
    """:class:`SelectionImages` of the particles of ``mask`` (n,) bool (at least one)."""
    idx = np.flatnonzero(np.asarray(mask, bool))
    if not len(idx):
        raise CryovaeError("the selection is empty")
    run, lat = session.run, session.latents
    decoded = decode_one(run.decode, lat.z_mean[idx].mean(axis=0) if session.zdim else np.zeros(0))
    if session.stack is None:
        return SelectionImages(average=None, decoded_mean=decoded, used=0)
    some = idx[np.unique(np.linspace(0, len(idx) - 1, min(limit, len(idx))).round().astype(int))]
    images = run.preprocess(session.stack.images(some))
    aligned = [apply_relion_alignment(img, float(lat.psi_deg[i]), -lat.center_px[i], order=1)
               for img, i in zip(images, some, strict=True)]
    return SelectionImages(average=np.mean(aligned, axis=0).astype(np.float32), decoded_mean=decoded,
                           used=len(some))


def save_selection(session: Session, mask: np.ndarray, path: str | Path) -> Path:
    """Write the selected particles to ``path`` (.star or .cs) with the writer ``cryovae select``
    uses (:func:`cryovae.workflows.write_selection`)."""
    if session.stack is None or session.latents is None:
        raise CryovaeError("no particle file loaded: choose the run's particle file before saving a selection")
    return write_selection(session.stack, session.latents, mask, path)


# --------------------------------------------------------------------------- classes
def session_classes(session: Session) -> ClassAverages | None:
    """The class averages of a run whose model assigns classes (MCE-VAE), with the particles'
    counts from the session's latents; None for another run (or before there are latents)."""
    if session.latents is None:
        return None
    classes = run_classes(session.latents)
    if classes is None:
        return None
    return class_averages(session.run.model, classes, session.run.pixel_size)


def class_gallery(avg: ClassAverages, cols: int = 8, gap: int = 4) -> np.ndarray:
    """The class images tiled largest class first, ``cols`` per row, ``gap`` pixels apart (the
    gaps at the images' minimum): (rows (box + gap) - gap, cols' (box + gap) - gap) float32."""
    order = avg.order()
    k, box = len(order), avg.images.shape[-1]
    cols = min(cols, k)
    rows = -(-k // cols)
    out = np.full((rows * (box + gap) - gap, cols * (box + gap) - gap), float(avg.images.min()), np.float32)
    for i, c in enumerate(order):
        r, q = divmod(i, cols)
        out[r * (box + gap): r * (box + gap) + box, q * (box + gap): q * (box + gap) + box] = avg.images[c]
    return out


def class_mask(session: Session, classes) -> np.ndarray:
    """(n,) bool: the particles of the 1-based ``classes``, as ``cryovae select --class`` picks
    them (:func:`cryovae.workflows.selection_mask`)."""
    if session.latents is None:
        raise CryovaeError("no latents: encode the particles first")
    return selection_mask(session.latents, SelectionCriteria(classes=tuple(int(c) for c in classes)))
