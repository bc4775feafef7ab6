"""napari reader: particle files, micrographs and RELION coordinate stars.

* A particle file (.mrcs/.mrc stack, particle .star, .cs) opens as one image stack layer with
  one slider over particles (axis 0), scaled by the pixel size (Å), carrying the particle table
  in ``layer.metadata["table"]`` (a :class:`pandas.DataFrame`, one row per particle, optics
  columns merged in). Images are read with :func:`cryovae.io.read_particles`; stacks larger than
  :data:`EAGER_BYTES` stay on disk as a dask array read chunk by chunk.
* A ``.mrc`` holding one 2-D image is a micrograph (:func:`cryovae.io.read_micrograph`): one
  image layer **in pixels** (scale 1, so coordinate stars land on it), with
  ``metadata["path"]`` and ``metadata["apix"]`` (Å/px from the header, None when unset).
* A ``.star`` whose coordinate block has ``rlnCoordinateX``/``Y`` but no ``rlnImageName`` is a
  coordinate star (:func:`cryovae.io.read_coordinates`): a Points layer at ``(row, col) =
  (rlnCoordinateY, rlnCoordinateX)`` with features ``fom`` and ``psi_deg`` (``-999`` read as
  NaN) and the star's other columns, plus a Vectors layer of the psi directions when known
  (:mod:`napari_plugin.finder_points`). A particle star (with ``rlnImageName``) stays a stack.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io import Micrograph, ParticleStack, read_coordinates, read_micrograph, read_particles
from napari_plugin.finder_points import border_colours, points_from_star, psi_vectors

log = logging.getLogger(__name__)

SUFFIXES = (".mrcs", ".mrc", ".star", ".cs")
#: stacks up to this many bytes are read into memory; larger ones become dask arrays.
EAGER_BYTES = 64 * 2**20
#: bytes per dask chunk of a lazy stack.
CHUNK_BYTES = 16 * 2**20
#: particles used to set the initial contrast limits.
CONTRAST_SAMPLE = 64
#: point size (micrograph pixels) of a coordinate star opened on its own (no particle size known).
STAR_POINT_SIZE = 48.0
#: pixels of a micrograph sampled for its initial contrast limits.
MICROGRAPH_CONTRAST_PIXELS = 1_000_000


def get_reader(path: str | list[str]):
    """npe2 reader hook: :func:`read_particle_layers` for a particle file, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(str(path)).suffix.lower() not in SUFFIXES:
        return None
    return read_particle_layers


def lazy_images(stack: ParticleStack, chunk: int | None = None):
    """A dask array (n, box, box) float32 whose chunks call ``stack.images`` when computed.

    chunk : particles per chunk (default: about :data:`CHUNK_BYTES` per chunk).
    """
    import dask.array as da

    box = stack.box
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (box * box * 4))
    index = da.arange(len(stack), chunks=chunk)
    return index.map_blocks(lambda idx: stack.images(idx), dtype=np.float32, new_axis=[1, 2],
                            chunks=(index.chunks[0], (box,), (box,)))


def particle_array(stack: ParticleStack, eager_bytes: int = EAGER_BYTES, chunk: int | None = None):
    """All images of ``stack``: a numpy array when small, else :func:`lazy_images` (``chunk``
    particles per chunk)."""
    nbytes = len(stack) * stack.box * stack.box * 4
    if nbytes <= eager_bytes:
        return stack.images(slice(None))
    log.info("%s: %.0f MiB of particles, reading lazily", stack.path, nbytes / 2**20)
    return lazy_images(stack, chunk)


def contrast_range(images: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """Percentile display range of a few images (a never-empty interval)."""
    a, b = (float(v) for v in np.percentile(np.asarray(images, np.float64), [lo, hi]))
    if not b > a:
        b = a + 1.0
    return a, b


def stack_pixel_size(stack: ParticleStack) -> float | None:
    """Å/pixel of the stack, or None (logged) when unknown or differing between optics groups."""
    try:
        return stack.pixel_size
    except CryovaeError as exc:
        log.warning("%s; showing the stack in pixels", exc)
        return None


def particle_layer(stack: ParticleStack, name: str | None = None, eager_bytes: int = EAGER_BYTES,
                   chunk: int | None = None) -> tuple:
    """The LayerData tuple ``(data (n, box, box), kwargs, "image")`` of a particle stack
    (lazy above ``eager_bytes``, ``chunk`` particles per dask chunk)."""
    stack.check_stacks()
    data = particle_array(stack, eager_bytes, chunk)
    first = stack.images(slice(0, min(len(stack), CONTRAST_SAMPLE)))
    apix = stack_pixel_size(stack)
    scale = (1.0, apix or 1.0, apix or 1.0)
    meta = {"table": stack.table, "path": str(stack.path), "source_kind": stack.source_kind,
            "pixel_size": apix, "box": stack.box}
    kwargs = {"name": name or stack.path.stem, "scale": scale, "metadata": meta,
              "contrast_limits": contrast_range(first), "colormap": "gray",
              "axis_labels": ("particle", "y", "x")}
    if apix is not None:
        kwargs["units"] = ("pixel", "angstrom", "angstrom")
    return data, kwargs, "image"


def micrograph_layer(mic: Micrograph, name: str | None = None) -> tuple:
    """The LayerData tuple ``(data (H, W), kwargs, "image")`` of a micrograph, in pixels."""
    flat = mic.data.reshape(-1)
    step = max(1, flat.size // MICROGRAPH_CONTRAST_PIXELS)
    meta = {"path": str(mic.path), "apix": mic.apix}
    kwargs = {"name": name or mic.path.stem, "metadata": meta, "colormap": "gray",
              "contrast_limits": contrast_range(flat[::step]), "axis_labels": ("y", "x")}
    return mic.data, kwargs, "image"


def coordinate_layers(table, path: str | Path, size: float = STAR_POINT_SIZE) -> list[tuple]:
    """LayerData of a coordinate star's table: the Points layer (rings of ``size`` pixels) and,
    when some psi is known, a Vectors layer of the psi directions (``size / 2`` long)."""
    stem = Path(path).stem
    data, features = points_from_star(table)
    points = (data, {"name": stem, "features": features, "size": size, "face_color": "transparent",
                     "border_color": border_colours(features), "border_width": 0.08, "border_width_is_relative": True,
                     "metadata": {"path": str(path)}}, "points")
    vectors = psi_vectors(data, features["psi_deg"].to_numpy(), size / 2)
    if not len(vectors):
        return [points]
    return [points, (vectors, {"name": f"{stem} psi", "edge_color": "yellow", "edge_width": max(size / 10, 1.0),
                               "vector_style": "line", "length": 1.0}, "vectors")]


def _read_mrc(path: str) -> list[tuple]:
    """A one-image .mrc as a micrograph, a stack as particles."""
    try:
        mic = read_micrograph(path)
    except InputFileError as mic_error:
        try:
            stack = read_particles(path)
        except InputFileError:
            raise mic_error from None
        if len(stack) <= 1:
            raise mic_error from None
        return [particle_layer(stack)]
    return [micrograph_layer(mic)]


def _read_star(path: str) -> list[tuple]:
    """A particle star as a stack; else a coordinate star as points."""
    try:
        stack = read_particles(path)
    except InputFileError as particle_error:
        try:
            table = read_coordinates(path)
        except InputFileError:
            raise particle_error from None
        if "rlnImageName" in table.columns:  # a particle star whose stacks are missing
            raise particle_error from None
        return coordinate_layers(table, path)
    if len(stack) == 0:
        raise CryovaeError(f"{path}: no particles")
    return [particle_layer(stack)]


def read_particle_layers(path: str | list[str]) -> list[tuple]:
    """Read a particle file, micrograph or coordinate star into layers (see the module
    docstring).

    Raises :class:`cryovae.errors.InputFileError` (one line) for a bad file or missing stack.
    """
    if isinstance(path, list):
        path = path[0]
    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".mrc":
        return _read_mrc(path)
    if suffix == ".star":
        return _read_star(path)
    stack = read_particles(path)
    if len(stack) == 0:
        raise CryovaeError(f"{path}: no particles")
    return [particle_layer(stack)]
