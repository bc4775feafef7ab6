"""napari reader: a particle file (.mrcs/.mrc stack, .star, .cs) as one image stack layer.

The layer has one slider over particles (axis 0), is scaled by the pixel size (Å) and carries
the particle table in ``layer.metadata["table"]`` (a :class:`pandas.DataFrame`, one row per
particle, optics columns merged in). Images are read with :func:`cryovae.io.read_particles`;
stacks larger than :data:`EAGER_BYTES` stay on disk as a dask array read chunk by chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.io import ParticleStack, read_particles

log = logging.getLogger(__name__)

SUFFIXES = (".mrcs", ".mrc", ".star", ".cs")
#: stacks up to this many bytes are read into memory; larger ones become dask arrays.
EAGER_BYTES = 64 * 2**20
#: bytes per dask chunk of a lazy stack.
CHUNK_BYTES = 16 * 2**20
#: particles used to set the initial contrast limits.
CONTRAST_SAMPLE = 64


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


def read_particle_layers(path: str | list[str]) -> list[tuple]:
    """Read a particle file into one image-stack layer (see the module docstring).

    Raises :class:`cryovae.errors.InputFileError` (one line) for a bad file or missing stack.
    """
    if isinstance(path, list):
        path = path[0]
    stack = read_particles(path)
    if len(stack) == 0:
        raise CryovaeError(f"{path}: no particles")
    return [particle_layer(stack)]
