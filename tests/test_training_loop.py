"""The training loop: the ELBO improves, checkpoints are complete, resume == uninterrupted."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from test_models_synthetic import blob_particles

from cryovae.device import resolve_device
from cryovae.errors import CryovaeError
from cryovae.models import ModelConfig
from cryovae.runs import TrainConfig
from cryovae.runs.checkpoint import load_checkpoint
from cryovae.training import fit_images, loop

BOX = 21


def _stack(n=96, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, n)
    c = rng.integers(-1, 2, (n, 2)).astype(float)
    imgs = blob_particles(BOX, theta, c, hinge_deg=rng.uniform(-20, 20, n))
    imgs /= imgs.std()
    return imgs + 0.2 * rng.standard_normal(imgs.shape).astype(np.float32)


def _cfgs(kind="target", epochs=2, **train):
    own = {"target": dict(group="p4", enc_fields=4, enc_kernel=11), "spatial": dict(enc_hidden=(64,)),
           "mce": dict(classes=2, enc_channels=8, head_hidden=32)}[kind]
    mcfg = ModelConfig.for_model(kind, box=BOX, gen_hidden=32, fourier_features=16, **own)
    tcfg = TrainConfig(epochs=epochs, batch_size=16, lr=2e-3, seed=3, val_fraction=0.25, **train)
    return mcfg, tcfg


@pytest.mark.parametrize("kind", ["target", "spatial", "mce"])
def test_elbo_improves_on_a_small_synthetic_stack(tmp_path, kind, device):
    """On every available device (CUDA trains with bf16 autocast)."""
    torch.set_num_threads(2)
    mcfg, tcfg = _cfgs(kind, epochs=5, early_stop_patience=0)
    res = fit_images(_stack(64), mcfg, tcfg, tmp_path, device, progress=False)
    train = [h for h in res.history if h["split"] == "train"]
    val = [h for h in res.history if h["split"] == "val"]
    assert len(train) == 5 and len(val) == 5
    assert train[-1]["elbo"] > train[0]["elbo"] + 50  # nats per particle
    assert max(v["elbo"] for v in val) > val[0]["elbo"] + 10, [round(v["elbo"]) for v in val]
    for h in train:
        assert abs(h["elbo"] - (h["recon"] - h["kl"])) < 1e-3 * abs(h["elbo"]) + 1e-3
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 10 and {"epoch", "split", "elbo", "recon", "kl", "lr"} <= set(rows[0])


def test_resume_after_epoch_one_equals_uninterrupted_run(tmp_path):
    torch.set_num_threads(2)
    imgs = _stack(64)
    mcfg, tcfg2 = _cfgs(epochs=2)
    _, tcfg1 = _cfgs(epochs=1)
    (tmp_path / "full").mkdir()
    full = fit_images(imgs, mcfg, tcfg2, tmp_path / "full", torch.device("cpu"), progress=False)
    (tmp_path / "split").mkdir()
    fit_images(imgs, mcfg, tcfg1, tmp_path / "split", torch.device("cpu"), progress=False)
    ck1 = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert ck1["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng", "split", "history"} <= set(ck1)
    resumed = fit_images(imgs, mcfg, tcfg2, tmp_path / "split", torch.device("cpu"), resume=True, progress=False)
    assert [h["elbo"] for h in resumed.history] == pytest.approx([h["elbo"] for h in full.history], rel=1e-6)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_bad_options_are_one_line_errors(tmp_path):
    mcfg, _ = _cfgs()
    with pytest.raises(CryovaeError, match="epochs"):
        fit_images(_stack(8), mcfg, TrainConfig(epochs=0), tmp_path, torch.device("cpu"), progress=False)
    with pytest.raises(CryovaeError, match="images must be"):
        fit_images(np.zeros((8, 5, 5), np.float32), mcfg, TrainConfig(epochs=1), tmp_path, torch.device("cpu"))
    with pytest.raises(CryovaeError, match="no checkpoint"):
        fit_images(_stack(8), mcfg, TrainConfig(epochs=1), tmp_path, torch.device("cpu"), resume=True)
    with pytest.raises(CryovaeError, match="group"):
        ModelConfig.for_model("target", group="p5")
    with pytest.raises(CryovaeError, match="device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_z_delay_epochs_neither_schedule_nor_pick_best(tmp_path, monkeypatch):
    """During the z-delay the model has no z: neither the LR schedule, early stopping nor best.pt
    may act on those epochs (a best.pt without z would be useless)."""
    torch.set_num_threads(2)
    real_run_epoch = loop.run_epoch

    def worsening_validation(*args, **kwargs):  # the real epoch, with a val ELBO falling 100 nats/epoch
        out = real_run_epoch(*args, **kwargs)
        if kwargs.get("optimizer", args[6] if len(args) > 6 else None) is None:
            out["elbo"] = -1000.0 - 100.0 * args[5]
        return out

    monkeypatch.setattr(loop, "run_epoch", worsening_validation)
    mcfg, tcfg = _cfgs(epochs=4, z_delay_epochs=3, lr_patience=0, early_stop_patience=1)
    res = fit_images(_stack(48), mcfg, tcfg, tmp_path, torch.device("cpu"), progress=False)
    train = [h for h in res.history if h["split"] == "train"]
    assert len(train) == 4  # patience 1 would have stopped inside the delay
    assert [h["lr"] for h in train] == [tcfg.lr] * 4  # lr_patience 0 would have halved it each epoch
    assert res.best_epoch == 4 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 4
