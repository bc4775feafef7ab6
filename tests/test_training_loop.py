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


def _zero_z_spy(monkeypatch):
    """Record, per epoch, whether the training pass fed z = 0."""
    real_run_epoch, seen = loop.run_epoch, {}

    def spy(*args, **kwargs):
        if kwargs.get("optimizer", args[6] if len(args) > 6 else None) is not None:
            seen[args[5] + 1] = kwargs["zero_z"]
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "run_epoch", spy)
    return seen


def test_z_switches_on_once_the_rotations_have_settled(tmp_path, monkeypatch):
    """z_delay_epochs None: z = 0 until the validation rotations move by a median of at most
    settle_deg between two epochs (not before epoch 2); each epoch of the delay records the change."""
    torch.set_num_threads(2)
    seen = _zero_z_spy(monkeypatch)
    rng = np.random.default_rng(0)
    start = rng.uniform(-np.pi, np.pi, 12)
    # where the rotations are after each epoch: they move 30, 5, then 1 degree: z on from epoch 5
    after_deg = iter(np.cumsum([0.0, 30.0, 5.0, 1.0, 0.5, 0.5]))
    readings = []

    def rotations(model, dataset, indices, batch_size, device):
        assert len(indices) == 12  # the validation particles
        readings.append(start + np.radians(next(after_deg)))
        return readings[-1], None

    monkeypatch.setattr(loop, "inferred_poses", rotations)
    mcfg, tcfg = _cfgs(epochs=6, settle_deg=2.0, early_stop_patience=0)
    res = fit_images(_stack(48), mcfg, tcfg, tmp_path, torch.device("cpu"), progress=False)
    assert seen == {1: True, 2: True, 3: True, 4: True, 5: False, 6: False}
    val = [h for h in res.history if h["split"] == "val"]
    change = [h.get("rotation_change_deg") for h in val]
    assert np.isnan(change[0]) and change[4:] == [None, None]
    assert len(readings) == 4  # not read once z is on
    assert load_checkpoint(tmp_path / "checkpoint.pt")["z_on_epoch"] == 4


def test_z_of_a_model_with_classes_also_waits_for_the_classes_to_settle(tmp_path, monkeypatch):
    """With classes, z = 0 until the rotations have settled and at most SETTLE_CLASS_SHARE of the
    validation particles changed class in the epoch; metrics.csv records the share."""
    torch.set_num_threads(2)
    seen = _zero_z_spy(monkeypatch)
    theta = np.zeros(12)
    # the rotations are settled from the start; the classes of 6, 2, 1, then 0 of 12 particles
    # change in epochs 2-5 (1 of 12 is over 2 %): z on from epoch 6
    flips = iter([0, 6, 2, 1, 0, 0])
    classes = np.ones(12, dtype=np.int64)

    def poses(model, dataset, indices, batch_size, device):
        flip = next(flips)
        classes[:flip] = 3 - classes[:flip]
        return theta, classes.copy()

    monkeypatch.setattr(loop, "inferred_poses", poses)
    mcfg, tcfg = _cfgs("mce", epochs=6, settle_deg=2.0, early_stop_patience=0)
    res = fit_images(_stack(48), mcfg, tcfg, tmp_path, torch.device("cpu"), progress=False)
    assert seen == {1: True, 2: True, 3: True, 4: True, 5: True, 6: False}
    val = [h for h in res.history if h["split"] == "val"]
    assert [h.get("class_change") for h in val][:5] == pytest.approx([1.0, 0.5, 2 / 12, 1 / 12, 0.0])
    assert val[5].get("class_change") is None  # not read once z is on
    assert loop.class_change_share(np.array([1, 2, 2]), np.array([1, 2, 1])) == pytest.approx(1 / 3)
    assert loop.class_change_share(None, None) == 0.0


def test_z_switches_on_at_the_longest_delay_when_rotations_keep_moving(tmp_path, monkeypatch):
    torch.set_num_threads(2)
    seen = _zero_z_spy(monkeypatch)
    rng = np.random.default_rng(1)
    monkeypatch.setattr(loop, "inferred_poses", lambda *a: (rng.uniform(-np.pi, np.pi, len(a[2])), None))
    mcfg, tcfg = _cfgs(epochs=4, z_delay_max=2, early_stop_patience=0)
    fit_images(_stack(48), mcfg, tcfg, tmp_path, torch.device("cpu"), progress=False)
    assert seen == {1: True, 2: True, 3: False, 4: False}


def test_resume_inside_the_automatic_z_delay_equals_uninterrupted_run(tmp_path):
    """The settling state (the last rotations read, whether z is on) travels in checkpoint.pt."""
    torch.set_num_threads(2)
    imgs = _stack(48)
    mcfg, tcfg3 = _cfgs(epochs=3, settle_deg=1e-6, z_delay_max=3)
    _, tcfg1 = _cfgs(epochs=1, settle_deg=1e-6, z_delay_max=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fit_images(imgs, mcfg, tcfg3, tmp_path / "a", torch.device("cpu"), progress=False)
    fit_images(imgs, mcfg, tcfg1, tmp_path / "b", torch.device("cpu"), progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["settle_theta"] is not None
    b = fit_images(imgs, mcfg, tcfg3, tmp_path / "b", torch.device("cpu"), resume=True, progress=False)
    assert [h["elbo"] for h in a.history] == pytest.approx([h["elbo"] for h in b.history], rel=1e-6)
    assert [h.get("rotation_change_deg") for h in a.history][2:] == pytest.approx(
        [h.get("rotation_change_deg") for h in b.history][2:], rel=1e-6, nan_ok=True)


def test_micro_batches_give_the_step_of_the_whole_batch(monkeypatch):
    """On a CPU a step runs in micro-batches; with the samples switched off its gradient is the
    one of the whole batch at once (to float rounding)."""
    from cryovae.data import ParticleDataset, SeededSampler
    from cryovae.models import build_model

    assert [(s.start, s.stop) for s in loop.micro_batches(70, torch.device("cpu"))] == [(0, 23), (23, 47), (47, 70)]
    assert loop.micro_batches(32, torch.device("cpu")) == [slice(None)]
    torch.set_num_threads(2)
    mcfg, _ = _cfgs()
    tcfg = TrainConfig(epochs=1, batch_size=48, lr=1e-3, seed=3)
    data = ParticleDataset(_stack(48))

    class Deterministic(torch.nn.Module):  # the model's ELBO at the posterior means
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, y, ctf, **kw):
            return self.model(y, ctf, sample=False, zero_z=kw["zero_z"])

        def no_sync(self):
            from contextlib import nullcontext
            return nullcontext()

    grads = []
    for micro in (16, 1000):
        monkeypatch.setattr(loop, "CPU_MICRO_BATCH", micro)
        torch.manual_seed(0)
        model = build_model(mcfg)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        loop.run_epoch(model, data, SeededSampler(np.arange(48), 0), tcfg, torch.device("cpu"), 0, opt,
                       forward=Deterministic(model))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4 * float(grads[1].abs().max()))
