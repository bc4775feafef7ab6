"""Reframing on the rigid part: the turn search, its split-half check, z at a given rotation,
fixed-pose training, and ``cryovae reframe`` on a trained run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch
from _tiny_run import tiny_run_dir
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.errors import CryovaeError
from cryovae.geometry import transform_image, wrap_degrees
from cryovae.inference.core_frame import (
    pose_matrices,
    realign,
    rigid_weight,
    split_half_agreement,
    weighted_residual,
    z_at_pose,
)
from cryovae.models import build_model, model_config, warp_images
from cryovae.runs import RunDir
from cryovae.simulate import SimulationConfig, simulate_arms
from cryovae.training import FixedPoseConfig, fit_fixed_pose

DELTAS = np.radians(np.arange(-12, 13, 1.0))


@pytest.fixture(scope="module")
def arms():
    """120 two-arm particles (32 px, SNR 20) and their pose-free templates in the core's frame."""
    sim = simulate_arms(SimulationConfig(n=120, box=32, snr=20.0, shift_sigma_px=1.0, seed=4), progress=False)
    return sim, sim.canonical_images()


def test_pose_matrices_render_the_internal_convention():
    rng = np.random.default_rng(0)
    template = np.zeros((24, 24), np.float32)
    template[6:14, 9:20] = rng.uniform(0.5, 1.0, (8, 11))
    theta, centre = 0.7, np.array([1.5, -2.0])
    ours = warp_images(torch.from_numpy(template)[None],
                       pose_matrices(torch.tensor([theta]), torch.from_numpy(centre[None].astype(np.float32))))[0]
    np.testing.assert_allclose(ours.numpy(), transform_image(template, theta, centre, order=1), atol=1e-4)


def test_realign_finds_the_turn_that_puts_each_particle_on_its_template(arms):
    sim, templates = arms
    rng = np.random.default_rng(1)
    error = np.radians(rng.integers(-10, 11, len(sim)))  # each particle's rotation off by whole degrees
    delta = realign(sim.images, templates, rigid_weight(templates), sim.theta_rad + error, sim.center_px, DELTAS)
    residual = wrap_degrees(np.degrees(delta + error))
    assert np.mean(np.abs(residual) <= 1.0) >= 0.95, np.abs(residual).max()


def test_the_weighted_residual_is_what_realign_minimises(arms):
    sim, templates = arms
    weight = rigid_weight(templates)
    # particles drawn exactly as their templates at their poses: no residual there, some one turn away
    m = pose_matrices(torch.as_tensor(sim.theta_rad, dtype=torch.float32),
                      torch.as_tensor(sim.center_px, dtype=torch.float32))
    clean = warp_images(torch.as_tensor(templates, dtype=torch.float32), m).numpy()
    at_pose = weighted_residual(clean, templates, weight, sim.theta_rad, sim.center_px, batch_size=50)
    turned = weighted_residual(clean, templates, weight, sim.theta_rad + np.radians(5), sim.center_px)
    assert at_pose.shape == (len(sim),) and np.abs(at_pose).max() < 1e-6
    assert turned.min() > 0.1  # 5 degrees off: 1.5 or more for every particle of this set
    # on the noisy particles, the turn realign picks lowers the residual against the poses it started from
    theta = sim.theta_rad + np.radians(np.random.default_rng(3).integers(-10, 11, len(sim)))
    delta = realign(sim.images, templates, weight, theta, sim.center_px, DELTAS)
    before = weighted_residual(sim.images, templates, weight, theta, sim.center_px)
    after = weighted_residual(sim.images, templates, weight, theta + delta, sim.center_px)
    assert np.all(after <= before + 1e-4) and after.mean() < before.mean()
    with pytest.raises(CryovaeError, match="templates"):
        weighted_residual(sim.images, templates[:3], weight, theta, sim.center_px)


def test_the_rigid_weight_sits_on_the_core_not_on_the_arms(arms):
    sim, templates = arms
    weight = rigid_weight(templates)
    spread = templates.std(0)
    moving = spread > np.quantile(spread, 0.95)  # where the arms sweep
    mass = templates.mean(0) > 0.5 * templates.mean(0).max()
    assert weight[moving].mean() < 0.5 * weight[mass & ~moving].mean()
    assert 0 <= weight.min() and weight.max() <= 1


def test_the_halves_agree_on_signal_and_not_on_noise(arms):
    sim, templates = arms
    rng = np.random.default_rng(2)
    error = np.radians(rng.integers(-10, 11, len(sim)))
    theta = sim.theta_rad + error
    weight = rigid_weight(templates)
    _, a, b = realign(sim.images, templates, weight, theta, sim.center_px, DELTAS, halves=True)
    assert split_half_agreement(a, b) > 0.9
    noise = rng.normal(0, 1, sim.images.shape).astype(np.float32)
    _, a, b = realign(noise, templates, weight, theta, sim.center_px, DELTAS, halves=True)
    assert abs(split_half_agreement(a, b)) < 0.3
    assert split_half_agreement(np.zeros(5), np.arange(5.0)) == 0.0


def _target(box=16, zdim=2):
    torch.manual_seed(0)
    return build_model(model_config("target", box=box, zdim=zdim, group="p4", enc_fields=4, enc_kernel=5,
                                    enc_layers=0, gen_hidden=16, gen_layers=1, fourier_features=8)).eval()


def test_z_at_rotation_reads_the_cell_of_that_rotation_and_its_best_shift():
    model = _target()
    y = torch.randn(5, 16, 16)
    with torch.no_grad():
        post = model.encode(y)
        for r in range(len(model.offsets)):
            theta = model.offsets[r].expand(5) + 0.1  # inside cell r (cells are 90 degrees wide)
            mu, _ = model.z_at_rotation(y, theta)
            for i in range(5):
                t = post.logits[i, r].argmax()
                np.testing.assert_allclose(mu[i].numpy(), post.z_mu[i, :, r].flatten(1)[:, t].numpy(), rtol=1e-6)
        # at the rotation of the most probable cell it is what the attention picks
        onehot = model.argmax_onehot(post.logits)
        cell = model.select(post, onehot)
        mu, logstd = model.z_at_rotation(y, model.offsets[onehot.sum((2, 3)).argmax(1)])
        np.testing.assert_allclose(mu.numpy(), cell.z_mu.numpy(), rtol=1e-6)
        np.testing.assert_allclose(logstd.numpy(), cell.z_logstd.numpy(), rtol=1e-6)


def test_a_model_without_z_at_every_rotation_is_refused_in_one_line():
    model = build_model(model_config("spatial", box=16, zdim=1))
    images = np.zeros((4, 16, 16), np.float32)
    assert model.z_at_rotation(torch.from_numpy(images), torch.zeros(4)) is None
    with pytest.raises(CryovaeError, match="z at every rotation"):
        fit_fixed_pose(model, images, np.zeros(4), np.zeros((4, 2)), FixedPoseConfig(epochs=1), progress=False)
    with pytest.raises(CryovaeError, match="z at every rotation"):
        z_at_pose(model, images, np.zeros(4))


def test_fixed_pose_training_fits_the_particles_at_the_poses_given(arms):
    sim, _ = arms
    images = sim.clean[:, 8:24, 8:24] / sim.clean.std()  # 16 px of the particles, no noise
    model = _target()
    theta, centre = sim.theta_rad, np.zeros((len(sim), 2))
    first = fit_fixed_pose(model, images, theta, centre, FixedPoseConfig(epochs=1, lr=3e-3, batch_size=32),
                           progress=False)
    later = fit_fixed_pose(model, images, theta, centre, FixedPoseConfig(epochs=4, lr=3e-3, batch_size=32, seed=1),
                           progress=False)
    assert later < first - 50, (first, later)  # nats per particle
    z, z_std = z_at_pose(model, images, theta)
    assert z.shape == z_std.shape == (len(sim), 2) and np.all(z_std > 0)
    with pytest.raises(CryovaeError, match="--epochs"):
        FixedPoseConfig(epochs=0).validate()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory.getbasetemp() / "tiny_run")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_reframe_writes_a_new_run_and_leaves_the_source_alone(tiny_run, tmp_path):
    before = _digest(tiny_run)
    out = tmp_path / "core"
    res = CliRunner().invoke(cli, ["reframe", str(tiny_run), "-o", str(out), "--rounds", "2", "--epochs", "1",
                                   "--min-agreement", "-1", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "split-half agreement" in res.output
    assert _digest(tiny_run) == before
    run = RunDir(out)
    lat, old = run.read_latents(), RunDir(tiny_run).read_latents()
    table = starfile.read(run.star, always_dict=True)["particles"]
    np.testing.assert_allclose(table["rlnAnglePsi"].to_numpy(), lat.psi_deg, atol=1e-3)
    np.testing.assert_allclose(lat.center_px, old.center_px)  # centres kept
    turn = wrap_degrees(lat.psi_deg - old.psi_deg)
    assert np.all(np.abs(turn) <= 2 * 24 + 1e-6) and np.any(turn != 0)  # two rounds of at most 24 degrees
    assert run.reframe.exists() and run.best.exists()
    # the new run reads like any run
    res = CliRunner().invoke(cli, ["traverse", str(out), "--steps", "3", "-o", str(tmp_path / "trav")])
    assert res.exit_code == 0, res.output
    # ... but is no training run to resume, nor an encoder of new particles (its attention was not retrained)
    res = CliRunner().invoke(cli, ["train", "--resume", str(out)])
    assert res.exit_code == 2 and "made by cryovae reframe" in res.output
    res = CliRunner().invoke(cli, ["encode", str(out), str(tiny_run / "particles.star"), "-o", str(tmp_path / "e.star")])
    assert res.exit_code == 2 and "made by cryovae reframe" in res.output, res.output


def test_reframe_with_max_turn_0_holds_the_runs_rotations_and_skips_the_gate(tiny_run, tmp_path):
    # --min-agreement 1 would refuse any search: with --max-turn 0 there is none to gate
    out = tmp_path / "held"
    res = CliRunner().invoke(cli, ["reframe", str(tiny_run), "-o", str(out), "--rounds", "1", "--epochs", "1",
                                   "--max-turn", "0", "--min-agreement", "1", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "rotations held" in res.output
    run, old = RunDir(out), RunDir(tiny_run).read_latents()
    lat = run.read_latents()
    np.testing.assert_allclose(wrap_degrees(lat.psi_deg - old.psi_deg), 0, atol=1e-3)
    np.testing.assert_allclose(lat.center_px, old.center_px)
    assert not np.allclose(lat.z_mean, old.z_mean)  # z was refitted at the held poses
    record = json.loads(run.reframe.read_text())
    assert record["split_half_agreement"] is None and record["rounds"][0]["median_turn_deg"] == 0


def test_reframe_refuses_bad_requests_in_one_line(tiny_run, tmp_path):
    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    for args, message in [(["reframe", str(tmp_path / "nothing")], "not a cryovae run"),
                          (["reframe", str(tiny_run), "-o", str(taken)], "not empty"),
                          (["reframe", str(tiny_run), "-o", str(tiny_run)], "not the run itself"),
                          (["reframe", str(tiny_run), "--rounds", "0", "-o", str(tmp_path / "r0")], "--rounds"),
                          (["reframe", str(tiny_run), "--max-turn", "-1", "-o", str(tmp_path / "m0")], "--max-turn"),
                          (["reframe", str(tiny_run), "--min-agreement", "1", "--device", "cpu",
                            "-o", str(tmp_path / "agree")], "does not determine")]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (tmp_path / "agree").exists()  # nothing written
