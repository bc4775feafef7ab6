"""The best conformation estimate one particle allows: Cramér–Rao bounds on the simulated hinge.

For each simulated particle (hinge: one conformation coordinate; two arms: two) the Fisher information of the conformation c is
``|dI/dc|^2 / sigma^2`` when the pose is known (the noiseless image's derivative, by central
differences, over the noise variance). With the pose unknown, as for every real particle, the
rotation and the two centre coordinates are estimated with c, and the bound on c is the (c, c)
entry of the inverse of the 4 x 4 Fisher matrix of (c, theta, x, y): whatever of dI/dc a small
rotation or shift of the whole particle also explains no longer tells c apart (for a hinge, the
moving arm's turn is partly a turn of the whole molecule). The bound on the variance of an
unbiased per-particle estimate is this inverse; with c uniform on [0, 1] (variance 1/12) the
highest Pearson r such an estimate could reach is ``sqrt((1/12) / (1/12 + mean bound))``. A
learned z1 far below it is limited by the model or the training, not by the data. Both are local
bounds (they ignore confusions between distant poses), so the real limit can only be lower.
Prints one line per (hinge range, SNR), with the rotation's bound (the median over the particles
of its CRLB std, degrees, with the conformation and centre unknown).

    python benchmarks/conformation_bound.py            # the quality sets' 40 px at 4 Å
"""
from __future__ import annotations

import argparse

import numpy as np

from cryovae.simulate import SimulationConfig, simulate_arms, simulate_hinge
from cryovae.simulate.ctf import ctf_2d
from cryovae.simulate.render import render_atoms


def fisher_matrices(kind: str, range_deg: float, snr: float, n: int, box: int, apix: float, shift_px: float,
                    defocus_A: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Per particle, the Fisher matrix of (c_1..c_d, theta, x, y) (theta in radians, x and y in
    pixels), shape (n, d + 3, d + 3), and d, for one simulated set of ``kind`` "hinge" (one
    coordinate) or "arms" (two). ``defocus_A`` (min, max in Å): the particles carry a CTF of
    such defocus (the simulator's astigmatism), known to the estimate as ``--ctf`` gives it, and
    the SNR is that of the CTF-modulated signal, as simulated."""
    ctf = defocus_A is not None
    extra = {"ctf": True, "defocus_min_A": defocus_A[0], "defocus_max_A": defocus_A[1]} if ctf else {}
    cfg = SimulationConfig(n=n, box=box, pixel_size_A=apix, snr=snr, shift_sigma_px=shift_px,
                           hinge_range_deg=range_deg, seed=1, **extra)
    sim = (simulate_hinge if kind == "hinge" else simulate_arms)(cfg, progress=False)
    conf = sim.truth.filter(like="conformation_").to_numpy()  # (n, d)
    d = conf.shape[1]
    if ctf:
        t = sim.truth
        transfer = ctf_2d(box, apix, t["defocus_u_A"].to_numpy(), t["defocus_v_A"].to_numpy(),
                          t["defocus_angle_deg"].to_numpy(), cfg.voltage_kv, cfg.cs_mm, cfg.amplitude_contrast)

    def render(c: np.ndarray, theta: np.ndarray, center: np.ndarray) -> np.ndarray:
        image = render_atoms(sim.molecule.coordinates(c), theta, center, box, apix, cfg.atom_sigma_A) * sim.scale
        image = image.astype(np.float64)
        if ctf:  # the simulator's image formation, in float64 for the finite differences
            image = np.fft.irfft2(np.fft.rfft2(image) * transfer, s=(box, box))
        return image.reshape(n, -1)

    theta, center = sim.theta_rad, sim.center_px
    grads = []
    for k in range(d):
        lo, hi = conf.copy(), conf.copy()
        lo[:, k], hi[:, k] = np.clip(conf[:, k] - 1e-3, 0, 1), np.clip(conf[:, k] + 1e-3, 0, 1)
        grads.append((render(hi, theta, center) - render(lo, theta, center)) / (hi[:, k] - lo[:, k])[:, None])
    eps_theta, eps_px = 1e-3, 1e-2
    grads.append((render(conf, theta + eps_theta, center) - render(conf, theta - eps_theta, center)) / (2 * eps_theta))
    for axis in range(2):
        step = np.zeros_like(center)
        step[:, axis] = eps_px
        grads.append((render(conf, theta, center + step) - render(conf, theta, center - step)) / (2 * eps_px))
    g = np.stack(grads, 1)  # (n, d + 3, pixels): d image / d (c_1..c_d, theta, x, y)
    return np.einsum("nap,nbp->nab", g, g) / sim.noise_sigma**2, d


def bound(kind: str, range_deg: float, snr: float, n: int, box: int, apix: float, shift_px: float,
          defocus_A: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CRLB standard deviations of each conformation coordinate (range 0-1), with the pose known
    (row 0) and unknown (row 1), and the highest Pearson r each allows (same layout); the set as
    :func:`fisher_matrices`'."""
    fisher, d = fisher_matrices(kind, range_deg, snr, n, box, apix, shift_px, defocus_A)
    var_known = np.mean(np.diagonal(np.linalg.inv(fisher[:, :d, :d]), axis1=1, axis2=2), 0)  # the other arm unknown
    var_unknown = np.mean(np.diagonal(np.linalg.inv(fisher), axis1=1, axis2=2)[:, :d], 0)
    var = np.stack([var_known, var_unknown])
    return np.sqrt(var), np.sqrt((1 / 12) / (1 / 12 + var))


def rotation_bound_deg(kind: str, range_deg: float, snr: float, n: int, box: int, apix: float, shift_px: float,
                       defocus_A: tuple[float, float] | None = None) -> float:
    """The median over the particles of the rotation's CRLB standard deviation (degrees) with the
    conformation and centre estimated too; the set as :func:`fisher_matrices`'. (A Gaussian error
    of that std has a median absolute value of 0.674 times it.)"""
    fisher, d = fisher_matrices(kind, range_deg, snr, n, box, apix, shift_px, defocus_A)
    return float(np.degrees(np.median(np.sqrt(np.linalg.inv(fisher)[:, d, d]))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="particles to average over")
    p.add_argument("--box", type=int, default=40)
    p.add_argument("--apix", type=float, default=4.0)
    p.add_argument("--shift-sigma", type=float, default=1.5, help="centres' spread, pixels")
    args = p.parse_args()
    ctf = (10000.0, 30000.0)  # the CTF set of benchmarks/quality.py: defocus 1-3 µm
    for kind, range_deg, snr, defocus in (("hinge", 40.0, 1.0, None), ("hinge", 70.0, 1.0, None),
                                          ("hinge", 40.0, 0.1, None), ("hinge", 40.0, 0.1, ctf),
                                          ("hinge", 40.0, 0.03, None), ("arms", 40.0, 1.0, None),
                                          ("arms", 40.0, 0.1, None)):
        sd, r = bound(kind, range_deg, snr, args.n, args.box, args.apix, args.shift_sigma, defocus)
        fmt = lambda a: " / ".join(f"{v:.3f}" for v in a)  # noqa: E731
        label = " with a CTF (defocus 1-3 µm)" if defocus else ""
        rot = rotation_bound_deg(kind, range_deg, snr, args.n, args.box, args.apix, args.shift_sigma, defocus)
        print(f"{kind} {range_deg:.0f}°{label}, SNR {snr:g}: CRLB sd of the conformation (range 0-1) {fmt(sd[0])} with the "
              f"pose known, highest r {fmt(r[0])}; pose unknown: sd {fmt(sd[1])}, highest r {fmt(r[1])}; "
              f"rotation sd {rot:.1f}°")

if __name__ == "__main__":
    main()
