"""The best conformation estimate one particle allows: a Cramér–Rao bound on the simulated hinge.

For each simulated particle (pose known), the Fisher information of the conformation c is
``|dI/dc|^2 / sigma^2`` (the noiseless image's derivative, by central differences, over the
noise variance). The bound on the variance of an unbiased per-particle estimate is its inverse;
with c uniform on [0, 1] (variance 1/12) the highest Pearson r such an estimate could reach is
``sqrt((1/12) / (1/12 + mean bound))``. A learned z1 far below it is limited by the model or the
training, not by the data. Prints one line per (hinge range, SNR).

    python benchmarks/conformation_bound.py
"""

from __future__ import annotations

import argparse

import numpy as np

from cryovae.simulate import SimulationConfig, simulate_hinge
from cryovae.simulate.render import render_atoms


def bound(range_deg: float, snr: float, n: int, box: int, apix: float) -> tuple[float, float]:
    """(CRLB standard deviation of c, highest Pearson r) for one simulated hinge set."""
    cfg = SimulationConfig(n=n, box=box, pixel_size_A=apix, snr=snr, shift_sigma_px=1.0,
                           hinge_range_deg=range_deg, seed=1)
    sim = simulate_hinge(cfg, progress=False)
    c = sim.truth["conformation_1"].to_numpy()

    def render(conf: np.ndarray) -> np.ndarray:
        coords = sim.molecule.coordinates(conf[:, None])
        return render_atoms(coords, sim.theta_rad, sim.center_px, box, apix, cfg.atom_sigma_A) * sim.scale

    lo, hi = np.clip(c - 1e-3, 0, 1), np.clip(c + 1e-3, 0, 1)
    grad = (render(hi) - render(lo)) / (hi - lo)[:, None, None]
    fisher = (grad.reshape(n, -1).astype(np.float64) ** 2).sum(1) / sim.noise_sigma**2
    var = float(np.mean(1.0 / fisher))
    return float(np.sqrt(var)), float(np.sqrt((1 / 12) / (1 / 12 + var)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="particles to average over")
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--apix", type=float, default=5.0)
    args = p.parse_args()
    for range_deg, snr in ((40.0, 1.0), (70.0, 1.0), (40.0, 0.1), (40.0, 0.03)):
        sd, r = bound(range_deg, snr, args.n, args.box, args.apix)
        print(f"hinge {range_deg:.0f}°, SNR {snr:g}: CRLB sd of the conformation {sd:.3f} (range 0-1), "
              f"highest r {r:.3f}")


if __name__ == "__main__":
    main()
