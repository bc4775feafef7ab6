"""Preprocessing as signal processing: Fourier crop, normalisation, mask, inversion."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.data import (
    PreprocessConfig,
    cropped_pixel_size,
    fourier_crop,
    normalize_images,
    preprocess_images,
    soft_circular_mask,
)
from cryovae.errors import CryovaeError


def test_fourier_crop_keeps_low_frequencies_and_drops_high_ones():
    n, box, apix = 64, 32, 1.0
    new_apix = cropped_pixel_size(apix, n, box)
    assert new_apix == 2.0
    # a wave periodic in the box (8 cycles) survives, sampled on the coarser grid
    k = 8
    low = np.cos(2 * np.pi * k * np.arange(n) / n)[None, :].repeat(n, 0)
    expected = np.cos(2 * np.pi * k * np.arange(box) / box)[None, :].repeat(box, 0)
    np.testing.assert_allclose(fourier_crop(low[None], box)[0], expected, atol=1e-5)
    # a wave above the new Nyquist (period 3 Å < 2 * 2 Å) is removed
    high = np.cos(2 * np.pi * 20 * np.arange(n) / n)[None, :].repeat(n, 0)
    assert np.abs(fourier_crop(high, box)).max() < 1e-5
    # mean preserved; size equal to the input is a copy
    img = np.random.default_rng(0).normal(3.0, 1.0, (2, n, n))
    np.testing.assert_allclose(fourier_crop(img, box).mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(fourier_crop(img, n), img.astype(np.float32))


def test_fourier_crop_of_a_smooth_blob_is_the_blob_on_the_coarser_grid():
    def blob(box, sigma):
        idx = np.arange(box) - box // 2
        return np.exp(-(idx[None, :] ** 2 + idx[:, None] ** 2) / (2 * sigma**2))

    np.testing.assert_allclose(fourier_crop(blob(64, 6.0), 32), blob(32, 3.0), atol=1e-5)


def test_fourier_crop_keeps_the_rotation_centre():
    n, box = 64, 32
    img = np.zeros((n, n))
    img[n // 2, n // 2] = 1.0
    out = fourier_crop(img, box)
    assert np.unravel_index(np.argmax(out), out.shape) == (box // 2, box // 2)


@pytest.mark.parametrize("box, msg", [(128, "larger"), (31, "odd"), (1, "at least")])
def test_fourier_crop_refuses_bad_box(box, msg):
    with pytest.raises(CryovaeError, match=msg):
        fourier_crop(np.zeros((1, 64, 64)), box)


def test_background_normalisation_uses_only_pixels_outside_the_circle():
    box = 32
    rng = np.random.default_rng(1)
    img = rng.normal(5.0, 2.0, (3, box, box))
    r = np.hypot(*np.meshgrid(np.arange(box) - box // 2, np.arange(box) - box // 2, indexing="ij"))
    img[:, r <= 10] += 50.0  # a bright particle must not bias the background statistics
    out = normalize_images(img, "background", bg_radius=12)
    bg = out[:, r > 12]
    np.testing.assert_allclose(bg.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(bg.std(axis=1), 1.0, atol=1e-5)
    whole = normalize_images(img, "image")
    np.testing.assert_allclose(whole.reshape(3, -1).mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(whole.reshape(3, -1).std(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(normalize_images(img, "none"), img.astype(np.float32))


def test_mask_invert_and_pipeline():
    mask = soft_circular_mask(32, radius=10, soft=4)
    assert mask[16, 16] == 1.0 and mask[16, 16 + 10] == 1.0 and mask[16, 16 + 14] == 0.0
    assert 0 < mask[16, 16 + 12] < 1
    img = np.random.default_rng(2).normal(size=(2, 64, 64)).astype(np.float32)
    plain = preprocess_images(img, PreprocessConfig(box=32, normalize="none"))
    inverted = preprocess_images(img, PreprocessConfig(box=32, normalize="none", invert=True))
    np.testing.assert_allclose(inverted, -plain, atol=1e-6)
    masked = preprocess_images(img, PreprocessConfig(box=32, normalize="none", mask_radius=10, mask_soft=4))
    np.testing.assert_allclose(masked, plain * mask, atol=1e-6)
    assert preprocess_images(img, PreprocessConfig()).shape == (2, 64, 64)


def test_nan_is_refused_naming_source_and_particle():
    img = np.zeros((3, 8, 8), np.float32)
    img[1, 2, 2] = np.nan
    with pytest.raises(CryovaeError, match=r"stack.mrcs: particle 12 has NaN"):
        preprocess_images(img, PreprocessConfig(), source="stack.mrcs", first_index=10)


def test_config_is_frozen_and_validated():
    cfg = PreprocessConfig(box=40)
    with pytest.raises(AttributeError):
        cfg.box = 20  # type: ignore[misc]
    with pytest.raises(CryovaeError, match="normalize"):
        PreprocessConfig(normalize="whatever")
    assert PreprocessConfig(**cfg.to_dict()) == cfg
