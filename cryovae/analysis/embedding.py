"""Low-dimensional views of the content latents: PCA (scikit-learn's, always) and UMAP (when
umap-learn is installed)."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PCA:
    """A principal-component basis of a point cloud.

    Attributes
    ----------
    mean : (d,) centre of the data.
    components : (k, d) orthonormal directions, by decreasing variance; each one's largest
        loading is positive, so the basis does not flip sign between runs.
    explained_variance : (k,) variance of the scores along each component.
    explained_ratio : (k,) that variance over the total variance.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scores of points ``x`` (n, d) -> (n, k)."""
        return (np.asarray(x, np.float64) - self.mean) @ self.components.T

    def inverse_transform(self, scores: np.ndarray) -> np.ndarray:
        """Points (n, d) with the given scores (n, k) (components beyond k at the mean)."""
        return self.mean + np.asarray(scores, np.float64) @ self.components


def fit_pca(x: np.ndarray, n_components: int | None = None) -> PCA:
    """Principal components of ``x`` (n, d), fitted by scikit-learn's PCA (full SVD).

    Each component's largest loading is made positive, so the basis is the same for the same
    cloud moved or mirrored, and between scikit-learn versions.

    Parameters
    ----------
    x : (n, d) points (e.g. posterior means of the content latents).
    n_components : how many to keep (default ``min(n, d)``).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"fit_pca needs an (n, d) array with n >= 1, got shape {x.shape}")
    k = min(x.shape) if n_components is None else min(int(n_components), *x.shape)
    mean = x.mean(axis=0)
    total = float(x.var(axis=0, ddof=1).sum()) if len(x) > 1 else 0.0
    if k < 1 or not total > 0:  # no spread to fit (one point, or all equal): the first k axes
        zeros = np.zeros(k)
        return PCA(mean=mean, components=np.eye(x.shape[1])[:k], explained_variance=zeros,
                   explained_ratio=zeros.copy())
    from sklearn.decomposition import PCA as SkPCA

    fitted = SkPCA(n_components=k, svd_solver="full").fit(x)
    comps = np.asarray(fitted.components_, np.float64)
    sign = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(sign == 0, 1.0, sign)[:, None]
    var = np.asarray(fitted.explained_variance_, np.float64)
    ratio = var / total
    return PCA(mean=mean, components=comps, explained_variance=var, explained_ratio=ratio)


def umap_available() -> bool:
    """True when the optional package ``umap-learn`` can be imported."""
    return importlib.util.find_spec("umap") is not None


def umap_embedding(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray | None:
    """2-D UMAP embedding (n, 2) of ``x`` (n, d), or None when umap-learn is not installed
    or there are too few points."""
    if not umap_available() or len(x) <= n_neighbors + 1:
        return None
    import umap  # optional dependency

    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed)
    return np.asarray(reducer.fit_transform(np.asarray(x, np.float32)), np.float64)


@dataclass(frozen=True)
class LatentView:
    """The 1-D or 2-D coordinates the latent space is drawn in.

    ``zdim`` 1 or 2: the latents themselves (names ``z1``, ``z2``); more: the first two principal
    components of the posterior means (``pca`` set, names ``PC1 (xx% of variance)``).
    """

    names: list[str]
    pca: PCA | None = None

    def project(self, z: np.ndarray) -> np.ndarray:
        """Coordinates (n, 1 or 2) of latent vectors ``z`` (n, zdim)."""
        z = np.asarray(z, np.float64)
        return self.pca.transform(z) if self.pca is not None else z


def latent_view(z: np.ndarray) -> LatentView:
    """The :class:`LatentView` for posterior means ``z`` (n, zdim >= 1)."""
    z = np.asarray(z, np.float64)
    if z.shape[1] <= 2:
        return LatentView(names=[f"z{i + 1}" for i in range(z.shape[1])])
    p = fit_pca(z, 2)
    return LatentView(names=[f"PC{i + 1} ({100 * r:.0f}% of variance)" for i, r in enumerate(p.explained_ratio)],
                      pca=p)
