"""The Topographic VAE (``--model tvae``): its rotation sequences, the construction of T (eq. 6-9),
the read-out of the rotation from the capsule roll and of the content from the magnitudes, the
CTF of a turned frame, and ``cryovae train --model tvae`` end to end (star, encode, analyze)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import starfile
import torch
import yaml
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.data.sequences import (
    rotate_band_limited,
    rotation_sequence,
    sequence_mask,
    shift_images,
)
from cryovae.errors import CryovaeError
from cryovae.models import build_model, compute_ctf, model_config
from cryovae.models.capsules import (
    capsule_roll_angle,
    fractional_roll,
    neighbourhood_energy,
    topographic_t,
)
from cryovae.models.ctf import apply_ctf
from cryovae.models.transforms import rotate_images

BOX = 24


def _blobs(n: int = BOX) -> tuple[torch.Tensor, np.ndarray]:
    """(1, n, n) two Gaussian blobs (x, y) = (4, -3) and (-2, 3) px from the centre, and the
    centre of mass of the image (x, y)."""
    idx = torch.arange(n, dtype=torch.float32) - n // 2
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    img = torch.exp(-((xx - 4) ** 2 + (yy + 3) ** 2) / 3.0) + 0.5 * torch.exp(-((xx + 2) ** 2 + (yy - 3) ** 2) / 3.0)
    return img[None], _com(img)


def _com(img: torch.Tensor) -> np.ndarray:
    n = img.shape[-1]
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    w = img.double()
    return np.array([float((w * idx[None, :]).sum() / w.sum()), float((w * idx[:, None]).sum() / w.sum())])


@pytest.mark.parametrize("n", [24, 25])
def test_rotation_sequence_turns_by_360_over_c_per_step_about_the_box_centre(n):
    img, com = _blobs(n)
    frames = 12
    seq = rotation_sequence(img, frames, sequence_mask(n))
    assert seq.shape == (1, frames, n, n)
    torch.testing.assert_close(seq[0, 0], img[0] * sequence_mask(n), atol=1e-5, rtol=0)
    for ell in range(frames):
        a = ell * 2 * math.pi / frames
        # out(p) = img(R(a) p): the content at q moves to R(-a) q
        expected = np.array([math.cos(a) * com[0] + math.sin(a) * com[1], -math.sin(a) * com[0] + math.cos(a) * com[1]])
        np.testing.assert_allclose(_com(seq[0, ell]), expected, atol=0.03)
        # band-limited: no energy lost or made, whatever the angle
        assert float((seq[0, ell] ** 2).sum()) == pytest.approx(float((seq[0, 0] ** 2).sum()), rel=2e-3)
    # a quarter turn is the exact pixel permutation out[i, j] = img[j, 2c - i] (c = n // 2)
    c = n // 2
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    masked = (img[0] * sequence_mask(n)).numpy()
    want = masked[j, (2 * c - i) % n]
    np.testing.assert_allclose(seq[0, 3].numpy(), want, atol=1e-5)
    # the same convention as the bilinear rotate_images, and undone by turning back
    g = torch.tensor([0.5])
    assert float(torch.corrcoef(torch.stack([rotate_band_limited(img, g).flatten(),
                                             rotate_images(img, g).flatten()]))[0, 1]) > 0.995
    torch.testing.assert_close(rotate_band_limited(rotate_band_limited(img, g), -g), img, atol=1e-3, rtol=0)


def test_the_mask_is_soft_circular_and_applied_before_turning():
    mask = sequence_mask(BOX, radius=0.9)
    r = np.hypot(*np.meshgrid(np.arange(BOX) - BOX // 2, np.arange(BOX) - BOX // 2))
    assert np.all(mask.numpy()[r <= 0.75 * BOX / 2 - 1e-6] == 1) and np.all(mask.numpy()[r >= 0.9 * BOX / 2] == 0)
    edge = mask.numpy()[(r > 0.75 * BOX / 2 + 0.5) & (r < 0.9 * BOX / 2 - 0.5)]
    assert edge.size and np.all((edge > 0) & (edge < 1))
    corner = torch.zeros(1, BOX, BOX)
    corner[0, 1, 1] = corner[0, 1, BOX - 2] = 100.0  # outside the mask: must not enter any frame
    seq = rotation_sequence(corner, 8, mask)
    assert float(seq.abs().max()) < 1e-3


def test_shift_images_moves_the_content_by_the_shift():
    img, com = _blobs()
    moved = shift_images(img, torch.tensor([[1.5, -2.0]]))
    np.testing.assert_allclose(_com(moved[0]), com + [1.5, -2.0], atol=0.02)


def test_t_is_eq_6_to_9_on_a_hand_checked_example():
    # one capsule of C = 3, S = 3 frames; u[l, i]
    u = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]).reshape(1, 3, 1, 3)
    z = torch.tensor([[2.0, 5.0, 1.0], [3.0, 1.0, 4.0], [0.0, 2.0, 6.0]]).reshape(1, 3, 1, 3)
    # neighbourhood 1, window 0 (eq. 6): T = (Z - mu) / sqrt(U^2 + eps)
    t = topographic_t(z, u, 1.0, neighbourhood=1, window=0)
    assert float(t[0, 0, 0, 0]) == pytest.approx((2 - 1) / 1.0, rel=1e-5)
    assert float(t[0, 1, 0, 2]) == pytest.approx((4 - 1) / 3.0, rel=1e-5)
    # neighbourhood 3 inside the capsule: frame 0, dim 0 sums u[0, 2], u[0, 0], u[0, 1] squared = 0 + 1 + 4
    e = neighbourhood_energy(u, 3, 0)
    assert float(e[0, 0, 0, 0]) == pytest.approx(5.0)
    # window 1, shifted (eq. 9): E[l, i] = sum_d U[l+d, i+d]^2 (neighbourhood 1), all indices mod 3
    #   E[0, 0] = U[2, 2]^2 + U[0, 0]^2 + U[1, 1]^2 = 1 + 1 + 1 = 3
    #   E[1, 2] = U[0, 1]^2 + U[1, 2]^2 + U[2, 0]^2 = 4 + 9 + 4 = 17
    e = neighbourhood_energy(u, 1, 1)
    assert float(e[0, 0, 0, 0]) == pytest.approx(3.0)
    assert float(e[0, 1, 0, 2]) == pytest.approx(17.0)
    t = topographic_t(z, u, 1.0, neighbourhood=1, window=1)
    assert float(t[0, 1, 0, 2]) == pytest.approx((4 - 1) / math.sqrt(17.0 + 1e-6), rel=1e-5)
    # stationary coherence (eq. 8, 'Bubbles'): E[1, 2] = U[0, 2]^2 + U[1, 2]^2 + U[2, 2]^2 = 0 + 9 + 1
    assert float(neighbourhood_energy(u, 1, 1, shift=False)[0, 1, 0, 2]) == pytest.approx(10.0)


def test_shifting_coherence_makes_a_rolled_sequence_roll_t():
    """If U and Z roll one step per frame, so does T (the structure eq. 9 builds in)."""
    gen = torch.Generator().manual_seed(0)
    c = 8
    u0, z0 = torch.randn(2, 3, c, generator=gen), torch.randn(2, 3, c, generator=gen)
    u = torch.stack([torch.roll(u0, ell, dims=-1) for ell in range(c)], 1)
    z = torch.stack([torch.roll(z0, ell, dims=-1) for ell in range(c)], 1)
    t = topographic_t(z, u, -3.0, neighbourhood=3, window=2)
    for ell in range(c):
        torch.testing.assert_close(t[:, ell], torch.roll(t[:, 0], ell, dims=-1), atol=1e-5, rtol=1e-5)
    # and T of frame 1 dimension i+1 shares every U of frame 0 dimension i (the shifted W):
    # changing one U of frame 0 changes both alike
    e = neighbourhood_energy(u, 3, 2)
    bumped = u.clone()
    bumped[0, 0, 0, 2] += 1.0
    diff = neighbourhood_energy(bumped, 3, 2) - e
    assert float(diff[0, 0, 0, 2]) == pytest.approx(float(diff[0, 1, 0, 3]), rel=1e-5) and float(diff[0, 0, 0, 2]) > 0
    assert float(diff[0, 1, 0, 2]) == pytest.approx(float(diff[0, 0, 0, 1]), rel=1e-5)


def test_the_roll_reads_out_the_rotation_and_the_magnitudes_the_content():
    gen = torch.Generator().manual_seed(1)
    k, c = 5, 12
    ref = torch.rand(k, c, generator=gen) + 0.2 * torch.cos(torch.arange(c) * 2 * math.pi / c + torch.rand(k, 1))
    steps = torch.tensor([0.0, 1.0, 3.0, 5.5, -2.25, 11.0])
    scale = torch.rand(len(steps), k, generator=gen) + 0.5
    t = scale[..., None] * fractional_roll(ref[None].expand(len(steps), -1, -1), steps)
    theta, agreement = capsule_roll_angle(t, ref)
    want = torch.remainder(steps * 2 * math.pi / c + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(theta, want, atol=1e-4, rtol=0)
    assert bool((agreement > 0.999).all())
    # turning by a turns theta by a (here: one more step = 30 degrees)
    theta2, _ = capsule_roll_angle(torch.roll(t, 1, dims=-1), ref)
    np.testing.assert_allclose(np.angle(np.exp(1j * (theta2 - theta).numpy())), 2 * math.pi / c, atol=1e-4)
    # the magnitudes do not change with a whole roll (a fractional one, through the even C's
    # Nyquist term, by at most a few per cent)
    whole = steps == steps.round()
    torch.testing.assert_close(t.norm(dim=-1)[whole], (scale * ref.norm(dim=-1))[whole], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t.norm(dim=-1), scale * ref.norm(dim=-1), rtol=0.03, atol=0)
    # capsules that disagree: lower agreement, theta their weighted compromise
    mixed = t.clone()
    mixed[:, :2] = torch.roll(mixed[:, :2], 6, dims=-1)
    assert bool((capsule_roll_angle(mixed, ref)[1] < 0.9).all())


def _tiny(**kw):
    return build_model(model_config("tvae", box=BOX, zdim=4, capsule_size=8, encoder_hidden=(32,), gen_hidden=32,
                                     gen_layers=1, **kw))


def test_decode_renders_the_capsules_that_read_back_as_its_z_and_theta():
    model = _tiny()
    gen = torch.Generator().manual_seed(2)
    model.reference.copy_(torch.rand(4, 8, generator=gen) + 1.0)
    z = torch.rand(3, 4, generator=gen) * 10 + 1
    theta = torch.tensor([0.3, -2.0, 3.0])
    caps = model.capsules_at(z, theta)
    read, _ = capsule_roll_angle(caps, model.reference)
    torch.testing.assert_close(read, theta, atol=1e-4, rtol=0)
    torch.testing.assert_close(caps.norm(dim=-1), z, rtol=1e-3, atol=1e-3)
    mean, _ = model.decode(z, theta, model.generator.centred_pose(theta, torch.zeros(3, 2)))
    assert mean.shape == (3, BOX, BOX) and bool((mean[:, 0, 0] == 0).all())  # inside the mask only


def test_a_turned_frame_gets_the_ctf_turned_with_it():
    """Frame l is the particle turned by a = l 360/S; its CTF is the particle's with the
    astigmatism angle turned by -a (what ``_frames_ctf`` does by turning back and forth)."""
    model = _tiny()
    s = model.frames
    g, _ = _blobs()  # smooth: its turned spectrum stays on the grid
    params = torch.tensor([[20000.0, 10000.0, 20.0, 300.0, 2.7, 0.1, 0.0]])  # strongly astigmatic
    pixel = 6.0
    frames = model._frames_ctf(g[:, None].expand(1, s, BOX, BOX).contiguous(), compute_ctf(params, BOX, pixel))
    for ell in (1, 3):  # 45° and 135° (90° looks alike either way: astigmatism has a 180° period)
        turned = params.clone()
        turned[0, 2] -= ell * 360.0 / s
        want = apply_ctf(g, compute_ctf(turned, BOX, pixel))[0]
        inside = sequence_mask(BOX, 0.7) > 0
        got = frames[0, ell][inside]
        good = float(torch.corrcoef(torch.stack([got, want[inside]]))[0, 1])
        assert good > 0.99
        wrong = params.clone()
        wrong[0, 2] += ell * 360.0 / s
        bad = apply_ctf(g, compute_ctf(wrong, BOX, pixel))[0][inside]
        assert 1 - good < 0.2 * (1 - float(torch.corrcoef(torch.stack([got, bad]))[0, 1]))  # the other way: worse


def test_every_variant_gives_the_contract_shapes():
    y = torch.randn(3, BOX, BOX)
    for variant in ("topographic", "static", "plain"):
        model = _tiny(variant=variant)
        terms = model(y, None, sample=True, generator=torch.Generator().manual_seed(0))
        assert terms.elbo.shape == (3,) and bool(torch.isfinite(terms.elbo).all())
        assert set(terms.kl_parts) == ({"kl_z"} if variant == "plain" else {"kl_z", "kl_u"})
        enc = model.infer(y)
        assert enc.z_mean.shape == enc.z_std.shape == (3, 4) and enc.theta.shape == (3,)
        frames, t = model.capsule_sequence(y)
        assert frames.shape == (3, 8, BOX, BOX) and t.shape == (3, 8, 4, 8)
        torch.testing.assert_close(t[:, 0].norm(dim=-1), enc.z_mean, rtol=1e-4, atol=1e-4)
        # coherent=False: every frame's T from its own Z and U alone, whatever the other frames
        x, alone = model.capsule_sequence(y, coherent=False)
        with torch.no_grad():
            z_mu, _, u_mu, _ = model.encoder(x[:, 3])
            own = model._t(z_mu, u_mu, 1)[:, 0]
        torch.testing.assert_close(alone[:, 3], own, atol=1e-4, rtol=1e-4)
        if variant == "topographic":  # over the sequence, the neighbours' U count too
            assert not torch.allclose(t[:, 3], own, rtol=1e-2)
        else:
            torch.testing.assert_close(alone, t)


def test_options_that_cannot_work_are_one_line_errors():
    with pytest.raises(CryovaeError, match=r"--tvae-window must be between 0 and \(C - 1\) // 2 = 3"):
        model_config("tvae", capsule_size=8, window=4)
    with pytest.raises(CryovaeError, match="--tvae-neighbourhood must be odd"):
        model_config("tvae", neighbourhood=2)
    with pytest.raises(CryovaeError, match="use --refine-steps 0"):
        _tiny().log_posterior(torch.zeros(1, BOX, BOX), torch.zeros(1, 4), torch.zeros(1), torch.zeros(1, 2))
    assert model_config("tvae", capsule_size=8).coherence_window == 3
    assert model_config("tvae", variant="static").coherence_window == 0


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


TRAIN = ["--model", "tvae", "--zdim", "3", "--tvae-capsule-size", "6", "--tvae-enc-hidden", "32",
         "--gen-hidden", "32", "--gen-layers", "1", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
         "--val-fraction", "0.2"]


def test_train_tvae_writes_a_star_that_encode_and_analyze_read_back(tmp_path):
    sim = tmp_path / "sim"
    r = _invoke(["simulate", "hinge", "-o", sim, "--n", "96", "--box", "20", "--apix", "6", "--snr", "1", "--seed", "3"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = _invoke(["train", sim / "particles.star", "-o", run, *TRAIN])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["kind"] == "tvae" and cfg["train"]["refine_steps"] == 0  # the model's default
    df = starfile.read(run / "particles.star", always_dict=True)["particles"]
    assert {"rlnAnglePsi", "rlnOriginXAngst", "cryovaeZ1", "cryovaeZ2", "cryovaeZ3", "cryovaeProb"} <= set(df.columns)
    assert "cryovaeZ4" not in df.columns and len(df) == 96
    lat = np.load(run / "latents.npz")
    np.testing.assert_allclose(df[["cryovaeZ1", "cryovaeZ2", "cryovaeZ3"]].to_numpy(), lat["z_mean"], rtol=1e-5)
    assert np.all(lat["z_mean"] > 0) and np.all(np.isfinite(df["rlnAnglePsi"]))
    np.testing.assert_allclose(df["rlnAnglePsi"], lat["psi_deg"], atol=1e-3)

    out = tmp_path / "again.star"
    r = _invoke(["encode", run, sim / "particles.star", "-o", out, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    again = starfile.read(out, always_dict=True)["particles"]
    np.testing.assert_allclose(again["cryovaeZ1"], df["cryovaeZ1"], rtol=1e-4)
    np.testing.assert_allclose(np.angle(np.exp(1j * np.radians(again["rlnAnglePsi"] - df["rlnAnglePsi"]))), 0, atol=1e-3)
    r = _invoke(["encode", run, sim / "particles.star", "-o", tmp_path / "x.star", "--refine-steps", "3"])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("cryovae encode: error: the Topographic VAE")

    r = _invoke(["analyze", run, "--no-umap", "--k", "2"])
    assert r.exit_code == 0, r.output
    for name in ("capsule_map.png", "capsule_roll.png", "traversal.png", "examples.png"):
        assert (run / "analysis" / name).stat().st_size > 1000
    caps = json.loads((run / "analysis" / "summary.json").read_text())["capsules"]
    assert caps["frames"] == 6 and caps["capsules"] == 3 and np.isfinite(caps["equivariance_error_mean"])


@pytest.mark.parametrize("variant, ctf", [("static", False), ("plain", False), ("topographic", True)])
def test_the_ablations_and_the_ctf_train_from_the_same_command(tmp_path, variant, ctf):
    sim = tmp_path / "sim"
    flags = ["--ctf"] if ctf else []
    assert _invoke(["simulate", "hinge", "-o", sim, "--n", "64", "--box", "16", "--snr", "1", "--seed", "4",
                    *flags]).exit_code == 0
    r = _invoke(["train", sim / "particles.star", "-o", tmp_path / "run", *TRAIN, "--tvae-variant", variant, *flags])
    assert r.exit_code == 0, r.output
    model = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert model["variant"] == variant and model["ctf"] is ctf
    assert np.isfinite(starfile.read(tmp_path / "run" / "particles.star", always_dict=True)["particles"]["cryovaeZ1"]).all()
