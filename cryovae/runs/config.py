"""RUNDIR/config.yaml: every option, the cryovae version and the command line.

config.yaml carries ``format`` (:data:`RUN_FORMAT`). Format 2 (cryovae 0.2) stores each model's
own options; a file without ``format`` was written by cryovae 0.1, whose one model config held
the options of both models: it still loads (the other model's keys are dropped). A file of a
newer format than this cryovae reads is a one-line error naming both versions.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cryovae import __version__
from cryovae.errors import CryovaeError, DamagedFileError, InputFileError
from cryovae.io.atomic import atomic_path
from cryovae.models import ModelConfig, config_from_dict
from cryovae.runs.train_config import TrainConfig

CONFIG = "config.yaml"
#: the layout of config.yaml (and of the run directory) this cryovae writes
RUN_FORMAT = 2


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run's model and preprocessing.

    model, train : the frozen configs.
    preprocess : keyword arguments of :class:`cryovae.data.PreprocessConfig` (the run's own
        preprocessing of raw particles to ``model.box`` pixels of ``model.pixel_size`` Å).
    input : description of the training input (path, count, input box and pixel size).
    device : the ``--device`` the run was started with.
    """

    model: ModelConfig
    train: TrainConfig
    preprocess: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    device: str = "auto"

    def to_dict(self, command_line: str | None = None) -> dict:
        model = self.model.to_dict()
        d = {"format": RUN_FORMAT, "cryovae_version": __version__,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command_line": command_line, "model": model, "train": dataclasses.asdict(self.train),
             "preprocess": dict(self.preprocess), "input": dict(self.input), "device": self.device}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(model=config_from_dict(d["model"], legacy="format" not in d),
                   train=TrainConfig.from_dict(d["train"]), preprocess=dict(d.get("preprocess") or {}),
                   input=dict(d.get("input") or {}), device=str(d.get("device", "auto")))


def write_run_config(rundir: Path, cfg: RunConfig, command_line: str | None = None) -> Path:
    """Write RUNDIR/config.yaml atomically."""
    path = Path(rundir) / CONFIG
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        yaml.safe_dump(cfg.to_dict(command_line), fh, sort_keys=False)
    return path


def read_run_config(rundir: Path) -> RunConfig:
    """Read RUNDIR/config.yaml.

    Raises
    ------
    InputFileError
        When there is no config.yaml (not a run directory).
    DamagedFileError
        When it is not YAML, lacks a section or a model key, or holds a value of the wrong type
        or an impossible one; the message names the file and the key.
    """
    path = Path(rundir) / CONFIG
    if not path.exists():
        raise InputFileError(f"{path}: not a cryovae run directory (no config.yaml)")
    try:
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedFileError(f"{path}: damaged run config, not valid YAML ({first})") from None
    try:
        return _run_config_from_dict(d)
    except CryovaeError as exc:
        raise DamagedFileError(f"{path}: damaged run config: {exc}") from None


#: keys every config.yaml's model section must have (the rest have defaults)
_MODEL_KEYS = ("kind", "box", "zdim", "pixel_size")


def _run_config_from_dict(d) -> RunConfig:
    """:meth:`RunConfig.from_dict` with every section and value type checked (CryovaeError)."""
    from cryovae.data import PreprocessConfig

    if not isinstance(d, dict):
        raise CryovaeError(f"expected a mapping of sections, found {type(d).__name__}")
    for section in ("model", "train"):
        if not isinstance(d.get(section), dict):
            raise CryovaeError(f"the {section} section is missing or not a mapping")
    for section in ("preprocess", "input"):
        if d.get(section) is not None and not isinstance(d[section], dict):
            raise CryovaeError(f"the {section} section is not a mapping")
    fmt = d.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CryovaeError(f"format is {fmt!r}, expected a positive integer")
    if fmt > RUN_FORMAT:
        raise CryovaeError(f"the run was written by cryovae {d.get('cryovae_version', '?')} (run format {fmt}); "
                           f"this cryovae {__version__} reads run formats up to {RUN_FORMAT}: upgrade cryovae")
    missing = [k for k in _MODEL_KEYS if k not in d["model"]]
    if missing:
        raise CryovaeError(f"model has no {', '.join(missing)}")
    from cryovae.models import model_class

    model_values = dict(d["model"])
    kind = model_values.pop("kind")
    if not isinstance(kind, str):
        raise CryovaeError(f"model.kind is {kind!r}, expected a string")
    config_cls = model_class(kind).config_class
    if fmt == 1:  # cryovae 0.1: one config for every model; the other model's keys are dropped
        from cryovae.models.registry import drop_legacy_keys

        model_values = drop_legacy_keys(kind, model_values)
    model = config_from_dict({"kind": kind, **_typed("model", config_cls, model_values)})
    train = TrainConfig.from_dict(_typed("train", TrainConfig, d["train"]))
    preprocess = _typed("preprocess", PreprocessConfig, dict(d.get("preprocess") or {}))
    PreprocessConfig(**preprocess)  # its own checks
    model.validate()
    train.validate()
    return RunConfig(model=model, train=train, preprocess=preprocess, input=dict(d.get("input") or {}),
                     device=str(d.get("device", "auto")))


def _typed(section: str, cls, values: dict) -> dict:
    """``values`` checked against the field types of dataclass ``cls`` (ints accepted for floats,
    lists for tuples); unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise CryovaeError(f"{section} has an unknown key {key!r}")
        ok, converted = _convert(value, hints[key])
        if not ok:
            raise CryovaeError(f"{section}.{key} is {value!r}, expected {_type_name(hints[key])}")
        out[key] = converted
    return out


def _convert(value, tp) -> tuple[bool, object]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _convert(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        (item, *_rest) = typing.get_args(tp) or (object,)
        conv = [_convert(v, item) for v in value]
        return all(ok for ok, _ in conv), tuple(v for _, v in conv)
    return True, value


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is tuple:
        return "a list of " + _type_name((typing.get_args(tp) or (object,))[0])
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))
