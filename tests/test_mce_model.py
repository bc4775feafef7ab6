"""MCE-VAE's pieces without training: the se(2) exponential map and the pose it gives, the
image warp, the Gaussian-mixture prior, the class outputs and their columns in a star and a .cs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import starfile
import torch
from cryosparc.dataset import Dataset

from cryovae.errors import CryovaeError
from cryovae.geometry import rotation_matrix, transform_image
from cryovae.inference import Latents, write_cs, write_star
from cryovae.io import read_particles, write_stack
from cryovae.io import write_star as write_star_file
from cryovae.models import (
    GaussianMixturePrior,
    build_model,
    model_config,
    rotate_images,
    se2_exp,
    warp_images,
)
from cryovae.models.mce_vae import SE2_GENERATORS, pose_from_se2


def test_se2_exp_of_the_rotation_generator_is_the_rotation_matrix():
    omega = torch.tensor([0.3, -2.0, math.pi / 2])
    m = se2_exp(torch.stack([omega, torch.zeros(3), torch.zeros(3)], 1))
    np.testing.assert_allclose(m[:, :2, :2].numpy(), rotation_matrix(omega.numpy()), atol=1e-6)
    np.testing.assert_allclose(m[:, :2, 2].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(m[:, 2].numpy(), np.tile([0.0, 0.0, 1.0], (3, 1)), atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training's autocast leaves it in float32
        assert se2_exp(torch.zeros(1, 3)).dtype == torch.float32


def test_se2_exp_translation_and_the_closed_form_with_rotation():
    # a pure translation is itself; with rotation the translation is V(omega) t, V = (sin w/w, -(1-cos w)/w; ...)
    m = se2_exp(torch.tensor([[0.0, 2.0, -3.0]]))
    np.testing.assert_allclose(m[0].numpy(), [[1, 0, 2], [0, 1, -3], [0, 0, 1]], atol=1e-6)
    w, t = 0.8, np.array([1.5, -0.5])
    v = np.array([[np.sin(w), -(1 - np.cos(w))], [1 - np.cos(w), np.sin(w)]]) / w
    m = se2_exp(torch.tensor([[w, *t]], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(m[:2, 2], v @ t, atol=1e-5)
    assert SE2_GENERATORS.shape == (3, 3, 3)


def test_pose_of_a_group_element_renders_what_the_coordinates_say():
    # u = M p with M = exp(tau): the generator reads template(R(theta) (p - c)); geometry renders the same
    tau = torch.tensor([[1.1, 2.0, -1.0]])
    m = se2_exp(tau)
    theta, c = pose_from_se2(m)
    assert float(theta) == pytest.approx(1.1, abs=1e-6)
    p = torch.tensor([3.0, -2.0])
    u = m[0, :2, :2] @ p + m[0, :2, 2]
    r = torch.tensor(rotation_matrix(float(theta)), dtype=torch.float32)
    np.testing.assert_allclose((r @ (p - c[0])).numpy(), u.numpy(), atol=1e-5)


def test_warp_by_a_rotation_is_rotate_images_and_a_shift_moves_the_particle():
    rng = np.random.default_rng(0)
    template = np.zeros((21, 21), np.float32)
    template[8:12, 6:15] = 1.0
    template[12:15, 12:14] = 2.0
    img = torch.tensor(template[None] + 0.01 * rng.normal(size=(1, 21, 21)).astype(np.float32))
    g = torch.tensor([0.7])
    warped = warp_images(img, se2_exp(torch.stack([g, torch.zeros(1), torch.zeros(1)], 1)))
    np.testing.assert_allclose(warped.numpy(), rotate_images(img, g).numpy(), atol=1e-5)
    # out(p) = img(p + s): a particle at c moves to c - s
    moved = warp_images(torch.tensor(template[None]), se2_exp(torch.tensor([[0.0, 2.0, -1.0]])))
    np.testing.assert_allclose(moved[0].numpy(), transform_image(template, 0.0, (-2.0, 1.0), order=1), atol=1e-5)


def test_mixture_prior_against_torch_distributions():
    prior = GaussianMixturePrior(2, 3)
    fixed = GaussianMixturePrior(2, 5, spacing=4.0, learn_means=False)
    assert "means" not in dict(fixed.named_parameters()) and "means" in fixed.state_dict()
    d = torch.cdist(fixed.means, fixed.means)
    np.testing.assert_allclose(torch.diagonal(d, 1).numpy(), 4.0, atol=1e-5)  # neighbours 4 apart
    assert d[d > 0].min() >= 4.0 - 1e-5
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]]))
        prior.log_stds.copy_(torch.tensor([[0.0, 0.2], [-0.3, 0.1], [0.4, -0.2]]))
    comps = torch.distributions.Independent(torch.distributions.Normal(prior.means, prior.log_stds.exp()), 1)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(3)), comps)
    z = torch.randn(5, 2)
    np.testing.assert_allclose(prior.log_density(z).detach() - math.log(2 * math.pi), mix.log_prob(z).detach(), atol=1e-5)
    mu, logstd = torch.randn(4, 2), 0.3 * torch.randn(4, 2)
    q = torch.distributions.Independent(torch.distributions.Normal(mu, logstd.exp()), 1)
    for k in range(3):
        pk = torch.distributions.Independent(torch.distributions.Normal(prior.means[k], prior.log_stds[k].exp()), 1)
        np.testing.assert_allclose(prior.component_kl((mu, logstd))[:, k].detach(),
                                   torch.distributions.kl_divergence(q, pk).detach(), atol=1e-5)
    # the mixture bound is an upper bound of the true KL (Monte Carlo, many samples)
    zs = q.sample((20000,))
    true_kl = (q.log_prob(zs) - mix.log_prob(zs)).mean(0)
    assert (prior.kl((mu, logstd)).detach() >= true_kl - 0.05).all()
    # responsibilities: z on a component's mean belongs to it
    assert prior.log_responsibilities(prior.means.detach()).argmax(1).tolist() == [0, 1, 2]


def _small_mce(**kw):
    """A small MCE-VAE; the paper's model (the class posterior at the encoder's pose) unless
    ``pose_search`` is given (tests/test_pose_search.py has the search's own tests)."""
    sizes = dict(box=16, classes=3, gen_hidden=16, gen_layers=1, fourier_features=8, enc_channels=4, head_hidden=16,
                 pose_search=0)
    return build_model(model_config("mce", **{**sizes, **kw}))


def test_mce_contract_outputs_and_options():
    torch.manual_seed(0)
    model = _small_mce()
    y = torch.randn(6, 16, 16)
    terms = model(y, generator=torch.Generator().manual_seed(0))
    assert terms.elbo.shape == (6,) and torch.isfinite(terms.elbo).all()
    assert {"kl_c", "kl_z", "kl_theta", "kl_t", "class_balance", "invariance", "pose_consistency"} <= set(terms.kl_parts)
    model.eval()
    enc = model.infer(y)
    cls, prob = enc.extras["class"], enc.extras["class_prob"]
    assert cls.dtype == torch.int64 and set(cls.tolist()) <= {1, 2, 3}
    assert prob.shape == (6,) and ((prob >= 1 / 3 - 1e-6) & (prob <= 1)).all()
    assert enc.z_mean.shape == (6, 2) and enc.theta.shape == (6,) and enc.center_px.shape == (6, 2)
    images = model.class_images()
    assert images.shape == (3, 16, 16)
    # class k's image is the generator at the class's mixture mean, pose 0; decode(z) of a mean
    # renders that mean's class
    mean, _ = model.decode(model.prior.means.detach(), torch.zeros(3), torch.zeros(3, 2))
    np.testing.assert_allclose(mean.detach().numpy(), images.numpy(), atol=1e-6)
    for bad, msg in (({"classes": 0}, "--classes"), ({"zdim": 0}, "--zdim")):
        with pytest.raises(CryovaeError, match=msg):
            _small_mce(**bad)


def test_spatial_and_target_models_have_no_class_images():
    for kind in ("target", "spatial"):
        assert build_model(model_config(kind, box=16)).class_images() is None


@pytest.fixture
def class_latents():
    n = 6
    rng = np.random.default_rng(0)
    return Latents.from_pose(rng.normal(size=(n, 2)), np.ones((n, 2)), rng.uniform(-3, 3, n), rng.normal(size=(n, 2)),
                             2.0, extras={"class": np.array([1, 2, 3, 1, 3, 2], np.int64),
                                          "class_prob": np.array([0.9, 0.8, 1.0, 0.5, 0.7, 0.95])})


def _stack_star(folder, n=6, box=16, class_column=False):
    write_stack(folder / "p.mrcs", np.zeros((n, box, box), np.float32), 2.0)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g"], "rlnImagePixelSize": [2.0],
                           "rlnImageSize": [box], "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@p.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n})
    if class_column:
        parts["rlnClassNumber"] = [7] * n
    write_star_file(folder / "in.star", {"optics": optics, "particles": parts})
    return read_particles(folder / "in.star")


def test_star_gets_relion_class_number_1_based_and_the_class_probability(tmp_path, class_latents):
    stack = _stack_star(tmp_path, class_column=True)
    out = write_star(stack, class_latents, tmp_path / "out.star")
    parts = starfile.read(out)["particles"]
    assert parts["rlnClassNumber"].tolist() == [1, 2, 3, 1, 3, 2]
    assert parts["rlnClassNumber"].dtype.kind == "i"  # written as integers, as RELION reads them
    np.testing.assert_allclose(parts["cryovaeClassProb"], class_latents.extras["class_prob"])
    assert "cryovaeClass" not in parts.columns
    assert parts["cryovaeInputClassNumber"].tolist() == [7] * 6  # the input's own classes are kept


def test_cs_gets_cryosparc_class_0_based_and_class_posterior(tmp_path, class_latents):
    stack = _stack_star(tmp_path)
    cs = write_cs(stack, class_latents, tmp_path / "out.cs")
    d = Dataset.load(cs)
    assert d["alignments2D/class"].dtype == np.uint32
    assert d["alignments2D/class"].tolist() == [0, 1, 2, 0, 2, 1]
    np.testing.assert_allclose(d["alignments2D/class_posterior"], class_latents.extras["class_prob"], rtol=1e-6)
    assert not any(f.startswith("cryovae/class") for f in d.fields())


def test_elbo_parts_are_the_class_marginal_bound():
    # recon - kl_c - kl_z = log sum_c exp(log pi_c + ll_c - KL_c) at the posterior means (eq. 13/14
    # with the optimal class weights), and the class posterior is its softmax
    torch.manual_seed(1)
    model = _small_mce(invariance_weight=0.0, pose_consistency=0.0, class_balance=0.0)
    model.eval()
    y = torch.randn(5, 16, 16)
    terms = model(y, sample=False)
    post = model.encode(y)
    theta, c = pose_from_se2(se2_exp(post.tau_mu))
    ll = model.class_log_likelihoods(y, post.z_mu, theta, c, None)
    pk = torch.distributions.Normal(model.prior.means.detach(), model.prior.log_stds.exp().detach())
    kl = torch.stack([torch.distributions.kl_divergence(
        torch.distributions.Normal(model.prior.means[k].detach() + post.z_mu, post.z_logstd.exp()),
        torch.distributions.Normal(pk.loc[k], pk.scale[k])).sum(1) for k in range(3)], 1)
    expected = torch.logsumexp(ll - kl - math.log(3), 1)
    got = terms.recon - terms.kl_parts["kl_c"] - terms.kl_parts["kl_z"]
    np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-3)
    assert set(terms.kl_parts) == {"kl_c", "kl_z", "kl_theta", "kl_t"}
    enc = model.infer(y)
    np.testing.assert_allclose(enc.extras["class_prob"].numpy(), torch.softmax(ll - kl, 1).max(1).values.detach(),
                               rtol=1e-5)
    # a sure class puts z at its mixture mean plus the offset, and decode(z) renders that class
    cls = enc.extras["class"] - 1
    sure = enc.extras["class_prob"] > 0.999
    np.testing.assert_allclose(enc.z_mean[sure].numpy(),
                               (model.prior.means[cls[sure]] + post.z_mu[sure]).detach().numpy(), atol=1e-2)


def test_ctf_multiplies_every_class_template():
    # with --ctf each class's template is multiplied by the particle's own CTF
    from cryovae.models import compute_ctf
    from cryovae.models.distributions import gaussian_log_likelihood

    torch.manual_seed(2)
    model = _small_mce(ctf=True, pixel_size=3.0)
    model.eval()
    y = torch.randn(4, 16, 16)
    params = torch.tensor([[15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0]]).repeat(4, 1)
    params[:, 0] += torch.arange(4) * 3000.0
    ctf = compute_ctf(params, 16, 3.0)
    z, theta, c = torch.randn(4, 2), torch.rand(4), torch.zeros(4, 2)
    ll = model.class_log_likelihoods(y, z, theta, c, ctf)
    for k in range(3):
        mean, log_sigma = model.decode_class(z, torch.full((4,), k), theta, model.generator.centred_pose(theta, c), ctf)
        np.testing.assert_allclose(ll[:, k].detach().numpy(),
                                   gaussian_log_likelihood(y, mean, log_sigma).detach().numpy(), rtol=1e-5)
    assert not torch.allclose(ll, model.class_log_likelihoods(y, z, theta, c, None))
    assert torch.isfinite(model(y, ctf, generator=torch.Generator().manual_seed(0)).elbo).all()
    searching = _small_mce(ctf=True, pixel_size=3.0, pose_search=8)
    assert torch.isfinite(searching(y, ctf, generator=torch.Generator().manual_seed(0)).elbo).all()
