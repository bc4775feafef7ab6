"""Put every particle's rotation on the molecule's rigid part.

A trained model's rotation is the model's choice of frame. On a molecule whose parts move, a
turn of the whole particle and a common motion of its moving parts explain an image alike, and
the ELBO prefers the frame that turns with the moving parts (docs/models.md, "Accuracy"): the
rotation then carries part of the conformation and z misses it. Here, with no truth:

1. :func:`rigid_weight`: from every particle's decoded template (model frame, pose-free), the
   pixels where the templates agree (low standard deviation over the data set) and carry mass.
2. :func:`realign`: per particle, the extra turn ``delta`` (a grid of whole degrees, centre held)
   that minimises the residual between the particle and its template, weighted by that map, both
   rendered at the particle's pose turned by ``delta`` (:func:`weighted_residual`: that residual
   at given poses).
3. :func:`split_half_agreement`: the same search on two disjoint halves of the pixels (a
   checkerboard); the correlation of the two halves' turns over the particles says whether the
   data determine ``delta`` at all (near 0 at SNR 0.1 on a small rigid part: the turn is noise).

:func:`z_at_pose` reads z at a given rotation (:meth:`cryovae.models.PoseVAE.z_at_rotation`).
:func:`cryovae.training.fit_fixed_pose` then trains with the rotation held there;
``cryovae reframe`` (:mod:`cryovae.workflows.reframe`) joins the steps.
"""

from __future__ import annotations

import numpy as np
import torch

from cryovae.errors import CryovaeError
from cryovae.models import PoseVAE, warp_images


def rigid_weight(templates: np.ndarray, power: float = 4.0) -> np.ndarray:
    """(N, N) weight of the rigid part of ``templates`` (n, N, N), values in [0, 1].

    ``mass * (1 - spread)^power``: mass is the positive part of the mean template and spread
    the standard deviation over the templates, each scaled to a maximum of 1; ``power`` sets
    how strongly a pixel that varies is left out.
    """
    templates = np.asarray(templates, dtype=np.float64)
    if templates.ndim != 3 or len(templates) < 2:
        raise CryovaeError(f"the rigid part needs at least 2 templates (n, N, N); got shape {templates.shape}")
    mass = np.clip(templates.mean(0), 0, None)
    spread = templates.std(0)
    if mass.max() <= 0:
        raise CryovaeError("the decoded templates carry no positive density: no rigid part to align on")
    spread_max = spread.max()
    agree = np.ones_like(spread) if spread_max <= 0 else 1 - spread / spread_max
    return ((mass / mass.max()) * agree ** power).astype(np.float32)


def pose_matrices(theta: torch.Tensor, center_px: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) maps ``p -> R(theta) (p - c)``: :func:`cryovae.models.warp_images` of a template
    with them renders ``template(R(theta) (p - c))``, the internal convention's particle
    (:mod:`cryovae.geometry`). theta (B,) radians, center_px (B, 2) pixels."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    m = torch.zeros(len(theta), 3, 3, dtype=theta.dtype, device=theta.device)
    m[:, :2, :2] = rot
    m[:, :2, 2] = -(rot @ center_px[:, :, None])[..., 0]
    m[:, 2, 2] = 1
    return m


def _search_cost(x: torch.Tensor, g: torch.Tensor, w: torch.Tensor, theta: torch.Tensor, center: torch.Tensor,
                 deltas: np.ndarray, pixel_masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each pixel mask, the (B, D) weighted squared residual at every extra turn."""
    costs: list[list[torch.Tensor]] = [[] for _ in pixel_masks]
    for d in deltas:
        m = pose_matrices(theta + float(d), center)
        g_r, w_r = warp_images(g, m), warp_images(w, m)
        res = w_r * (x - g_r) ** 2
        for k, mask in enumerate(pixel_masks):
            costs[k].append((res * mask).flatten(1).sum(1))
    return [torch.stack(c, 1) for c in costs]


def _batches(images: np.ndarray, templates: np.ndarray, theta: np.ndarray, center_px: np.ndarray, batch_size: int):
    """(slice, images, templates, theta, centres) of each batch, as float32 tensors; the images
    (n, N, N) and templates must have the same shape."""
    if templates.shape != images.shape:
        raise CryovaeError(f"{len(templates)} templates of {templates.shape[1:]} for {len(images)} images of "
                           f"{images.shape[1:]}")
    th_all = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    c_all = torch.as_tensor(np.asarray(center_px, dtype=np.float32))
    for s in range(0, len(images), batch_size):
        sl = slice(s, min(s + batch_size, len(images)))
        yield (sl, torch.from_numpy(images[sl]), torch.from_numpy(np.asarray(templates[sl], dtype=np.float32)),
               th_all[sl], c_all[sl])


@torch.no_grad()
def realign(images: np.ndarray, templates: np.ndarray, weight: np.ndarray, theta: np.ndarray, center_px: np.ndarray,
            deltas: np.ndarray, batch_size: int = 128, halves: bool = False) -> np.ndarray:
    """Per particle, the extra turn in ``deltas`` that minimises the weighted residual.

    Parameters
    ----------
    images : (n, N, N) preprocessed particles.
    templates : (n, N, N) each particle's pose-free template (model frame).
    weight : (N, N) template-frame weight (:func:`rigid_weight`).
    theta : (n,) radians and center_px : (n, 2) pixels, each particle's pose (internal
        convention, centred-template frame; :class:`cryovae.runs.Latents`).
    deltas : (D,) the extra turns searched, radians.
    halves : also search on each half of a checkerboard of the pixels.

    Returns
    -------
    (n,) radians, the best extra turn of each particle; with ``halves`` (3, n): the whole image's,
    then each half's.
    """
    images = np.asarray(images, dtype=np.float32)
    n, box = len(images), images.shape[-1]
    deltas = np.asarray(deltas, dtype=np.float64)
    rows, cols = np.indices((box, box))
    board = torch.from_numpy(((rows + cols) % 2 == 0).astype(np.float32))
    masks = [torch.ones(box, box)] + ([board, 1 - board] if halves else [])
    w = torch.as_tensor(np.asarray(weight, dtype=np.float32))
    best = np.zeros((len(masks), n))
    for sl, x, g, th, c in _batches(images, templates, theta, center_px, batch_size):
        wb = w[None].expand(len(x), box, box).contiguous()
        for k, cost in enumerate(_search_cost(x, g, wb, th, c, deltas, masks)):
            best[k, sl] = deltas[cost.argmin(1).numpy()]
    return best if halves else best[0]


@torch.no_grad()
def weighted_residual(images: np.ndarray, templates: np.ndarray, weight: np.ndarray, theta: np.ndarray,
                      center_px: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(n,) the weighted squared residual :func:`realign` minimises, at the poses given (no extra
    turn); the arguments as :func:`realign`'s. Which of two sets of rotations the weight prefers."""
    images = np.asarray(images, dtype=np.float32)
    box = images.shape[-1]
    w = torch.as_tensor(np.asarray(weight, dtype=np.float32))
    out = np.zeros(len(images))
    for sl, x, g, th, c in _batches(images, templates, theta, center_px, batch_size):
        wb = w[None].expand(len(x), box, box).contiguous()
        out[sl] = _search_cost(x, g, wb, th, c, np.zeros(1), [torch.ones(box, box)])[0][:, 0].numpy()
    return out


def split_half_agreement(delta_a: np.ndarray, delta_b: np.ndarray) -> float:
    """Pearson correlation over the particles of the turns found on two disjoint halves of the
    pixels: near 1 when the data determine each particle's turn, near 0 when it is noise (0 when
    either half found the same turn for every particle)."""
    a, b = np.asarray(delta_a, dtype=np.float64), np.asarray(delta_b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def z_at_pose(model: PoseVAE, images: np.ndarray, theta: np.ndarray, device: torch.device | str = "cpu",
              batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """z's posterior mean and std, each (n, zdim), of ``images`` (n, box, box) read at the
    rotations ``theta`` (n,) radians (:meth:`cryovae.models.PoseVAE.z_at_rotation`).

    Raises :class:`CryovaeError` for a model whose encoder gives z at one pose only.
    """
    device = torch.device(device)
    model.eval()
    means, stds = [], []
    for s in range(0, len(images), batch_size):
        y = torch.as_tensor(np.asarray(images[s: s + batch_size], dtype=np.float32), device=device)
        th = torch.as_tensor(np.asarray(theta[s: s + batch_size], dtype=np.float32), device=device)
        params = model.z_at_rotation(y, th)
        if params is None:
            raise CryovaeError(f"{model.title} gives z at one pose only; reading z at a given rotation needs a "
                               "model whose encoder gives z at every rotation (TARGET-VAE)")
        means.append(model.prior.mean(params).float().cpu().numpy())
        stds.append(model.prior.std(params).float().cpu().numpy())
    if not means:
        return np.zeros((0, model.zdim), np.float32), np.zeros((0, model.zdim), np.float32)
    return np.concatenate(means), np.concatenate(stds)
