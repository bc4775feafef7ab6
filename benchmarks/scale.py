"""Peak memory and throughput of the streaming data path on a large stack on disk.

For each ``--size N:BOX`` (default 200000:64) the script writes an N x BOX² float32 stack and a
RELION 3.1 star into ``--workdir`` (simulated hinge particles, a pool of 5,000 clean images with
fresh noise per particle: content does not change memory or I/O), then runs each stage in its own
process and reports that process's peak resident memory (VmHWM from /proc, the OS's own
high-water mark; and, sampled every 0.1 s, the sum with its DataLoader reader processes) and its
particles/s:

* ``cache (in memory)`` — what cryovae did before the streaming path: the whole preprocessed stack built in RAM;
* ``cache (streamed)`` — what ``cryovae train`` does now: the stack read chunk by chunk and the
  preprocessed images (the default 40 px box) written to images.npy chunk by chunk;
* ``loader, w workers`` — one whole epoch of seeded random batches of 64 read from images.npy
  (:func:`cryovae.data.batch_loader` over :class:`cryovae.io.NpyRows`), w = 0, 1, 2;
* ``train`` — ``--train-steps`` steps of the default model (TARGET-VAE P8, zdim 1, batch 64, at
  train's default box: the images' size up to 40 px, else 40)
  through the trainer's own ``run_epoch`` on the streamed images of the whole stack;
* ``encode`` — ``cryovae encode`` of the first ``--encode-n`` particles of the stack (default 20,000;
  0: all), read from the raw .mrcs chunk by chunk, with a small TARGET-VAE trained on 512 of them
  (the ``small run`` stage).

Usage::

    python benchmarks/scale.py --workdir /tmp/scale                       # 200,000 x 64²
    python benchmarks/scale.py --workdir /tmp/scale --size 20000:64 --size 200000:64 --size 1000000:32

Needs psutil (``pip install -e ".[bench]"``; ``scripts/setup.sh --dev`` installs it). The files are
kept in ``--workdir`` (4 GB per 1,000,000 x 32²) and reused by the next call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

BATCH = 64
MODEL_BOX = 40


def _hwm_mb() -> float:
    """This process's own peak resident memory (VmHWM: of its address space since exec; unlike
    ru_maxrss it does not inherit the RSS of the process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _RssSampler(threading.Thread):
    """The peak, over samples every 0.1 s, of the resident memory of this process plus its child
    processes (DataLoader workers); pages the children share with it are counted for each."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._halt = 0.0, threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._halt.wait(0.1)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak


def make_stack(folder: Path, n: int, box: int) -> Path:
    """folder/particles.star + particles.mrcs: n hinge particles of box px (written once)."""
    import numpy as np

    from cryovae.io import open_stack_for_writing, write_star
    from cryovae.simulate import SimulationConfig, simulate_hinge
    from cryovae.simulate.writer import star_tables

    star = folder / "particles.star"
    if star.exists():
        return star
    folder.mkdir(parents=True, exist_ok=True)
    pool = simulate_hinge(SimulationConfig(n=min(n, 5000), box=box, snr=None, seed=0), progress=False)
    clean = pool.images.astype(np.float32)
    sigma = float(np.sqrt(np.mean(clean.var(axis=(1, 2)))))  # SNR 1
    rng = np.random.default_rng(1)
    with open_stack_for_writing(folder / "particles.mrcs", n, box, pool.pixel_size) as out:
        for s in range(0, n, 10000):
            k = min(10000, n - s)
            pick = rng.integers(0, len(clean), k)
            out[s:s + k] = clean[pick] + rng.normal(0, sigma, (k, box, box)).astype(np.float32)
    tables = star_tables(pool)
    import pandas as pd

    tables["particles"] = pd.DataFrame({"rlnImageName": [f"{i:07d}@particles.mrcs" for i in range(1, n + 1)],
                                        "rlnOpticsGroup": 1})
    write_star(star, tables)
    return star


def stage(name: str, spec: dict) -> dict:
    """One stage, in this (child) process."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from cryovae.data import (
        ParticleDataset,
        PreprocessConfig,
        SeededSampler,
        batch_loader,
        preprocess_stack,
    )
    from cryovae.io import NpyRows, read_particles
    from cryovae.runs import RunDir

    folder = Path(spec["folder"])
    model_box = min(MODEL_BOX, spec["box"])  # train's default box
    pre = {**PreprocessConfig(box=model_box).__dict__}
    sampler_thread = _RssSampler()
    sampler_thread.start()
    t0 = time.perf_counter()
    out: dict = {}
    if name == "make-stack":
        make_stack(folder, spec["n"], spec["box"])
        out["n"] = spec["n"]
    elif name == "cache-memory":
        stack = read_particles(folder / "particles.star")
        arr = preprocess_stack(stack, pre, progress=False)
        out["n"] = len(arr)
    elif name == "cache-streamed":
        stack = read_particles(folder / "particles.star")
        run = RunDir(folder / "run").create()
        run.images.unlink(missing_ok=True)  # built here, not found from an earlier call
        rows = run.cached_images(stack, pre, progress=False, lazy=True)
        out["n"] = len(rows)
    elif name == "loader":
        rows = NpyRows(folder / "run" / "images.npy")
        sampler = SeededSampler(np.arange(len(rows)), seed=0)
        batches = sampler.batches(BATCH)
        seen = 0
        for images, _, _ in batch_loader(ParticleDataset(rows), batches, workers=spec["workers"]):
            seen += len(images)
        out["n"] = seen
    elif name == "train":
        from cryovae.models import model_config
        from cryovae.runs import TrainConfig
        from cryovae.training import make_optimizer, seeded_model
        from cryovae.training.loop import run_epoch

        rows = NpyRows(folder / "run" / "images.npy")
        cfg = TrainConfig(batch_size=BATCH, z_delay_epochs=0)
        model = seeded_model(model_config("target", box=model_box, zdim=1, group="p8"), 0)
        first = SeededSampler(np.arange(len(rows)), seed=0).order()[: spec["steps"] * BATCH]
        sampler = SeededSampler(np.sort(first), seed=0)
        dataset = ParticleDataset(rows)
        opt = make_optimizer(model, cfg)
        t0 = time.perf_counter()
        run_epoch(model, dataset, sampler, cfg, torch.device("cpu"), 0, opt, workers=spec["workers"])
        out["n"] = len(first)
    elif name == "small-run":
        from click.testing import CliRunner

        from cryovae.cli.main import cli

        small = folder / "small_run"
        if not (small / "best.pt").exists():
            sub = folder / "small"
            sub.mkdir(exist_ok=True)
            stack = read_particles(folder / "particles.star")
            table = stack.blocks["particles"].iloc[:512].copy()
            table["rlnImageName"] = [s.replace("@", "@../") for s in table["rlnImageName"]]
            from cryovae.io import write_star

            write_star(sub / "particles.star", {"optics": stack.blocks["optics"], "particles": table})
            res = CliRunner().invoke(cli, ["train", str(sub / "particles.star"), "-o", str(small), "--group", "p4",
                                           "--zdim", "1", "--epochs", "1", "--enc-fields", "4",
                                           "--gen-hidden", "32", "--refine-steps", "0", "--device", "cpu"])
            assert res.exit_code == 0, res.output
        out["n"] = 512
    elif name == "encode":
        from click.testing import CliRunner

        from cryovae.cli.main import cli

        small = folder / "small_run"
        star = folder / "particles.star"
        if spec["encode_n"]:
            stack = read_particles(star)
            sub_star = folder / f"first_{spec['encode_n']}.star"
            from cryovae.io import write_star

            write_star(sub_star, {"optics": stack.blocks["optics"],
                                  "particles": stack.blocks["particles"].iloc[: spec["encode_n"]]})
            star = sub_star
        t0 = time.perf_counter()
        res = CliRunner().invoke(cli, ["encode", str(small), str(star), "-o", str(folder / "encoded.star"),
                                       "--refine-steps", "0", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        out["n"] = len(read_particles(folder / "encoded.star"))
    else:
        raise SystemExit(f"unknown stage {name}")
    seconds = time.perf_counter() - t0
    with_children = sampler_thread.stop()
    return {**out, "seconds": seconds, "per_s": out["n"] / seconds, "peak_mb": _hwm_mb(),
            "peak_all_mb": max(with_children, _hwm_mb())}


def _child(name: str, spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    res = subprocess.run([sys.executable, __file__, "--stage", name, json.dumps(spec)], capture_output=True,
                         text=True, env=env)
    if res.returncode:
        raise SystemExit(f"stage {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--size", action="append", help="N:BOX (repeatable; default 200000:64)")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--encode-n", type=int, default=20000, help="encode the first N particles (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated stages to leave out (cache-memory, encode, ...)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, json.loads(args.spec))))
        return
    if args.workdir is None:
        ap.error("--workdir is required")
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    for size in args.size or ["200000:64"]:
        n, box = (int(v) for v in size.split(":"))
        folder = args.workdir / f"{n}x{box}"
        made = _child("make-stack", {"folder": str(folder), "n": n, "box": box, "threads": args.threads})
        print(f"# {n} x {box}² stack: {(folder / 'particles.mrcs').stat().st_size / 1e9:.2f} GB "
              f"(written in {made['seconds']:.0f} s, or found)", flush=True)
        base = {"folder": str(folder), "box": box, "threads": args.threads, "workers": 0, "steps": args.train_steps,
                "encode_n": args.encode_n}
        plan = [("cache (in memory, before)", "cache-memory", {}), ("cache (streamed)", "cache-streamed", {}),
                *[(f"loader, {w} workers", "loader", {"workers": w}) for w in (0, 1, 2)],
                ("train (TARGET-VAE P8)", "train", {}), ("small run to encode with", "small-run", {}),
                ("encode (cryovae encode)", "encode", {})]
        for label, name, extra in plan:
            if name in skip:
                continue
            r = _child(name, {**base, **extra})
            rows.append((f"{n} x {box}²", label, r))
            print(f"{n} x {box}² | {label} | {r['n']} particles | {r['per_s']:.0f} p/s | peak RSS {r['peak_mb']:.0f} MB "
                  f"(with workers {r['peak_all_mb']:.0f} MB)", flush=True)
    print("\n| stack | stage | particles | particles/s | peak RSS (MB) | with reader processes (MB) |\n"
          "|---|---|---|---|---|---|")
    for size, label, r in rows:
        print(f"| {size} | {label} | {r['n']:,} | {r['per_s']:,.0f} | {r['peak_mb']:,.0f} | {r['peak_all_mb']:,.0f} |")


if __name__ == "__main__":
    main()
