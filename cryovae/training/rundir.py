"""RUNDIR/config.yaml: every option, the cryovae version and the command line."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cryovae import __version__
from cryovae.errors import InputFileError
from cryovae.io.atomic import atomic_path
from cryovae.models.config import ModelConfig
from cryovae.training.config import TrainConfig

CONFIG = "config.yaml"


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
        model = dataclasses.asdict(self.model)
        model["enc_hidden"] = list(model["enc_hidden"])
        d = {"cryovae_version": __version__,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command_line": command_line, "model": model, "train": dataclasses.asdict(self.train),
             "preprocess": dict(self.preprocess), "input": dict(self.input), "device": self.device}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(model=ModelConfig.from_dict(d["model"]), train=TrainConfig.from_dict(d["train"]),
                   preprocess=dict(d.get("preprocess") or {}), input=dict(d.get("input") or {}),
                   device=str(d.get("device", "auto")))


def write_run_config(rundir: Path, cfg: RunConfig, command_line: str | None = None) -> Path:
    """Write RUNDIR/config.yaml atomically."""
    path = Path(rundir) / CONFIG
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        yaml.safe_dump(cfg.to_dict(command_line), fh, sort_keys=False)
    return path


def read_run_config(rundir: Path) -> RunConfig:
    """Read RUNDIR/config.yaml; InputFileError when missing or malformed."""
    path = Path(rundir) / CONFIG
    if not path.exists():
        raise InputFileError(f"{path}: not a cryovae run directory (no config.yaml)")
    try:
        with open(path) as fh:
            d = yaml.safe_load(fh)
        return RunConfig.from_dict(d)
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputFileError(f"{path}: malformed run config ({exc})") from None
