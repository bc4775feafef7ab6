"""Recovery of known poses: noiseless rotated and shifted copies of one template.

After training, the predicted rotations equal the true ones up to one global offset (the learned
template's own orientation) and the predicted centres equal the true ones up to the learned
template's own centre e: ``c_pred = c_true + R(-theta_true) e`` (see cryovae.geometry).
"""

from __future__ import annotations

import numpy as np
import torch
from test_models_synthetic import aligned_angle_error_deg, blob_particles, circular_correlation

from cryovae.geometry import rotation_matrix
from cryovae.inference import encode_images
from cryovae.models import ModelConfig
from cryovae.runs import TrainConfig
from cryovae.training import fit_images

BOX = 33


def test_target_vae_recovers_rotations_and_shifts(tmp_path):
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n = 256
    theta = rng.uniform(-np.pi, np.pi, n)
    c = rng.integers(-2, 3, (n, 2)).astype(float)
    imgs = blob_particles(BOX, theta, c)
    imgs /= imgs.std()
    imgs += 0.05 * rng.standard_normal(imgs.shape).astype(np.float32)  # keeps sigma finite
    mcfg = ModelConfig.for_model("target", box=BOX, group="p8", zdim=1, enc_fields=6, enc_kernel=17,
                                 gen_hidden=64, fourier_features=32, translation_prior_px=2.0)
    tcfg = TrainConfig(epochs=16, batch_size=16, lr=2e-3, seed=0, val_fraction=0.0, sigma_lr_scale=100,
                       z_delay_epochs=2)
    res = fit_images(imgs, mcfg, tcfg, tmp_path, torch.device("cpu"), progress=False)
    lat = encode_images(res.model, imgs, pixel_size=1.0)

    err = aligned_angle_error_deg(lat.theta, theta)
    assert circular_correlation(lat.theta, theta) > 0.95
    assert np.median(err) < 10.0, np.median(err)

    # centre: remove the template's own centre e (least squares), then compare in pixels
    rot = rotation_matrix(theta)  # (n, 2, 2)
    e = np.mean(np.einsum("nij,nj->ni", rot, lat.center_px - c), axis=0)
    resid = lat.center_px - c - np.einsum("nij,j->ni", rotation_matrix(-theta), e)
    assert np.median(np.linalg.norm(resid, axis=1)) <= 1.0
