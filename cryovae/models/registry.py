"""The registry of model kinds: ``--model NAME`` -> a :class:`cryovae.models.base.PoseVAE` class.

Adding a model is one module under ``cryovae/models/`` (its config, networks and loss) and one
line in :data:`_BUILT_IN` below (or :func:`register_model` from outside the package).
"""

from __future__ import annotations

import dataclasses

from cryovae.errors import CryovaeError
from cryovae.models.base import ModelConfig, PoseVAE
from cryovae.models.mce_vae import MCEVAE
from cryovae.models.spatial_vae import SpatialVAE
from cryovae.models.target_vae import TargetVAE
from cryovae.models.tvae import TVAE

_BUILT_IN: tuple[type[PoseVAE], ...] = (
    TargetVAE,
    SpatialVAE,
    MCEVAE,
    TVAE,
)

_REGISTRY: dict[str, type[PoseVAE]] = {}


def register_model(cls: type[PoseVAE]) -> type[PoseVAE]:
    """Add a model class under ``cls.name`` (usable as a decorator); its config's ``kind`` must
    be the same name. Registering a second class under a taken name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, PoseVAE)) or not cls.name:
        raise TypeError(f"{cls!r} is not a PoseVAE subclass with a name")
    if cls.config_class.kind != cls.name:
        raise TypeError(f"{cls.__name__}.config_class.kind is {cls.config_class.kind!r}, not {cls.name!r}")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"a model named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_model(name: str) -> None:
    """Remove a model added with :func:`register_model` (built-in models stay)."""
    if any(c.name == name for c in _BUILT_IN):
        raise ValueError(f"{name!r} is a built-in model")
    _REGISTRY.pop(name, None)


for _cls in _BUILT_IN:
    register_model(_cls)


def model_names() -> tuple[str, ...]:
    """The registered model names, built-in ones first."""
    return tuple(_REGISTRY)


def model_classes() -> tuple[type[PoseVAE], ...]:
    return tuple(_REGISTRY.values())


def model_class(name: str) -> type[PoseVAE]:
    """The class registered as ``name``; a one-line :class:`CryovaeError` for an unknown one."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise CryovaeError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def model_config(kind: str, **overrides) -> ModelConfig:
    """The defaults of model ``kind``, then ``overrides`` (None values ignored), validated.

    An option the model does not have is a one-line :class:`CryovaeError` naming it.
    """
    cls = model_class(kind).config_class
    values = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(values) - cls.field_names())
    if unknown:
        raise CryovaeError(f"{model_class(kind).title} (--model {kind}) has no option "
                           f"{', '.join(unknown)}")
    values = _tuples(cls, values)
    cfg = cls(**values)
    cfg.validate()
    return cfg


def paper_config(kind: str, **overrides) -> ModelConfig:
    """The papers' architecture sizes of ``kind`` (``config_class.paper_sizes``), then ``overrides``."""
    sizes = dict(model_class(kind).config_class.paper_sizes)
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    return model_config(kind, **sizes)


#: the model keys of config.yaml written by cryovae 0.1 (one config for both models): a run of
#: that version stores every one of them whichever model it trained
LEGACY_MODEL_KEYS = frozenset({
    "kind", "box", "zdim", "pixel_size", "ctf", "group", "enc_fields", "enc_kernel", "enc_layers",
    "enc_inner_kernel", "fft_lift", "max_shift", "translation_prior_px", "gumbel_tau", "gumbel_hard",
    "enc_hidden", "translation", "theta_prior_std", "gen_hidden", "gen_layers", "fourier_features",
    "fourier_scale", "gen_activation", "noise"})


#: model options added after runs were written, and the value a run without the key was trained with
BEFORE_OPTION = {"likelihood_mask": 0.0, "pose_search": 0}


def drop_legacy_keys(kind: str, values: dict) -> dict:
    """``values`` (a cryovae 0.1 model section, ``kind`` removed) without the keys of the other
    model: those of :data:`LEGACY_MODEL_KEYS` that ``kind``'s config does not have."""
    names = model_class(kind).config_class.field_names()
    return {k: v for k, v in values.items() if k in names or k not in LEGACY_MODEL_KEYS}


def config_from_dict(d: dict, legacy: bool = False) -> ModelConfig:
    """Inverse of :meth:`ModelConfig.to_dict`: ``d["kind"]`` picks the class, lists become tuples,
    an unknown key is an error. ``legacy``: ``d`` is a cryovae 0.1 model section, whose keys of
    the other model (:data:`LEGACY_MODEL_KEYS`) are dropped."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind is None:
        raise CryovaeError("model config has no kind")
    cls = model_class(kind).config_class
    if legacy:
        d = drop_legacy_keys(kind, d)
    # a run written before these options existed was trained without them
    for name, before in BEFORE_OPTION.items():
        if name in cls.field_names() and name not in d:
            d[name] = before
    unknown = set(d) - cls.field_names()
    if unknown:
        raise CryovaeError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
    return cls(**_tuples(cls, d))


def build_model(cfg: ModelConfig) -> PoseVAE:
    """The model described by ``cfg`` (freshly initialised; load a state dict for weights)."""
    cfg.validate()
    return model_class(cfg.kind)(cfg)


def _tuples(cls: type[ModelConfig], values: dict) -> dict:
    """Sequence values of tuple fields as tuples of ints (YAML gives lists)."""
    tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    return {k: (tuple(int(x) for x in v) if k in tuple_fields and v is not None else v) for k, v in values.items()}
