"""Per-particle preprocessing: Fourier crop, contrast inversion, normalisation, circular mask."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from cryovae.data.fourier import check_crop_box, fourier_crop
from cryovae.errors import CryovaeError, InputFileError
from cryovae.io.bad_particles import bad_masks

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("background", "image", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw particles become model input.

    box : output size in pixels (Fourier crop; None keeps the input size).
    invert : multiply by -1 (RELION-style white particles from black ones or back).
    normalize : ``"background"`` — subtract the mean and divide by the standard deviation of
        the pixels outside a circle of radius ``bg_radius`` (as RELION's extraction does);
        ``"image"`` — the same over the whole image; ``"none"``.
    bg_radius : background circle radius in pixels of the output box (None: 0.75 * box / 2,
        RELION's default).
    mask_radius : radius in output pixels of a soft circular mask applied last (None: no mask).
    mask_soft : width in pixels of the mask's raised-cosine edge.
    """

    box: int | None = None
    invert: bool = False
    normalize: str = "background"
    bg_radius: float | None = None
    mask_radius: float | None = None
    mask_soft: float = 3.0

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE_MODES:
            raise CryovaeError(f"--normalize {self.normalize}: choose one of {', '.join(NORMALIZE_MODES)}")
        if self.box is not None and self.box < 2:
            raise CryovaeError(f"--box {self.box}: must be at least 2 pixels")
        if self.mask_radius is not None and self.mask_radius <= 0:
            raise CryovaeError(f"--mask radius {self.mask_radius}: must be positive")
        if self.bg_radius is not None and self.bg_radius <= 0:
            raise CryovaeError(f"background radius {self.bg_radius}: must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    def output_box(self, size: int) -> int:
        """Output size for ``size``-pixel input (checks that the crop is possible)."""
        if self.box is None:
            return size
        check_crop_box(size, self.box)
        return self.box


def radius_map(box: int) -> np.ndarray:
    """``(box, box)`` distance of each pixel from the centre ``(box//2, box//2)``, in pixels."""
    idx = np.arange(box) - box // 2
    return np.hypot(idx[None, :], idx[:, None])


def soft_circular_mask(box: int, radius: float, soft: float = 3.0) -> np.ndarray:
    """``(box, box)`` float32 mask: 1 inside ``radius``, a raised-cosine fall to 0 over ``soft`` px."""
    r = radius_map(box)
    if soft <= 0:
        return (r <= radius).astype(np.float32)
    edge = np.clip((r - radius) / soft, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * edge))).astype(np.float32)


def normalize_images(images: np.ndarray, mode: str = "background", bg_radius: float | None = None) -> np.ndarray:
    """Zero mean, unit standard deviation per image, from the background or the whole image.

    Parameters
    ----------
    images : ``(n, box, box)`` float.
    mode : ``"background"`` (pixels farther than ``bg_radius`` from the centre), ``"image"``
        or ``"none"``.
    bg_radius : pixels; None gives ``0.75 * box / 2``.

    Returns
    -------
    np.ndarray
        float32 ``(n, box, box)``. An image whose reference pixels are constant is only
        centred (its standard deviation is taken as 1).
    """
    arr = np.asarray(images, dtype=np.float32)
    if mode == "none":
        return arr.copy()
    box = arr.shape[-1]
    flat = arr.reshape(len(arr), -1)
    if mode == "background":
        radius = 0.75 * box / 2 if bg_radius is None else bg_radius
        outside = radius_map(box).ravel() > radius
        if not outside.any():
            raise CryovaeError(f"background radius {radius:g} px leaves no background in a {box} px box")
        ref = flat[:, outside].astype(np.float64)
    elif mode == "image":
        ref = flat.astype(np.float64)
    else:
        raise CryovaeError(f"normalize mode {mode!r}: choose one of {', '.join(NORMALIZE_MODES)}")
    mean = ref.mean(axis=1)
    std = ref.std(axis=1)
    std = np.where(std > 0, std, 1.0)
    return ((arr - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


class ConstantImages:
    """Finds constant images (one value in every pixel) batch by batch while a stack is read.

    Parameters
    ----------
    source : the particle file, named in messages.
    rows : (n,) 0-based rows of the particles in that file (``ParticleStack.rows``).

    Feed each raw batch to :meth:`add`, then call :meth:`check`.
    """

    def __init__(self, source: str, rows: np.ndarray):
        self.source = source
        self.rows = np.asarray(rows)
        self.constant = np.zeros(len(self.rows), dtype=bool)
        self.values = np.zeros(len(self.rows))

    def add(self, idx: np.ndarray, images: np.ndarray) -> None:
        """Note batch ``images`` (b, N, N) of particles ``idx`` (b,) (0-based positions)."""
        _, constant = bad_masks(images)
        self.constant[idx] = constant
        self.values[idx] = np.asarray(images).reshape(len(images), -1)[:, 0]

    def check(self) -> None:
        """Refuse a stack of constant images; log one warning line for a few.

        Raises
        ------
        InputFileError
            Every image is constant: ``"PATH: every image is constant (all pixels 0.0): nothing to learn"``.
        """
        k = int(self.constant.sum())
        if k == 0:
            return
        if k == len(self.constant):
            values = np.unique(self.values)
            what = f"all pixels {float(values[0])!r}" if len(values) == 1 else f"{len(values)} values, e.g. {float(values[0])!r}"
            raise InputFileError(f"{self.source}: every image is constant ({what}): nothing to learn")
        rows = self.rows[self.constant] + 1
        shown = ", ".join(str(int(r)) for r in rows[:5]) + (f" and {k - 5} more" if k > 5 else "")
        log.warning("%s: %d of %d particles are constant images (rows %s); they carry no signal "
                    "(--skip-bad leaves them out)", self.source, k, len(self.constant), shown)


def check_finite(images: np.ndarray, source: str = "images", first_index: int = 0) -> None:
    """Raise :class:`CryovaeError` naming ``source`` and the particle if a pixel is NaN or inf."""
    finite = np.isfinite(np.asarray(images).reshape(len(images), -1)).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0]) + first_index
        raise CryovaeError(f"{source}: particle {k + 1} has NaN or infinite pixels")


def preprocess_images(images: np.ndarray, cfg: PreprocessConfig, source: str = "images",
                      first_index: int = 0) -> np.ndarray:
    """Fourier-crop, invert, normalise and mask a batch of particles.

    Parameters
    ----------
    images : ``(n, N, N)`` raw images (any real dtype).
    cfg : what to do.
    source, first_index : named in the error for NaN/infinite pixels (file, 0-based index of
        ``images[0]`` in it).

    Returns
    -------
    np.ndarray
        float32 ``(n, box, box)``; the pixel size becomes ``apix * N / box``.
    """
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise CryovaeError(f"{source}: expected (n, N, N) square images, got shape {arr.shape}")
    check_finite(arr, source, first_index)
    box = cfg.output_box(arr.shape[-1])
    out = fourier_crop(arr, box)
    if cfg.invert:
        out = -out
    out = normalize_images(out, cfg.normalize, cfg.bg_radius)
    if cfg.mask_radius is not None:
        out = out * soft_circular_mask(box, cfg.mask_radius, cfg.mask_soft)
    return out.astype(np.float32, copy=False)
