"""Damaged run files, unwritable outputs, Ctrl-C, the image cache, metrics after a kill and
non-finite losses: each is one line and a non-zero exit, never a traceback, and leaves no
partial file under a final name (issue #11, "Bad input")."""

from __future__ import annotations

import errno
import shutil
import subprocess
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from test_models_synthetic import blob_particles

from cryovae.cli.main import cli
from cryovae.errors import DamagedFileError, OutputFileError
from cryovae.io import read_particles, write_stack, write_star
from cryovae.io.atomic import atomic_path
from cryovae.runs.checkpoint import load_checkpoint
from cryovae.training.loop import RESUME_KEYS

BOX = 24
APIX = 3.0
N = 32
TINY = ["--box", "24", "--group", "p4", "--zdim", "1", "--enc-fields", "2", "--enc-kernel", "9",
        "--enc-layers", "0", "--gen-hidden", "16", "--gen-layers", "1", "--fourier-features", "8",
        "--batch-size", "16", "--device", "cpu", "--val-fraction", "0.25", "--z-delay", "0",
        "--refine-steps", "2"]


def _particles(folder, n=N, seed=0, defocus=None, name="p"):
    """A RELION 3.1 star + mrcs of ``n`` blob particles (real files, as RELION writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    imgs = blob_particles(BOX, rng.uniform(-np.pi, np.pi, n), np.zeros((n, 2)), noise=0.1)
    write_stack(folder / f"{name}.mrcs", imgs, APIX)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [APIX],
                           "rlnImageSize": [BOX], "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    du = np.full(n, 15000.0) if defocus is None else np.asarray(defocus, float)
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1}@{name}.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n,
                          "rlnDefocusU": du, "rlnDefocusV": [14500.0] * n, "rlnDefocusAngle": [30.0] * n})
    write_star(folder / f"{name}.star", {"optics": optics, "particles": parts})
    return folder / f"{name}.star"


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(r, code=2):
    """The CLI's contract for a user's problem: exit ``code``, one ``cryovae <cmd>: error:`` line."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if "error:" in ln]
    assert len(lines) == 1, r.output
    return lines[0]


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    return _particles(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, star):
    """A finished 2-epoch run (copy it before changing anything)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    r = _invoke(["train", star, "-o", run, "--epochs", "2", *TINY])
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def run(tmp_path, finished):
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


# --- 1. damaged run files -----------------------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\x00not a cryovae file\xff" * 50)


@pytest.mark.parametrize("name,damage,command", [
    ("checkpoint.pt", _truncate, "resume"),
    ("checkpoint.pt", _garbage, "resume"),
    ("best.pt", _truncate, "encode"),
    ("best.pt", _garbage, "traverse"),
    ("best.pt", _truncate, "analyze"),
    ("latents.npz", _truncate, "traverse"),
    ("latents.npz", _garbage, "analyze"),
    ("config.yaml", _garbage, "traverse"),
    ("config.yaml", _truncate, "resume"),
])
def test_a_damaged_run_file_is_named_in_one_line(run, star, tmp_path, name, damage, command):
    damage(run / name)
    args = {"resume": ["train", "--resume", run],
            "encode": ["encode", run, star, "-o", tmp_path / "e.star", "--device", "cpu"],
            "traverse": ["traverse", run, "-o", tmp_path / "trav", "--steps", "2"],
            "analyze": ["analyze", run, "-o", tmp_path / "an", "--no-umap"]}[command]
    line = _one_line_error(_invoke(args))
    assert str(run / name) in line and "damaged" in line
    assert not (tmp_path / "e.star").exists()


@pytest.mark.parametrize("edit,key", [
    (lambda d: d["model"].update(box="forty"), "model.box"),
    (lambda d: d["train"].update(lr=[0.001]), "train.lr"),
    (lambda d: d["model"].pop("zdim"), "zdim"),
    (lambda d: d.pop("train"), "train"),
    (lambda d: d["model"].update(group=8), "model.group"),
])
def test_config_yaml_with_a_wrong_type_or_a_missing_key_is_named(run, edit, key):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    edit(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    line = _one_line_error(_invoke(["traverse", run, "--steps", "2", "-o", run / "t"]))
    assert str(run / "config.yaml") in line and key in line


def test_checkpoint_entries_of_the_wrong_type_are_damage(run):
    ck = load_checkpoint(run / "checkpoint.pt", keys=RESUME_KEYS)
    torch.save({**ck, "split": {"train": "all of them", "val": None}}, run / "checkpoint.pt")
    line = _one_line_error(_invoke(["train", "--resume", run]))
    assert str(run / "checkpoint.pt") in line and "damaged" in line
    torch.save({"model": ck["model"], "epoch": 2}, run / "checkpoint.pt")  # a best.pt, not a checkpoint
    line = _one_line_error(_invoke(["train", "--resume", run]))
    assert "missing optimizer" in line
    torch.save({"model": {"w": torch.zeros(3)}}, run / "best.pt")  # weights of another model
    line = _one_line_error(_invoke(["traverse", run, "--steps", "2", "-o", run / "t"]))
    assert str(run / "best.pt") in line and "do not fit" in line


class _NotAllowed:
    """Any class torch.load(weights_only=True) must refuse to build."""


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _NotAllowed()}, path)
    assert isinstance(torch.load(path, weights_only=False)["payload"], _NotAllowed)  # a full unpickle would
    with pytest.raises(DamagedFileError, match="evil.pt: damaged checkpoint"):
        load_checkpoint(path)


def test_a_finished_run_loads_and_resumes_from_its_checkpoint(run):
    ck = load_checkpoint(run / "checkpoint.pt", keys=RESUME_KEYS)
    assert ck["epoch"] == 2 and isinstance(ck["split"]["train"], torch.Tensor)
    r = _invoke(["train", "--resume", run])  # nothing left to train: re-encodes and writes
    assert r.exit_code == 0, r.output


# --- 2. outputs that cannot be written -----------------------------------------------------

def test_atomic_write_error_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "a.txt"
    out.write_text("old")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cryovae.io.atomic.os.replace", full_disk)
    with pytest.raises(OutputFileError, match=f"cannot write {out}: No space left on device"):
        with atomic_path(out) as tmp:
            tmp.write_text("new")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_train_on_a_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, star, monkeypatch):
    import os

    real = os.replace

    def full_at_checkpoint(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr("cryovae.io.atomic.os.replace", full_at_checkpoint)
    run = tmp_path / "run"
    line = _one_line_error(_invoke(["train", star, "-o", run, "--epochs", "1", *TINY]))
    assert f"cannot write {run / 'checkpoint.pt'}: No space left on device" in line
    assert not list(run.glob("*.tmp")) and not (run / "particles.star").exists()


@pytest.mark.parametrize("where", ["free-space check", "preallocation"])
def test_preprocess_on_a_full_disk_is_one_line_not_a_bus_error(tmp_path, star, monkeypatch, where):
    import shutil as sh

    if where == "free-space check":
        usage = sh.disk_usage(tmp_path)
        monkeypatch.setattr("cryovae.io.writers.shutil.disk_usage",
                            lambda p: usage._replace(free=4096))
    else:
        def no_blocks(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("cryovae.io.writers.os.posix_fallocate", no_blocks)
    out = tmp_path / "out"
    out.mkdir()
    line = _one_line_error(_invoke(["preprocess", star, "--box", "12", "-o", out / "p12.star"]))
    assert f"cannot write {out / 'p12.mrcs'}: No space left on device" in line
    assert list(out.iterdir()) == []


def _immutable(folder):
    """chattr +i ``folder`` (root cannot write into it either); skip where chattr does not work."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")


def test_encode_into_an_immutable_folder_is_one_line(run, star, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    _immutable(out)
    try:
        line = _one_line_error(_invoke(["encode", run, star, "-o", out / "e.star", "--device", "cpu"]))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert f"cannot write {out / 'e.star'}" in line and "Operation not permitted" in line
    assert list(out.iterdir()) == []


def test_train_into_an_immutable_folder_is_one_line(tmp_path, star):
    out = tmp_path / "locked"
    out.mkdir()
    _immutable(out)
    try:
        line = _one_line_error(_invoke(["train", star, "-o", out / "run", "--epochs", "1", *TINY]))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert str(out / "run") in line and "Operation not permitted" in line


# --- 3. Ctrl-C ---------------------------------------------------------------------------------

def _interrupt_at(monkeypatch, target, after_calls=0):
    """Make ``target`` (module.attr) raise KeyboardInterrupt from its (after_calls + 1)-th call."""
    module, attr = target.rsplit(".", 1)
    import importlib

    mod = importlib.import_module(module)
    real = getattr(mod, attr)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, attr, wrapper)


@pytest.mark.parametrize("phase,target,after,epoch", [
    ("training", "cryovae.training.loop.run_epoch", 0, 0),       # first epoch: the epoch-0 checkpoint
    ("training", "cryovae.training.loop.run_epoch", 2, 1),       # second epoch (train + val ran once)
    ("refining", "cryovae.inference.encode.refine_latents", 0, 2),
    ("writing", "cryovae.workflows.train.write_star", 0, 2),        # after latents.npz was written
])
def test_ctrl_c_in_any_phase_exits_130_keeps_a_checkpoint_and_writes_no_results(
        tmp_path, star, monkeypatch, phase, target, after, epoch):
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, target, after)
    line = _one_line_error(_invoke(["train", star, "-o", run, "--epochs", "2", *TINY]), code=130)
    assert f"cryovae train --resume {run}" in line and phase in line
    assert load_checkpoint(run / "checkpoint.pt", keys=RESUME_KEYS)["epoch"] == epoch
    assert not (run / "particles.star").exists() and not (run / "latents.npz").exists()
    assert not list(run.glob("*.tmp"))
    if after == 2:  # and the run goes on from there
        monkeypatch.undo()
        r = _invoke(["train", "--resume", run])
        assert r.exit_code == 0, r.output
        assert sorted(pd.read_csv(run / "metrics.csv")["epoch"].unique()) == [1, 2]
        assert (run / "particles.star").exists() and (run / "latents.npz").exists()


def test_sigterm_during_training_exits_143_like_ctrl_c(tmp_path, star, monkeypatch):
    """A batch scheduler's time limit (SIGTERM) cleans up as Ctrl-C does: a resumable checkpoint,
    no results, one line, exit 143."""
    import os
    import signal

    from cryovae.training import loop

    real, calls = loop.run_epoch, {"n": 0}

    def epoch_then_sigterm(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # during the second epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "run_epoch", epoch_then_sigterm)
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    line = _one_line_error(_invoke(["train", star, "-o", run, "--epochs", "3", *TINY]), code=143)
    assert line.startswith("cryovae train: error: terminated (SIGTERM) while training")
    assert f"cryovae train --resume {run}" in line
    assert load_checkpoint(run / "checkpoint.pt", keys=RESUME_KEYS)["epoch"] == 1
    assert not (run / "particles.star").exists() and not (run / "latents.npz").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the command's handler is gone again


def test_ctrl_c_in_another_command_exits_130_and_leaves_no_file(run, star, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, "starfile.write")  # while encode writes its star
    out = tmp_path / "e.star"
    line = _one_line_error(_invoke(["encode", run, star, "-o", out, "--device", "cpu"]), code=130)
    assert line == "cryovae encode: error: interrupted"
    assert list(tmp_path.iterdir()) == [run]


# --- 4. the image cache -------------------------------------------------------------------------

def test_images_cache_is_keyed_to_its_particles_and_preprocessing(tmp_path, monkeypatch, caplog):
    import cryovae.data
    from cryovae.runs import RunDir

    a = read_particles(_particles(tmp_path / "a", seed=1))
    b = read_particles(_particles(tmp_path / "b", seed=2))  # same count and box, other images
    rundir = tmp_path / "killed"
    rundir.mkdir()
    pre = {"box": 12, "invert": False}
    calls = []
    real = cryovae.data.preprocess_stack
    chunks = cryovae.data.preprocess_chunks  # what the cache streams the stack through
    monkeypatch.setattr(cryovae.data, "preprocess_chunks", lambda *a, **k: calls.append(1) or chunks(*a, **k))

    from_a = RunDir(rundir).cached_images(a, pre, progress=False)
    assert RunDir(rundir).cached_images(a, pre, progress=False).tobytes() == from_a.tobytes()
    assert len(calls) == 1  # reused when nothing changed
    from_b = RunDir(rundir).cached_images(b, pre, progress=False)
    assert len(calls) == 2 and not np.allclose(from_b, from_a)
    np.testing.assert_array_equal(from_b, real(b, pre, progress=False))
    assert "made from other particles" in caplog.text
    inverted = RunDir(rundir).cached_images(b, {**pre, "invert": True}, progress=False)
    assert len(calls) == 3
    np.testing.assert_allclose(inverted, -from_b, atol=1e-5)
    np.testing.assert_array_equal(np.load(rundir / "images.npy"), inverted)
    # an old cache without its record is not trusted either
    (rundir / "images.json").unlink()
    RunDir(rundir).cached_images(b, {**pre, "invert": True}, progress=False)
    assert len(calls) == 4


# --- 5. metrics.csv after a kill ------------------------------------------------------------------

def test_metrics_are_rewritten_from_the_checkpoint_and_stale_tmp_removed(run):
    full = pd.read_csv(run / "metrics.csv")
    assert sorted(full["epoch"].unique()) == [1, 2]
    # killed between writing metrics.csv.tmp and its rename, after epoch 2's checkpoint
    full[full["epoch"] == 1].to_csv(run / "metrics.csv", index=False)
    full.to_csv(run / "metrics.csv.tmp", index=False)
    (run / "latents.npz.tmp").write_bytes(b"half")
    r = _invoke(["train", "--resume", run])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(run / "metrics.csv")
    assert sorted(again["epoch"].unique()) == [1, 2]
    pd.testing.assert_frame_equal(again, full)
    assert not list(run.glob("*.tmp"))


# --- 6. non-finite losses -------------------------------------------------------------------------

def test_a_nan_defocus_with_ctf_names_the_column_and_particle(tmp_path):
    du = np.full(N, 15000.0)
    du[7] = np.nan
    star = _particles(tmp_path / "d", defocus=du)
    run = tmp_path / "run"
    line = _one_line_error(_invoke(["train", star, "-o", run, "--ctf", "--epochs", "1", *TINY]))
    assert "_rlnDefocusU" in line and "particle 8 " in line and str(star) in line  # row 8, 1-based
    assert not (run / "checkpoint.pt").exists()


def test_divergence_names_the_loss_suggests_lr_and_keeps_the_last_good_checkpoint(tmp_path, star, monkeypatch):
    """Epoch 2's weights turn NaN mid-epoch (as a too-large --lr does): the error says so, and
    checkpoint.pt / best.pt keep epoch 1's finite weights."""
    from cryovae.models import TargetVAE

    real = TargetVAE.forward
    calls = {"n": 0}

    def diverging(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1: 2 train + 1 val batches; this is epoch 2's 2nd batch
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(TargetVAE, "forward", diverging)
    run = tmp_path / "run"
    line = _one_line_error(_invoke(["train", star, "-o", run, "--epochs", "3", *TINY]))
    assert "non-finite loss" in line and "epoch 2" in line and "weights became non-finite" in line
    assert "lower --lr (this run used 0.001)" in line
    ck = load_checkpoint(run / "checkpoint.pt", keys=RESUME_KEYS)
    assert ck["epoch"] == 1
    for path in (run / "checkpoint.pt", run / "best.pt"):
        assert all(torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values() if v.is_floating_point())
    assert not (run / "particles.star").exists()


def test_latents_file_checks(tmp_path):
    """A latents.npz whose arrays disagree is damage, not a later shape error."""
    from cryovae.runs import Latents

    path = tmp_path / "latents.npz"
    np.savez(path, z_mean=np.zeros((3, 1)), z_std=np.zeros((3, 1)), theta=np.zeros(3),
             center_px=np.zeros((2, 2)), psi_deg=np.zeros(3), origin_A=np.zeros((3, 2)))
    with pytest.raises(DamagedFileError, match="center_px"):
        Latents.load(path)
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("theta.npy", b"nonsense")
    with pytest.raises(DamagedFileError, match="damaged latents"):
        Latents.load(tmp_path / "x.npz")
