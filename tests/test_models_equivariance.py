"""The TARGET-VAE encoder is equivariant by construction: test the field maps and the chosen cell.

Internal convention (cryovae.geometry): ``np.rot90(img)`` (axes (0, 1)) is ``out(p) = img(R(+90) p)``
about pixel N//2 for odd N, i.e. it adds +90 deg to the particle's rotation theta and moves its
centre to R(-90) c. ``np.roll`` by +k columns adds +k to cx.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_models_synthetic import blob_particles

from cryovae.geometry import rotation_matrix
from cryovae.models import ModelConfig, TargetVAE, build_model
from cryovae.runs.checkpoint import load_model_state, model_state

BOX = 33  # odd: np.rot90 turns about pixel N//2 exactly


def _model(group: str, seed: int = 0) -> TargetVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig.for_model("target", box=BOX, group=group, zdim=2, translation_prior_px=4.0, enc_fields=4, enc_kernel=13,
                                enc_layers=1, enc_inner_kernel=3, gen_hidden=16, fourier_features=8)
    model = build_model(cfg)
    model.eval()
    return model


def _particle(theta=0.4, c=(2.0, -1.0)) -> np.ndarray:
    return blob_particles(BOX, np.array([theta]), np.array([c], dtype=float))[0]


def _maps(model: TargetVAE, img: np.ndarray):
    with torch.no_grad():
        post = model.encode(torch.from_numpy(np.ascontiguousarray(img))[None])
    return {k: getattr(post, k)[0].numpy() for k in ("logits", "theta_delta", "theta_logstd")}, post


@pytest.mark.parametrize("group,n", [("p4", 4), ("p8", 8)])
def test_rot90_permutes_rotation_channels_and_rotates_maps(group, n):
    """Every output field: channel r of the turned input == rot90 of channel r - N/4 (atol 1e-4)."""
    model = _model(group)
    img = _particle()
    maps, post = _maps(model, img)
    maps_r, post_r = _maps(model, np.rot90(img))
    k = n // 4
    for name in maps:
        expected = np.rot90(np.roll(maps[name], k, axis=0), axes=(1, 2))
        np.testing.assert_allclose(maps_r[name], expected, atol=1e-4, err_msg=name)
    z = post.z_mu[0].numpy()  # (zdim, N, H, W)
    expected_z = np.rot90(np.roll(z, k, axis=1), axes=(2, 3))
    np.testing.assert_allclose(post_r.z_mu[0].numpy(), expected_z, atol=1e-4)


@pytest.mark.parametrize("group", ["p4", "p8", "p16"])
def test_rot90_turns_inferred_theta_by_90_deg_and_keeps_z(group, device):
    """Chosen r moves by N/4, theta by +90 deg (tol 1e-3 rad), centre by R(-90), z unchanged (1e-4);
    on every available device."""
    model = _model(group).to(device)
    img = _particle()
    y = torch.from_numpy(np.stack([img, np.rot90(img).copy(), np.rot90(img, 2).copy()])).to(device)
    with torch.no_grad():
        enc = model.infer(y)
    theta, z, prob, c = (t.cpu().numpy() for t in (enc.theta, enc.z_mean, enc.prob, enc.center_px))
    for j in (1, 2):
        d = math.remainder(theta[j] - theta[0] - j * math.pi / 2, 2 * math.pi)
        assert abs(d) < 1e-3, (group, j, theta)
        np.testing.assert_allclose(z[j], z[0], atol=1e-4)
        np.testing.assert_allclose(prob[j], prob[0], atol=1e-5)
        c_expected = rotation_matrix(-j * math.pi / 2) @ c[0]
        np.testing.assert_allclose(c[j], c_expected, atol=1e-6)


def test_rotation_offset_sign_follows_internal_convention():
    """Turning the input by +2 pi/N (internal convention) moves the argmax channel from r to r+1,
    and the channel offsets grow by +2 pi/N: pinned for p4 with np.rot90 (+90 deg)."""
    model = _model("p4")
    off = model.offsets.numpy()
    np.testing.assert_allclose(np.remainder(np.diff(off), 2 * np.pi), 2 * np.pi / 4, atol=1e-6)
    img = _particle()
    maps, _ = _maps(model, img)
    maps_r, _ = _maps(model, np.rot90(img))
    r0 = np.unravel_index(np.argmax(maps["logits"]), maps["logits"].shape)[0]
    r1 = np.unravel_index(np.argmax(maps_r["logits"]), maps_r["logits"].shape)[0]
    assert r1 == (r0 + 1) % 4


def test_p8_45_degree_rotation_is_approximately_equivariant():
    """A 45 deg turn (exact rendering, not on the pixel grid's symmetry): the attention map of
    channel r+1 correlates with the 45-deg-turned map of channel r (> 0.9)."""
    from cryovae.geometry import transform_image

    model = _model("p8")
    theta0, c = 0.3, (0.0, 0.0)
    img = _particle(theta0, c)
    img45 = _particle(theta0 + math.pi / 4, c)
    maps, _ = _maps(model, img)
    maps45, _ = _maps(model, img45)
    for r in range(8):
        # out(p) = map(R(45) p) rotates a map like the particle
        turned = transform_image(maps["logits"][r], math.pi / 4, (0.0, 0.0), order=1)
        target = maps45["logits"][(r + 1) % 8]
        inner = np.s_[8:-8, 8:-8]
        a, b = turned[inner].ravel(), target[inner].ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.9


@pytest.mark.parametrize("group", ["c1", "p8"])
def test_integer_shift_moves_maps_and_chosen_translation(group):
    """np.roll by (dy, dx) shifts every map by the same pixels and the chosen centre by (dx, dy)."""
    model = _model(group)
    img = _particle(0.9, (0.0, 0.0))
    dx, dy = 3, -2
    shifted = np.roll(img, (dy, dx), axis=(0, 1))
    maps, _ = _maps(model, img)
    maps_s, _ = _maps(model, shifted)
    inner = np.s_[:, 6:-6, 6:-6]
    expected = np.roll(maps["logits"], (dy, dx), axis=(1, 2))
    np.testing.assert_allclose(maps_s["logits"][inner], expected[inner], atol=1e-4)
    with torch.no_grad():
        y = torch.from_numpy(np.stack([img, shifted]))
        enc, post = model.infer(y), model.encode(y)
    c0, c1 = enc.center_px.numpy()
    assert np.all(np.abs(c0) < BOX // 2 - 6), "precondition: argmax away from the border"
    np.testing.assert_allclose(c1 - c0, [dx, dy])
    z_cell = model.select(post, model.argmax_onehot(post.logits)).z_mu.numpy()
    np.testing.assert_allclose(z_cell[1], z_cell[0], atol=1e-4)
    # (not enc.z_mean, the mixture over all cells: it also sums the border cells, whose view
    # np.roll's wrap-around changes, and an untrained model spreads q over them)
    assert abs(math.remainder(float(enc.theta[1] - enc.theta[0]), 2 * math.pi)) < 1e-4


@pytest.mark.parametrize("group", ["c1", "p8"])
@pytest.mark.parametrize("training", [True, False])
def test_fft_lifting_convolution_equals_r2conv(group, training, device):
    """The FFT path gives the same lifting output as e2cnn's R2Conv (or Conv2d for c1), on every
    available device."""
    torch.manual_seed(1)
    cfg = ModelConfig.for_model("target", box=BOX, group=group, enc_fields=3, enc_kernel=41)
    enc = build_model(cfg).encoder.to(device)
    enc.train(training)
    x = torch.randn(2, BOX, BOX).to(device)
    with torch.no_grad():
        fast = enc.lift_forward(x)
        enc.fft_lift = False
        ref = enc.lift_forward(x)
    assert fast.shape == ref.shape == (2, 3 * cfg.n_rotations, BOX, BOX)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_translation_window_is_the_centre_of_the_full_grid():
    """max_shift crops the posterior to the centred window; the values equal the full grid's."""
    torch.manual_seed(2)
    kw = dict(box=BOX, group="p4", enc_fields=3, enc_kernel=9, gen_hidden=8, fourier_features=4)
    full = build_model(ModelConfig.for_model("target", max_shift=BOX, **kw)).eval()
    win = build_model(ModelConfig.for_model("target", max_shift=5, **kw))
    load_model_state(win, model_state(full))
    full.eval()
    win.eval()
    x = torch.from_numpy(_particle())[None]
    with torch.no_grad():
        a, b = full.encode(x).logits, win.encode(x).logits
    assert b.shape == (1, 4, 11, 11)
    c = BOX // 2
    torch.testing.assert_close(b, a[..., c - 5: c + 6, c - 5: c + 6], atol=1e-5, rtol=1e-5)
    assert win.grid[0, 0].tolist() == [-5.0, -5.0] and win.grid[5, 5].tolist() == [0.0, 0.0]


def test_inferred_z_is_the_mean_and_std_of_the_mixture_over_cells():
    """q(z | y) = sum_tr q(t, r | y) N(mu_tr, sigma_tr^2): infer() reports that mixture's mean and
    std (checked against torch.distributions.MixtureSameFamily), not the argmax cell's alone."""
    model = _model("p4")
    y = torch.from_numpy(np.stack([_particle(), _particle(1.3, (0.0, 1.0))]))
    with torch.no_grad():
        enc, post = model.infer(y), model.encode(y)
    q = torch.distributions.Categorical(logits=post.logits.flatten(1).double())
    for d in range(model.zdim):
        comp = torch.distributions.Normal(post.z_mu[:, d].flatten(1).double(),
                                          post.z_logstd[:, d].flatten(1).double().exp())
        mix = torch.distributions.MixtureSameFamily(q, comp)
        np.testing.assert_allclose(enc.z_mean[:, d].numpy(), mix.mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(enc.z_std[:, d].numpy(), mix.stddev.numpy(), rtol=1e-3, atol=1e-5)
    argmax_cell = model.select(post, model.argmax_onehot(post.logits))
    assert not torch.allclose(enc.z_mean, argmax_cell.z_mu, atol=1e-4)  # an untrained q is spread out


@pytest.mark.parametrize("group", ["c1", "p8"])
def test_window_lifting_is_the_window_of_the_whole_lifting(group):
    """The training window's direct convolution of the crop equals that window of the lifting
    over the whole image (R2Conv or Conv2d), and window_conv2d equals F.conv2d's crop."""
    import torch.nn.functional as F

    from cryovae.models.target_encoder import window_conv2d

    torch.manual_seed(3)
    cfg = ModelConfig.for_model("target", box=BOX, group=group, enc_fields=3, enc_kernel=21, max_shift=4)
    enc = build_model(cfg).encoder.train()
    x = torch.randn(2, BOX, BOX)
    with torch.no_grad():
        win = enc.lift_forward(x, window=True)
        enc.fft_lift = False
        whole = enc.lift_forward(x)
    c = BOX // 2
    assert win.shape == (2, 3 * cfg.n_rotations, 9, 9)
    torch.testing.assert_close(win, whole[..., c - 4: c + 5, c - 4: c + 5], rtol=1e-4, atol=1e-5)
    w, b = torch.randn(5, 2, 7, 7), torch.randn(5)
    y = torch.randn(3, 2, 20, 17)
    ref = F.conv2d(y, w, b, padding=3)
    for window in [(0, 20, 0, 17), (5, 12, 2, 16), (0, 1, 16, 17)]:
        r0, r1, c0, c1 = window
        torch.testing.assert_close(window_conv2d(y, w, b, window), ref[..., r0:r1, c0:c1], rtol=1e-4, atol=1e-5)
