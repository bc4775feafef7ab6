"""Apply a trained model to preprocessed images or to a particle stack."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.inference.latents import Latents


@torch.no_grad()
def encode_images(model, images: np.ndarray, pixel_size: float, device: torch.device | str = "cpu",
                  batch_size: int = 256, progress: bool = False) -> Latents:
    """Deterministic encoding (posterior means at the most probable cell) of preprocessed images.

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


def encode_stack(run, stack, batch_size: int = 256, progress: bool = True) -> Latents:
    """Read ``stack`` (a :class:`cryovae.io.ParticleStack`) in chunks, preprocess each chunk with
    the run's own preprocessing and encode it with ``run``'s model."""
    parts = []
    for _, images in tqdm(stack.chunks(batch_size), desc="encoding", total=-(-len(stack) // batch_size),
                          disable=not progress):
        parts.append(encode_images(run.model, run.preprocess(images), run.pixel_size, run.device, batch_size))
    return Latents.from_pose(
        np.concatenate([p.z_mean for p in parts]), np.concatenate([p.z_std for p in parts]),
        np.concatenate([p.theta for p in parts]), np.concatenate([p.center_px for p in parts]),
        run.pixel_size, prob=None if parts[0].prob is None else np.concatenate([p.prob for p in parts]))
