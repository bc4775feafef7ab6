"""Particles drawn at known in-plane poses by a randomly initialised (smooth) generator, for the
pose-convention tests of every writer (RELION star, cryoSPARC .cs)."""

from __future__ import annotations

import numpy as np
import torch

from cryovae.models import ModelConfig, build_model


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two images."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def posed_particles(box: int, apix: float, n: int = 6, seed: int = 0):
    """``(images (n, box, box), template (box, box), theta (n,) rad, center (n, 2) px, window)``.

    The images are the generator's decodes at poses (theta, center) in cryovae's internal
    convention, the template its pose-free decode; ``window`` fades to zero at the border so
    that interpolation outside the box does not matter when comparing aligned images.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig.for_model("target", box=box, zdim=1, group="p4", enc_fields=2, enc_kernel=3,
                                gen_hidden=64, fourier_features=32, fourier_scale=1.5, pixel_size=apix,
                                likelihood_mask=0.0)  # decodes over the whole box (no fixed disc cut)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, n)
    center = rng.uniform(-3, 3, (n, 2))
    z = torch.zeros(n, 1)
    with torch.no_grad():
        imgs = model.decode(z, torch.tensor(theta, dtype=torch.float32),
                            torch.tensor(center, dtype=torch.float32))[0].numpy()
        template = model.decode(z[:1], torch.zeros(1), torch.zeros(1, 2))[0][0].numpy()
    r = np.hypot(*np.meshgrid(np.arange(box) - box // 2, np.arange(box) - box // 2))
    win = np.clip((box // 2 - 1 - r) / 4, 0, 1).astype(np.float32)
    return imgs, template, theta, center, win
