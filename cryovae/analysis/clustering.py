"""Clustering of the content latents (scikit-learn's k-means, Gaussian mixture and Ward
agglomerative clustering), and the split of a particle table by cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryovae.analysis.embedding import fit_pca
from cryovae.errors import CryovaeError

#: the values of ``cryovae analyze --method``
METHODS = ("kmeans", "gmm", "agglomerative")
#: how each method is named in titles and captions
METHOD_LABELS = {"kmeans": "k-means", "gmm": "Gaussian mixture", "agglomerative": "agglomerative (Ward)"}
#: agglomerative clustering is fitted on at most this many points (its memory grows as n^2:
#: 8 bytes per pair, 0.4 GB here); the others are assigned to the nearest cluster centre
AGGLOMERATIVE_MAX_POINTS = 10_000


@dataclass(frozen=True)
class Clusters:
    """A partition of the latents into k clusters.

    Attributes
    ----------
    centers : (k, d) cluster centres, ordered along the data's first principal axis (so cluster 1
        sits at one end of the main direction of variation and the order is reproducible).
    labels : (n,) int, 0-based cluster of each point.
    inertia : sum of squared distances of the points to the centre of their own cluster.
    method : the method that made them, one of :data:`METHODS`.
    probabilities : (n, k) membership probabilities (columns in the order of ``centers``), for
        ``gmm``; None for the other methods.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    method: str = "kmeans"
    probabilities: np.ndarray | None = None

    @property
    def k(self) -> int:
        return len(self.centers)

    def sizes(self) -> np.ndarray:
        """(k,) number of points per cluster."""
        return np.bincount(self.labels, minlength=self.k)


def _check(x: np.ndarray, k: int, method: str) -> np.ndarray:
    if method not in METHODS:
        raise CryovaeError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"clustering needs (n, d) points, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise CryovaeError(f"the latents hold {int((~np.isfinite(x)).any(1).sum())} non-finite rows, cannot cluster")
    n_distinct = len(np.unique(x, axis=0))
    if not 1 <= k <= n_distinct:
        raise CryovaeError(f"--k must be between 1 and the number of distinct latents ({n_distinct}), got {k}")
    return x


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n,) index of the nearest centre, without an (n, k, d) temporary."""
    d2 = (x ** 2).sum(1)[:, None] - 2.0 * x @ centers.T + (centers ** 2).sum(1)[None]
    return d2.argmin(1)


def _member_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    return sums / np.maximum(counts, 1)[:, None]


def _ordered(x: np.ndarray, centers: np.ndarray, labels: np.ndarray, method: str,
             probabilities: np.ndarray | None = None) -> Clusters:
    """Clusters numbered along the first principal axis of ``x`` (its largest loading positive)."""
    k = len(centers)
    axis = fit_pca(x, 1).components[0]
    order = np.argsort((centers - x.mean(0)) @ axis, kind="stable")
    remap = np.empty(k, int)
    remap[order] = np.arange(k)
    labels = remap[labels]
    centers = centers[order]
    inertia = float(((x - centers[labels]) ** 2).sum())
    probs = None if probabilities is None else probabilities[:, order]
    return Clusters(centers=centers, labels=labels, inertia=inertia, method=method, probabilities=probs)


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 300) -> Clusters:
    """Seeded k-means (scikit-learn's KMeans: k-means++ starts, Lloyd iterations, best of
    ``n_init``).

    Parameters
    ----------
    x : (n, d) points, e.g. posterior means of the content latents.
    k : number of clusters, 1 <= k <= number of distinct points.
    seed : random seed; the same inputs and seed give the same clusters.
    n_init, iters : number of starts, and most iterations of each.

    Raises
    ------
    CryovaeError : k out of range, or non-finite points.
    """
    return _kmeans(_check(x, k, "kmeans"), k, seed, n_init, iters)


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 10, iters: int = 300) -> Clusters:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=max(1, n_init), max_iter=iters,
                random_state=seed).fit(x)
    labels = np.asarray(km.labels_, int)
    return _ordered(x, np.asarray(km.cluster_centers_, np.float64), labels, "kmeans")


def _gmm(x: np.ndarray, k: int, seed: int) -> Clusters:
    from sklearn.mixture import GaussianMixture

    try:
        gm = GaussianMixture(n_components=k, covariance_type="full", n_init=3, random_state=seed).fit(x)
    except ValueError as exc:  # a component collapsed onto too few points
        raise CryovaeError(f"--method gmm: the Gaussian mixture with k={k} could not be fitted "
                           f"({str(exc).splitlines()[0]}); try a smaller --k") from None
    probs = gm.predict_proba(x)
    return _ordered(x, np.asarray(gm.means_, np.float64), probs.argmax(1), "gmm", probs)


def _agglomerative(x: np.ndarray, k: int, seed: int) -> Clusters:
    from sklearn.cluster import AgglomerativeClustering

    n = len(x)
    fit = np.sort(np.random.default_rng(seed).choice(n, AGGLOMERATIVE_MAX_POINTS, replace=False)) \
        if n > AGGLOMERATIVE_MAX_POINTS else np.arange(n)
    sub = x[fit]
    n_distinct = len(np.unique(sub, axis=0))
    if k > n_distinct:
        raise CryovaeError(f"--method agglomerative: the {len(sub)} points it is fitted on hold only "
                           f"{n_distinct} distinct latents, fewer than --k {k}")
    sub_labels = np.asarray(AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(sub), int)
    if len(fit) == n:
        labels = sub_labels
    else:
        labels = _nearest(x, _member_means(sub, sub_labels, k))
        labels[fit] = sub_labels
    return _ordered(x, _member_means(x, labels, k), labels, "agglomerative")


def cluster(x: np.ndarray, k: int, method: str = "kmeans", seed: int = 0) -> Clusters:
    """Cluster the points ``x`` into ``k`` clusters with one of :data:`METHODS`.

    * ``kmeans``: :func:`kmeans`; centres are the cluster means.
    * ``gmm``: scikit-learn's GaussianMixture (full covariances, k-means starts, best of 3); each
      point goes to its most probable component, the centres are the components' means and
      ``probabilities`` holds every point's membership probabilities.
    * ``agglomerative``: scikit-learn's AgglomerativeClustering with Ward linkage. Above
      :data:`AGGLOMERATIVE_MAX_POINTS` points it is fitted on that many chosen at random (seeded)
      and every other point joins the cluster whose centre is nearest; the centres are the
      means of the members.

    Clusters are numbered along the first principal axis of ``x`` whatever the method, and the
    same inputs and seed give the same clusters.

    Parameters
    ----------
    x : (n, d) points, e.g. posterior means of the content latents.
    k : number of clusters, 1 <= k <= number of distinct points.
    method : one of :data:`METHODS`.
    seed : random seed (k-means starts, mixture starts, the agglomerative subsample).

    Raises
    ------
    CryovaeError : unknown method, k out of range, non-finite points, or a mixture that cannot be
        fitted.
    """
    x = _check(x, k, method)
    if method == "kmeans":
        return _kmeans(x, k, seed)
    if method == "gmm":
        return _gmm(x, k, seed)
    return _agglomerative(x, k, seed)


def split_by_cluster(table: pd.DataFrame, labels: np.ndarray, k: int) -> list[pd.DataFrame]:
    """Rows of ``table`` per cluster, in the table's order, every column kept.

    Parameters
    ----------
    table : (n rows) particle table.
    labels : (n,) 0-based cluster of each row.
    k : number of clusters (clusters without rows give empty tables).

    Returns
    -------
    list of k DataFrames; together they hold every row exactly once.
    """
    labels = np.asarray(labels)
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} labels for a table of {len(table)} rows")
    return [table.iloc[np.flatnonzero(labels == j)] for j in range(k)]
