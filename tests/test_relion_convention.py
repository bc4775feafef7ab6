"""The star cryovae writes follows RELION's convention (../shared/CONVENTIONS.md).

A model decodes ``particle(p) = template(R(theta)(p - c))``; its pose goes to the star through
Latents -> write_particles_star. Reading back only psi and the origin and applying RELION's
``--apply_transformation`` (cryovae.geometry.apply_relion_alignment) to the particle must give
the decoded template (theta = 0, c = 0). Checked for a RELION 3.1 star (origins in Å) and a
pre-3.1 star (origins in pixels of the input).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryovae.geometry import apply_relion_alignment
from cryovae.inference import Latents
from cryovae.models import ModelConfig, build_model

io = pytest.importorskip("cryovae.io")

BOX = 32  # even: RELION's centre N//2 without a half-pixel term
APIX = 2.5


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def particles():
    """Particles drawn by a (randomly initialised, smooth) generator at known poses, and its template."""
    torch.manual_seed(0)
    cfg = ModelConfig.for_model("target", box=BOX, zdim=1, group="p4", enc_fields=2, enc_kernel=3,
                                gen_hidden=64, fourier_features=32, fourier_scale=1.5, pixel_size=APIX)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    n = 6
    theta = rng.uniform(-np.pi, np.pi, n)
    center = rng.uniform(-3, 3, (n, 2))
    z = torch.zeros(n, 1)
    with torch.no_grad():
        imgs = model.decode(z, torch.tensor(theta, dtype=torch.float32),
                            torch.tensor(center, dtype=torch.float32))[0].numpy()
        template = model.decode(z[:1], torch.zeros(1), torch.zeros(1, 2))[0][0].numpy()
    # fade to zero at the border so interpolation outside the box does not matter
    r = np.hypot(*np.meshgrid(np.arange(BOX) - BOX // 2, np.arange(BOX) - BOX // 2))
    win = np.clip((BOX // 2 - 1 - r) / 4, 0, 1).astype(np.float32)
    return imgs, template, theta, center, win


def _write_input(tmp_path, imgs, relion31: bool):
    io.write_stack(tmp_path / "stack.mrcs", imgs, APIX)
    names = [f"{i + 1:06d}@stack.mrcs" for i in range(len(imgs))]
    if relion31:
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                               "rlnImagePixelSize": [APIX], "rlnImageSize": [BOX],
                               "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                               "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
        parts = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1] * len(imgs)})
        io.write_star(tmp_path / "in.star", {"optics": optics, "particles": parts})
    else:
        parts = pd.DataFrame({"rlnImageName": names, "rlnDetectorPixelSize": [APIX] * len(imgs),
                              "rlnMagnification": [10000.0] * len(imgs)})
        io.write_star(tmp_path / "in.star", {"images": parts})
    return tmp_path / "in.star"


@pytest.mark.parametrize("relion31", [True, False])
def test_star_pose_aligns_particles_onto_the_decoded_template(tmp_path, particles, relion31):
    from cryovae.training.run import write_star

    imgs, template, theta, center, win = particles
    star_in = _write_input(tmp_path, imgs, relion31)
    stack = io.read_particles(star_in)
    lat = Latents.from_pose(np.zeros((len(theta), 1)), np.ones((len(theta), 1)), theta, center, APIX)
    write_star(stack, lat, tmp_path / "out.star")

    blocks = starfile.read(tmp_path / "out.star", always_dict=True)
    df = blocks["particles"] if "particles" in blocks else next(iter(blocks.values()))
    psi = df["rlnAnglePsi"].to_numpy(float)
    if relion31:
        origin_px = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(float) / APIX
    else:
        origin_px = df[["rlnOriginX", "rlnOriginY"]].to_numpy(float)
    assert "cryovaeZ1" in df.columns
    for i in range(len(imgs)):
        aligned = apply_relion_alignment(imgs[i], psi[i], origin_px[i])
        assert _ncc(aligned * win, template * win) > 0.99, i
        # and the wrong sign of psi does not
        wrong = apply_relion_alignment(imgs[i], -psi[i], origin_px[i])
        assert _ncc(wrong * win, template * win) < _ncc(aligned * win, template * win) - 0.05
