"""TrainedRun: rebuild a run from its directory alone; decode, encode, reconstruct, latents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_models_synthetic import blob_particles

from cryovae.errors import CryovaeError, InputFileError
from cryovae.inference import (
    Latents,
    RefineConfig,
    TrainedRun,
    encode_images,
    improve_latents,
    posterior_grid_for,
)
from cryovae.models import ModelConfig
from cryovae.runs import RunConfig, TrainConfig, write_run_config
from cryovae.training import fit_images

BOX = 21


@pytest.fixture(scope="module")
def rundir(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    imgs = blob_particles(BOX, rng.uniform(-np.pi, np.pi, 48), np.zeros((48, 2)))
    mcfg = ModelConfig.for_model("target", box=BOX, group="p4", zdim=2, enc_fields=4, enc_kernel=9,
                                 gen_hidden=32, fourier_features=16, pixel_size=3.5)
    tcfg = TrainConfig(epochs=1, batch_size=16, val_fraction=0.25)
    write_run_config(d, RunConfig(model=mcfg, train=tcfg, preprocess={"box": BOX}), "cryovae train test")
    res = fit_images(imgs, mcfg, tcfg, d, torch.device("cpu"), progress=False)
    lat = encode_images(res.model, imgs, mcfg.pixel_size)  # what cryovae train writes:
    lat = improve_latents(res.model, imgs, lat, RefineConfig(steps=tcfg.refine_steps),  # refined, then
                          posterior_grid_for(res.model, tcfg.posterior_grid))  # the posterior means
    lat.save(d / "latents.npz")
    np.save(d / "imgs_for_test.npy", imgs)
    return d


def test_load_rebuilds_the_trained_model_from_config_alone(rundir):
    run = TrainedRun.load(rundir, device="cpu")
    assert (run.box, run.pixel_size, run.zdim) == (BOX, 3.5, 2)
    assert run.config.model.group == "p4" and run.config.train.epochs == 1
    imgs = np.load(rundir / "imgs_for_test.npy")
    lat = run.encode(imgs)  # refined with the run's own refine_steps and posterior grid, as saved
    saved = run.latents()
    np.testing.assert_allclose(lat.z_mean, saved.z_mean, atol=1e-5)
    np.testing.assert_allclose(lat.theta, saved.theta, atol=1e-5)
    raw = run.encode(imgs, refine_steps=0, posterior_grid=False)
    assert np.abs(raw.z_mean - saved.z_mean).max() > 1e-3  # (so the refinement did run)
    refined = run.encode(imgs, posterior_grid=False)
    # what was saved is the posterior grid applied after the refinement (this one-epoch model's z
    # posterior lies at the grid's edge, so the grid keeps the refined values)
    searched = run.posterior_grid.apply(imgs, refined)
    np.testing.assert_allclose(searched.z_mean, saved.z_mean, atol=1e-5)
    np.testing.assert_allclose(searched.theta, saved.theta, atol=1e-5)
    assert saved.prob is not None and saved.prob.shape == (48,)


def test_decode_shapes_and_pose(rundir):
    run = TrainedRun.load(rundir)
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    out = run.decode(z)
    assert out.shape == (5, BOX, BOX) and out.dtype == np.float32
    # theta / centre move the image exactly like cryovae.geometry says (coordinate MLP)
    turned = run.decode(z[:1], theta=np.array([math.pi / 2]))
    np.testing.assert_allclose(turned[0], np.rot90(out[0]), atol=1e-4)
    shifted = run.decode(z[:1], center_px=np.array([[2.0, -1.0]]))
    np.testing.assert_allclose(shifted[0][5:-5, 5:-5], np.roll(out[0], (-1, 2), axis=(0, 1))[5:-5, 5:-5], atol=1e-4)
    with pytest.raises(CryovaeError, match="zdim"):
        run.decode(np.zeros((2, 3)))


def test_reconstruct_decodes_at_the_inferred_pose(rundir):
    run = TrainedRun.load(rundir)
    imgs = np.load(rundir / "imgs_for_test.npy")[:4]
    rec = run.reconstruct(imgs)
    lat = run.encode(imgs)
    np.testing.assert_allclose(rec, run.decode(lat.z_mean, lat.theta, lat.center_px), atol=1e-5)
    with pytest.raises(CryovaeError, match="expects"):
        run.reconstruct(np.zeros((2, BOX + 2, BOX + 2), np.float32))


def test_latents_roundtrip_and_relion_fields(tmp_path):
    lat = Latents.from_pose(np.ones((3, 1)), np.ones((3, 1)), np.radians([10.0, 190.0, -30.0]),
                            np.array([[1.0, 2.0], [0.0, 0.0], [-3.0, 0.5]]), pixel_size=2.0)
    np.testing.assert_allclose(lat.psi_deg, [10.0, -170.0, -30.0])
    np.testing.assert_allclose(lat.origin_A, [[-2.0, -4.0], [0.0, 0.0], [6.0, -1.0]])
    lat.save(tmp_path / "l.npz")
    back = Latents.load(tmp_path / "l.npz")
    assert back.prob is None
    np.testing.assert_allclose(back.origin_A, lat.origin_A)
    assert set(np.load(tmp_path / "l.npz").files) == {"z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A"}


def test_missing_run_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(InputFileError, match="config.yaml"):
        TrainedRun.load(tmp_path)
