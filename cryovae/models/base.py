"""The contract every cryovae model implements, and the configuration all models share.

A model is a :class:`PoseVAE`: a torch module that explains each particle image ``y`` (B, box,
box) as the spatial generator's image of a content latent ``z`` at an in-plane pose (rotation
``theta``, centre ``c``), with Gaussian pixel noise. A model kind is one subclass with

- ``name`` (what ``--model`` takes) and ``title`` (for help and logs);
- ``config_class``, its own frozen :class:`ModelConfig` subclass (the options, their defaults,
  the papers' sizes and the help of their command-line flags);
- ``forward(y, ctf, ...)`` -> :class:`LossTerms` (its own ELBO; what the trainer, and later
  ``DistributedDataParallel``, calls);
- ``infer(y)`` -> :class:`Encoding` (the per-particle posterior summary the writers need);
- ``log_posterior(y, z, theta, c, ctf)`` for the per-particle refinement (the default here:
  likelihood + ``prior.log_density`` + the Gaussian centre prior);
- optionally ``attention_map(image)`` -> :class:`AttentionMap` (a model whose encoder scores
  every pixel of an image of any size: what ``cryovae pick`` needs; the default is None).

It is registered with one line in :mod:`cryovae.models.registry`. Everything else in cryovae
(training, inference, writers, napari) uses only this contract.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from cryovae.errors import CryovaeError
from cryovae.models.ctf import apply_ctf
from cryovae.models.distributions import gaussian_log_likelihood
from cryovae.models.generator import SpatialGenerator
from cryovae.models.priors import LatentPrior, StandardNormalPrior

ACTIVATIONS = ("relu", "leaky_relu", "tanh")
#: the :attr:`Encoding.extras` of a model that assigns classes: (B,) int64 1-based class numbers,
#: and (B,) the posterior probability of that class
CLASS_EXTRA = "class"
CLASS_PROB_EXTRA = "class_prob"
NOISE_MODELS = ("global", "pixel")
#: the name in :attr:`LossTerms.kl_parts` of the content latent's KL, what free bits act on
CONTENT_KL = "kl_z"
#: the default centre prior std is the model box over this (translation_prior_px None): 2 px at
#: the default 40-px box, about 13 px of a 256-px box Fourier-cropped to 40
TRANSLATION_PRIOR_DIVISOR = 20


def option(flag: str, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002 (click's word)
           flag_value: object = None) -> dict:
    """Field metadata that puts a config field on ``cryovae train``'s command line.

    flag : the option, e.g. ``"--enc-fields"``; ``"--ctf/--no-ctf"`` for an on/off pair.
    help : one line; the default (per model where they differ) is appended by the CLI.
    choices : allowed strings.  flag_value : a flag without a value that sets the field to this.
    """
    return {"cli": {"flag": flag, "help": help, "choices": choices, "flag_value": flag_value}}


@dataclass(frozen=True)
class ModelConfig:
    """The options every model has; each model kind extends it (:attr:`PoseVAE.config_class`).

    A model is rebuilt from its config alone; configs are saved in RUNDIR/config.yaml.

    Attributes
    ----------
    kind : the registered model name (a class attribute; written to config.yaml).
    box : model image size in pixels (square).
    zdim : number of content latent dimensions.
    pixel_size : Å per pixel of the model's images (used by the CTF).
    ctf : multiply the generator image by each particle's CTF before the likelihood.
    translation_prior_px : std of the Gaussian prior on the particle centre, model pixels (None,
        the default: the box over :data:`TRANSLATION_PRIOR_DIVISOR`, see :attr:`translation_sigma_px`).
    gen_hidden, gen_layers : generator width and number of hidden layers.
    fourier_features : number of random Fourier features of the coordinate (0 = raw coordinates).
    fourier_scale : std of the Fourier frequency matrix, cycles per unit of the normalised
        coordinate (the box half-width is 1).
    gen_activation : "relu", "leaky_relu" or "tanh".
    noise : "global" (one learned sigma) or "pixel" (the generator outputs a sigma per pixel).
    likelihood_mask : radius of the circular mask of the likelihood, a fraction of the box
        half-width (1: the disc inscribed in the box; 0: every pixel). Only the pixels inside
        it are rendered and scored (outside the particle they hold noise and its neighbours,
        and the generator costs in proportion to the pixels it draws). None, the default:
        ``cryovae train`` measures it on the particles (:func:`cryovae.data.signal_radius`);
        a model built with None uses 1.
    """

    kind: ClassVar[str] = ""
    #: the papers' architecture sizes (``--paper-size``), overrides of the defaults
    paper_sizes: ClassVar[dict] = {}

    box: int = 40
    zdim: int = field(default=1, metadata=option("--zdim", "Content latent dimensions."))
    pixel_size: float = 1.0
    ctf: bool = field(default=False, metadata=option("--ctf/--no-ctf", "Apply each particle's CTF."))
    translation_prior_px: float | None = field(default=None, metadata=option(
        "--translation-prior", "Centre prior std, model pixels [box/20]."))
    gen_hidden: int = field(default=128, metadata=option("--gen-hidden", "Generator width."))
    gen_layers: int = field(default=2, metadata=option("--gen-layers", "Generator hidden layers."))
    fourier_features: int = field(default=64, metadata=option(
        "--fourier-features", "Fourier features of the coordinate (0 = raw coordinates)."))
    fourier_scale: float = field(default=2.0, metadata=option("--fourier-scale", "Fourier frequency std."))
    gen_activation: str = field(default="leaky_relu", metadata=option(
        "--activation", "Generator activation.", choices=ACTIVATIONS))
    noise: str = field(default="global", metadata=option("--noise", "Noise model.", choices=NOISE_MODELS))
    likelihood_mask: float | None = field(default=None, metadata=option(
        "--likelihood-mask", "Likelihood mask radius, fraction of the box half-width (0 = whole box) "
        "[where the particles' signal ends]."))

    @property
    def translation_sigma_px(self) -> float:
        """The centre prior's std in model pixels: ``translation_prior_px``, or when that is None
        the box over :data:`TRANSLATION_PRIOR_DIVISOR` (2 px at 40 px)."""
        if self.translation_prior_px is not None:
            return float(self.translation_prior_px)
        return self.box / TRANSLATION_PRIOR_DIVISOR

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def for_model(cls, kind: str, **overrides) -> ModelConfig:
        """The config of the registered model ``kind`` with ``overrides`` (None values ignored)."""
        from cryovae.models.registry import model_config

        return model_config(kind, **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """A config from its :meth:`to_dict` (``kind`` picks the model); unknown keys are an error."""
        from cryovae.models.registry import config_from_dict

        return config_from_dict(d)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        """Plain values (tuples as lists) with ``kind`` first: config.yaml's model section."""
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`CryovaeError` with one line for an impossible option."""
        if self.box < 8:
            raise CryovaeError(f"--box must be at least 8 pixels, got {self.box}")
        if self.zdim < 0:
            raise CryovaeError(f"--zdim must be >= 0, got {self.zdim}")
        if self.gen_hidden < 1 or self.gen_layers < 1:
            raise CryovaeError("generator width and generator layers must be >= 1")
        if self.fourier_features < 0:
            raise CryovaeError("Fourier features must be >= 0")
        if self.gen_activation not in ACTIVATIONS:
            raise CryovaeError(f"unknown activation {self.gen_activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.noise not in NOISE_MODELS:
            raise CryovaeError(f"unknown noise model {self.noise!r}; choose one of {', '.join(NOISE_MODELS)}")
        if self.translation_prior_px is not None and not self.translation_prior_px > 0:
            raise CryovaeError(f"--translation-prior must be > 0 pixels, got {self.translation_prior_px}")
        if self.likelihood_mask is not None and not 0 <= self.likelihood_mask <= math.sqrt(2):
            raise CryovaeError(f"--likelihood-mask must be between 0 and 1.414 (the box corners), got {self.likelihood_mask}")
        if self.pixel_size <= 0:
            raise CryovaeError(f"pixel size must be > 0 Å, got {self.pixel_size}")


@dataclass
class Encoding:
    """Deterministic encoding of a batch (posterior summaries; what is written to the star).

    z_mean, z_std : (B, zdim).  theta : (B,) radians in (-pi, pi].
    center_px : (B, 2) particle centre (cx, cy) in pixels (internal convention), in the frame of the
        centred template (``SpatialGenerator.centred_pose`` of the encoder's reading).
    prob : (B,) confidence of the pose (TARGET-VAE: q(t, r | y) of the chosen cell) or None.
    extras : further per-particle outputs of a model, name -> (B,) or (B, k) tensor (for
        example a class), carried into latents.npz.
    """

    z_mean: torch.Tensor
    z_std: torch.Tensor
    theta: torch.Tensor
    center_px: torch.Tensor
    prob: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LossTerms:
    """Per-particle ELBO terms (B,) in nats; ``elbo = recon - kl``; the parts of kl in ``kl_parts``
    (named, e.g. ``kl_z``, ``kl_theta``: they become metrics.csv columns); ``kl_z_dims`` (B, zdim),
    when a model gives it, splits ``kl_z`` over the dimensions of z (it sums to it);
    ``penalties`` (named, (B,) nats) are terms training subtracts besides the ELBO (the rotation
    guide's), not part of it (they become metrics.csv columns too)."""

    recon: torch.Tensor
    kl: torch.Tensor
    kl_parts: dict[str, torch.Tensor]
    kl_z_dims: torch.Tensor | None = None
    penalties: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl

    def objective(self, free_nats: float = 0.0) -> torch.Tensor:
        """(B,) what training maximises: the ELBO, with the content latent's KL (``kl_parts
        ["kl_z"]``) averaged over the batch and counted as at least ``free_nats`` ("free bits",
        Kingma et al. 2016, eq. 19): below that the encoder may put information into z at no
        cost, so a generator that does not yet read z can learn to (at low SNR z otherwise
        collapses onto the prior). With ``kl_z_dims`` the free bits are per dimension (each z
        dimension one of Kingma et al.'s groups): each of the zdim dimensions is counted as at least ``free_nats / zdim``,
        so one dimension cannot take the others' share (with zdim 2, both arms of a complex
        would otherwise be free to share one dimension). 0, or a model without ``kl_z``: the
        ELBO itself. Less the :attr:`penalties`."""
        penalty = sum(self.penalties.values()) if self.penalties else 0.0
        kz = self.kl_parts.get(CONTENT_KL)
        if not free_nats or kz is None:
            return self.elbo - penalty
        if self.kl_z_dims is None:
            return self.elbo + kz - torch.clamp(kz.mean(), min=free_nats) - penalty
        dims = self.kl_z_dims
        floor = free_nats / dims.shape[1]
        return self.elbo + kz - torch.clamp(dims.mean(0), min=floor).sum() - penalty


@dataclass(frozen=True)
class RotationGuide:
    """A rotation for each particle of a batch from outside the model (a 2D alignment), for a
    model whose encoder gives a posterior over the rotation (:attr:`PoseVAE.rotation_guidance`).

    theta : (B,) radians, internal convention.  std : (B,) radians, how sure that rotation is.
    weight : the penalty's weight against the ELBO (nats per nat).
    """

    theta: torch.Tensor
    std: torch.Tensor
    weight: float = 1.0

    def part(self, rows: slice | torch.Tensor) -> RotationGuide:
        """The guide of the particles ``rows`` of the batch."""
        return RotationGuide(self.theta[rows], self.std[rows], self.weight)


#: the name in :attr:`LossTerms.penalties` of the rotation guide's term
ROTATION_GUIDE = "rotation_guide"


@dataclass
class AttentionMap:
    """A model's reading of every pixel of a large image (a micrograph at the model's pixel size)
    as a candidate particle centre; what :meth:`PoseVAE.attention_map` returns.

    Pixel (i, j) of every map is the hypothesis "a particle's encoder-frame centre is at pixel
    (row i, column j)". The particle's centre (that of the centred template, what a box cut for
    training should be centred on) is at ``(x, y) = (j, i) + center_offset[:, :, i, j]``.

    Attributes
    ----------
    score : (B, H, W) attention score, nats: the log attention marginalised over the rotations,
        ``log sum_r exp logit(t, r)`` (unnormalised; higher = more particle-like).
    theta : (B, H, W) rotation at the best r of each pixel, radians in (-pi, pi], internal
        convention (``rlnAnglePsi`` = degrees of it).
    z : (B, zdim, H, W) content latent at each pixel (the posterior mean, mixed over r with the
        weights ``softmax_r logit(t, r)``).
    center_offset : (B, 2, H, W) ``(dx, dy)`` pixels from the pixel to the particle's centre
        (``R(-theta) m`` for the generator's template centre ``m``; 0 when ``m`` is 0).
    """

    score: torch.Tensor
    theta: torch.Tensor
    z: torch.Tensor
    center_offset: torch.Tensor


def likelihood_pixels(box: int, radius: float) -> torch.Tensor | None:
    """(P,) int64 row-major indices of the pixels within ``radius * box / 2`` of the box centre
    (pixel ``box // 2``, the internal convention's origin); None for ``radius`` 0 or a mask
    that holds every pixel."""
    if radius <= 0:
        return None
    idx = torch.arange(box, dtype=torch.float32) - box // 2
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    inside = torch.nonzero((r2 <= (radius * box / 2) ** 2).flatten())[:, 0]
    return None if len(inside) == box * box else inside


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Wrap radians to (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - theta, 2 * math.pi)


class PoseVAE(nn.Module, abc.ABC):
    """Base of every model: the spatial generator, the global noise, the latent prior.

    Subclasses set ``name``, ``title``, ``config_class`` (and ``rotate_encoder_default`` when
    they train with the random rotation augmentation), build their encoder in ``__init__`` and
    implement :meth:`forward` and :meth:`infer`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: ``train`` turns the encoder's input by a random angle each step unless told otherwise
    rotate_encoder_default: ClassVar[bool] = False
    #: ``train``'s --refine-steps when not given (None: TrainConfig's); 0 for a model without a
    #: refinement objective (its :meth:`log_posterior` raises)
    refine_steps_default: ClassVar[int | None] = None
    #: :meth:`forward` adds a :class:`RotationGuide`'s term (``-log q(theta = guide | y)``) to its
    #: objective; a model without it ignores the guide (and ``train`` makes none for it)
    rotation_guidance: ClassVar[bool] = False
    #: free bits of z (nats per dimension) when ``--free-nats`` is not given (0: the plain ELBO)
    free_nats_default: ClassVar[float] = 0.0
    #: the generator reads z alone (no class code, no capsules): after training, each particle's z
    #: and pose can be the posterior means over a grid of z values and poses
    #: (:mod:`cryovae.inference.posterior`)
    posterior_grid: ClassVar[bool] = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior: LatentPrior = self.make_prior(cfg)
        self.generator = SpatialGenerator(
            cfg.box, self.generator_inputs(cfg), cfg.gen_hidden, cfg.gen_layers, cfg.fourier_features,
            cfg.fourier_scale, cfg.gen_activation, pixel_noise=cfg.noise == "pixel")
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.register_buffer("likelihood_pixels", likelihood_pixels(
            cfg.box, 1.0 if cfg.likelihood_mask is None else cfg.likelihood_mask), persistent=False)
        disc = None
        if self.likelihood_pixels is not None:  # (box * box,) 1 inside the mask, 0 outside
            disc = torch.zeros(cfg.box * cfg.box).index_fill_(0, self.likelihood_pixels, 1.0)
        self.register_buffer("likelihood_disc", disc, persistent=False)

    @classmethod
    def make_prior(cls, cfg: ModelConfig) -> LatentPrior:
        """The prior of z (default N(0, I) over ``cfg.zdim`` dimensions)."""
        return StandardNormalPrior(cfg.zdim)

    @classmethod
    def generator_inputs(cls, cfg: ModelConfig) -> int:
        """How many numbers the generator reads besides the coordinates: ``cfg.zdim`` (a class
        model adds its class code, e.g. a one-hot of K classes)."""
        return cfg.zdim

    @property
    def zdim(self) -> int:
        return self.cfg.zdim

    def class_images(self) -> torch.Tensor | None:
        """Each class's canonical decoded image, (K, box, box) with class k + 1 at index k (pose
        0, centre 0, no CTF), for a model that assigns particles to classes; None (the default)
        for one that does not. ``cryovae train`` and ``analyze`` write them as the class averages."""
        return None

    def noise_parameters(self) -> list[nn.Parameter]:
        """The parameters of the noise model that the optimiser moves faster
        (:attr:`cryovae.runs.TrainConfig.sigma_lr_scale`): the global log sigma."""
        return [self.log_sigma]

    def decode(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
               ctf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator mean image and its log sigma.

        ``(theta, center_px)`` is a pose in the centred template's frame (what ``infer`` reports;
        the pose-free image ``(0, 0)`` is centred on the box): the generator adds its
        ``template_center`` (see :mod:`cryovae.models.generator`).

        Parameters
        ----------
        z : (B, zdim) or None.  theta : (B,) radians.  center_px : (B, 2) pixels.
        ctf : (B, box, box//2+1) CTF to apply to the mean (see :mod:`cryovae.models.ctf`) or None.

        Returns
        -------
        mean : (B, box, box), 0 outside the likelihood mask (``cfg.likelihood_mask``: the model
            was never asked to draw there).  log_sigma : (B, box, box) or a scalar tensor (global noise).
        """
        mean, log_sigma = self.generator(z, theta, center_px)
        if self.likelihood_pixels is not None:  # the model says nothing outside its likelihood mask: 0 there
            mean = (mean.flatten(1) * self.likelihood_disc).reshape(mean.shape)
        if ctf is not None:
            mean = apply_ctf(mean, ctf)
        return mean, (self.log_sigma if log_sigma is None else log_sigma)

    def log_likelihood(self, y: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor,
                       ctf: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(y | z, theta, c)`` per particle (B,), nats, over the pixels of the likelihood
        mask (``cfg.likelihood_mask``); ``center_px`` in the centred template's frame (as
        :meth:`infer` reports). Without a CTF only those pixels are rendered."""
        pixels = self.likelihood_pixels
        y = y.float().flatten(1)
        if ctf is None and pixels is not None:
            mean, log_sigma = self.generator.render_pixels(z if self.zdim else None, theta, center_px, pixels)
            log_sigma = self.log_sigma if log_sigma is None else log_sigma
            return gaussian_log_likelihood(y[:, pixels], mean.float(), log_sigma.float())
        mean, log_sigma = self.decode(z if self.zdim else None, theta, center_px, ctf)
        mean = mean.flatten(1)
        log_sigma = log_sigma.flatten(1) if log_sigma.dim() else log_sigma
        if pixels is not None:
            y, mean = y[:, pixels], mean[:, pixels]
            log_sigma = log_sigma[:, pixels] if log_sigma.dim() else log_sigma
        return gaussian_log_likelihood(y, mean.float(), log_sigma.float())

    def reconstruction(self, y: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor,
                       ctf: torch.Tensor | None) -> torch.Tensor:
        """:meth:`log_likelihood` with ``center_px`` in the encoder's (un-centred) frame, as
        encoders read it."""
        return self.log_likelihood(y, z, theta, self.generator.centred_pose(theta, center_px), ctf)

    @abc.abstractmethod
    def forward(self, y: torch.Tensor, ctf: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None, zero_z: bool = False,
                rotate_encoder: bool = False, rotation_guide: RotationGuide | None = None) -> LossTerms:
        """The ELBO's terms for images ``y`` (B, box, box).

        ctf : (B, box, box//2+1) or None.  sample : one reparameterised sample of every latent
        (else the posterior means).  generator : the random stream of the samples.  zero_z : feed
        z = 0 to the generator (the z-delay of the first epochs).  rotate_encoder : show the
        encoder the images turned by a random angle (models that use it; others ignore it).
        rotation_guide : each particle's rotation from a 2D alignment; a model with
        :attr:`rotation_guidance` adds ``penalties["rotation_guide"]``, the negative log density of
        the guide's rotation under its encoder's posterior times ``weight`` (others ignore it).
        """

    @abc.abstractmethod
    def infer(self, y: torch.Tensor, ctf: torch.Tensor | None = None) -> Encoding:
        """Deterministic per-particle summary of the posterior of ``y`` (B, box, box).

        ctf : (B, box, box//2+1) or None, each particle's CTF when the model was trained with
        one; a model that reads the particle with its encoder alone ignores it, one that compares
        it with its own renders (MCE-VAE's search) applies it to them.
        """

    @property
    def attention_context_px(self) -> int:
        """Pixels of context each side of a pixel that its :meth:`attention_map` value depends on
        (half the encoder's receptive field): tiles that overlap by this much give the map of the
        whole image. 0 for a model without an attention map."""
        return 0

    def attention_map(self, image: torch.Tensor) -> AttentionMap | None:
        """Score every pixel of ``image`` (B, H, W) (any H, W; the model's pixel size, the
        run's preprocessing) as a particle centre, with the pose and content found there.

        A model whose encoder is fully convolutional (TARGET-VAE) returns an
        :class:`AttentionMap` of the same H x W; others return None (this default), and
        ``cryovae pick`` refuses them with one line.
        """
        return None

    def capsule_sequence(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a model with capsules (the Topographic VAE): each particle of ``y`` (B, box, box)
        turned through a full turn in S steps, (B, S, box, box), and the capsule activations of
        every frame, (B, S, capsules, capsule size). None (this default) for a model without
        capsules; ``cryovae analyze`` then draws no capsule maps."""
        return None

    def z_at_rotation(self, y: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The encoder's posterior parameters of z for images ``y`` (B, box, box) seen at the
        rotation ``theta`` (B,) radians (internal convention), whatever rotation the encoder itself
        would pick: the prior's parameter tuple (:meth:`LatentPrior.split`), each (B, zdim).

        A model whose encoder gives z for every rotation (TARGET-VAE: one per rotation cell)
        returns it; others return None (this default), and ``cryovae reframe``, which refits z
        with every particle's rotation held at a new value, refuses them with one line.
        """
        return None

    def log_posterior(self, y: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor,
                      ctf: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log posterior density of (z, theta, t) per particle, (B,), in nats.

        ``log N(y; g(z, theta, t) [* CTF], sigma^2) + log p(z) + log N(t; 0, s_t^2 I)`` (theta's
        prior is uniform; s_t is ``translation_prior_px``), the objective of
        :mod:`cryovae.inference.refine`.

        y : (B, box, box).  z : (B, zdim).  theta : (B,) radians (internal convention).
        center_px : (B, 2) model pixels, centred-template frame (as :meth:`infer` reports).
        ctf : (B, box, box//2+1) or None.
        """
        ll = self.log_likelihood(y, z, theta, center_px, ctf)
        s_t = self.cfg.translation_sigma_px
        return ll + self.prior.log_density(z) - 0.5 * (center_px.float() ** 2).sum(1) / s_t**2
