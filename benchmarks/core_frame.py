"""Does the frame of a trained run turn with the moving parts, and can it be moved onto the rigid core?

On the two-arm sets the model's rotation follows the arms' common motion (c1 - c2) and z keeps
the rest (docs/models.md, "Accuracy"); on the hinge, in part, the hinge angle c. This script
tests two things after training, with no truth used except to score (a set of one conformation
coordinate, the hinge, reads c for c1 - c2 below).

1. Realignment on the rigid part. Every particle's template G(z_i) is decoded in the model's
   frame; the pixels where the templates of all particles agree (low standard deviation over the
   data set) and carry mass are the rigid part. Each particle is realigned by a small extra turn
   delta (whole degrees, centre held) that minimises the squared residual between the particle
   and its template, weighted by that map rendered at the same pose
   (:func:`cryovae.inference.core_frame.realign`; ``cryovae reframe`` is the command built on
   steps 1 and 2, ``benchmarks/reframe.py`` measures it).
2. Fine-tuning at a fixed rotation (``--frames``; TARGET-VAE runs, whose encoder gives z for each
   rotation cell): :func:`cryovae.training.fit_fixed_pose`, the encoder and generator trained
   further with each particle's rotation held at a given value and z read from the encoder's
   cell of that rotation (its most probable shift): the ELBO's z part, recon + KL(z). ``model``: the run's own rotations,
   ``realigned``: step 1 redone before each round with the current templates, ``truth``: the
   simulated rotations after the best global offset (the frame fixed to the core; an oracle).
3. ``--reference-iterations K``: the classical alternative to step 1, with no network: each
   particle realigned (the same weighted search and weight) on the average of all particles
   turned back by their current poses, the average remade after each of K iterations.
4. ``--gate-null``: the split-half agreement of ``cryovae reframe``'s gate on the data and on
   sets with no turn to find (:func:`gate_null`).

Printed per weighting of step 1, then per round of step 2: the correlation of delta with c1 - c2,
the spread of the remaining signed rotation error and its correlation with c1 - c2, the multiple
correlation R of each arm's angle with z (and with (z, delta)), and the fine-tuning's -ELBO per
particle (nats, its last epoch's mean; lower is better). Each weighting also prints the weighted
residual step 1 minimises (mean per particle), with the templates at the run's own rotations and
at the true ones: if the rigid part pinned the frame, the true rotations would give the lower.

    cryovae simulate arms -o D --n 4000 --box 40 --snr 1 --shift-sigma 1.5 --seed 1
    cryovae train D/particles.star --group p8 --zdim 2 -o RUN
    python benchmarks/core_frame.py RUN D/truth.csv --frames model,realigned,truth
    python benchmarks/core_frame.py RUN D/truth.csv --reference-iterations 4 --gate-null
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from cryovae.analysis.metrics import multiple_correlation
from cryovae.geometry import apply_relion_alignment, internal_to_relion, wrap_degrees
from cryovae.inference.core_frame import (
    pose_matrices,
    realign,
    rigid_weight,
    split_half_agreement,
    weighted_residual,
    z_at_pose,
)
from cryovae.inference.trained_run import TrainedRun
from cryovae.models import warp_images
from cryovae.training import FixedPoseConfig, fit_fixed_pose

FRAMES = ("model", "realigned", "truth")


def wrap(a: np.ndarray) -> np.ndarray:
    """Radians wrapped to (-pi, pi], by :func:`cryovae.geometry.wrap_degrees`."""
    return np.radians(wrap_degrees(np.degrees(a)))


def signed_error(theta: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """theta - truth after the best global offset, radians in (-pi, pi]."""
    d = wrap(theta - truth)
    return wrap(d - np.angle(np.mean(np.exp(1j * d))))


def particle_average(images: np.ndarray, theta: np.ndarray, center_px: np.ndarray) -> np.ndarray:
    """(N, N) the mean of the particles (n, N, N) turned back into the template frame by their
    poses (:func:`cryovae.geometry.apply_relion_alignment`, bilinear): the classical 2D reference,
    not the generator's."""
    psi, origin = internal_to_relion(theta, center_px)
    return np.mean([apply_relion_alignment(x, p, o, order=1) for x, p, o in zip(images, psi, origin, strict=True)], axis=0)


def gate_null(images: np.ndarray, templates: np.ndarray, weight: np.ndarray, theta: np.ndarray,
              center_px: np.ndarray, deltas: np.ndarray, seed: int = 0) -> list[tuple[str, float]]:
    """reframe's split-half agreement on the data, then on sets where every true turn is 0: each
    particle's template rendered at its pose plus white noise of the residual's spread, or plus
    the residual of another particle (two random pairings). How far from 0 the estimator lands
    when there is nothing to find."""
    rng = np.random.default_rng(seed)
    m = pose_matrices(torch.as_tensor(theta, dtype=torch.float32), torch.as_tensor(center_px, dtype=torch.float32))
    clean = warp_images(torch.as_tensor(templates, dtype=torch.float32), m).numpy()
    residual = images - clean
    sets = [("the data", images),
            ("templates + white noise", clean + rng.normal(size=clean.shape).astype(np.float32) * residual.std()),
            ("templates + another particle's residual", clean + residual[rng.permutation(len(images))]),
            ("templates + another particle's residual (2)", clean + residual[rng.permutation(len(images))])]
    out = []
    for name, x in sets:
        turns = realign(x, templates, weight, theta, center_px, deltas, halves=True)
        out.append((name, split_half_agreement(turns[1], turns[2])))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a cryovae train run of a simulated set (RUN/images.npy, RUN/latents.npz)")
    ap.add_argument("truth", help="the simulation's truth.csv")
    ap.add_argument("--max-deg", type=float, default=24.0, help="largest extra turn searched, degrees")
    ap.add_argument("--frames", default="", help=f"comma list of {', '.join(FRAMES)}: fine-tune at those rotations")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of fine-tuning (realigned: realign before each)")
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per round")
    ap.add_argument("--gate-null", action="store_true",
                    help="also the split-half agreement of reframe's gate on the data and on sets with no turn "
                         "to find (each template at its pose plus white noise, or plus another particle's residual)")
    ap.add_argument("--reference-iterations", type=int, default=0,
                    help="also realign on the particles' own average (masked by the (1 - spread)^4 weight), "
                         "re-averaged after each of this many iterations, with no training between them")
    args = ap.parse_args(argv)
    frames = [f for f in args.frames.split(",") if f]
    if unknown := sorted(set(frames) - set(FRAMES)):
        ap.error(f"--frames: unknown {', '.join(unknown)} (choose from {', '.join(FRAMES)})")

    run = TrainedRun.load(args.run)
    if frames and run.model.z_at_rotation(torch.zeros(1, run.box, run.box), torch.zeros(1)) is None:
        ap.error(f"--frames needs a TARGET-VAE run (z for each rotation cell); {args.run} is {run.config.model.kind}")
    lat = run.latents()
    images = np.load(f"{args.run}/images.npy").astype(np.float32)
    truth = pd.read_csv(args.truth)
    columns = [c for c in truth.columns if c.startswith("conformation_")]
    conf = truth[columns].to_numpy()
    psi_true = np.radians(truth["psi_deg"].to_numpy())  # psi = theta (cryovae.geometry)
    # the motion a turn of the whole particle can mimic: the arms' common turn, or the hinge's
    motion, mname = (conf[:, 0] - conf[:, 1], "c1 - c2") if len(columns) == 2 else (conf[:, 0], "c")
    deltas = np.radians(np.arange(-args.max_deg, args.max_deg + 0.5, 1.0))

    def frame_text(theta: np.ndarray) -> str:
        e = signed_error(theta, psi_true)
        return (f"error spread {np.degrees(e.std()):.2f} deg, corr with {mname} {np.corrcoef(e, motion)[0, 1]:+.3f}, "
                f"median {np.degrees(np.median(np.abs(e))):.2f} deg")

    def r_text(z: np.ndarray) -> str:
        return " / ".join(f"{multiple_correlation(z, c):.3f}" for c in conf.T)

    templates = run.decode(lat.z_mean)  # (n, N, N), model frame
    print(f"model frame: {frame_text(lat.theta)}; R(z) {r_text(lat.z_mean)}")
    mass = np.clip(templates.mean(0), 0, None)
    weights = {"whole template": np.ones_like(mass), "mass": mass / mass.max(),
               "mass * (1 - spread)^2": rigid_weight(templates, 2), "mass * (1 - spread)^4": rigid_weight(templates, 4),
               "mass * (1 - spread)^16": rigid_weight(templates, 16)}
    true_theta = psi_true + np.angle(np.mean(np.exp(1j * wrap(lat.theta - psi_true))))
    for name, weight in weights.items():
        delta = realign(images, templates, weight, lat.theta, lat.center_px, deltas)
        own, core = (weighted_residual(images, templates, weight, th, lat.center_px).mean()
                     for th in (lat.theta, true_theta))
        print(f"{name:24s} corr(delta, {mname}) {np.corrcoef(delta, motion)[0, 1]:+.3f} | "
              f"{frame_text(lat.theta + delta)} | R(z, delta) {r_text(np.column_stack([lat.z_mean, delta]))} | "
              f"weighted residual at the run's rotations {own:.3f}, at the true ones {core:.3f}")

    theta, weight = lat.theta.copy(), rigid_weight(templates, 4)
    if args.gate_null:
        for name, agreement in gate_null(images, templates, weight, lat.theta, lat.center_px, deltas):
            print(f"split-half agreement, {name}: {agreement:+.3f}", flush=True)
    for i in range(args.reference_iterations):
        reference = np.repeat(particle_average(images, theta, lat.center_px)[None], len(images), axis=0)
        delta = realign(images, reference, weight, theta, lat.center_px, deltas)
        theta = theta + delta
        print(f"particle-average reference, iteration {i + 1}: median |delta| "
              f"{np.degrees(np.median(np.abs(delta))):.1f} deg | {frame_text(theta)}", flush=True)

    for frame in frames:
        run = TrainedRun.load(args.run)  # each frame starts from the trained weights
        theta = lat.theta.copy()
        if frame == "truth":
            theta = true_theta.copy()
        z = lat.z_mean
        for r in range(args.rounds):
            if frame == "realigned":
                g = templates if r == 0 else run.decode(z)
                theta = theta + realign(images, g, rigid_weight(g), theta, lat.center_px, deltas)
            loss = fit_fixed_pose(run.model, images, theta, lat.center_px,
                                  FixedPoseConfig(epochs=args.epochs, seed=r), progress=False)
            z, _ = z_at_pose(run.model, images, theta)
            print(f"{frame:9s} round {r + 1} ({(r + 1) * args.epochs} epochs): {frame_text(theta)} | "
                  f"R(z) {r_text(z)} | -ELBO {loss:.1f}", flush=True)


if __name__ == "__main__":
    main()
