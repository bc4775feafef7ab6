"""The decoded template is re-centred after training (issue #11, "Poses and units").

The generator's ``template_center`` m shifts its coordinates; a pose (theta, c) read in the
network's un-centred frame becomes (theta, c + R(-theta) m), which renders the identical image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryovae.analysis.metrics import translation_accuracy
from cryovae.geometry import rotation_matrix
from cryovae.inference import TrainedRun, encode_images, recenter_template
from cryovae.inference.recenter import mean_pose_free_image, template_centre_of_mass
from cryovae.io import read_particles
from cryovae.models import ModelConfig, build_model
from cryovae.runs.checkpoint import load_checkpoint, load_model_state, model_state
from cryovae.simulate import read_truth

SAMPLE = Path(__file__).resolve().parents[1] / "napari_plugin" / "sample_run"
M = torch.tensor([2.3, -1.7])


def _small_model(kind: str):
    torch.manual_seed(0)
    extra = {"group": "p4", "enc_fields": 4, "enc_kernel": 9} if kind == "target" else {}
    cfg = ModelConfig.for_model(kind, box=17, zdim=2, gen_hidden=32, fourier_features=16, **extra)
    return build_model(cfg).eval()


@pytest.mark.parametrize("kind", ["target", "spatial"])
def test_centred_pose_renders_the_uncentred_image(kind):
    model = _small_model(kind)
    g = torch.Generator().manual_seed(1)
    z, theta, c = torch.randn(5, 2, generator=g), torch.rand(5, generator=g) * 6.3 - 3.1, torch.randn(5, 2, generator=g)
    y = torch.randn(5, 17, 17, generator=g)
    with torch.no_grad():
        before, _ = model.decode(z, theta, c)
        enc0 = model.infer(y)
        elbo0 = model(y, sample=False).elbo
        model.generator.template_center.copy_(M)
        c_prime = model.generator.centred_pose(theta, c)
        after, _ = model.decode(z, theta, c_prime)
        enc1 = model.infer(y)
        elbo1 = model(y, sample=False).elbo
        shifted, _ = model.decode(z, theta, c)
    expected = c.numpy() + np.einsum("nij,j->ni", rotation_matrix(-theta.numpy()), M.numpy())
    np.testing.assert_allclose(c_prime.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-4)
    assert np.abs(shifted.numpy() - before.numpy()).max() > 1e-2  # the buffer does act on decoding
    # the encoder reports centres in the centred frame; training sees the same images (same ELBO)
    np.testing.assert_allclose(enc1.center_px.numpy(), model.generator.centred_pose(enc0.theta, enc0.center_px),
                               atol=1e-5)
    np.testing.assert_allclose(enc1.theta.numpy(), enc0.theta.numpy())
    np.testing.assert_allclose(elbo1.numpy(), elbo0.numpy(), rtol=1e-5)


def test_template_center_is_saved_and_an_old_state_dict_loads_with_zero():
    model = _small_model("target")
    model.generator.template_center.copy_(M)
    state = model_state(model)
    assert torch.equal(state["generator.template_center"], M)
    fresh = _small_model("target")
    load_model_state(fresh, state)
    assert torch.equal(fresh.generator.template_center, M)
    old = {k: v for k, v in state.items() if k != "generator.template_center"}  # written before the buffer
    load_model_state(fresh, old)  # strict, no error
    assert torch.equal(fresh.generator.template_center, torch.zeros(2))


def test_centre_of_mass_weights_the_particle_not_the_background_or_a_stray_blob():
    yy, xx = np.mgrid[:25, :25] - 12.0
    particle = np.exp(-((xx - 3) ** 2 + (yy + 2) ** 2) / 8.0)
    stray = 0.3 * np.exp(-((xx + 10) ** 2 + (yy + 10) ** 2) / 2.0)
    img = 5.0 + particle + stray - 0.2 * np.exp(-((xx - 3) ** 2 + (yy + 2) ** 2) / 40.0)  # offset, dark rim
    np.testing.assert_allclose(template_centre_of_mass(img), [3.0, -2.0], atol=0.05)
    np.testing.assert_allclose(template_centre_of_mass(-img), [3.0, -2.0], atol=0.05)  # dark particle
    np.testing.assert_array_equal(template_centre_of_mass(np.full((9, 9), 2.0)), [0.0, 0.0])


@pytest.fixture(scope="module")
def sample():
    """The committed napari sample run (30 epochs of TARGET-VAE on 300 cryovae-simulated hinge
    particles, uniform rotations, zero-mean shifts of 1 px std), its images and its truth."""
    run = TrainedRun.load(SAMPLE / "z1")
    stack = read_particles(SAMPLE / "sim" / "particles.star")
    images = run.preprocess(np.asarray(next(iter(stack.chunks(len(stack))))[1]))
    truth = read_truth(SAMPLE / "sim" / "truth.csv")
    return run, images, truth


def test_old_checkpoint_without_the_buffer_loads_uncentred():
    old = Path(__file__).resolve().parent / "data" / "run_v0.1"  # written by cryovae 0.1
    assert "generator.template_center" not in load_checkpoint(old / "best.pt")["model"]
    run = TrainedRun.load(old)
    assert torch.equal(run.model.generator.template_center, torch.zeros(2))


def test_recentring_puts_the_template_on_the_box_centre_and_zeroes_the_origin_offset(sample):
    run, images, truth = sample
    images, truth = images[::2], truth.iloc[::2]  # 150 particles: enough, and half the CPU time
    model, px = run.model, run.pixel_size
    model.generator.template_center.zero_()
    raw = encode_images(model, images, px)  # the un-centred network's reading
    m = recenter_template(model, images)
    np.testing.assert_allclose(model.generator.template_center.numpy(), m, atol=1e-6)
    com = template_centre_of_mass(mean_pose_free_image(model, raw.z_mean))
    assert np.hypot(*com) < 0.25, com
    # what encode_images reports now (infer == centred_pose of the raw reading: first test above)
    centred = model.generator.centred_pose(torch.as_tensor(raw.theta), torch.as_tensor(raw.center_px)).numpy()
    origin_after = -centred * px

    psi = truth["psi_deg"].to_numpy()
    true_origin = truth[["origin_x_A", "origin_y_A"]].to_numpy()
    before = translation_accuracy(raw.origin_A, true_origin, psi)
    after = translation_accuracy(origin_after, true_origin, psi)
    # the un-centred template is measurably off: every origin carries its offset, turned by psi
    assert np.hypot(*before["template_offset_A"]) > 2.0 * px, before
    # measured on this run: 4.8 px before, 0.6 px after (the rest: the learned density's centre of
    # mass is not exactly the simulated molecule's reference point, its atoms' centroid)
    assert np.hypot(*after["template_offset_A"]) < 1.0 * px, after
    assert after["rmse_A"] < 0.5 * before["rmse_A"], (before, after)
    # zero-mean true shifts: the mean written origin is ~0 (with uniform rotations it is near 0 even
    # un-centred, the offset turning with psi; hence the template-frame offset above)
    assert np.hypot(*(origin_after.mean(0) - true_origin.mean(0))) < 0.5 * px


def test_recentring_again_sets_the_same_centre(sample):
    run, images, _ = sample
    first = recenter_template(run.model, images, max_particles=64)
    again = recenter_template(run.model, images, max_particles=64)  # from a non-zero buffer
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert np.hypot(*first) > 1.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from _tiny_run import tiny_run_dir

    return tiny_run_dir(tmp_path_factory.getbasetemp() / "tiny_run")


def test_train_stores_the_template_centre_in_both_checkpoints_and_logs_it(tiny_run):
    stored = [load_checkpoint(tiny_run / name)["model"]["generator.template_center"].numpy()
              for name in ("best.pt", "checkpoint.pt")]
    np.testing.assert_array_equal(stored[0], stored[1])
    run = TrainedRun.load(tiny_run)
    np.testing.assert_array_equal(run.model.generator.template_center.numpy(), stored[0])
    recomputed = recenter_template(run.model, np.load(tiny_run / "images.npy"))
    np.testing.assert_allclose(recomputed, stored[0], atol=1e-5)
    assert np.any(stored[0] != 0)
    assert "template centre: (" in (tiny_run / "train.log").read_text()


def test_a_template_with_no_centre_near_the_box_centre_is_left_as_it_is(monkeypatch, caplog):
    """An untrained generator's 'particle' can sit in a corner; re-centring on it would write
    origins of half a box. Past a quarter box from the centre the template is left alone."""
    import cryovae.inference.recenter as recenter

    model = _small_model("spatial")  # box 17: limit 4.25 px
    box = model.cfg.box
    corner = np.zeros((box, box))
    corner[1:4, 1:4] = 1.0  # centre of mass (-6, -6) px from the box centre
    monkeypatch.setattr(recenter, "mean_pose_free_image", lambda *a, **k: corner)
    images = np.random.default_rng(0).normal(size=(8, box, box)).astype(np.float32)
    with caplog.at_level("WARNING", logger="cryovae.inference.recenter"):
        m = recenter_template(model, images)
    np.testing.assert_array_equal(m, 0)
    np.testing.assert_array_equal(model.generator.template_center.numpy(), 0)
    assert "no clear centre" in caplog.text
    # a centre inside the limit is taken
    near = np.zeros((box, box))
    near[8:11, 9:12] = 1.0  # (2, 1) px from the box centre (8, 8)
    monkeypatch.setattr(recenter, "mean_pose_free_image",
                        lambda model, *a, **k: np.roll(near, (-round(float(model.generator.template_center[1])),
                                                              -round(float(model.generator.template_center[0]))),
                                                       (0, 1)))
    np.testing.assert_allclose(recenter_template(model, images), [2.0, 1.0], atol=1e-9)
