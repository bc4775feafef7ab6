"""A 2D-classification baseline that needs no training: rotation- and shift-invariant features,
PCA, then k-means (or a Gaussian mixture).

The feature of an image ``y`` (box ``N``) is the polar-Fourier power spectrum:

1. ``A(k) = |FFT2(y)(k)|``: the amplitude spectrum does not change when ``y`` is shifted (a
   shift only changes the phases; exactly so for a circular shift, nearly so for a particle
   shifted inside its box).
2. ``A`` resampled on a polar grid ``(r, phi)`` (bilinear), ``r = 1 .. r_max`` pixels of
   frequency, ``phi`` on the half circle ``[0, pi)`` (``A(-k) = A(k)`` for a real image).
   Turning ``y`` by an angle turns ``A`` by it: a circular shift along ``phi``.
3. ``|FFT_phi(A(r, .))|`` for angular harmonics ``0 .. max_harmonic``: the magnitude of the
   Fourier series along the angle does not change under that circular shift, so the feature
   is invariant to in-plane rotation (to interpolation error) and to shifts.

Harmonic ``m`` on the half circle is a ``2m``-fold pattern of ``A``. The magnitudes are reduced
by PCA as they are (not standardised: the low frequencies, where the signal is, carry the
variance; standardising or a log gave every noise-dominated feature equal weight and did worse
on ``cryovae simulate classes`` sets) and clustered with
:func:`cryovae.analysis.clustering.cluster`. Being invariant also to mirroring
(``A`` of a mirrored image is ``A`` mirrored, which keeps ``|FFT_phi|``), it cannot tell a
molecule from its mirror image, and the phases it drops carry part of the shape: this is the
kind of baseline a pose-inferring model should beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryovae.analysis.clustering import Clusters, cluster
from cryovae.analysis.embedding import fit_pca
from cryovae.errors import CryovaeError


@dataclass(frozen=True)
class InvariantConfig:
    """Options of :func:`invariant_features` and :func:`invariant_classes`.

    Attributes
    ----------
    n_angles : samples of the half circle of the polar grid.
    max_radius : largest frequency radius used, as a fraction of Nyquist (``N/2`` pixels of
        frequency); the low frequencies carry the shape, the high ones mostly noise.
    max_harmonic : highest angular harmonic kept (``< n_angles // 2``).
    n_components : principal components kept before clustering.
    method : clustering of the components, ``"kmeans"`` or ``"gmm"``.
    """

    n_angles: int = 64
    max_radius: float = 0.6
    max_harmonic: int = 12
    n_components: int = 8
    method: str = "kmeans"

    def __post_init__(self) -> None:
        if self.n_angles < 8:
            raise CryovaeError(f"n_angles must be >= 8, got {self.n_angles}")
        if not 0 < self.max_radius <= 1:
            raise CryovaeError(f"max_radius must be in (0, 1] (a fraction of Nyquist), got {self.max_radius}")
        if not 0 <= self.max_harmonic < self.n_angles // 2:
            raise CryovaeError(f"max_harmonic must be in 0..{self.n_angles // 2 - 1}, got {self.max_harmonic}")
        if self.n_components < 1:
            raise CryovaeError(f"n_components must be >= 1, got {self.n_components}")
        if self.method not in ("kmeans", "gmm"):
            raise CryovaeError(f"method must be kmeans or gmm, got {self.method!r}")


def invariant_features(images: np.ndarray, config: InvariantConfig = InvariantConfig()) -> np.ndarray:
    """Rotation- and shift-invariant polar-Fourier power-spectrum features.

    Parameters
    ----------
    images : (n, N, N) particle images (any units; float).
    config : grid and harmonics.

    Returns
    -------
    (n, n_radii * (max_harmonic + 1)) float64, ``|FFT_phi(A(r, phi))| / n_angles`` with
    ``n_radii = max(1, floor(max_radius * N / 2))`` radii ``1 .. n_radii`` (frequency pixels),
    radius-major.
    """
    y = np.asarray(images, dtype=np.float64)
    if y.ndim != 3 or y.shape[1] != y.shape[2]:
        raise ValueError(f"images must be (n, N, N), got shape {y.shape}")
    n, box = y.shape[0], y.shape[1]
    amp = np.abs(np.fft.fftshift(np.fft.fft2(y), axes=(1, 2)))  # centre (zero frequency) at box//2
    n_radii = max(1, int(np.floor(config.max_radius * box / 2)))
    radii = np.arange(1, n_radii + 1, dtype=np.float64)
    phi = np.pi * np.arange(config.n_angles) / config.n_angles
    cols = box // 2 + radii[:, None] * np.cos(phi)[None]  # (n_radii, n_angles)
    rows = box // 2 + radii[:, None] * np.sin(phi)[None]
    polar = _bilinear(amp, rows, cols)  # (n, n_radii, n_angles)
    harmonics = np.abs(np.fft.rfft(polar, axis=-1))[..., : config.max_harmonic + 1] / config.n_angles
    return harmonics.reshape(n, -1)


def _bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of (n, N, N) ``images`` at fractional (rows, cols) (any shape, inside
    the box) -> (n, *rows.shape)."""
    box = images.shape[1]
    r0 = np.clip(np.floor(rows).astype(int), 0, box - 2)
    c0 = np.clip(np.floor(cols).astype(int), 0, box - 2)
    fr, fc = rows - r0, cols - c0
    return ((1 - fr) * (1 - fc) * images[:, r0, c0] + (1 - fr) * fc * images[:, r0, c0 + 1]
            + fr * (1 - fc) * images[:, r0 + 1, c0] + fr * fc * images[:, r0 + 1, c0 + 1])


@dataclass(frozen=True, eq=False)
class InvariantClasses:
    """The baseline's classes.

    Attributes
    ----------
    labels : (n,) int64 1-based class of each image (in the order of ``clusters``).
    components : (n, n_components) the features' principal components.
    clusters : the clustering of ``components`` (0-based ``clusters.labels``).
    """

    labels: np.ndarray
    components: np.ndarray
    clusters: Clusters


def invariant_classes(images: np.ndarray, k: int, config: InvariantConfig = InvariantConfig(),
                      seed: int = 0) -> InvariantClasses:
    """Classify images into ``k`` classes without training: invariant features, PCA, clustering.

    Parameters
    ----------
    images : (n, N, N) particle images.
    k : number of classes.
    config : features, number of principal components, clustering method.
    seed : seed of the clustering.

    Returns
    -------
    InvariantClasses (``labels`` 1-based, as ``cryovae simulate classes``' truth and
    ``rlnClassNumber``).

    Raises
    ------
    CryovaeError : ``k`` out of range for the data (from :func:`cluster`).
    """
    feats = invariant_features(images, config)
    n_comp = min(config.n_components, feats.shape[1], len(feats))
    pca = fit_pca(feats, n_comp)
    comps = pca.transform(feats)
    clusters = cluster(comps, k, method=config.method, seed=seed)
    return InvariantClasses(labels=clusters.labels.astype(np.int64) + 1, components=comps, clusters=clusters)
