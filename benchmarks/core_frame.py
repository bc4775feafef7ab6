"""Does the frame of a trained run turn with the moving parts, and can it be moved onto the rigid core?

On the two-arm sets the model's rotation follows the arms' common motion (c1 - c2) and z keeps
the rest (docs/models.md, "Accuracy"); on the hinge, in part, the hinge angle c. This script
tests two things after training, with no truth used except to score (a set of one conformation
coordinate, the hinge, reads c for c1 - c2 below).

1. Realignment on the rigid part. Every particle's template G(z_i) is decoded in the model's
   frame; the pixels where the templates of all particles agree (low standard deviation over the
   data set) and carry mass are the rigid part. Each particle is realigned by a small extra turn
   delta (whole degrees, centre held) that minimises the squared residual between the particle
   and its template, weighted by that map rendered at the same pose.
2. Fine-tuning at a fixed rotation (``--frames``; TARGET-VAE runs, whose encoder gives z for each
   rotation cell). Encoder and generator are trained further with each particle's rotation held
   at a given value and z read from the encoder's cell of that rotation (its most probable
   shift): the ELBO's z part, recon + KL(z), nothing else. ``model``: the run's own rotations,
   ``realigned``: step 1 redone before each round with the current templates, ``truth``: the
   simulated rotations after the best global offset (the frame fixed to the core; an oracle).

Printed per weighting of step 1, then per round of step 2: the correlation of delta with c1 - c2,
the spread of the remaining signed rotation error and its correlation with c1 - c2, the multiple
correlation R of each arm's angle with z (and with (z, delta)), and the fine-tuning's -ELBO per
particle (nats, its last epoch's mean; lower is better).

    cryovae simulate arms -o D --n 4000 --box 40 --snr 1 --shift-sigma 1.5 --seed 1
    cryovae train D/particles.star --group p8 --zdim 2 -o RUN
    python benchmarks/core_frame.py RUN D/truth.csv --frames model,realigned,truth
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cryovae.analysis.metrics import multiple_correlation
from cryovae.geometry import wrap_degrees
from cryovae.inference.trained_run import TrainedRun
from cryovae.models.distributions import kl_normal

FRAMES = ("model", "realigned", "truth")


def render(maps: torch.Tensor, theta: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Template-frame maps (B, N, N) at pose (theta (B,) radians, centre (B, 2) px):
    ``out(p) = map(R(theta) (p - c))``: :func:`cryovae.geometry.transform_image` with order 1, batched
    in torch (the search renders every particle at every turn)."""
    n = maps.shape[-1]
    idx = torch.arange(n, dtype=torch.float32) - n // 2
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    qx, qy = xx[None] - center[:, 0, None, None], yy[None] - center[:, 1, None, None]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    grid = torch.stack([cos * qx - sin * qy, sin * qx + cos * qy], -1)
    grid = (grid + n // 2) / (n - 1) * 2 - 1  # pixel 0 -> -1, pixel n-1 -> +1
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def realign(images: np.ndarray, templates: np.ndarray, weight: np.ndarray, theta: np.ndarray,
            center: np.ndarray, deltas: np.ndarray, batch: int = 100) -> np.ndarray:
    """Per particle, the extra turn in ``deltas`` (radians) minimising the weighted residual."""
    x, g = torch.from_numpy(images), torch.from_numpy(templates)
    w = torch.from_numpy(weight.astype(np.float32))
    th, ce = torch.from_numpy(theta.astype(np.float32)), torch.from_numpy(center.astype(np.float32))
    best = np.zeros(len(images))
    for s in range(0, len(images), batch):
        sl = slice(s, s + batch)
        b = x[sl].shape[0]
        wb = w[None].expand(b, *w.shape).contiguous()
        cost = [(render(wb, th[sl] + float(d), ce[sl]) * (x[sl] - render(g[sl], th[sl] + float(d), ce[sl])) ** 2)
                .sum((1, 2)) for d in deltas]
        best[sl] = deltas[torch.stack(cost, 1).argmin(1).numpy()]
    return best


def wrap(a: np.ndarray) -> np.ndarray:
    """Radians wrapped to (-pi, pi], by :func:`cryovae.geometry.wrap_degrees`."""
    return np.radians(wrap_degrees(np.degrees(a)))


def signed_error(theta: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """theta - truth after the best global offset, radians in (-pi, pi]."""
    d = wrap(theta - truth)
    return wrap(d - np.angle(np.mean(np.exp(1j * d))))


def rigid_weight(templates: np.ndarray, power: float = 4.0) -> np.ndarray:
    """(N, N) weight of the rigid part of templates (n, N, N): mass * (1 - spread)^power, each
    scaled to a maximum of 1 (mass: the positive mean; spread: the standard deviation)."""
    mass = np.clip(templates.mean(0), 0, None)
    spread = templates.std(0)
    return (mass / mass.max()) * (1 - spread / spread.max()) ** power


class FixedPoseFinetune:
    """Train a TARGET-VAE's encoder and generator with each particle's rotation held fixed.

    images : (n, N, N) preprocessed particles.  theta : (n,) radians, centre : (n, 2) px, the
    pose in the centred template's frame (as latents.npz has it).
    """

    def __init__(self, run: TrainedRun, images: np.ndarray, centre: np.ndarray, seed: int = 0) -> None:
        self.run = run
        self.model = run.model
        self.images = torch.from_numpy(images)
        self.centre = torch.from_numpy(centre.astype(np.float32))
        self.offsets = self.model.offsets.cpu().numpy()
        self.gen = torch.Generator().manual_seed(seed)
        self.set_theta(np.zeros(len(images)))

    def set_theta(self, theta: np.ndarray) -> None:
        self.theta = torch.from_numpy(theta.astype(np.float32))
        self.cell = torch.from_numpy(np.abs(wrap(theta[:, None] - self.offsets[None])).argmin(1))

    def z_params(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, zdim) mean and log std of z at the fixed rotation's cell and its best shift."""
        post = self.model.encode(self.images[idx])
        rows, k = torch.arange(len(idx)), self.cell[idx]
        t = post.logits[rows, k].flatten(1).argmax(1)
        return (post.z_mu[rows, :, k].flatten(2)[rows, :, t], post.z_logstd[rows, :, k].flatten(2)[rows, :, t])

    @torch.no_grad()
    def z_mean(self, batch: int = 256) -> np.ndarray:
        self.model.eval()
        n = len(self.images)
        return torch.cat([self.z_params(torch.arange(s, min(s + batch, n)))[0] for s in range(0, n, batch)]).numpy()

    def templates(self, z: np.ndarray) -> np.ndarray:
        """(n, N, N) pose-free templates of z (n, zdim) with the current weights."""
        self.model.eval()
        return self.run.decode(z)

    def train(self, epochs: int, lr: float = 1e-3, batch: int = 64) -> float:
        """Adam on recon + KL(z); returns the last epoch's mean -ELBO per particle (nats)."""
        self.model.train()
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        n = len(self.images)
        total = 0.0
        for _ in range(epochs):
            total = 0.0
            for idx in torch.randperm(n, generator=self.gen).split(batch):
                mu, logstd = self.z_params(idx)
                z = mu + logstd.exp() * torch.randn(mu.shape, generator=self.gen)
                recon = self.model.log_likelihood(self.images[idx], z, self.theta[idx], self.centre[idx])
                loss = (kl_normal(mu, logstd).sum(1) - recon).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
        return total / n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a cryovae train run of a simulated set (RUN/images.npy, RUN/latents.npz)")
    ap.add_argument("truth", help="the simulation's truth.csv")
    ap.add_argument("--max-deg", type=float, default=24.0, help="largest extra turn searched, degrees")
    ap.add_argument("--frames", default="", help=f"comma list of {', '.join(FRAMES)}: fine-tune at those rotations")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of fine-tuning (realigned: realign before each)")
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per round")
    args = ap.parse_args(argv)
    frames = [f for f in args.frames.split(",") if f]
    if unknown := sorted(set(frames) - set(FRAMES)):
        ap.error(f"--frames: unknown {', '.join(unknown)} (choose from {', '.join(FRAMES)})")

    run = TrainedRun.load(args.run)
    if frames and not hasattr(run.model, "offsets"):
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
               "mass * (1 - spread)^2": rigid_weight(templates, 2), "mass * (1 - spread)^4": rigid_weight(templates, 4)}
    for name, weight in weights.items():
        delta = realign(images, templates, weight, lat.theta, lat.center_px, deltas)
        print(f"{name:24s} corr(delta, {mname}) {np.corrcoef(delta, motion)[0, 1]:+.3f} | "
              f"{frame_text(lat.theta + delta)} | R(z, delta) {r_text(np.column_stack([lat.z_mean, delta]))}")

    for frame in frames:
        run = TrainedRun.load(args.run)  # each frame starts from the trained weights
        tune = FixedPoseFinetune(run, images, lat.center_px)
        theta = lat.theta.copy()
        if frame == "truth":
            theta = psi_true + np.angle(np.mean(np.exp(1j * wrap(lat.theta - psi_true))))
        z = lat.z_mean
        for r in range(args.rounds):
            if frame == "realigned":
                g = templates if r == 0 else tune.templates(z)
                theta = theta + realign(images, g, rigid_weight(g), theta, lat.center_px, deltas)
            tune.set_theta(theta)
            loss = tune.train(args.epochs)
            z = tune.z_mean()
            print(f"{frame:9s} round {r + 1} ({(r + 1) * args.epochs} epochs): {frame_text(theta)} | "
                  f"R(z) {r_text(z)} | -ELBO {loss:.1f}", flush=True)


if __name__ == "__main__":
    main()
