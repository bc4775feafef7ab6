"""Training with every particle's pose held fixed: only z is inferred.

After ``cryovae train`` the rotation each particle was given is the model's choice of frame, and
the ELBO does not prefer the frame of the molecule's rigid part: a turn of the whole particle
and a common motion of its moving parts explain an image alike (docs/models.md, "Accuracy").
:mod:`cryovae.inference.core_frame` finds, per particle, the rotation that puts the rigid part
in one place; this module then trains the encoder and generator further with each particle's
rotation and centre held there, so that z has to carry the motion the frame no longer absorbs.

The objective is the ELBO's z part, ``log p(y | z, theta_i, c_i) - KL(q(z | y, theta_i) || p(z))``
with ``q(z | y, theta_i)`` the encoder's posterior at that rotation
(:meth:`cryovae.models.PoseVAE.z_at_rotation`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.errors import CryovaeError, NonFiniteError
from cryovae.models import PoseVAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FixedPoseConfig:
    """Options of :func:`fit_fixed_pose`.

    epochs : passes over the particles.  lr : Adam's learning rate.  batch_size : particles per step.
    seed : the batch order and the samples of z.
    """

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise CryovaeError(f"--epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise CryovaeError(f"the learning rate must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise CryovaeError(f"the batch size must be >= 1, got {self.batch_size}")


def _check_model(model: PoseVAE, images: torch.Tensor) -> None:
    if model.z_at_rotation(images[:1], torch.zeros(1, device=images.device)) is None:
        raise CryovaeError(f"{model.title} gives z for one pose only; holding the rotation fixed needs a model "
                           "whose encoder gives z at every rotation (TARGET-VAE)")


def fit_fixed_pose(model: PoseVAE, images: np.ndarray, theta: np.ndarray, center_px: np.ndarray,
                   cfg: FixedPoseConfig = FixedPoseConfig(), device: torch.device | str = "cpu",
                   progress: bool = True) -> float:
    """Train ``model`` in place with each particle's pose held at ``(theta, center_px)``.

    No CTF: a run trained with ``--ctf`` is not trained here (``cryovae reframe`` refuses it).

    Parameters
    ----------
    model : a :class:`PoseVAE` whose :meth:`~PoseVAE.z_at_rotation` is not None, on ``device``.
    images : (n, box, box) preprocessed particles.
    theta : (n,) radians, internal convention.  center_px : (n, 2) pixels, centred-template
        frame (as :class:`cryovae.runs.Latents` holds them).

    Returns
    -------
    The last epoch's mean ``-ELBO`` per particle (nats; recon + KL of z, lower is better).
    """
    cfg.validate()
    device = torch.device(device)
    y_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    th_all = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    c_all = torch.as_tensor(np.asarray(center_px, dtype=np.float32))
    n = len(y_all)
    if not (len(th_all) == len(c_all) == n):
        raise CryovaeError(f"{n} images but {len(th_all)} rotations and {len(c_all)} centres")
    _check_model(model, y_all[:1].to(device))
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    mean_loss = float("nan")
    bar = tqdm(range(cfg.epochs), desc="fixed-pose training", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            y, th, c = y_all[idx].to(device), th_all[idx].to(device), c_all[idx].to(device)
            params = model.z_at_rotation(y, th)
            z = model.prior.sample(params, gen if device.type == "cpu" else None)
            loss = (model.prior.kl(params, dim=1) - model.log_likelihood(y, z, th, c)).mean()
            if not torch.isfinite(loss):
                raise NonFiniteError(f"fixed-pose training: the loss is not finite at epoch {epoch + 1}; "
                                     "the run's weights may be damaged")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        mean_loss = total / n
        bar.set_postfix(elbo=f"{-mean_loss:.1f}")
        log.info("fixed-pose epoch %d/%d: -ELBO %.2f nats per particle", epoch + 1, cfg.epochs, mean_loss)
    model.eval()
    return mean_loss

