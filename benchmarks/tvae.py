"""The Topographic VAE on simulated hinges: the TVAE, its L = 0 ablation and the plain VAE, side by side.

For every SNR and seed, simulates a ``cryovae simulate hinge`` set (one conformation coordinate,
uniform in-plane rotation, no shifts, no CTF), trains ``cryovae train --model tvae`` three ways
(``--tvae-variant topographic``, ``static`` = L = 0, ``plain`` = an ordinary VAE of the same size
with its latent cut into capsules) and scores each run:

* rotation: the Fisher-Lee circular correlation of the star's psi (read from the capsule roll)
  with the true psi (``cryovae.analysis.metrics.rotation_accuracy``; its sign is free: a model may
  learn the mirror handedness, so |rho| is reported with the sign in the JSON), and the median
  error after the best global offset;
* content: the multiple correlation R of the true conformation on the capsule magnitudes
  (``cryovaeZ*``; ``cryovae.analysis.metrics.multiple_correlation``);
* the paper's equivariance error (eq. 13, mean per sequence) and CapCorr (eq. 14) over the
  rotation sequences of up to 256 particles (``cryovae.analysis.capsules``), with T computed over
  the sequence as the model trains, and with each frame's T from its own Z and U alone (L = 0;
  for the TVAE the shared U of neighbouring frames otherwise build much of the roll in);
* the training wall time.

Usage::

    python benchmarks/tvae.py                      # 2 000 particles, 32 px, 30 epochs, 3 seeds
    python benchmarks/tvae.py --device cuda
    python benchmarks/tvae.py --quick              # ~2 minutes on 2 CPU cores: 1 000 particles, 24 px, 1 seed
    python benchmarks/tvae.py --snr 1 --seeds 1 2 --variants topographic static

The table (median [min-max] over seeds) is printed and written to ``OUT/tvae.md`` with every number
in ``OUT/tvae.json`` (``OUT`` = docs/quality, or tmp/tvae_quick with ``--quick``). Simulations and
runs are kept in ``--work`` (runs/tvae_work, git-ignored) and reused on a second call.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
from _common import cached_train, fmt, output_folders, spread

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("topographic", "static", "plain")
LABELS = {"topographic": "TVAE (L = (C-1)/2)", "static": "TVAE L = 0", "plain": "plain VAE"}
#: particles whose rotation sequences the capsule metrics are measured on
METRIC_PARTICLES = 256
PAPER_NOTE = ("The paper's own numbers (Keller & Welling 2021, Table 1, MNIST, 18 capsules of 18): equivariance "
              "error 574 for the TVAE with L = S/2 against 3 217 for L = 0 and 13 274 for the plain VAE; Table 2 "
              "(dSprites): CapCorr 1.0 for L >= S/3 against about 0.1-0.2 for L = 0 and the VAE. Their error is summed "
              "over a test batch, ours is the mean per sequence; compare the ratios, not the values.")


def settings(args: argparse.Namespace) -> dict:
    """Sizes of the sets, models and training (``--quick``: small, a smoke test)."""
    if args.quick:
        s = dict(n=1000, box=24, epochs=10, batch_size=32, tvae=[])
    else:
        s = dict(n=2000, box=32, epochs=30, batch_size=64, tvae=[])
    for key in ("n", "box", "epochs", "batch_size"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.tvae_args is not None:
        s["tvae"] = shlex.split(args.tvae_args)
    return s


def train_args(variant: str, s: dict, seed: int, device: str) -> list[str]:
    """The ``cryovae train`` options of one run (the command a user would type, less the paths)."""
    return ["--model", "tvae", "--tvae-variant", variant, "--box", str(s["box"]), "--epochs", str(s["epochs"]),
            "--batch-size", str(s["batch_size"]), "--seed", str(seed), "--patience", "0", "--device", device,
            *s["tvae"]]


def simulate(snr: float, seed: int, s: dict, work: Path) -> Path:
    """The hinge set of one (SNR, seed), written once into ``work``; returns its folder."""
    from cryovae.simulate import SimulationConfig, simulate_hinge, write_simulation

    data = work / f"hinge_snr{snr:g}_seed{seed}_n{s['n']}_b{s['box']}"
    if not (data / "truth.csv").exists():
        cfg = SimulationConfig(n=s["n"], box=s["box"], pixel_size_A=160.0 / s["box"], snr=snr, seed=seed)
        write_simulation(simulate_hinge(cfg, progress=False), data)
    return data


def train(variant: str, data: Path, s: dict, seed: int, device: str, work: Path) -> tuple[Path, float]:
    """Train (or reuse) one run; returns the run folder and the training wall time (s)."""
    return cached_train(variant, data, train_args(variant, s, seed, device), work)


def score_run(rundir: Path, data: Path) -> dict:
    """Rotation, content and capsule scores of one run against its set's truth."""
    import torch

    from cryovae.analysis.capsules import capsule_scores
    from cryovae.analysis.metrics import align_predictions, multiple_correlation, rotation_accuracy
    from cryovae.inference import TrainedRun
    from cryovae.io import read_star_table
    from cryovae.simulate import read_truth

    predicted, truth, _ = align_predictions(read_star_table(rundir / "particles.star"), read_truth(data / "truth.csv"))
    rot = rotation_accuracy(predicted["psi_deg"], truth["psi_deg"].to_numpy())
    fit = rot if rot["best_fit"] == "direct" else rot["mirror"]
    run = TrainedRun.load(rundir)
    images = np.load(rundir / "images.npy", mmap_mode="r")
    idx = np.unique(np.linspace(0, len(images) - 1, min(len(images), METRIC_PARTICLES)).round().astype(int))
    acts, alone = [], []
    for s in range(0, len(idx), 64):
        batch = torch.as_tensor(np.asarray(images[idx[s: s + 64]], np.float32))
        acts.append(run.model.capsule_sequence(batch)[1].numpy())
        alone.append(run.model.capsule_sequence(batch, coherent=False)[1].numpy())
    caps = capsule_scores(np.concatenate(acts))
    caps_alone = capsule_scores(np.concatenate(alone))
    return {"circular_correlation": abs(rot["circular_correlation"]),
            "circular_correlation_signed": rot["circular_correlation"], "best_fit": rot["best_fit"],
            "median_error_deg": fit["median_error_deg"],
            "content_R": multiple_correlation(predicted["z"], truth["conformation_1"].to_numpy()),
            "equivariance_error": caps["equivariance_error_mean"], "capcorr": caps["capcorr"],
            "equivariance_error_alone": caps_alone["equivariance_error_mean"], "capcorr_alone": caps_alone["capcorr"]}


def table(rows: list[dict], s: dict, seeds: list[int], command: str, quick: bool) -> str:
    """The markdown table: one row per (variant, SNR), median [min–max] over seeds."""
    lines = [
        "## Topographic VAE on simulated hinges",
        "",
        *(["**Quick smoke run: small sets and models, a few epochs. Not a result.**", ""] if quick else []),
        f"Reproduce: `{command}`",
        "",
        f"{s['n']} particles per set (cryovae simulate hinge, one conformation coordinate), {s['box']} px at "
        f"{160 / s['box']:.1f} Å/px, uniform in-plane rotation, no shifts, no CTF; {s['epochs']} epochs; seeds "
        f"{', '.join(map(str, seeds))} (median [min–max]). Rotation: |Fisher-Lee circular correlation| of psi (from "
        "the capsule roll) with the truth, and the median error after the best global offset; content R: multiple "
        "correlation of the conformation on the capsule magnitudes (cryovaeZ*); equivariance error (eq. 13, mean per "
        f"sequence of C frames) and CapCorr (eq. 14) over the rotation sequences of up to {METRIC_PARTICLES} "
        "particles, with T over the sequence as the model trains (for the TVAE, neighbouring frames share 2L of "
        "their 2L + 1 U terms, so much of its roll is built in) and with each frame's T from its own Z and U alone "
        "(the roll the encoder learned); time: training, seconds.",
        "",
        "| model | SNR | rotation circ. corr | median error (°) | content R | equivariance error | CapCorr "
        "| equivariance error, frames alone | CapCorr, frames alone | time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for snr in sorted({r["snr"] for r in rows}, reverse=True):
        for variant in VARIANTS:
            group = [r for r in rows if r["snr"] == snr and r["variant"] == variant]
            if not group:
                continue
            lines.append(f"| {LABELS[variant]} | {snr:g} | {spread([r['circular_correlation'] for r in group])} | "
                         f"{spread([r['median_error_deg'] for r in group], 1)} | "
                         f"{spread([r['content_R'] for r in group])} | "
                         f"{spread([r['equivariance_error'] for r in group], 1)} | "
                         f"{spread([r['capcorr'] for r in group])} | "
                         f"{spread([r['equivariance_error_alone'] for r in group], 1)} | "
                         f"{spread([r['capcorr_alone'] for r in group])} | {spread([r['seconds'] for r in group], 0)} |")
    commands = sorted({r["command"] for r in rows})
    lines += ["", PAPER_NOTE, "", "`cryovae train` options of the runs:", "",
              *[f"- `cryovae train particles.star {c}`" for c in commands]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sets and models (~2 minutes on a CPU)")
    p.add_argument("--snr", type=float, nargs="+", default=[1.0, 0.1], help="SNRs [1 0.1]")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the sets and runs [1 2 3; 1 quick]")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--n", type=int, default=None, help="particles per set [2000; 1000 quick]")
    p.add_argument("--box", type=int, default=None, help="box, pixels [32; 24 quick]")
    p.add_argument("--epochs", type=int, default=None, help="training epochs [30; 10 quick]")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--tvae-args", default=None,
                   help="extra cryovae train options of every run (one string), e.g. '--zdim 6 --tvae-capsule-size 8'")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="where tvae.md / tvae.json go")
    p.add_argument("--work", type=Path, default=None, help="simulations and runs [runs/tvae_work; reused]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    s = settings(args)
    seeds, out, work = output_folders(args, "tvae", ROOT)
    rows = []
    for snr in args.snr:
        for seed in seeds:
            print(f"== SNR {snr:g}, seed {seed}", flush=True)
            data = simulate(snr, seed, s, work)
            for variant in args.variants:
                rundir, seconds = train(variant, data, s, seed, args.device, work)
                row = {"snr": snr, "seed": seed, "variant": variant, "seconds": seconds,
                       "command": shlex.join(train_args(variant, s, seed, args.device)), **score_run(rundir, data)}
                print(f"   {LABELS[variant]}: rotation {fmt(row['circular_correlation'])}, content R "
                      f"{fmt(row['content_R'])}, equivariance error {fmt(row['equivariance_error'], 1)}, CapCorr "
                      f"{fmt(row['capcorr'])}, {seconds:.0f} s", flush=True)
                rows.append(row)
    command = shlex.join(["python", "benchmarks/tvae.py", *(sys.argv[1:] if argv is None else argv)])
    text = table(rows, s, seeds, command, args.quick)
    (out / "tvae.md").write_text(text)
    (out / "tvae.json").write_text(json.dumps({"settings": s, "seeds": seeds, "rows": rows}, indent=1) + "\n")
    print(text)
    print(f"wrote {out / 'tvae.md'} and {out / 'tvae.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
