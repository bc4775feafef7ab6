"""The model contract: a new model is one class plus one registration, and every command uses it.

A small pose-free VAE is defined and registered here (not in cryovae): ``cryovae train --model
plain`` trains it, writes its star (with its extra per-particle output as a column) and its run
directory, which ``encode`` and :class:`TrainedRun` read back, all through the contract. Also:
the registry's errors, and run directories of the previous format.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import starfile
import torch
import yaml
from click.testing import CliRunner
from test_cli_train import COMMON, TARGET_ONLY, star  # noqa: F401 (star is a fixture)
from torch import nn

from cryovae.cli.main import cli
from cryovae.errors import CryovaeError, DamagedFileError
from cryovae.inference import TrainedRun
from cryovae.models import (
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    TargetConfig,
    model_config,
    model_names,
    option,
    register_model,
    unregister_model,
)

#: a run written by cryovae 0.1 (tests/data/README.md): the previous run format
SAMPLE = Path(__file__).resolve().parent / "data" / "run_v0.1"


@dataclass(frozen=True)
class PlainConfig(ModelConfig):
    kind: ClassVar[str] = "plain"
    hidden: int = field(default=32, metadata=option("--plain-hidden", "Encoder width."))


class PlainVAE(PoseVAE):
    """A VAE without pose inference (theta = 0, centre 0): an MLP encoder of z only."""

    name = "plain"
    title = "plain VAE"
    config_class = PlainConfig

    def __init__(self, cfg: PlainConfig) -> None:
        super().__init__(cfg)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(cfg.box * cfg.box, cfg.hidden), nn.Tanh(),
                                     nn.Linear(cfg.hidden, self.prior.n_outputs))

    def _params(self, y):
        return self.prior.split(self.encoder(y).float())

    def forward(self, y, ctf=None, *, sample=True, generator=None, zero_z=False, rotate_encoder=False):
        params = self._params(y)
        z = self.prior.sample(params, generator) if sample else self.prior.mean(params)
        if zero_z:
            z = torch.zeros_like(z)
        b = y.shape[0]
        recon = self.reconstruction(y, z, y.new_zeros(b), y.new_zeros(b, 2), ctf)
        kl = self.prior.kl(params)
        return LossTerms(recon=recon, kl=kl, kl_parts={"kl_z": kl})

    @torch.no_grad()
    def infer(self, y, ctf=None):
        mean, std = self.prior.summary(self._params(y))
        b = y.shape[0]
        return Encoding(z_mean=mean, z_std=std, theta=y.new_zeros(b), center_px=y.new_zeros(b, 2), prob=None,
                        extras={"side": (mean[:, 0] > 0).long() + 1})


@pytest.fixture
def plain(monkeypatch):
    """PlainVAE registered, and the train command rebuilt to offer it; both undone afterwards."""
    import cryovae.cli.train as train_cli

    register_model(PlainVAE)
    monkeypatch.setattr(train_cli, "command", train_cli.build_command())
    yield PlainVAE
    unregister_model("plain")


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_registered_model_is_offered_by_train_help(plain):
    assert model_names() == ("target", "spatial", "mce", "tvae", "plain")
    out = _invoke(["train", "--help"]).output
    assert "[target|spatial|mce|tvae|plain]" in out
    section = out.split("plain VAE (--model plain):", 1)[1]
    assert "--plain-hidden" in section and "[default: 32]" in section
    assert "--plain-hidden" not in out.split("plain VAE (--model plain):", 1)[0]


def test_a_registered_model_trains_encodes_and_reloads_through_the_contract(plain, star, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    r = _invoke(["train", star, "-o", run, "--model", "plain", "--plain-hidden", "16", "--zdim", "2",
                 "--epochs", "3", "--z-delay", "0", "--refine-steps", "0", *COMMON])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["format"] == 2 and cfg["model"]["kind"] == "plain" and cfg["model"]["hidden"] == 16
    assert cfg["train"]["rotate_encoder"] is False  # the base class's default
    metrics = pd.read_csv(run / "metrics.csv")
    train = metrics[metrics["split"] == "train"]["elbo"].to_numpy()
    assert train[-1] > train[0]  # it learns (the noise level, at least)
    df = starfile.read(run / "particles.star", always_dict=True)["particles"]
    assert {"cryovaeZ1", "cryovaeZ2", "cryovaeSide"} <= set(df.columns) and "cryovaeProb" not in df.columns
    np.testing.assert_allclose(df["rlnAnglePsi"], 0.0, atol=1e-9)
    lat = np.load(run / "latents.npz")
    np.testing.assert_array_equal(df["cryovaeSide"], lat["extra_side"])
    np.testing.assert_array_equal(lat["extra_side"], (lat["z_mean"][:, 0] > 0) + 1)

    loaded = TrainedRun.load(run)
    # train records the centre prior (box/20) and the likelihood mask it measured on the particles
    mask = loaded.config.model.likelihood_mask
    assert 0.5 <= mask <= 1.0
    assert type(loaded.model) is PlainVAE and loaded.config.model == model_config(
        "plain", box=24, zdim=2, hidden=16, gen_hidden=16, fourier_features=8, pixel_size=loaded.pixel_size,
        translation_prior_px=24 / 20, likelihood_mask=mask)
    out = tmp_path / "again.star"
    r = _invoke(["encode", run, star, "-o", out, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    again = starfile.read(out, always_dict=True)["particles"]
    np.testing.assert_array_equal(again["cryovaeSide"], df["cryovaeSide"])


def test_an_option_of_the_new_model_is_refused_with_another(plain, star, tmp_path):  # noqa: F811
    r = _invoke(["train", star, "-o", tmp_path / "r", "--plain-hidden", "8", *COMMON, *TARGET_ONLY])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "cryovae train: error: --plain-hidden: not an option of TARGET-VAE (--model target); see cryovae train --help"]


def test_registry_errors():
    with pytest.raises(CryovaeError, match=r"unknown model 'nope'; choose one of target, spatial"):
        model_config("nope")
    with pytest.raises(CryovaeError, match=r"TARGET-VAE \(--model target\) has no option enc_hidden"):
        model_config("target", enc_hidden=(8,))
    with pytest.raises(ValueError, match="already registered"):
        register_model(type("Other", (PlainVAE,), {"name": "target", "config_class": TargetConfig}))
    with pytest.raises(ValueError, match="built-in"):
        unregister_model("target")


def test_a_run_of_the_previous_format_still_loads(tmp_path):
    """tests/data/run_v0.1 was written by cryovae 0.1 (one config with both models' keys, no
    ``format``): it loads as a TARGET-VAE run, the spatial-VAE keys dropped."""
    raw = yaml.safe_load((SAMPLE / "config.yaml").read_text())
    assert "format" not in raw and "enc_hidden" in raw["model"]
    run = TrainedRun.load(SAMPLE)
    assert isinstance(run.config.model, TargetConfig) and not hasattr(run.config.model, "enc_hidden")
    assert run.config.model.enc_fields == raw["model"]["enc_fields"]
    assert len(run.latents()) > 0


def test_a_run_of_a_newer_format_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE, run)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({"format": 99, **raw, "cryovae_version": "9.0"}))
    with pytest.raises(DamagedFileError) as err:
        TrainedRun.load(run)
    assert "cryovae 9.0 (run format 99)" in str(err.value) and "upgrade cryovae" in str(err.value)
    raw["model"]["kind"] = "nonesuch"
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(DamagedFileError, match="unknown model 'nonesuch'"):
        TrainedRun.load(run)
