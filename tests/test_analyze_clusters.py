"""Clustering of latents (k-means, Gaussian mixture, agglomerative) and the per-cluster star
files (an exact partition of the input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryovae.analysis import clustering
from cryovae.analysis.clustering import METHODS, cluster, kmeans, split_by_cluster
from cryovae.analysis.report import read_run_star, star_column, write_cluster_stars
from cryovae.errors import CryovaeError, InputFileError


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [0.0, 3.0], [4.0, 0.0]])
    truth = rng.integers(0, 3, 300)
    return centres[truth] + rng.normal(size=(300, 2)) * 0.4, truth


def test_kmeans_recovers_separated_blobs_in_a_stable_order():
    x, truth = blobs()
    c = kmeans(x, 3, seed=5)
    # every true blob is one cluster
    for j in range(3):
        assert len(np.unique(c.labels[truth == j])) == 1
    # clusters are numbered along the first principal axis: x from -4 to +4
    assert np.all(np.diff(c.centers[:, 0]) > 0)
    np.testing.assert_allclose(c.centers, [x[truth == j].mean(0) for j in range(3)])
    assert c.sizes().sum() == 300


def test_kmeans_is_reproducible_and_seed_independent_on_clear_data():
    x, _ = blobs(1)
    a, b, other = kmeans(x, 3, seed=0), kmeans(x, 3, seed=0), kmeans(x, 3, seed=9)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.labels, other.labels)


def test_kmeans_user_errors():
    x, _ = blobs()
    with pytest.raises(CryovaeError, match="--k"):
        kmeans(x, 0)
    with pytest.raises(CryovaeError, match="distinct"):
        kmeans(np.zeros((10, 2)), 2)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_recovers_separated_blobs_numbered_along_the_main_axis(method):
    x, truth = blobs()
    c = cluster(x, 3, method=method, seed=3)
    # the blobs lie at x = -4, 0, +4 along the first principal axis: cluster j is blob j
    np.testing.assert_array_equal(c.labels, truth)
    assert c.method == method and c.k == 3 and list(c.sizes()) == list(np.bincount(truth))
    means = np.array([x[truth == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(c.centers, means, atol=1e-6 if method != "gmm" else 0.02)
    assert c.inertia == pytest.approx(((x - c.centers[truth]) ** 2).sum())
    # mirrored data: the same partition, numbered from the other end
    m = cluster(-x, 3, method=method, seed=3)
    np.testing.assert_array_equal(m.labels, 2 - truth)
    again = cluster(x, 3, method=method, seed=3)
    np.testing.assert_array_equal(again.labels, c.labels)
    np.testing.assert_array_equal(again.centers, c.centers)


def test_gmm_membership_probabilities_follow_the_cluster_order():
    x, truth = blobs(2)
    path = np.linspace([-4.0, 0.0], [0.0, 3.0], 21)  # from blob 1's centre to blob 2's
    c = cluster(np.concatenate([x, path]), 3, method="gmm", seed=0)
    p = c.probabilities
    assert p.shape == (321, 3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(p.argmax(1), c.labels)
    assert (p[np.arange(300), truth] > 0.99).all()  # the blob points are certain
    on_path = p[300:]
    assert on_path[0, 0] > 0.99 and on_path[-1, 1] > 0.99 and (on_path[:, 2] < 1e-6).all()
    assert np.all(np.diff(on_path[:, 0]) <= 1e-9)  # blob 1 fades out along the way to blob 2
    assert cluster(x, 3, method="kmeans").probabilities is None


def test_agglomerative_above_the_limit_fits_a_subsample_and_assigns_the_rest(monkeypatch):
    x, truth = blobs(3)
    monkeypatch.setattr(clustering, "AGGLOMERATIVE_MAX_POINTS", 60)
    c = cluster(x, 3, method="agglomerative", seed=1)
    np.testing.assert_array_equal(c.labels, truth)  # every point, not only the 60 fitted
    np.testing.assert_allclose(c.centers, [x[truth == j].mean(0) for j in range(3)], atol=1e-9)
    np.testing.assert_array_equal(cluster(x, 3, method="agglomerative", seed=1).labels, c.labels)


def test_cluster_user_errors():
    x, _ = blobs()
    with pytest.raises(CryovaeError, match="--method must be one of kmeans, gmm, agglomerative, got 'dbscan'"):
        cluster(x, 3, method="dbscan")
    for method in METHODS:
        with pytest.raises(CryovaeError, match=r"--k must be between 1 and the number of distinct latents \(2\)"):
            cluster(np.repeat([[0.0, 1.0], [2.0, 3.0]], 10, 0), 3, method=method)
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(CryovaeError, match="1 non-finite rows"):
        cluster(bad, 3)


def test_split_by_cluster_is_a_partition():
    df = pd.DataFrame({"a": np.arange(50), "b": list("xy") * 25})
    labels = np.random.default_rng(0).integers(0, 4, 50)
    parts = split_by_cluster(df, labels, 5)
    assert len(parts) == 5 and len(parts[4]) == 0
    assert sorted(pd.concat(parts)["a"]) == list(range(50))
    for j, p in enumerate(parts):
        assert list(p.columns) == ["a", "b"] and (labels[p.index] == j).all()


def _input_star(path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnImagePixelSize": [1.5, 1.5], "rlnImageSize": [24, 24],
                           "rlnImageDimensionality": [2, 2], "rlnVoltage": [300.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.7], "rlnAmplitudeContrast": [0.1, 0.1]})
    n = 120
    rng = np.random.default_rng(4)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@stack.mrcs" for i in range(n)],
        "rlnDefocusU": rng.uniform(1e4, 2e4, n).round(1), "rlnOpticsGroup": (np.arange(n) % 2) + 1,
        "rlnAnglePsi": rng.uniform(-180, 180, n).round(3), "cryovaeZ1": rng.normal(size=n).round(4),
        "someText": [f"mic{i % 7}" for i in range(n)]})
    starfile.write({"optics": optics, "particles": particles}, path)
    return optics, particles


def test_cluster_star_files_partition_the_input_exactly(tmp_path):
    src = tmp_path / "particles.star"
    optics, particles = _input_star(src)
    star = read_run_star(src, len(particles))
    blocks, name = star.blocks, star.data_block
    z = np.stack([particles["cryovaeZ1"], particles["rlnDefocusU"] / 1e4], 1)
    clusters = kmeans(z, 3, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    paths = write_cluster_stars(out, blocks, name, clusters)
    assert [p.name for p in paths] == ["cluster_01.star", "cluster_02.star", "cluster_03.star"]
    back = [starfile.read(p, always_dict=True) for p in paths]
    for j, b in enumerate(back):
        assert list(b) == ["optics", "particles"]
        pd.testing.assert_frame_equal(b["optics"], blocks["optics"])
        assert list(b["particles"].columns) == list(particles.columns)
        assert len(b["particles"]) == (clusters.labels == j).sum()
    names = pd.concat([b["particles"]["rlnImageName"] for b in back])
    assert names.is_unique and set(names) == set(particles["rlnImageName"])  # disjoint, union = input
    # rows are the input's rows unchanged, in input order
    merged = pd.concat([b["particles"] for b in back]).set_index("rlnImageName").loc[particles["rlnImageName"]]
    pd.testing.assert_frame_equal(merged.reset_index(), particles, check_dtype=False)
    for j, b in enumerate(back):
        idx = particles.index[particles["rlnImageName"].isin(b["particles"]["rlnImageName"])]
        assert (clusters.labels[idx] == j).all() and list(idx) == sorted(idx)


def test_star_column_from_particles_or_optics_and_errors(tmp_path):
    src = tmp_path / "particles.star"
    _, particles = _input_star(src)
    blocks = read_run_star(src, len(particles)).blocks
    np.testing.assert_array_equal(star_column(blocks, "particles", "rlnDefocusU", src), particles["rlnDefocusU"])
    volt = star_column(blocks, "particles", "_rlnVoltage", src)
    np.testing.assert_array_equal(volt, np.where(particles["rlnOpticsGroup"] == 1, 300.0, 200.0))
    with pytest.raises(CryovaeError, match="no column rlnNope"):
        star_column(blocks, "particles", "rlnNope", src)
    with pytest.raises(CryovaeError, match="not numeric"):
        star_column(blocks, "particles", "someText", src)
    with pytest.raises(InputFileError, match="latents.npz has 7"):
        read_run_star(src, 7)
    with pytest.raises(InputFileError, match="missing"):
        read_run_star(tmp_path / "nope.star", 7)
