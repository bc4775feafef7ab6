"""MCE-VAE (Bajaj, Roy & Zhang, "Invariance-based multi-clustering of latent space embeddings
for equivariant learning"): unsupervised, pose-invariant 2D classes.

The latent of a particle is split three ways (the paper's Figure 2):

* ``c``, the class: categorical over K classes, prior uniform (the paper's equi-mixture
  ``p_c = 1/K``);
* ``z``, the continuous invariant latent, with the Gaussian-mixture prior
  ``p(z | c) = N(mu_c, diag s_c^2)`` (:class:`cryovae.models.priors.GaussianMixturePrior`: the
  means fixed and ``prior_spacing`` apart, as the paper fixes them, eq. 15; the stds ``s_c``
  learnt); the posterior given the class is ``q(z | y, c) = N(mu_c + m(y), s(y)^2)``: the encoder
  gives z's offset from its class's mean;
* ``tau`` in se(2), the transformation: coefficients of the Lie algebra's generators (one
  rotation, two translations, :data:`SE2_GENERATORS`), mapped to the group by the matrix
  exponential (:func:`se2_exp`); ``q(tau | y)`` Gaussian, the rotation's prior wide (std
  ``theta_prior_std``), the translations' ``N(0, translation_prior_px^2)``.

The decoder is cryovae's spatial generator: the canonical image of class c at ``z = mu_c + m`` is
``g(u, [m, onehot(c)])``
and the particle is that image with the pose of ``exp(tau)`` applied to the coordinates,
``u = M p`` (M maps particle to template coordinates: ``M = [[R(theta), -R(theta) c], [0, 1]]``
in the internal convention of :mod:`cryovae.geometry`, so theta and the centre c follow from
the group element; the paper's spatial transformer samples the canonical image the same way).

Why the generator reads the class one-hot beside z's offset: the reconstruction term then compares each
particle with K class templates, as RELION's and cryoSPARC's 2D classification compare it with
K references, and the class posterior ``q(c | y)`` is the exact one given the encoder's z and
tau (:meth:`MCEVAE.class_posterior`): a class is what explains the particle best. Why z is
class-relative: z then lies in its class's mixture component (``mu_c + m`` with ``m`` of order
``s_c``, the means ``prior_spacing`` apart), so a bare z carries its class too, and
:meth:`MCEVAE.decode` of one (traversals, cluster centres, refinement) renders it in the
component it belongs to, ``argmax_c p(c | z)``; with an unconstrained z and learnt means, z had
stayed between the components and that class disagreed with the particles' on half of them.
(The generator reads the offset, not ``mu_c + m``: with the class means in its input the K
templates differed from the start, the classes locked in before the poses were learnt, and
the test set's accuracy fell from 0.98 to 0.37.)

The objective per particle (nats, to maximise) is eq. 6 with the ELBO of eq. 7, the class summed
out exactly:

``log sum_c exp(log pi_c + log p(y | mu_c + m, c, tau) - KL(q(z | y, c) || p(z | c))) - KL(q(tau|y) || p(tau))
- alpha D - gamma P - beta KL(qbar || p(c))``

whose class weights ``q(c | y)`` make it the mixture bound of eq. 13/14 (``kl_z = sum_c q_c
KL_c``), ``D`` the invariance loss of eq. 8 (z and the canonical image of y against those of a
copy of y transformed by a group element drawn uniformly, the copy's values held fixed), ``P``
a pose-consistency loss (not in the paper: the copy's pose must be the transformed pose) and the
last term the class-balance term against the classic collapse of a mixture VAE into one class:
``qbar`` is the batch mean of ``q(c | y)``. All K classes are rendered at each particle's pose
in one generator pass (:meth:`cryovae.models.SpatialGenerator.render_codes`).

The encoder (:class:`MCEEncoder`) is the paper's: a four-layer CNN with batch normalisation
and ReLU (the "augmented encoder"), then three MLP extractors (class, z, tau).

All of the above is the paper's variant, ``pose_search = 0``. By default (``pose_search`` = R =
36) the class and the pose come instead from an exhaustive search of every class template at R
rotations and every integer shift (:mod:`cryovae.models.pose_search`, :meth:`MCEVAE.search_forward`),
the expectation step of RELION's 2D classification; the encoder then gives z, and its tau is
trained to read the searched pose. docs/models.md has why and what it measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cryovae.errors import CryovaeError
from cryovae.models.base import (
    CLASS_EXTRA,
    CLASS_PROB_EXTRA,
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    option,
    wrap_angle,
)
from cryovae.models.ctf import apply_ctf
from cryovae.models.distributions import (
    gaussian_log_likelihood,
    kl_categorical,
    kl_normal,
    kl_theta_uniform,
    randn_like,
)
from cryovae.models.pose_search import (
    rotation_grid,
    shift_grid,
    shift_log_prior,
    template_log_likelihoods,
)
from cryovae.models.priors import GaussianMixturePrior, LatentPrior
from cryovae.models.transforms import rotate_images

#: ``infer`` searches this many posterior values (class x rotation x shift x particle) at a time (256 MB)
SEARCH_CHUNK_VALUES = 2**26

#: the generators of se(2) acting on homogeneous 2D coordinates (x, y, 1): rotation, x-, y-translation
SE2_GENERATORS = torch.tensor([
    [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
])


def se2_exp(tau: torch.Tensor) -> torch.Tensor:
    """The group element ``exp(sum_i tau_i G_i)`` of se(2) coefficients.

    tau : (B, 3) ``(omega, t_x, t_y)``: rotation in radians, translations in pixels.
    Returns (B, 3, 3): ``[[R(omega), V(omega) t], [0, 0, 1]]`` (``torch.linalg.matrix_exp``).
    """
    with torch.autocast(tau.device.type, enabled=False):  # float32 even under bfloat16 autocast
        m = torch.einsum("bi,ijk->bjk", tau.float(), SE2_GENERATORS.to(tau.device))
        return torch.linalg.matrix_exp(m)


def pose_from_se2(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta, centre) of the group element ``m`` (B, 3, 3) that maps particle coordinates to
    template coordinates, ``u = R(theta) p + a``: ``theta = atan2(m10, m00)`` (B,) radians and
    ``c = -R(-theta) a`` (B, 2) pixels, so that ``u = R(theta) (p - c)`` (internal convention)."""
    theta = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    a = m[:, :2, 2]
    cos, sin = torch.cos(theta), torch.sin(theta)
    # R(-theta) a = (cos ax + sin ay, -sin ax + cos ay)
    c = -torch.stack([cos * a[:, 0] + sin * a[:, 1], -sin * a[:, 0] + cos * a[:, 1]], dim=1)
    return theta, c


def se2_distance(pred: torch.Tensor, target: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B,) ``4 (1 - cos(dtheta)) + |da|^2 / sigma_px^2`` between group elements (B, 3, 3): the
    rotation angle's difference and the translation columns' (pixels)."""
    cos_d = (pred[:, :2, :2] * target[:, :2, :2]).sum((1, 2)) / 2
    return 4 * (1 - cos_d) + ((pred[:, :2, 2] - target[:, :2, 2]) ** 2).sum(1) / sigma_px**2


def warp_images(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``out(p) = img(m p)`` for group elements ``m`` (B, 3, 3) acting on pixel coordinates
    (internal convention, pixels about N//2): bilinear, zeros outside. A rotation-only ``m`` of
    angle gamma is :func:`cryovae.models.rotate_images` by gamma.

    images : (B, N, N).  Returns (B, N, N).
    """
    b, n, _ = images.shape
    idx = torch.arange(n, device=images.device, dtype=torch.float32) - n // 2
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    p = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(1, n * n, 3)
    src = p @ m.float().transpose(1, 2)  # (B, P, 3)
    grid = ((src[..., :2] + n // 2) / (n - 1) * 2 - 1).reshape(b, n, n, 2)
    out = F.grid_sample(images[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0].to(images.dtype)


@dataclass(frozen=True)
class MCEConfig(ModelConfig):
    """MCE-VAE's options (and every :class:`ModelConfig` one).

    Attributes
    ----------
    zdim : continuous invariant latent dimensions (>= 1; default 2).
    classes : K, the number of classes (mixture components of the prior of z).
    invariance_weight : alpha of eq. 6, the weight of the invariance loss (the paper's 1.0).
    class_balance : beta, the weight of ``KL(batch mean of q(c | y) || uniform)`` (nats per
        particle), which keeps every class in use (0 = the paper's objective alone).
    pose_consistency : weight of the pose-consistency loss (the encoder's pose of a transformed
        copy must be the transformed pose; not in the paper; 0 = off).
    invariance_shift_px : the sampled group element's translations are uniform in
        ``[-invariance_shift_px, invariance_shift_px]`` pixels (its rotation uniform in [0, 2 pi)).
    enc_channels : channels of the encoder's first two convolutions (the last two have twice).
    head_hidden : width of the z extractor (two hidden layers; the paper 512).
    tau_hidden : width of the transformation extractor (two hidden layers; the paper 32).
    theta_prior_std : prior std of the rotation coefficient, radians (pi: nearly uniform).
    prior_spacing : distance between neighbouring mixture means (fixed), in units of the
        components' starting std (1).
    pose_search : R, the rotations (``2 pi / R`` apart) of the exhaustive search that scores
        every particle against every class template at every rotation and every integer shift
        (:meth:`MCEVAE.search_log_posterior`); its posterior gives the class and the pose. 0:
        the class posterior at the encoder's pose, the paper's model.
    """

    kind: ClassVar[str] = "mce"
    paper_sizes: ClassVar[dict] = dict(head_hidden=512, tau_hidden=32, zdim=3, gen_hidden=300)

    zdim: int = field(default=2, metadata=option("--zdim", "Content latent dimensions."))
    classes: int = field(default=4, metadata=option("--classes", "Number of 2D classes K."))
    invariance_weight: float = field(default=1.0, metadata=option(
        "--invariance-weight", "Weight of the invariance loss (alpha, eq. 6)."))
    class_balance: float = field(default=10.0, metadata=option(
        "--class-balance", "Weight of KL(batch class shares || uniform), against one-class collapse."))
    pose_consistency: float = field(default=10.0, metadata=option(
        "--pose-consistency", "Weight of the pose-consistency loss (0 = the paper's objective)."))
    invariance_shift_px: float = 2.0
    enc_channels: int = field(default=32, metadata=option("--enc-channels", "Encoder CNN channels."))
    head_hidden: int = field(default=256, metadata=option("--head-hidden", "z extractor width."))
    tau_hidden: int = 32
    theta_prior_std: float = math.pi
    prior_spacing: float = 4.0
    pose_search: int = field(default=36, metadata=option(
        "--pose-search", "Rotations of the exhaustive class x rotation x shift search that gives each particle's "
                         "class and pose (0: the encoder's pose, the paper's model)."))
    #: measured with a 4-px centre prior (docs/quality/classes.md), kept
    translation_prior_px: float | None = field(
        default=4.0, metadata=ModelConfig.__dataclass_fields__["translation_prior_px"].metadata)
    #: the class likelihoods score the whole box (:meth:`MCEVAE.class_log_likelihoods`)
    likelihood_mask: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.likelihood_mask:
            raise CryovaeError("MCE-VAE scores the whole box: --likelihood-mask is not an option of --model mce")
        if self.classes < 1:
            raise CryovaeError(f"--classes must be >= 1, got {self.classes}")
        if self.zdim < 1:
            raise CryovaeError(f"MCE-VAE needs --zdim >= 1 (the mixture prior of z), got {self.zdim}")
        if self.invariance_weight < 0 or self.class_balance < 0 or self.pose_consistency < 0:
            raise CryovaeError("--invariance-weight, --class-balance and --pose-consistency must be >= 0")
        if self.invariance_shift_px < 0:
            raise CryovaeError("the invariance shift range must be >= 0 pixels")
        if self.enc_channels < 1 or self.head_hidden < 1 or self.tau_hidden < 1:
            raise CryovaeError("encoder channels and extractor widths must be >= 1")
        if self.pose_search < 0 or 0 < self.pose_search < 4:
            raise CryovaeError(f"--pose-search must be 0 (off) or >= 4 rotations, got {self.pose_search}")
        if self.theta_prior_std <= 0 or self.prior_spacing <= 0:
            raise CryovaeError("prior standard deviations and the mixture spacing must be > 0")


@dataclass
class MCEPosterior:
    """The encoder's posterior parameters for B images.

    z_mu, z_logstd : (B, zdim).
    tau_mu, tau_logstd : (B, 3) se(2) coefficients (rotation radians, translations pixels).
    """

    z_mu: torch.Tensor
    z_logstd: torch.Tensor
    tau_mu: torch.Tensor
    tau_logstd: torch.Tensor


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class MCEEncoder(nn.Module):
    """The paper's encoder: four 3x3 convolutions with batch norm and ReLU (strides 1, 2, 2, 2)
    give the augmented latent; two two-hidden-layer MLPs extract z's posterior (its class-relative
    offset) and tau's (the class needs no extractor: :meth:`MCEVAE.class_posterior`). The rotation coefficient's mean is ``atan2`` of two outputs (an angle, continuous
    on the circle, which a regression of the angle itself is not).

    Parameters
    ----------
    box : image size in pixels.  prior : the prior of z (its ``n_outputs``).
    channels : channels of the first two convolutions.  hidden, tau_hidden : extractor widths.
    """

    def __init__(self, box: int, prior: LatentPrior, channels: int, hidden: int, tau_hidden: int) -> None:
        super().__init__()
        chans = [1, channels, channels, 2 * channels, 2 * channels]
        layers: list[nn.Module] = []
        for i, stride in enumerate((1, 2, 2, 2)):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        side = box
        for _ in range(3):
            side = (side + 1) // 2
        n_aug = chans[-1] * side * side
        self.split_z = prior.split
        self.z_head = _mlp(n_aug, hidden, prior.n_outputs)
        self.tau_head = _mlp(n_aug, tau_hidden, 7)  # cos, sin, log std of omega; t (2), its log std (2)

    def forward(self, images: torch.Tensor) -> MCEPosterior:
        """(B, box, box) -> :class:`MCEPosterior`."""
        h = self.conv(images[:, None].float()).flatten(1)
        z_mu, z_logstd = self.split_z(self.z_head(h).float(), dim=1)
        t = self.tau_head(h).float()
        omega = torch.atan2(t[:, 1], t[:, 0])
        tau_mu = torch.stack([omega, t[:, 3], t[:, 4]], dim=1)
        tau_logstd = torch.stack([t[:, 2], t[:, 5], t[:, 6]], dim=1)
        return MCEPosterior(z_mu, z_logstd, tau_mu, tau_logstd)


class MCEVAE(PoseVAE):
    """MCE-VAE: a class, a continuous invariant z with a Gaussian-mixture prior and an se(2) pose."""

    name = "mce"
    title = "MCE-VAE"
    config_class = MCEConfig

    prior: GaussianMixturePrior

    def __init__(self, cfg: MCEConfig) -> None:
        super().__init__(cfg)
        self.encoder = MCEEncoder(cfg.box, self.prior, cfg.enc_channels, cfg.head_hidden,
                                  cfg.tau_hidden)

    @classmethod
    def make_prior(cls, cfg: ModelConfig) -> LatentPrior:
        assert isinstance(cfg, MCEConfig)
        return GaussianMixturePrior(cfg.zdim, cfg.classes, cfg.prior_spacing, learn_means=False)

    @classmethod
    def generator_inputs(cls, cfg: ModelConfig) -> int:
        assert isinstance(cfg, MCEConfig)
        return cfg.zdim + cfg.classes

    @property
    def n_classes(self) -> int:
        return int(self.cfg.classes)

    def encode(self, images: torch.Tensor) -> MCEPosterior:
        return self.encoder(images)

    # -- decoding ------------------------------------------------------------------------------
    def decode_class(self, offset: torch.Tensor, classes: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor,
                     ctf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator mean of class ``classes`` (B,) 0-based at ``z = mu_c + offset`` (offset (B,
        zdim), the generator reads ``[offset, onehot(c)]``), at the pose (theta (B,) radians,
        centre (B, 2) pixels, centred-template frame); and its log sigma."""
        code = F.one_hot(classes.long(), self.n_classes).to(offset.dtype)
        mean, log_sigma = self.generator(torch.cat([offset, code], dim=1), theta, center_px)
        if ctf is not None:
            mean = apply_ctf(mean, ctf)
        return mean, (self.log_sigma if log_sigma is None else log_sigma)

    def decode(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
               ctf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`PoseVAE.decode`: z (B, zdim) is rendered in the class of the mixture component
        it belongs to, ``c = argmax_c p(c | z)``, at its offset ``z - mu_c`` from that mean."""
        assert z is not None
        classes = self.prior.log_responsibilities(z).argmax(1)
        return self.decode_class(z - self.prior.means[classes].to(z.dtype), classes, theta, center_px, ctf)

    def class_images(self) -> torch.Tensor:
        """(K, box, box): class k + 1's canonical image, the generator at its mixture mean
        (offset 0), pose 0 and centre 0 (the template centred by ``recenter_template``), no CTF."""
        k = self.n_classes
        dev = self.prior.means.device
        with torch.no_grad():
            mean, _ = self.decode_class(torch.zeros(k, self.zdim, device=dev), torch.arange(k, device=dev),
                                        torch.zeros(k, device=dev), torch.zeros(k, 2, device=dev))
        return mean.float()

    def class_codes(self, offset: torch.Tensor) -> torch.Tensor:
        """The generator input ``[offset, onehot(c)]`` of every class: (B, K, zdim + K) for z's
        class-relative ``offset`` (B, zdim) (``z = mu_c + offset``)."""
        b, k = offset.shape[0], self.n_classes
        return torch.cat([offset[:, None, :].expand(b, k, offset.shape[1]),
                          torch.eye(k, device=offset.device, dtype=offset.dtype).expand(b, k, k)], dim=2)

    def class_log_likelihoods(self, y: torch.Tensor, offset: torch.Tensor, theta: torch.Tensor,
                              center_px: torch.Tensor, ctf: torch.Tensor | None) -> torch.Tensor:
        """``log p(y | z = mu_c + offset, c, theta, centre)`` for every class c: (B, K) nats; the
        centre in the encoder's (un-centred) frame."""
        b, k = y.shape[0], self.n_classes
        mean, log_sigma = self.generator.render_codes(self.class_codes(offset), theta,
                                                      self.generator.centred_pose(theta, center_px))
        if ctf is not None:
            mean = apply_ctf(mean, ctf[:, None])
        log_sigma = self.log_sigma if log_sigma is None else log_sigma.flatten(0, 1)
        ll = gaussian_log_likelihood(y.float().repeat_interleave(k, dim=0), mean.flatten(0, 1).float(),
                                     log_sigma.float())
        return ll.reshape(b, k)

    # -- the objective -------------------------------------------------------------------------
    def kl_tau(self, post: MCEPosterior) -> dict[str, torch.Tensor]:
        """KL of the rotation coefficient (wide prior, spatial-VAE's eq. 3) and of the translation
        coefficients (``N(0, translation_prior_px^2)``), per particle."""
        return {"kl_theta": kl_theta_uniform(post.tau_logstd[:, 0], self.cfg.theta_prior_std),
                "kl_t": kl_normal(post.tau_mu[:, 1:], post.tau_logstd[:, 1:], self.cfg.translation_sigma_px).sum(1)}

    def random_group_elements(self, b: int, device, generator: torch.Generator | None) -> torch.Tensor:
        """(b, 3, 3) elements of SE(2) drawn uniformly: rotation in [0, 2 pi), translations in
        ``[-invariance_shift_px, invariance_shift_px]``."""
        u = torch.rand(b, 3, generator=generator, device=device)
        s = float(self.cfg.invariance_shift_px)
        tau = torch.stack([u[:, 0] * (2 * math.pi), (2 * u[:, 1] - 1) * s, (2 * u[:, 2] - 1) * s], dim=1)
        return se2_exp(tau)

    def invariance_loss(self, y: torch.Tensor, post: MCEPosterior, tau: torch.Tensor | None, classes: torch.Tensor,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The invariance loss (eq. 8) and the pose-consistency loss, per particle (B,) each, for
        one group element M per particle and the transformed copy ``y'(p) = y(M p)``.

        Invariance: ``|z(y) - z*(y')|^2`` (of z's class-relative posterior means) plus the
        squared difference of the canonical images of class ``classes`` (B,) 0-based,
        ``g(mu_c + z(y))`` and ``g(mu_c + z*(y'))`` at pose 0, over ``2 sigma^2`` (the Gaussian
        counterpart of the paper's BCE); starred values carry no gradient. (The class needs no
        term of its own: its posterior compares the particle with the class templates at the
        particle's pose.)

        Pose consistency (not in the paper): the copy's group element must be ``exp(tau(y)) M``
        (a particle read at ``u = A p`` is, transformed, read at ``u = A M p``):
        :func:`se2_distance` of the two (std ``translation_sigma_px``), with gradients on both
        sides; None when ``tau`` is None (the search's variant, which has no use for it). It makes
        the encoder's pose equivariant, which the reconstruction alone did not teach the paper's
        CNN on uniformly turned particles (docs/models.md).
        """
        b = y.shape[0]
        m = self.random_group_elements(b, y.device, generator)
        zero_t, zero_c = y.new_zeros(b), y.new_zeros(b, 2)
        other = self.encode(warp_images(y, m))
        z_other = other.z_mu.detach()
        with torch.no_grad():
            canon_other, _ = self.decode_class(z_other, classes, zero_t, zero_c)
        canon, _ = self.decode_class(post.z_mu, classes, zero_t, zero_c)
        sigma2 = torch.exp(2 * self.log_sigma.detach().float())
        d_img = 0.5 * ((canon.float() - canon_other.float()) ** 2).flatten(1).sum(1) / sigma2
        invariance = ((post.z_mu - z_other) ** 2).sum(1) + d_img
        if tau is None:
            return invariance, None
        return invariance, se2_distance(se2_exp(other.tau_mu), se2_exp(tau) @ m, self.cfg.translation_sigma_px)

    def class_posterior(self, ll: torch.Tensor, z_params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``log pi_c + log p(y | z, c, tau) - KL(q(z | y, c) || p(z | c))`` for every class
        (B, K), from the class log likelihoods ``ll`` (B, K) and z's class-relative posterior
        ``(m, log s)``; its softmax over c is the class posterior ``q(c | y)`` that maximises the
        ELBO, and its logsumexp the ELBO with the class summed out."""
        return self.prior.log_weights + ll - self.prior.offset_kl(z_params)

    # -- the exhaustive search of class, rotation and shift -------------------------------------
    def search_templates(self, turned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Every class's canonical image (offset 0) at every rotation of the search grid: (K, R,
        box, box), class-major; and the noise variance per pixel (a scalar tensor, no gradient: the
        global sigma^2, or the mean of the per-pixel model's over the templates).

        ``turned=False``: the generator rendered at each rotation, without gradients (exact).
        ``turned=True``: its pose-0 render turned bilinearly by each angle (``out(p) = T(R(angle)
        p)``), with gradients to the generator: R renders' cost of one, slightly blurred (for the
        class-balance term's gradient; the search itself uses the exact renders).
        """
        k, r, n = self.n_classes, int(self.cfg.pose_search), self.cfg.box
        dev = self.prior.means.device
        poses = 1 if turned else r
        with torch.set_grad_enabled(turned and torch.is_grad_enabled()), torch.autocast(dev.type, enabled=False):
            codes = self.class_codes(torch.zeros(poses, self.zdim, device=dev))  # (poses, K, zdim + K)
            grid = rotation_grid(r, dev)
            mean, log_sigma = self.generator.render_codes(codes, torch.zeros(1, device=dev) if turned else grid,
                                                          torch.zeros(poses, 2, device=dev))
            sigma2 = torch.exp(2 * (self.log_sigma if log_sigma is None else log_sigma).detach().float()).mean()
            if turned:
                images = rotate_images(mean[0].float().repeat_interleave(r, dim=0), grid.repeat(k)).reshape(k, r, n, n)
            else:
                images = mean.float().transpose(0, 1)
        return images, sigma2

    def search_log_prior(self, device) -> torch.Tensor:
        """(K, R, box, box) ``log p(c) + log p(rotation) + log p(shift)``: the class weights, a
        uniform rotation, the Gaussian centre prior (std ``translation_sigma_px``) on the grid."""
        r, n = int(self.cfg.pose_search), self.cfg.box
        shift = shift_log_prior(n, self.cfg.translation_sigma_px, device)
        log_c = self.prior.log_weights.to(device)[:, None, None, None] - math.log(r)
        return (log_c + shift[None, None]).expand(self.n_classes, r, n, n)

    def search_log_posterior(self, y: torch.Tensor, ctf: torch.Tensor | None = None, turned: bool = False
                             ) -> torch.Tensor:
        """``log q(c, rotation, shift | y)`` of every class, rotation of the grid and integer shift
        (:mod:`cryovae.models.pose_search`), normalised per particle; with ``turned``, of the
        turned templates with gradients to the generator (:meth:`search_templates`).

        y : (B, box, box).  ctf : (B, box, box//2 + 1) or None.
        Returns (B, K, R, box, box); index ``[b, c, i, row, col]`` is class c + 1, rotation
        ``2 pi i / R`` and the centre :func:`cryovae.models.pose_search.shift_grid` ``[row, col]``
        (the frame of the generator's template centre).
        """
        templates, sigma2 = self.search_templates(turned)
        k, r, n = templates.shape[0], templates.shape[1], self.cfg.box
        with torch.set_grad_enabled(turned and torch.is_grad_enabled()), torch.autocast(y.device.type, enabled=False):
            ll = template_log_likelihoods(y, templates.reshape(k * r, n, n), sigma2, ctf).reshape(-1, k, r, n, n)
            joint = ll + self.search_log_prior(y.device)[None]
            return joint - torch.logsumexp(joint.flatten(1), 1).view(-1, 1, 1, 1, 1)

    def search_pose(self, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The class and pose a search posterior (B, K, R, box, box) gives: the most probable class
        (B,) 0-based and its probability (B,); the rotation's circular posterior mean in that class
        (B,) radians; the centre's posterior mean at that class's most probable rotation (B, 2)
        pixels."""
        b, _, r, n, _ = log_q.shape
        rows = torch.arange(b, device=log_q.device)
        log_qc = torch.logsumexp(log_q.flatten(2), 2)  # (B, K)
        log_prob, cls = log_qc.max(1)
        in_class = log_q[rows, cls]  # (B, R, N, N)
        q_r = torch.softmax(torch.logsumexp(in_class.flatten(2), 2), 1)  # (B, R)
        grid = rotation_grid(r, log_q.device)
        theta = torch.atan2(q_r @ torch.sin(grid), q_r @ torch.cos(grid))
        q_s = torch.softmax(in_class[rows, q_r.argmax(1)].flatten(1), 1)  # (B, N * N)
        center = q_s @ shift_grid(n, log_q.device).reshape(n * n, 2)
        return cls, log_prob.clamp(max=0.0).exp(), theta, center  # float32 rounding can pass 1

    def pose_distillation(self, post: MCEPosterior, theta: torch.Tensor, center_px: torch.Tensor) -> torch.Tensor:
        """(B,) the :func:`se2_distance` between the encoder's group element ``exp(tau)`` and the
        searched pose's (theta (B,) radians, centre
        (B, 2) pixels), held fixed: the encoder learns to read the pose the search finds."""
        cos, sin = torch.cos(theta), torch.sin(theta)
        target = torch.zeros(theta.shape[0], 3, 3, device=theta.device)
        target[:, 0, 0], target[:, 0, 1], target[:, 1, 0], target[:, 1, 1], target[:, 2, 2] = cos, -sin, sin, cos, 1.0
        # u = R (p - c): the translation column is -R c
        target[:, :2, 2] = -(target[:, :2, :2] @ center_px.float()[..., None])[..., 0]
        return se2_distance(se2_exp(post.tau_mu), target, self.cfg.translation_sigma_px)

    def search_forward(self, y: torch.Tensor, ctf: torch.Tensor | None, sample: bool,
                       generator: torch.Generator | None, zero_z: bool) -> LossTerms:
        """The objective with the class and pose of the exhaustive search (``pose_search`` > 0).

        ``q(c, rotation, shift | y)`` is the search's posterior (the templates at the class means;
        fixed within the step, as an expectation step). The particle is reconstructed in its most
        probable class (a hard class, as classification EM: with classes drawn from ``q`` the
        templates stayed alike at SNR 0.1, accuracy 0.41 against 0.51, one run each), at a
        rotation and shift drawn from that class's posterior (``sample``; the rotation jittered
        uniformly within its grid cell) or at its mode, with z's sampled offset. The ELBO is
        ``log p(y | z, c, pose) - KL(q(c, pose) || p(c, pose)) - sum_c q_c KL(q(z | y, c) || p(z | c))``,
        less the invariance loss and the distillation of the searched pose into the encoder's
        tau (weight ``pose_consistency``), which carry gradients to the encoder, and the class
        balance term (``class_balance``), whose gradient reaches the templates through the
        search's class posterior.
        """
        b, r = y.shape[0], int(self.cfg.pose_search)
        post = self.encode(y)
        z_params = (post.z_mu, post.z_logstd)
        offset = self.prior.sample(z_params, generator) if sample else post.z_mu
        log_q = self.search_log_posterior(y, ctf)
        flat = log_q.flatten(1)
        n = self.cfg.box
        log_qc = torch.logsumexp(log_q.flatten(2), 2)  # (B, K)
        cls = log_qc.argmax(1)
        in_class = log_q[torch.arange(b, device=y.device), cls].flatten(1)  # (B, R * N * N)
        if sample:
            idx = torch.multinomial(torch.softmax(in_class, 1), 1, generator=generator)[:, 0]
        else:
            idx = in_class.argmax(1)
        rot, cell = idx // (n * n), idx % (n * n)
        step = 2 * math.pi / r
        theta = rot.to(torch.float32) * step
        if sample:
            theta = theta + (torch.rand(b, generator=generator, device=y.device) - 0.5) * step
        center = shift_grid(n, y.device).reshape(n * n, 2)[cell]
        mean, log_sigma = self.decode_class(torch.zeros_like(offset) if zero_z else offset, cls, theta, center, ctf)
        ll = gaussian_log_likelihood(y.float(), mean.float(), log_sigma.float())
        q_c = log_qc.exp()
        parts = {"kl_search": kl_categorical(flat, self.search_log_prior(y.device).flatten()[None]),
                 "kl_z": (q_c * self.prior.offset_kl(z_params)).sum(1)}
        if self.cfg.class_balance > 0:  # its gradient reaches the templates through the turned ones' search
            log_qc_grad = torch.logsumexp(self.search_log_posterior(y, ctf, turned=True).flatten(2), 2)
            q_bar = log_qc_grad.exp().mean(0, keepdim=True)
            parts["class_balance"] = self.cfg.class_balance * kl_categorical(
                torch.log(q_bar.clamp_min(1e-12)), self.prior.log_weights[None]).expand(b)
        if self.cfg.invariance_weight > 0:
            invariance, _ = self.invariance_loss(y, post, None, log_qc.argmax(1), generator)
            parts["invariance"] = self.cfg.invariance_weight * invariance
        if self.cfg.pose_consistency > 0:
            parts["pose_distillation"] = self.cfg.pose_consistency * self.pose_distillation(post, theta, center)
        return LossTerms(recon=ll, kl=sum(parts.values()), kl_parts=parts)

    def forward(self, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None, zero_z: bool = False,
                rotate_encoder: bool = False, rotation_guide: RotationGuide | None = None) -> LossTerms:
        """The objective's terms for images ``y`` (B, box, box) (see the module docstring): one
        sample of z and tau when ``sample`` (else the posterior means), the class summed out
        exactly. The ELBO ``log sum_c exp(log pi_c + log p(y | z_c, c, tau) - KL_z,c) - KL_tau``
        is reported as ``recon = sum_c q_c log p(y | z_c, c, tau)``, ``kl_c = KL(q(c | y) || pi)``
        and ``kl_z = sum_c q_c KL(q(z | y, c) || p(z | c))`` (eq. 14). ``zero_z`` feeds the
        generator the class means (z's offset 0). ``rotate_encoder`` is ignored: the invariance
        loss already shows the encoder transformed copies. With ``pose_search`` the class and pose
        are the search's (:meth:`search_forward`). ``rotation_guide`` is ignored (the search
        finds the pose)."""
        if self.cfg.pose_search:
            return self.search_forward(y, ctf, sample, generator, zero_z)
        post = self.encode(y)
        z_params = (post.z_mu, post.z_logstd)
        tau = post.tau_mu
        if sample:
            offset = self.prior.sample(z_params, generator)
            tau = tau + post.tau_logstd.exp() * randn_like(tau.shape, tau, generator)
        else:
            offset = post.z_mu
        theta, center = pose_from_se2(se2_exp(tau))
        ll = self.class_log_likelihoods(y, torch.zeros_like(offset) if zero_z else offset, theta, center, ctf)
        joint = self.class_posterior(ll, z_params)
        log_q = torch.log_softmax(joint, 1)
        q = log_q.exp()
        log_pi = self.prior.log_weights[None]
        parts = {"kl_c": kl_categorical(log_q, log_pi),
                 "kl_z": (q * self.prior.offset_kl(z_params)).sum(1),
                 **self.kl_tau(post)}
        if self.cfg.class_balance > 0:
            q_bar = q.mean(0, keepdim=True)
            balance = kl_categorical(torch.log(q_bar.clamp_min(1e-12)), log_pi)
            parts["class_balance"] = self.cfg.class_balance * balance.expand(y.shape[0])
        if self.cfg.invariance_weight > 0 or self.cfg.pose_consistency > 0:
            invariance, consistency = self.invariance_loss(y, post, post.tau_mu, q.argmax(1).detach(), generator)
            if self.cfg.invariance_weight > 0:
                parts["invariance"] = self.cfg.invariance_weight * invariance
            if self.cfg.pose_consistency > 0:
                parts["pose_consistency"] = self.cfg.pose_consistency * consistency
        return LossTerms(recon=(q * ll).sum(1), kl=sum(parts.values()), kl_parts=parts)

    @torch.no_grad()
    def infer(self, y: torch.Tensor, ctf: torch.Tensor | None = None) -> Encoding:
        """The pose of ``exp(tau)`` at tau's posterior mean; extras ``class`` (B,) int64 1-based,
        the most probable class of ``q(c | y)`` at those means, and ``class_prob`` (B,) its
        probability; z's posterior mean and std are those of the mixture
        ``sum_c q_c N(mu_c + m, s^2)`` (for a sure class: ``mu_c + m`` and ``s``). With
        ``pose_search`` the class, its probability and the pose are the search's
        (:meth:`search_pose`). ``ctf`` (B, box, box//2+1), when given, multiplies the templates
        (or the renders of the paper's variant) as in training."""
        post = self.encode(y)
        z_params = (post.z_mu, post.z_logstd)
        if self.cfg.pose_search:
            # in chunks: the posterior holds K R box^2 values per particle
            step = max(1, SEARCH_CHUNK_VALUES // (self.n_classes * int(self.cfg.pose_search) * self.cfg.box**2))
            parts = []
            for s in range(0, y.shape[0], step):
                log_q = self.search_log_posterior(y[s: s + step], None if ctf is None else ctf[s: s + step])
                parts.append((*self.search_pose(log_q), torch.logsumexp(log_q.flatten(2), 2).exp()))
            cls, prob, theta, center, q = (torch.cat(v) for v in zip(*parts, strict=True))
            center = center.to(post.z_mu.dtype)
        else:
            theta, center = pose_from_se2(se2_exp(post.tau_mu))
            ll = self.class_log_likelihoods(y, post.z_mu, theta, center, ctf)
            q = torch.softmax(self.class_posterior(ll, z_params), 1)
            prob, cls = q.max(1)
            center = self.generator.centred_pose(theta, center)
        means = self.prior.means.float()
        mix_mean = q @ means
        mix_var = q @ (means**2) - mix_mean**2
        return Encoding(z_mean=mix_mean + post.z_mu, z_std=(post.z_logstd.exp() ** 2 + mix_var.clamp_min(0)).sqrt(),
                        theta=wrap_angle(theta), center_px=center, prob=None,
                        extras={CLASS_EXTRA: (cls + 1).to(torch.int64), CLASS_PROB_EXTRA: prob})
