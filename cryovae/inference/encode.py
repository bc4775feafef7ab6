"""Apply a trained model to preprocessed images or to a particle stack."""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.inference.posterior import PosteriorGrid, PosteriorGridConfig, searchable
from cryovae.inference.refine import RefineConfig, refine_latents
from cryovae.models import compute_ctf
from cryovae.runs import Latents

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_images(model, images: np.ndarray, pixel_size: float, device: torch.device | str = "cpu",
                  batch_size: int = 256, progress: bool = False, ctf_params: np.ndarray | None = None) -> Latents:
    """Deterministic encoding of preprocessed images with ``model.infer`` (the pose, z's posterior
    mean and std, the pose's probability and the model's extra outputs).

    Parameters
    ----------
    model : a :class:`cryovae.models.PoseVAE` (set to eval mode here).
    images : (n, box, box) float32 at the model's box.  pixel_size : model Å/pixel.
    ctf_params : (n, 7) CTF parameters (:func:`cryovae.models.ctf_parameters`), or None. Used only
        by a model trained with ``--ctf``: each particle's CTF reaches ``model.infer`` (MCE-VAE's
        search compares the particle with CTF-modulated templates).
    """
    device = torch.device(device)
    model.eval()
    out: dict[str, list] = {"z_mean": [], "z_std": [], "theta": [], "center_px": [], "prob": []}
    extras: dict[str, list] = {}
    for start in tqdm(range(0, len(images), batch_size), desc="encoding", leave=False, disable=not progress):
        y = torch.as_tensor(np.asarray(images[start: start + batch_size], dtype=np.float32), device=device)
        ctf = None
        if model.cfg.ctf and ctf_params is not None:
            params = torch.as_tensor(np.asarray(ctf_params[start: start + batch_size], dtype=np.float32), device=device)
            ctf = compute_ctf(params, model.cfg.box, model.cfg.pixel_size)
        enc = model.infer(y, ctf)
        out["z_mean"].append(enc.z_mean.float().cpu().numpy())
        out["z_std"].append(enc.z_std.float().cpu().numpy())
        out["theta"].append(enc.theta.double().cpu().numpy())
        out["center_px"].append(enc.center_px.double().cpu().numpy())
        if enc.prob is not None:
            out["prob"].append(enc.prob.double().cpu().numpy())
        for k, v in enc.extras.items():
            extras.setdefault(k, []).append(v.cpu().numpy())
    cat = {k: np.concatenate(v) if v else None for k, v in out.items()}
    return Latents.from_pose(cat["z_mean"], cat["z_std"], cat["theta"], cat["center_px"], pixel_size,
                             prob=cat["prob"], extras={k: np.concatenate(v) for k, v in extras.items()})


def posterior_grid_for(model, enabled: bool, device: torch.device | str = "cpu") -> PosteriorGrid | None:
    """The posterior grid of ``model`` (its templates rendered now), or None when ``enabled`` is
    false or the model is not searchable (:func:`cryovae.inference.posterior.searchable`)."""
    if not enabled:
        return None
    if not searchable(model):
        log.info("no posterior grid for %s with zdim %d: z and pose are the refinement's", model.title, model.zdim)
        return None
    grid = PosteriorGrid(model, PosteriorGridConfig(), device)
    log.info("posterior means of z and pose over %d z values x %d rotations x %d shifts per particle",
             len(grid.z), len(grid.theta), len(grid.offsets))
    return grid


def improve_latents(model, images: np.ndarray, latents: Latents, refine: RefineConfig | None,
                    grid: PosteriorGrid | None, ctf_params: np.ndarray | None = None,
                    device: torch.device | str = "cpu", progress: bool = False) -> Latents:
    """What follows the encoder: the refinement (:func:`cryovae.inference.refine_latents`, when
    ``refine`` has steps), then the posterior means over ``grid`` (when not None).
    ``images`` (n, box, box) preprocessed; ``ctf_params`` (n, 7) for a ``--ctf`` model."""
    if refine is not None and refine.steps:
        latents = refine_latents(model, images, latents, refine, ctf_params, device, progress=progress)
    if grid is not None:
        latents = grid.apply(images, latents, ctf_params, progress=progress)
    return latents


def encoded_pixel_sizes(run, stack) -> np.ndarray:
    """(n,) Å per model pixel of ``stack``'s particles once preprocessed to the run's box:
    each particle's pixel size x ``stack.box / run.box`` (optics groups may differ). The run's
    own model pixel size where the stack's pixel size is unknown. Logs one warning when any
    differs from the run's by more than 1% (the model then sees the particles at another scale).
    """
    n = len(stack)
    if stack.pixel_sizes is None:
        log.warning("%s: pixel size unknown; origins in Å use the run's %.4g Å per model pixel",
                    stack.path, run.pixel_size)
        return np.full(n, float(run.pixel_size))
    model_apix = np.asarray(stack.pixel_sizes, dtype=np.float64) * stack.box / run.box
    off = np.abs(model_apix / run.pixel_size - 1.0) > 0.01
    if off.any():
        values = ", ".join(f"{v:.4g}" for v in np.unique(np.round(model_apix[off], 4))[:4])
        log.warning("%s: %d of %d particles are %s Å per model pixel at the run's %d px box, the run was "
                    "trained at %.4g Å per pixel: the model sees them at another scale", stack.path,
                    int(off.sum()), n, values, run.box, run.pixel_size)
    return model_apix


def encode_stack(run, stack, batch_size: int = 256, progress: bool = True, refine: RefineConfig | None = None,
                 ctf_params: np.ndarray | None = None, posterior_grid: bool = False) -> Latents:
    """Read ``stack`` (a :class:`cryovae.io.ParticleStack`) in chunks, preprocess each chunk with
    the run's own preprocessing and encode it with ``run``'s model; then, with ``refine``, refine
    each chunk's pose and z (:func:`cryovae.inference.refine_latents`; ``ctf_params`` (n, 7) are
    needed when the model applies a CTF) and, with ``posterior_grid``, replace them by the
    posterior means over the grid (:mod:`cryovae.inference.posterior`; rendered once).

    Origins in Å use the pixel size of the images encoded (:func:`encoded_pixel_sizes`), not
    the run's: ``origin_A = -center_px * pixel size x stack box / model box``, per particle.
    """
    apix = encoded_pixel_sizes(run, stack)
    grid = posterior_grid_for(run.model, posterior_grid, run.device)
    parts = []
    for idx, images in tqdm(stack.chunks(batch_size), desc="encoding", total=-(-len(stack) // batch_size),
                            disable=not progress):
        pre = run.preprocess(images)
        params = None if ctf_params is None else ctf_params[idx]
        lat = encode_images(run.model, pre, run.pixel_size, run.device, batch_size, ctf_params=params)
        parts.append(improve_latents(run.model, pre, lat, refine, grid, params, run.device))
    return Latents.from_pose(
        np.concatenate([p.z_mean for p in parts]), np.concatenate([p.z_std for p in parts]),
        np.concatenate([p.theta for p in parts]), np.concatenate([p.center_px for p in parts]),
        apix, prob=None if parts[0].prob is None else np.concatenate([p.prob for p in parts]),
        extras={k: np.concatenate([p.extras[k] for p in parts]) for k in parts[0].extras})
