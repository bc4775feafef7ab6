"""Re-centre a trained model's template: put its pose-free decode on the box centre.

Nothing in the ELBO fixes where the generator puts the particle in its pose-free image
``g(p / (box/2), z)``: a template whose centre sits at ``m`` explains particle ``(theta, c)`` as
well as a centred one explains ``(theta, c + R(-theta) m)``. Left alone, every centre the encoder
reads (and every origin written) carries the template's ``m``, turned by the particle's rotation.
:func:`recenter_template` measures ``m`` once after training and stores it in the generator's
``template_center`` buffer (see :mod:`cryovae.models.generator`), which then decodes centred poses
and makes ``infer`` report them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

from cryovae.geometry import pixel_coordinates
from cryovae.inference.encode import encode_images
from cryovae.runs import RunDir

log = logging.getLogger(__name__)

#: a re-centring stops when the decode's centre of mass moved less than this (pixels)
TOLERANCE_PX = 0.01
#: the particle is the connected region above this fraction of the image's peak (background removed)...
PARTICLE_THRESHOLD = 0.2
#: ... grown by this many pixels, so its faint rim is weighed too
PARTICLE_MARGIN_PX = 2
#: a template centre farther than this fraction of the box from the box centre is not a particle's
#: (an untrained or collapsed generator); the template is then left as it is
MAX_CENTRE_FRACTION = 0.25


def template_centre_of_mass(image: np.ndarray) -> np.ndarray:
    """Centre of mass ``(x, y)`` of a particle image, in pixels from the box centre.

    The weights are the image minus the median of its border pixels (the background), signed so
    that the larger tail (the particle's density, whether it is bright or dark: ``--invert`` or
    not) is positive, and clipped at 0: the opposite-signed pixels (CTF fringes, ringing, noise
    below the background) carry no mass, so they cannot drag the centre or cancel the particle.
    Only the particle itself counts: the connected region above ``PARTICLE_THRESHOLD`` of the peak
    that holds the most mass, grown by ``PARTICLE_MARGIN_PX``. A generator also paints the corners
    of its template that no particle constrains (they fall outside the box once turned), and a
    faint blob there would otherwise pull the centre towards it.

    Parameters
    ----------
    image : (box, box) image, internal convention (:mod:`cryovae.geometry`).

    Returns
    -------
    (2,) float64 ``(x, y)`` in pixels; 0 for an image with no contrast.
    """
    img = np.asarray(image, dtype=np.float64)
    box = img.shape[-1]
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    w = img - np.median(border)
    if -w.min() > w.max():
        w = -w
    w = np.clip(w, 0.0, None)
    if not w.max() > 0:
        return np.zeros(2)
    labels, count = ndimage.label(w > PARTICLE_THRESHOLD * w.max())
    if count > 1:
        mass = ndimage.sum(w, labels, index=np.arange(1, count + 1))
        labels = np.where(labels == 1 + int(np.argmax(mass)), 1, 0)
    w = w * ndimage.binary_dilation(labels > 0, iterations=PARTICLE_MARGIN_PX)
    total = w.sum()
    if not total > 0:
        return np.zeros(2)
    coords = pixel_coordinates(box).astype(np.float64).reshape(box, box, 2)
    return (w[..., None] * coords).sum((0, 1)) / total


@torch.no_grad()
def mean_pose_free_image(model, z: np.ndarray, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> np.ndarray:
    """Mean of the pose-free decodes ``g(z_i, theta = 0, c = 0)`` (no CTF) over the rows of ``z``.

    z : (n, zdim) content vectors (zdim may be 0).  Returns (box, box) float64.
    """
    device = torch.device(device)
    total = np.zeros((model.cfg.box, model.cfg.box))
    n = len(z)
    for s in range(0, n, batch_size):
        zz = torch.as_tensor(np.asarray(z[s: s + batch_size], np.float32), device=device)
        b = zz.shape[0]
        mean, _ = model.decode(zz if model.zdim else None, zz.new_zeros(b), zz.new_zeros(b, 2))
        total += mean.double().sum(0).cpu().numpy()
    return total / max(n, 1)


@torch.no_grad()
def recenter_template(model, images: np.ndarray, device: torch.device | str = "cpu",
                      max_particles: int = 512, max_iterations: int = 5, batch_size: int = 256) -> np.ndarray:
    """Measure the template's centre ``m`` and store it in ``model.generator.template_center``.

    ``m`` is one constant for the whole model (the template changes with z: a hinge moves its
    centre of mass with the conformation): the centre of mass (:func:`template_centre_of_mass`) of
    the mean pose-free decode over the z of up to ``max_particles`` particles, evenly spaced
    through ``images``. The measurement starts from ``m = 0`` every time (the un-centred template;
    the z the encoder reads do not depend on ``m``), so calling it again, e.g. after a resumed
    training, sets the same value instead of adding to it. Because a shifted decode is resampled
    inside a finite box, ``m`` is refined by a few fixed-point steps ``m += centre of mass of the
    decode with m`` until the decode's centre moves less than ``TOLERANCE_PX``. A step that takes
    ``m`` farther than ``MAX_CENTRE_FRACTION`` of the box from the centre, or that is larger than
    the one before (no convergence), is not taken: an untrained or collapsed generator's template
    has no particle centre, and is left as it is (with a warning when not even the first step
    could be taken).

    Parameters
    ----------
    model : a trained :class:`cryovae.models.PoseVAE` (left in eval mode).
    images : (n, box, box) float32 preprocessed particles (the model's box).

    Returns
    -------
    (2,) float64 ``m = (x, y)`` in model pixels, template frame.
    """
    device = torch.device(device)
    buf = model.generator.template_center
    buf.zero_()
    n = len(images)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_particles)).round().astype(int))
    z = encode_images(model, np.asarray(images[idx], np.float32), 1.0, device, batch_size).z_mean
    limit = MAX_CENTRE_FRACTION * model.cfg.box
    m, last_step = np.zeros(2), np.inf
    for _ in range(max_iterations):
        buf.copy_(torch.as_tensor(m, dtype=buf.dtype))
        step = template_centre_of_mass(mean_pose_free_image(model, z, device, batch_size))
        if np.hypot(*(m + step)) > limit or np.hypot(*step) > last_step:
            break  # past any particle's centre, or not converging: keep the last m
        m, last_step = m + step, np.hypot(*step)
        if last_step < TOLERANCE_PX:
            break
    if not np.any(m) and np.hypot(*step) > limit:
        log.warning("the pose-free template has no clear centre (its centre of mass is %.1f px from the box "
                    "centre, past %.0f px): not re-centred; is the model trained?", np.hypot(*step), limit)
    buf.copy_(torch.as_tensor(m, dtype=buf.dtype))
    px = float(model.cfg.pixel_size)
    log.info("template centre: (%.2f, %.2f) px = (%.1f, %.1f) Å from the box centre; centres and origins "
             "are reported relative to it", m[0], m[1], m[0] * px, m[1] * px)
    return m


def store_template_center(model, run: RunDir) -> None:
    """Write ``model``'s ``template_center`` into the weights of the run's best.pt and
    checkpoint.pt (those that exist), atomically; the rest of each file is kept."""
    RunDir.of(run).store_buffer("generator.template_center", model.generator.template_center)
