"""Distributed training on torchrun (gloo, 2 CPU processes) and the streaming data path.

A 2-process run with ``--batch-size B`` takes the particles of one ``2B`` step of a single
process, split between the processes, and DistributedDataParallel averages their gradients, so
its losses follow a single process with ``--batch-size 2B`` (up to the samples each process
draws) and not one with ``--batch-size B``. Its run directory opens like any other, and a resume
with another number of processes is one line.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.data import ParticleDataset, SeededSampler, batch_loader
from cryovae.distributed import World
from cryovae.errors import InputFileError
from cryovae.inference import TrainedRun
from cryovae.io import NpyRows, read_particles, row_range, write_npy_rows
from cryovae.training.loop import epoch_batches

N = 256
ARGS = ["--model", "target", "--group", "p4", "--zdim", "1", "--box", "24", "--epochs", "3", "--enc-fields", "4",
        "--enc-kernel", "9", "--enc-layers", "0", "--gen-hidden", "32", "--gen-layers", "1",
        "--fourier-features", "16", "--z-delay", "1", "--val-fraction", "0.25", "--device", "cpu", "--seed", "0",
        "--refine-steps", "3"]


def _cli(*args: str) -> None:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output


def _torchrun(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cryovae", *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs of the same particles: 2 processes x 16, 1 process x 32, 1 process x 16."""
    base = tmp_path_factory.mktemp("ddp")
    _cli("simulate", "hinge", "-o", str(base / "sim"), "--n", str(N), "--box", "24", "--apix", "6", "--snr", "1",
         "--seed", "2")
    star = str(base / "sim" / "particles.star")
    _torchrun(base, "train", star, "-o", "two", *ARGS, "--batch-size", "16")
    _cli("train", star, "-o", str(base / "one"), *ARGS, "--batch-size", "32")
    _cli("train", star, "-o", str(base / "half"), *ARGS, "--batch-size", "16")
    return base


def _metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv").set_index(["epoch", "split"])


def test_two_processes_train_like_one_with_the_doubled_batch(runs):
    two, one, half = (_metrics(runs / r) for r in ("two", "one", "half"))
    assert list(two.index) == list(one.index)  # 3 epochs, train and val
    gap = (two["elbo"] - one["elbo"]).abs()
    control = (half["elbo"] - one["elbo"]).abs()
    # within 0.3% of the doubled-batch run at every epoch (the processes draw their own samples) ...
    assert (gap / one["elbo"].abs()).max() < 3e-3, pd.concat({"two": two["elbo"], "one": one["elbo"]}, axis=1)
    # ... and far closer to it than a run that takes twice the steps with the single batch
    later = [(e, s) for e, s in one.index if e > 1]
    assert gap[later].max() * 3 < control[later].max()


def test_the_distributed_run_opens_like_any_other(runs):
    run = TrainedRun.load(runs / "two")
    ck = torch.load(runs / "two" / "checkpoint.pt", weights_only=True)
    assert ck["world_size"] == 2 and ck["epoch"] == 3
    stack = read_particles(runs / "two" / "particles.star")
    assert len(stack) == N and stack.images(np.arange(3)).shape == (3, 24, 24)
    latents = run.latents()
    assert len(latents) == N
    # the processes encoded and refined one half each: gathered in particle order, they equal
    # one process encoding and refining every particle with the same model
    images = np.load(runs / "two" / "images.npy")
    again = run.encode(images, refine_steps=3)
    assert np.allclose(again.z_mean, latents.z_mean, atol=1e-4)
    assert np.allclose(np.cos(again.theta - latents.theta), 1.0, atol=1e-6)
    psi = stack.table["rlnAnglePsi"].to_numpy(float)
    assert np.allclose(np.cos(np.radians(psi - latents.psi_deg)), 1.0, atol=1e-8)
    assert (runs / "two" / "train.log").read_text().count("best epoch") == 1  # one writer


def test_resume_with_another_number_of_processes_is_one_line(runs):
    before = (runs / "two" / "checkpoint.pt").read_bytes()
    res = CliRunner().invoke(cli, ["train", "--resume", str(runs / "two"), "--epochs", "4"])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert "trained by 2 process(es)" in line and "resumed by 1" in line
    assert "torchrun --nproc_per_node 2" in line
    assert (runs / "two" / "checkpoint.pt").read_bytes() == before


def test_resume_with_the_same_processes_continues(runs, tmp_path):
    import shutil

    run = tmp_path / "two"
    shutil.copytree(runs / "two", run)
    _torchrun(tmp_path, "train", "--resume", str(run), "--epochs", "4")
    before, after = _metrics(runs / "two"), _metrics(run)
    assert sorted({e for e, _ in after.index}) == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(after.loc[before.index, ["elbo", "recon", "kl"]], before[["elbo", "recon", "kl"]])
    assert len(TrainedRun.load(run).latents()) == N


def test_the_streamed_images_train_exactly_as_those_in_memory(runs, tmp_path):
    """--lazy reads the preprocessed stack from disk batch by batch, with reader processes or
    without: the same batches, so the same run, bit for bit."""
    star = str(runs / "sim" / "particles.star")
    _cli("train", star, "-o", str(tmp_path / "lazy"), *ARGS, "--batch-size", "32", "--lazy", "--workers", "1")
    one = _metrics(runs / "one")
    pd.testing.assert_frame_equal(_metrics(tmp_path / "lazy").drop(columns="seconds"), one.drop(columns="seconds"))
    a = TrainedRun.load(tmp_path / "lazy").latents()
    b = TrainedRun.load(runs / "one").latents()
    assert np.array_equal(a.z_mean, b.z_mean) and np.array_equal(a.theta, b.theta)


def test_each_step_of_the_processes_holds_the_particles_of_one_larger_step():
    sampler = SeededSampler(np.arange(103), seed=5)
    sampler.set_epoch(3)
    single, sizes1 = epoch_batches(sampler, 20, World(), train=True)
    parts = [epoch_batches(sampler, 10, World(rank=r, size=2), train=True) for r in range(2)]
    (p0, s0), (p1, s1) = parts
    assert s0 == s1 == sizes1 == [20, 20, 20, 20, 20, 3]
    for whole, a, b in zip(single, p0, p1, strict=True):
        assert np.array_equal(np.concatenate([a, b]), whole)
    # a last step with fewer particles than processes is left out of training, not of validation
    four = [epoch_batches(SeededSampler(np.arange(42), 0), 10, World(rank=r, size=4), train=True) for r in range(4)]
    assert all(s == [40] for _, s in four)
    val = [epoch_batches(SeededSampler(np.arange(42), 0, shuffle=False), 10, World(rank=r, size=4), train=False)
           for r in range(4)]
    assert sorted(np.concatenate([np.concatenate(p) for p, _ in val]).tolist()) == list(range(42))


def test_batch_loader_yields_the_batches_in_order(tmp_path):
    images = np.random.default_rng(0).normal(size=(50, 6, 6)).astype(np.float32)
    np.save(tmp_path / "i.npy", images)
    batches = [np.array([4, 1, 9]), np.array([49, 0]), np.arange(10, 20)]
    for source in (images, NpyRows(tmp_path / "i.npy")):
        for workers in (0, 2):
            got = list(batch_loader(ParticleDataset(source), batches, workers=workers))
            assert len(got) == 3
            for (y, ctf, idx), want in zip(got, batches, strict=True):
                assert ctf is None and np.array_equal(idx, want)
                assert torch.equal(y, torch.from_numpy(images[want]))


def test_npy_rows_reads_any_rows_without_loading_the_file(tmp_path):
    arr = np.random.default_rng(1).normal(size=(40, 3, 5)).astype(np.float32)
    with write_npy_rows(tmp_path / "a.npy", arr.shape) as out:
        for s in range(0, 40, 7):
            out.write(arr[s:s + 7])
    assert np.array_equal(np.load(tmp_path / "a.npy"), arr)  # numpy reads what it wrote
    rows = NpyRows(tmp_path / "a.npy")
    assert rows.shape == arr.shape and len(rows) == 40
    idx = np.array([39, 0, 5, 5, 6, 7, 20])
    assert np.array_equal(rows[idx], arr[idx])
    assert np.array_equal(rows[3:11], arr[3:11]) and np.array_equal(rows[7], arr[7])
    assert np.array_equal(rows[::3], arr[::3]) and np.array_equal(rows[arr[:, 0, 0] > 0], arr[arr[:, 0, 0] > 0])
    view = row_range(rows, 10, 30)
    assert len(view) == 20 and np.array_equal(view[[0, 19, 4]], arr[[10, 29, 14]])
    assert np.array_equal(pickle.loads(pickle.dumps(view))[2:5], arr[12:15])
    with pytest.raises(IndexError):
        rows[[40]]


def test_npy_rows_writes_atomically_and_refuses_a_truncated_file(tmp_path):
    with pytest.raises(ValueError, match="3 of 10 rows"), write_npy_rows(tmp_path / "b.npy", (10, 2)) as out:
        out.write(np.zeros((3, 2)))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    np.save(tmp_path / "c.npy", np.zeros((10, 4), np.float32))
    data = (tmp_path / "c.npy").read_bytes()
    (tmp_path / "c.npy").write_bytes(data[:-16])
    with pytest.raises(InputFileError, match="truncated"):
        NpyRows(tmp_path / "c.npy")
