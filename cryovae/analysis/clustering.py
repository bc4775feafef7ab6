"""k-means on the content latents, and the split of a particle table by cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError


@dataclass(frozen=True)
class Clusters:
    """A k-means partition.

    Attributes
    ----------
    centers : (k, d) cluster centres, ordered along the data's first principal axis (so cluster 1
        sits at one end of the main direction of variation and the order is reproducible).
    labels : (n,) int, 0-based cluster of each point.
    inertia : sum of squared distances of the points to their centre.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float

    @property
    def k(self) -> int:
        return len(self.centers)

    def sizes(self) -> np.ndarray:
        """(k,) number of points per cluster."""
        return np.bincount(self.labels, minlength=self.k)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centers.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.array(centers)


def _sq_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, k) squared distances, without an (n, k, d) temporary."""
    d2 = (x ** 2).sum(1)[:, None] - 2.0 * x @ centers.T + (centers ** 2).sum(1)[None]
    return np.maximum(d2, 0.0)


def _lloyd(x: np.ndarray, centers: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray, float]:
    for _ in range(iters):
        d2 = _sq_distances(x, centers)
        labels = d2.argmin(1)
        new = centers.copy()
        for j in range(len(centers)):
            members = labels == j
            if members.any():
                new[j] = x[members].mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = d2[np.arange(len(x)), labels].argmax()
                new[j] = x[far]
        if np.allclose(new, centers):
            centers = new
            break
        centers = new
    d2 = _sq_distances(x, centers)
    labels = d2.argmin(1)
    return centers, labels, float(d2[np.arange(len(x)), labels].sum())


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 300) -> Clusters:
    """Seeded k-means (k-means++ starts, Lloyd iterations, best of ``n_init``).

    Parameters
    ----------
    x : (n, d) points, e.g. posterior means of the content latents.
    k : number of clusters, 1 <= k <= number of distinct points.
    seed : random seed; the same inputs and seed give the same clusters.

    Raises
    ------
    CryovaeError : k out of range.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"kmeans needs (n, d) points, got shape {x.shape}")
    n_distinct = len(np.unique(x, axis=0))
    if not 1 <= k <= n_distinct:
        raise CryovaeError(f"--k must be between 1 and the number of distinct latents ({n_distinct}), got {k}")
    rng = np.random.default_rng(seed)
    centers, labels, inertia = _lloyd(x, _plus_plus(x, k, rng), iters)
    for _ in range(max(1, n_init) - 1):
        c, lab, ine = _lloyd(x, _plus_plus(x, k, rng), iters)
        if ine < inertia - 1e-12:
            centers, labels, inertia = c, lab, ine
    # order along the first principal axis (sign fixed by the largest loading)
    xc = x - x.mean(0)
    axis = np.linalg.svd(xc, full_matrices=False)[2][0] if len(x) > 1 else np.ones(x.shape[1])
    axis = axis * (np.sign(axis[np.argmax(np.abs(axis))]) or 1.0)
    order = np.argsort((centers - x.mean(0)) @ axis, kind="stable")
    remap = np.empty(k, int)
    remap[order] = np.arange(k)
    return Clusters(centers=centers[order], labels=remap[labels], inertia=inertia)


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
