"""The posterior grid against the refined point, on one finished run (same weights, side by side).

    python benchmarks/posterior_grid.py RUN DATA/particles.mrcs DATA/truth.csv

RUN is a ``cryovae train`` run on a ``cryovae simulate`` set (for example one of
``benchmarks/quality.py``'s, ``runs/quality_work/hinge-0.1-s2/run``). The particles are encoded
and refined with the run's own settings, then searched on the grid. Prints |corr(z, conformation)| (multiple R per
conformation column), the rotation's circular correlation and median error, and the grid's time.
"""

from __future__ import annotations

import argparse
import logging
import time

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryovae.analysis.metrics import multiple_correlation, rotation_accuracy
from cryovae.inference import PosteriorGrid, PosteriorGridConfig, TrainedRun

log = logging.getLogger("benchmarks.posterior_grid")


def scores(latents, truth: pd.DataFrame) -> str:
    conf = truth[[c for c in truth.columns if c.startswith("conformation")]].to_numpy()
    r = [multiple_correlation(latents.z_mean, conf[:, j]) for j in range(conf.shape[1])]
    rot = rotation_accuracy(latents.psi_deg, truth["psi_deg"].to_numpy())
    return (f"corr(z, conformation) {' / '.join(f'{v:.3f}' for v in r)} | rotation circ. corr. "
            f"{rot['circular_correlation']:.3f}, median error {rot['median_error_deg']:.2f} deg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("stack", help="the simulated particles (.mrcs)")
    ap.add_argument("truth", help="the simulation's truth.csv")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    run = TrainedRun.load(args.run)
    images = run.preprocess(mrcfile.read(args.stack))
    truth = pd.read_csv(args.truth)
    refined = run.encode(images, posterior_grid=False)
    t0 = time.perf_counter()
    grid = PosteriorGrid(run.model, PosteriorGridConfig(), run.device)
    t1 = time.perf_counter()
    out = grid.apply(images, refined)
    t2 = time.perf_counter()
    print(f"encoder + refinement : {scores(refined, truth)}")
    print(f"+ posterior grid     : {scores(out, truth)}")
    print(f"grid: {grid.size} points per particle ({len(grid.z)} z x {len(grid.theta)} rotations x "
          f"{len(grid.offsets)} shifts); templates {t1 - t0:.1f} s, {len(images)} particles {t2 - t1:.1f} s")
    shifts = np.linalg.norm(out.center_px - refined.center_px, axis=1)
    print(f"median centre change {np.median(shifts):.2f} px")


if __name__ == "__main__":
    main()
