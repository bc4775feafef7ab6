"""Classical 2D alignment (EM, one template) against the default command's rotations, side by side.

For each simulated set (a folder as benchmarks/quality.py leaves it: ``SET/data/truth.csv`` and the
default command's run ``SET/run``), on the run's own preprocessed particles (``run/images.npy``):

* the run's rotation (``cryovae train``'s psi): circular correlation and median error against the truth;
* :func:`cryovae.inference.align2d.align_to_one_template` from the particles' rotational average
  (no network, no truth): the same scores, its wall time, and each iteration's median change;
* with ``--fixed-pose-epochs E``: the run's encoder and generator trained further for E epochs with
  every rotation held at the EM's (turned by one global offset onto the run's frame, found without
  the truth) and the run's centres (:func:`cryovae.training.fit_fixed_pose`), then z read there:
  R(z) of each conformation coordinate (multiple correlation), against the run's own. This asks
  whether z finds the conformation once the rotations are right. ``--train-at em,run`` adds the
  same training with the run's own rotations held (the control: what the epochs alone give).

Prints one block per set and the medians over the sets. Usage::

    python benchmarks/classical_alignment.py runs/quality_work/arms-0.1-s1 runs/quality_work/arms-0.1-s2
    python benchmarks/classical_alignment.py SET --fixed-pose-epochs 24 --train-at em,run --rotations 72 --iterations 15

Run alone: the EM and the training each use every core.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.analysis.metrics import multiple_correlation, rotation_accuracy
from cryovae.inference.align2d import Align2DConfig, align_to_one_template
from cryovae.inference.core_frame import z_at_pose
from cryovae.inference.trained_run import TrainedRun
from cryovae.training import FixedPoseConfig, fit_fixed_pose


def rotation_text(theta: np.ndarray, psi_true_deg: np.ndarray) -> tuple[str, dict]:
    acc = rotation_accuracy(np.degrees(theta), psi_true_deg)  # psi = theta (cryovae.geometry)
    return (f"circular corr {acc['circular_correlation']:.3f}, median error {acc['median_error_deg']:.1f} deg, "
            f"{100 * acc['fraction_within_15deg']:.1f}% within 15 deg"), acc


def one_set(folder: Path, cfg: Align2DConfig, epochs: int, train_at: list[str]) -> dict:
    run = TrainedRun.load(folder / "run")
    lat = run.latents()
    images = np.load(folder / "run" / "images.npy").astype(np.float32)
    truth = pd.read_csv(folder / "data" / "truth.csv")
    conf = truth.filter(like="conformation_").to_numpy()
    psi = truth["psi_deg"].to_numpy()
    out = {"set": folder.name}
    text, acc = rotation_text(lat.theta, psi)
    out["run_median_error"], out["run_corr"] = acc["median_error_deg"], acc["circular_correlation"]
    out["run_R"] = [multiple_correlation(lat.z_mean, c) for c in conf.T]
    print(f"{folder.name}: cryovae train  {text}; R(z) {' / '.join(f'{r:.3f}' for r in out['run_R'])}", flush=True)

    frames = {}
    if "em" in train_at or not epochs:
        t0 = time.perf_counter()
        em = align_to_one_template(images, cfg, progress=False)
        seconds = time.perf_counter() - t0
        text, acc = rotation_text(em.theta, psi)
        out["em_median_error"], out["em_corr"], out["em_seconds"] = (acc["median_error_deg"], acc["circular_correlation"],
                                                                     seconds)
        changes = ", ".join(f"{c:.0f}" for c in em.changes_deg)
        print(f"{folder.name}: EM alignment   {text}; {seconds:.0f} s for {cfg.iterations} iterations "
              f"(median change per iteration, deg: {changes})", flush=True)
        # the EM's frame turned onto the run's by one global offset (no truth)
        frames["em"] = ("the EM's rotations", em.theta + np.angle(np.mean(np.exp(1j * (lat.theta - em.theta)))))
    frames["run"] = ("the run's own rotations (control)", lat.theta)
    for key in train_at if epochs else ():
        name, theta = frames[key]
        model = TrainedRun.load(folder / "run").model  # each from the trained weights
        t0 = time.perf_counter()
        fit_fixed_pose(model, images, theta, lat.center_px, FixedPoseConfig(epochs=epochs), run.device,
                       progress=False)
        z, _ = z_at_pose(model, images, theta, run.device)
        out[f"R_at_{key}"] = [multiple_correlation(z, c) for c in conf.T]
        print(f"{folder.name}: run trained {epochs} more epochs at {name}: R(z) "
              f"{' / '.join(f'{r:.3f}' for r in out[f'R_at_{key}'])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", type=Path, help="folders with data/truth.csv and the default command's run/")
    ap.add_argument("--rotations", type=int, default=Align2DConfig.rotations)
    ap.add_argument("--iterations", type=int, default=Align2DConfig.iterations)
    ap.add_argument("--fixed-pose-epochs", type=int, default=0,
                    help="train the run this many epochs with the rotations held (--train-at), then score z")
    ap.add_argument("--train-at", default="em",
                    help="with --fixed-pose-epochs, comma list: em (the EM's rotations), run (the run's own: the "
                         "control, what the epochs alone give); without em the EM is skipped")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = Align2DConfig(rotations=args.rotations, iterations=args.iterations)
    train_at = [k for k in args.train_at.split(",") if k]
    if unknown := sorted(set(train_at) - {"em", "run"}):
        ap.error(f"--train-at: unknown {', '.join(unknown)} (choose from em, run)")
    rows = [one_set(folder, cfg, args.fixed_pose_epochs, train_at) for folder in args.sets]
    med = lambda key: float(np.median([r[key] for r in rows]))  # noqa: E731
    line = (f"median over {len(rows)} sets: cryovae train median error {med('run_median_error'):.1f} deg "
            f"(corr {med('run_corr'):.3f})")
    if "em_seconds" in rows[0]:
        line += f"; EM {med('em_median_error'):.1f} deg (corr {med('em_corr'):.3f}) in {med('em_seconds'):.0f} s"
    print(line)
    for key in train_at if args.fixed_pose_epochs else ():
        for k in range(len(rows[0][f"R_at_{key}"])):
            print(f"  coordinate {k + 1}: R(z) {np.median([r['run_R'][k] for r in rows]):.3f} in the run, "
                  f"{np.median([r[f'R_at_{key}'][k] for r in rows]):.3f} after {args.fixed_pose_epochs} fixed-pose "
                  f"epochs at {'the EM' if key == 'em' else 'the run'}'s rotations")


if __name__ == "__main__":
    main()
