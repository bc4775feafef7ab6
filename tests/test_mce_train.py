"""``cryovae train --model mce --classes K`` end to end on a small simulated set of discrete
classes (tests/_classes.py: the hinge closed, the hinge open, the two-arm molecule; uniform
rotation, SNR 1): the classes are recovered, written as rlnClassNumber, as class averages
(classes.mrcs / .star / .png), kept under rotation of the particles, and ``encode``, ``select
--class`` and ``analyze`` work on the run."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch
from _classes import BOX, N_CLASSES, class_run_dir
from click.testing import CliRunner
from PIL import Image
from scipy.optimize import linear_sum_assignment

from cryovae.cli.main import cli
from cryovae.inference import TrainedRun
from cryovae.models import rotate_images

#: the accuracy floor (after Hungarian matching); measured on this set (seed 0): 1.000 with the
#: class-and-pose search (the default), 0.953 at the encoder's pose (--pose-search 0)
MIN_ACCURACY = 0.9


def matched_accuracy(truth: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Accuracy after the best one-to-one matching of predicted to true classes (Hungarian)."""
    cm = np.zeros((k, k))
    np.add.at(cm, (np.asarray(truth) - 1, np.asarray(pred) - 1), 1)
    rows, cols = linear_sum_assignment(-cm)
    return float(cm[rows, cols].sum() / len(truth))


@pytest.fixture(scope="session")
def class_run(tmp_path_factory):
    return class_run_dir(tmp_path_factory.getbasetemp() / "class_run")


def test_classes_are_recovered_and_none_is_empty(class_run):
    run, _, truth = class_run
    pred = np.load(run / "latents.npz")["extra_class"]
    assert pred.dtype.kind == "i" and set(np.unique(pred)) <= set(range(1, N_CLASSES + 1))
    accuracy = matched_accuracy(truth, pred, N_CLASSES)
    print(f"MCE-VAE class accuracy {accuracy:.3f}")
    assert accuracy >= MIN_ACCURACY
    shares = np.bincount(pred, minlength=N_CLASSES + 1)[1:] / len(pred)
    assert shares.min() > 0.15  # no collapse into one class


def test_star_holds_relion_class_numbers_and_probabilities(class_run):
    run, _, _ = class_run
    lat = np.load(run / "latents.npz")
    parts = starfile.read(run / "particles.star")["particles"]
    assert parts["rlnClassNumber"].dtype.kind == "i"
    np.testing.assert_array_equal(parts["rlnClassNumber"], lat["extra_class"])
    np.testing.assert_allclose(parts["cryovaeClassProb"], lat["extra_class_prob"], rtol=1e-6)
    assert ((parts["cryovaeClassProb"] > 0) & (parts["cryovaeClassProb"] <= 1)).all()


def test_class_averages_files(class_run):
    run, _, _ = class_run
    classes = np.load(run / "latents.npz")["extra_class"]
    with mrcfile.open(run / "classes.mrcs") as mrc:
        stack = np.array(mrc.data)
        apix = float(mrc.voxel_size.x)
    assert stack.shape == (N_CLASSES, BOX, BOX) and np.isfinite(stack).all()
    trained = TrainedRun.load(run)
    assert apix == pytest.approx(trained.pixel_size, rel=1e-5)
    np.testing.assert_allclose(stack, trained.model.class_images().numpy(), atol=1e-5)
    table = starfile.read(run / "classes.star")
    assert table["rlnReferenceImage"].tolist() == [f"{k:06d}@classes.mrcs" for k in range(1, N_CLASSES + 1)]
    counts = np.bincount(classes, minlength=N_CLASSES + 1)[1:]
    np.testing.assert_array_equal(table["cryovaeClassParticles"], counts)
    np.testing.assert_allclose(table["rlnClassDistribution"], counts / counts.sum(), atol=1e-6)
    with Image.open(run / "classes.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100


def test_class_and_z_of_turned_particles_stay(class_run):
    # the invariance the model is trained for: a particle turned by 90, 180, 270 degrees about the
    # box centre N//2 (rotate_images: exact pixel turns; np.rot90 of an even box would also shift it
    # by a pixel) keeps its class, and its z moves little against z's spread within a class
    run, _, _ = class_run
    trained = TrainedRun.load(run)
    images = np.load(run / "images.npy")[:120]
    base = trained.encode(images, refine_steps=0)
    within = np.mean([base.z_mean[base.extras["class"] == k].std(0) for k in np.unique(base.extras["class"])], 0)
    for k in (1, 2, 3):
        turned_images = rotate_images(torch.tensor(images), torch.full((len(images),), k * np.pi / 2)).numpy()
        turned = trained.encode(turned_images, refine_steps=0)
        same = turned.extras["class"] == base.extras["class"]
        assert same.mean() >= 0.85, (k, same.mean())  # measured 1.0 (0.93-0.96 at the encoder's pose)
        dz = np.median(np.abs(turned.z_mean[same] - base.z_mean[same]), 0)
        # z moves little against its own posterior std, or against its spread within a class (this
        # set has no variation within a class, and the search's run leaves z at its prior: spread
        # 0.02-0.03, posterior std 0.3, dz 0.03 measured; at the encoder's pose dz was 0.2 of the spread)
        assert ((dz < 0.5 * within) | (dz < 0.25 * np.median(base.z_std, 0))).all(), (k, dz, within)


def test_encode_select_and_analyze_on_a_class_run(class_run, tmp_path):
    run, star, _ = class_run
    classes = np.load(run / "latents.npz")["extra_class"]
    runner = CliRunner()
    out = tmp_path / "enc.star"
    r = runner.invoke(cli, ["encode", str(run), str(star), "-o", str(out), "--refine-steps", "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(starfile.read(out)["particles"]["rlnClassNumber"], classes)

    sel = tmp_path / "class2.star"
    r = runner.invoke(cli, ["select", str(run), "--class", "2", "-o", str(sel)])
    assert r.exit_code == 0, r.output
    kept = starfile.read(sel)["particles"]
    assert set(kept["rlnClassNumber"]) == {2} and len(kept) == int((classes == 2).sum())

    analysis = tmp_path / "analysis"
    r = runner.invoke(cli, ["analyze", str(run), "--k", "3", "--examples", "2", "--no-umap", "-o", str(analysis)])
    assert r.exit_code == 0, r.output
    for name in ("classes.mrcs", "classes.star", "classes.png"):
        assert (analysis / name).is_file()
    run_star = starfile.read(run / "particles.star")["particles"]
    for k in range(1, N_CLASSES + 1):
        rows = starfile.read(analysis / f"class_{k:03d}.star")["particles"]
        pd.testing.assert_frame_equal(rows.reset_index(drop=True),
                                      run_star[classes == k].reset_index(drop=True))
    assert "2D classes" in (analysis / "index.html").read_text()
