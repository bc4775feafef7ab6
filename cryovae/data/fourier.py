"""Fourier cropping (binning without aliasing)."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from cryovae.errors import CryovaeError


def check_crop_box(size: int, box: int) -> None:
    """Raise :class:`CryovaeError` unless ``size``-pixel images can be Fourier-cropped to ``box``.

    ``box`` must be positive, no larger than ``size`` and, when cropping is needed, even.
    """
    if box < 2:
        raise CryovaeError(f"--box {box}: must be at least 2 pixels")
    if box > size:
        raise CryovaeError(f"--box {box} is larger than the images ({size} px); Fourier cropping only shrinks")
    if box != size and box % 2:
        raise CryovaeError(f"--box {box} is odd; Fourier cropping needs an even box (try {box - 1} or {box + 1})")


def fourier_crop(images: np.ndarray, box: int) -> np.ndarray:
    """Keep the central ``box x box`` Fourier components of each image.

    Parameters
    ----------
    images : ``(n, N, N)`` or ``(N, N)`` real images.
    box : output size in pixels (``box <= N``; even unless equal to N).

    Returns
    -------
    np.ndarray
        float32 ``(n, box, box)`` (or ``(box, box)``). The pixel size grows by ``N / box``
        (``new_apix = apix * N / box``); the mean pixel value is preserved.
    """
    arr = np.asarray(images)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    n_px = arr.shape[-1]
    if arr.shape[-2] != n_px:
        raise CryovaeError(f"images are {arr.shape[-1]} x {arr.shape[-2]} pixels; only square images can be cropped")
    check_crop_box(n_px, box)
    if box == n_px:
        out = arr.astype(np.float32, copy=True)
        return out[0] if single else out
    # real-to-complex FFT in single precision: rows keep frequencies -box/2 .. box/2-1 (as the
    # centred box x box window of the full spectrum), columns 0 .. box/2
    spectrum = sfft.rfft2(arr.astype(np.float32, copy=False), axes=(-2, -1), workers=-1)
    half = box // 2
    rows = np.r_[0:box - half, n_px - half:n_px]
    cropped = spectrum[:, rows, :half + 1]
    out = sfft.irfft2(cropped, s=(box, box), axes=(-2, -1), workers=-1)
    out *= (box * box) / (n_px * n_px)
    out = out.astype(np.float32, copy=False)
    return out[0] if single else out


def cropped_pixel_size(pixel_size: float, size: int, box: int) -> float:
    """Å/pixel after Fourier-cropping ``size``-pixel images to ``box``: ``pixel_size * size / box``."""
    return float(pixel_size) * size / box


def fourier_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fourier-crop one ``(H, W)`` image (square or not, any parity) to ``shape = (h, w)``.

    Keeps the frequencies ``-(h//2) .. (h-1)//2`` of the rows and ``0 .. w//2`` of the columns
    (real FFT). Output pixel ``(i, j)`` samples the band-limited input at row ``i * H / h`` and
    column ``j * W / w`` (pixel 0 stays pixel 0); the mean value is preserved. ``h <= H``,
    ``w <= W`` (this only shrinks).

    Returns
    -------
    np.ndarray
        float32 ``(h, w)``.
    """
    arr = np.asarray(image)
    big_h, big_w = arr.shape
    h, w = int(shape[0]), int(shape[1])
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        raise CryovaeError(f"cannot Fourier-crop a {big_w} x {big_h} px image to {w} x {h} px")
    if (h, w) == (big_h, big_w):
        return arr.astype(np.float32, copy=True)
    spectrum = sfft.rfft2(arr.astype(np.float32, copy=False), workers=-1)
    rows = np.r_[0:(h + 1) // 2, big_h - h // 2:big_h]
    cropped = spectrum[rows, : w // 2 + 1]
    out = sfft.irfft2(cropped, s=(h, w), workers=-1)
    out *= (h * w) / (big_h * big_w)
    return out.astype(np.float32, copy=False)
