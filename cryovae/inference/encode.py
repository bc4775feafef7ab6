"""Apply a trained model to preprocessed images or to a particle stack."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.inference.latents import Latents
from cryovae.inference.refine import RefineConfig, refine_latents


@torch.no_grad()
def encode_images(model, images: np.ndarray, pixel_size: float, device: torch.device | str = "cpu",
                  batch_size: int = 256, progress: bool = False) -> Latents:
    """Deterministic encoding of preprocessed images: the pose at the most probable (t, r) cell and
    z's posterior mean and std (TARGET-VAE: over the mixture of cells; see ``TargetVAE.infer``).

    Parameters
    ----------
    model : a TargetVAE / SpatialVAE (set to eval mode here).
    images : (n, box, box) float32 at the model's box.  pixel_size : model Å/pixel.
    """
    device = torch.device(device)
    model.eval()
    out: dict[str, list] = {"z_mean": [], "z_std": [], "theta": [], "center_px": [], "prob": []}
    for start in tqdm(range(0, len(images), batch_size), desc="encoding", leave=False, disable=not progress):
        y = torch.as_tensor(np.asarray(images[start: start + batch_size], dtype=np.float32), device=device)
        enc = model.infer(y)
        out["z_mean"].append(enc.z_mean.float().cpu().numpy())
        out["z_std"].append(enc.z_std.float().cpu().numpy())
        out["theta"].append(enc.theta.double().cpu().numpy())
        out["center_px"].append(enc.center_px.double().cpu().numpy())
        if enc.prob is not None:
            out["prob"].append(enc.prob.double().cpu().numpy())
    cat = {k: np.concatenate(v) if v else None for k, v in out.items()}
    return Latents.from_pose(cat["z_mean"], cat["z_std"], cat["theta"], cat["center_px"], pixel_size,
                             prob=cat["prob"])


def encode_stack(run, stack, batch_size: int = 256, progress: bool = True, refine: RefineConfig | None = None,
                 ctf_params: np.ndarray | None = None) -> Latents:
    """Read ``stack`` (a :class:`cryovae.io.ParticleStack`) in chunks, preprocess each chunk with
    the run's own preprocessing and encode it with ``run``'s model; then, with ``refine``, refine
    each chunk's pose and z (:func:`cryovae.inference.refine_latents`; ``ctf_params`` (n, 7) are
    needed when the model applies a CTF)."""
    parts = []
    for idx, images in tqdm(stack.chunks(batch_size), desc="encoding", total=-(-len(stack) // batch_size),
                            disable=not progress):
        pre = run.preprocess(images)
        lat = encode_images(run.model, pre, run.pixel_size, run.device, batch_size)
        if refine is not None and refine.steps:
            lat = refine_latents(run.model, pre, lat, refine, None if ctf_params is None else ctf_params[idx],
                                 run.device)
        parts.append(lat)
    return Latents.from_pose(
        np.concatenate([p.z_mean for p in parts]), np.concatenate([p.z_std for p in parts]),
        np.concatenate([p.theta for p in parts]), np.concatenate([p.center_px for p in parts]),
        run.pixel_size, prob=None if parts[0].prob is None else np.concatenate([p.prob for p in parts]))
