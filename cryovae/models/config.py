"""Frozen configuration of a cryovae model; a model is rebuilt from this alone.

The values a user does not set come from :meth:`ModelConfig.for_model`, which fills in the
defaults of the chosen model kind (TARGET-VAE or spatial-VAE). The papers' architecture sizes
are available through :func:`paper_config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from cryovae.errors import CryovaeError

MODEL_KINDS = ("target", "spatial")
GROUPS = {"c1": 1, "p4": 4, "p8": 8, "p16": 16}
ACTIVATIONS = ("relu", "leaky_relu", "tanh")
NOISE_MODELS = ("global", "pixel")


@dataclass(frozen=True)
class ModelConfig:
    """Every architecture option of a cryovae model.

    Attributes
    ----------
    kind : "target" (TARGET-VAE, group-equivariant attention encoder) or "spatial" (spatial-VAE,
        MLP encoder).
    box : model image size in pixels (square).
    zdim : number of content latent dimensions.
    pixel_size : Å per pixel of the model's images (used by the CTF).
    ctf : multiply the generator image by each particle's CTF before the likelihood.
    group : TARGET-VAE rotation group: "p4", "p8", "p16" (cyclic C_N) or "c1" (translation only).
    enc_fields : TARGET-VAE hidden width in regular fields (each has N channels; paper 128).
    enc_kernel : TARGET-VAE lifting kernel size in pixels (odd; paper 65).
    enc_layers : number of regular -> regular group convolutions after the lifting one.
    enc_inner_kernel : kernel size of those convolutions (odd; 1 = pointwise).
    fft_lift : compute the lifting convolution with FFTs (equal to R2Conv's output up to float
        rounding; much faster for large kernels).
    max_shift : TARGET-VAE translation grid half-width in pixels: the attention covers centres
        with ``|cx|, |cy| <= max_shift`` (None, the default: 3 x translation_prior_px rounded
        up, at least 2; any value >= box//2 covers the whole box).
    translation_prior_px : std of the Gaussian prior on the particle centre, pixels.
    gumbel_tau : temperature of the Gumbel-softmax over (t, r).
    gumbel_hard : straight-through (one-hot forward, soft gradient) when True; the relaxed
        (soft, weighted) sample of the original TARGET-VAE code when False (default: it trained
        faster and recovered rotations better in our side-by-side run, see docs/models.md).
    enc_hidden : spatial-VAE encoder hidden layer widths (tanh MLP; paper 500, 500).
    translation : spatial-VAE infers the centre offset (else the centre is fixed at 0).
    theta_prior_std : spatial-VAE prior std of theta in radians (pi: the paper's 'uniform').
    gen_hidden : generator hidden width (paper 512 for TARGET-VAE, 500 for spatial-VAE; defaults
        128 / 256).
    gen_layers : number of generator hidden layers.
    fourier_features : number of random Fourier features of the coordinate (0 = raw coordinates).
    fourier_scale : std of the Fourier frequency matrix, cycles per unit of the normalised
        coordinate (the box half-width is 1).
    gen_activation : "relu", "leaky_relu" or "tanh".
    noise : "global" (one learned sigma) or "pixel" (the generator outputs a sigma per pixel).
    """

    kind: str = "target"
    box: int = 40
    zdim: int = 1
    pixel_size: float = 1.0
    ctf: bool = False
    group: str = "p8"
    enc_fields: int = 16
    enc_kernel: int = 33
    enc_layers: int = 1
    enc_inner_kernel: int = 1
    fft_lift: bool = True
    max_shift: int | None = None
    translation_prior_px: float = 4.0
    gumbel_tau: float = 1.0
    gumbel_hard: bool = False
    enc_hidden: tuple[int, ...] = field(default=(500, 500))
    translation: bool = True
    theta_prior_std: float = math.pi
    gen_hidden: int = 128
    gen_layers: int = 2
    fourier_features: int = 64
    fourier_scale: float = 2.0
    gen_activation: str = "leaky_relu"
    noise: str = "global"

    @classmethod
    def for_model(cls, kind: str, **overrides) -> ModelConfig:
        """Defaults of ``kind`` ("target" or "spatial"), then ``overrides`` (None values ignored)."""
        if kind not in MODEL_KINDS:
            raise CryovaeError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        base: dict = {"kind": kind}
        if kind == "spatial":
            base.update(gen_hidden=256, fourier_features=0, gen_activation="tanh", group="c1")
        base.update({k: v for k, v in overrides.items() if v is not None})
        if "enc_hidden" in base:
            base["enc_hidden"] = tuple(int(h) for h in base["enc_hidden"])
        cfg = cls(**base)
        cfg.validate()
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :func:`dataclasses.asdict` (lists become tuples); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CryovaeError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "enc_hidden" in d:
            d["enc_hidden"] = tuple(d["enc_hidden"])
        return cls(**d)

    @property
    def attention_max_shift(self) -> int | None:
        """The translation window half-width actually used; None when it covers the whole box."""
        m = max(2, math.ceil(3 * self.translation_prior_px)) if self.max_shift is None else self.max_shift
        return None if m >= self.box // 2 else int(m)

    @property
    def n_rotations(self) -> int:
        """N of the cyclic group (1 for c1 and for spatial-VAE)."""
        return GROUPS[self.group] if self.kind == "target" else 1

    def validate(self) -> None:
        """Raise :class:`CryovaeError` with one line for an impossible option."""
        if self.kind not in MODEL_KINDS:
            raise CryovaeError(f"unknown model {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        if self.group not in GROUPS:
            raise CryovaeError(f"unknown --group {self.group!r}; choose one of {', '.join(GROUPS)}")
        if self.box < 8:
            raise CryovaeError(f"--box must be at least 8 pixels, got {self.box}")
        if self.zdim < 0:
            raise CryovaeError(f"--zdim must be >= 0, got {self.zdim}")
        if self.enc_kernel < 1 or self.enc_kernel % 2 == 0:
            raise CryovaeError(f"--enc-kernel must be a positive odd number, got {self.enc_kernel}")
        if self.enc_inner_kernel < 1 or self.enc_inner_kernel % 2 == 0:
            raise CryovaeError(f"encoder inner kernel must be a positive odd number, got {self.enc_inner_kernel}")
        if self.enc_fields < 1 or self.gen_hidden < 1 or self.gen_layers < 1:
            raise CryovaeError("encoder fields, generator width and generator layers must be >= 1")
        if self.enc_layers < 0 or self.fourier_features < 0:
            raise CryovaeError("encoder layers and Fourier features must be >= 0")
        if self.gen_activation not in ACTIVATIONS:
            raise CryovaeError(f"unknown activation {self.gen_activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.noise not in NOISE_MODELS:
            raise CryovaeError(f"unknown noise model {self.noise!r}; choose one of {', '.join(NOISE_MODELS)}")
        if self.translation_prior_px <= 0 or self.theta_prior_std <= 0 or self.gumbel_tau <= 0:
            raise CryovaeError("prior standard deviations and the Gumbel temperature must be > 0")
        if self.max_shift is not None and self.max_shift < 0:
            raise CryovaeError(f"--max-shift must be >= 0 pixels, got {self.max_shift}")
        if self.pixel_size <= 0:
            raise CryovaeError(f"pixel size must be > 0 Å, got {self.pixel_size}")
        if any(h < 1 for h in self.enc_hidden) or not self.enc_hidden:
            raise CryovaeError("spatial-VAE encoder hidden sizes must be positive integers")


def paper_config(kind: str, **overrides) -> ModelConfig:
    """The papers' sizes: TARGET-VAE 128 fields, 65 px kernel, generator 2x512 with 1024 Fourier
    features; spatial-VAE 2x500 tanh MLPs."""
    if kind == "target":
        sizes = dict(enc_fields=128, enc_kernel=65, gen_hidden=512, gen_layers=2, fourier_features=1024)
    else:
        sizes = dict(enc_hidden=(500, 500), gen_hidden=500, gen_layers=2, fourier_features=0)
    sizes.update(overrides)
    return ModelConfig.for_model(kind, **sizes)
