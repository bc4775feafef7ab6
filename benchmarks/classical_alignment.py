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
  whether z finds the conformation once the rotations are right.

Prints one block per set and the medians over the sets. Usage::

    python benchmarks/classical_alignment.py runs/quality_work/arms-0.1-s1 runs/quality_work/arms-0.1-s2
    python benchmarks/classical_alignment.py SET --fixed-pose-epochs 24 --rotations 72 --iterations 15

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


def one_set(folder: Path, cfg: Align2DConfig, epochs: int) -> dict:
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

    t0 = time.perf_counter()
    em = align_to_one_template(images, cfg, progress=False)
    seconds = time.perf_counter() - t0
    text, acc = rotation_text(em.theta, psi)
    out["em_median_error"], out["em_corr"], out["em_seconds"] = acc["median_error_deg"], acc["circular_correlation"], seconds
    changes = ", ".join(f"{c:.0f}" for c in em.changes_deg)
    print(f"{folder.name}: EM alignment   {text}; {seconds:.0f} s for {cfg.iterations} iterations "
          f"(median change per iteration, deg: {changes})", flush=True)

    if epochs:
        # the EM's frame turned onto the run's by one global offset (no truth)
        d = np.angle(np.mean(np.exp(1j * (lat.theta - em.theta))))
        theta = em.theta + d
        t0 = time.perf_counter()
        fit_fixed_pose(run.model, images, theta, lat.center_px, FixedPoseConfig(epochs=epochs), run.device,
                       progress=False)
        z, _ = z_at_pose(run.model, images, theta, run.device)
        out["fixed_R"] = [multiple_correlation(z, c) for c in conf.T]
        print(f"{folder.name}: run trained {epochs} more epochs at the EM's rotations: R(z) "
              f"{' / '.join(f'{r:.3f}' for r in out['fixed_R'])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", type=Path, help="folders with data/truth.csv and the default command's run/")
    ap.add_argument("--rotations", type=int, default=Align2DConfig.rotations)
    ap.add_argument("--iterations", type=int, default=Align2DConfig.iterations)
    ap.add_argument("--fixed-pose-epochs", type=int, default=0,
                    help="train the run this many epochs with the rotations held at the EM's, then score z")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = Align2DConfig(rotations=args.rotations, iterations=args.iterations)
    rows = [one_set(folder, cfg, args.fixed_pose_epochs) for folder in args.sets]
    med = lambda key: float(np.median([r[key] for r in rows]))  # noqa: E731
    print(f"median over {len(rows)} sets: cryovae train median error {med('run_median_error'):.1f} deg "
          f"(corr {med('run_corr'):.3f}); EM {med('em_median_error'):.1f} deg (corr {med('em_corr'):.3f}) "
          f"in {med('em_seconds'):.0f} s")
    if args.fixed_pose_epochs:
        for k in range(len(rows[0]["fixed_R"])):
            print(f"  coordinate {k + 1}: R(z) {np.median([r['run_R'][k] for r in rows]):.3f} in the run, "
                  f"{np.median([r['fixed_R'][k] for r in rows]):.3f} after the fixed-pose epochs at the EM's rotations")


if __name__ == "__main__":
    main()
