"""A finished (or running) training run loaded from its directory."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryovae.device import resolve_device
from cryovae.errors import CryovaeError
from cryovae.inference.encode import encode_images, improve_latents, posterior_grid_for
from cryovae.inference.posterior import PosteriorGrid
from cryovae.inference.refine import RefineConfig
from cryovae.models import PoseVAE
from cryovae.runs import Latents, RunConfig, RunDir


@dataclass
class TrainedRun:
    """A run directory's model in eval mode, its configuration and its results.

    Use :meth:`load`. Attributes: ``rundir`` (the folder), ``run`` (its :class:`RunDir`),
    ``config`` (:class:`RunConfig` with ``.model``, ``.train``, ``.preprocess``), ``model`` (a
    :class:`cryovae.models.PoseVAE`), ``device``.
    """

    rundir: Path
    config: RunConfig
    model: PoseVAE
    device: torch.device

    @functools.cached_property
    def posterior_grid(self) -> PosteriorGrid | None:
        """The model's posterior grid (:func:`cryovae.inference.posterior_grid_for`), rendered on
        first use and kept (None for a model it does not apply to)."""
        return posterior_grid_for(self.model, True, self.device)

    @property
    def run(self) -> RunDir:
        return RunDir(self.rundir)

    @classmethod
    def load(cls, rundir: str | Path, device: str | torch.device = "cpu", weights: str = "best") -> TrainedRun:
        """Rebuild the model from RUNDIR/config.yaml and load ``best.pt`` (``weights="best"``,
        falling back to checkpoint.pt) or ``checkpoint.pt`` (``weights="last"``)."""
        run = RunDir(rundir)
        dev = resolve_device(device)
        model, config = run.load_model(dev, weights)
        return cls(rundir=run.path, config=config, model=model, device=dev)

    @property
    def box(self) -> int:
        """Model image size in pixels."""
        return self.config.model.box

    @property
    def pixel_size(self) -> float:
        """Å per model pixel."""
        return self.config.model.pixel_size

    @property
    def zdim(self) -> int:
        return self.config.model.zdim

    def latents(self) -> Latents:
        """The run's results, RUNDIR/latents.npz."""
        return self.run.read_latents()

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw particles (n, N, N) -> (n, box, box) float32 with the run's preprocessing."""
        from cryovae.data import PreprocessConfig, preprocess_images

        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        return preprocess_images(images, PreprocessConfig(**self.config.preprocess)).astype(np.float32)

    def encode(self, images: np.ndarray, batch_size: int = 256, refine_steps: int | None = None,
               ctf_params: np.ndarray | None = None, posterior_grid: bool | None = None) -> Latents:
        """Latents of preprocessed images (n, box, box), as ``cryovae train`` wrote them.

        refine_steps : steps of :func:`cryovae.inference.refine_latents` (None: the run's own
            ``refine_steps``; 0: the encoder's values). A model trained with ``--ctf`` refines only
            when ``ctf_params`` (n, 7) are given; without them (None steps) it returns the
            encoder's values.
        ctf_params : (n, 7) CTF parameters of a ``--ctf`` run's particles: they also reach the
            model's ``infer`` (MCE-VAE's search applies them to its templates).
        posterior_grid : then the posterior means over the grid (:mod:`cryovae.inference.posterior`);
            None: the run's ``posterior_grid`` (like refinement, only with ``ctf_params`` for a
            ``--ctf`` run when None).
        """
        images = self._check_images(images)
        lat = encode_images(self.model, images, self.pixel_size, self.device, batch_size, ctf_params=ctf_params)
        steps = self.config.train.refine_steps if refine_steps is None else refine_steps
        grid = self.config.train.posterior_grid if posterior_grid is None else posterior_grid
        if self.config.model.ctf and ctf_params is None:
            steps = 0 if refine_steps is None else steps
            grid = False if posterior_grid is None else grid
        return improve_latents(self.model, images, lat, RefineConfig(steps=steps, batch_size=batch_size),
                               self.posterior_grid if grid else None, ctf_params, self.device)

    @torch.no_grad()
    def decode(self, z: np.ndarray, theta: np.ndarray | None = None, center_px: np.ndarray | None = None,
               batch_size: int = 256) -> np.ndarray:
        """Generator mean images, no CTF.

        Parameters
        ----------
        z : (n, zdim) content (a (zdim,) vector is one image).
        theta : (n,) radians, internal convention; 0 when None (the pose-free image).
        center_px : (n, 2) centre in pixels; 0 when None.

        Returns
        -------
        (n, box, box) float32.
        """
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if self.zdim == 0:
            z = z.reshape(-1, 0)
        if z.shape[1] != self.zdim:
            raise CryovaeError(f"z has {z.shape[1]} dimensions, the run has zdim={self.zdim}")
        n = z.shape[0]
        theta = np.zeros(n, np.float32) if theta is None else np.ascontiguousarray(
            np.broadcast_to(np.asarray(theta, np.float32), (n,)))
        center = (np.zeros((n, 2), np.float32) if center_px is None
                  else np.ascontiguousarray(np.broadcast_to(np.asarray(center_px, np.float32), (n, 2))))
        out = []
        for s in range(0, n, batch_size):
            zz = torch.tensor(z[s: s + batch_size], device=self.device)  # a copy: inputs may be read-only
            mean, _ = self.model.decode(zz if self.zdim else None,
                                        torch.tensor(theta[s: s + batch_size], device=self.device),
                                        torch.tensor(center[s: s + batch_size], device=self.device))
            out.append(mean.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.box, self.box), np.float32)

    def reconstruct(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Encode preprocessed images (n, box, box) and decode at the inferred pose (no CTF)."""
        lat = self.encode(images, batch_size)
        return self.decode(lat.z_mean, lat.theta, lat.center_px, batch_size)

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.shape[1:] != (self.box, self.box):
            raise CryovaeError(f"images are {images.shape[1]}x{images.shape[2]} px; the run expects "
                               f"{self.box}x{self.box} (preprocess them with run.preprocess)")
        return images
