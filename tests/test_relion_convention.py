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
from _posed import ncc, posed_particles

from cryovae.geometry import apply_relion_alignment
from cryovae.inference import Latents

io = pytest.importorskip("cryovae.io")

BOX = 32  # even: RELION's centre N//2 without a half-pixel term
APIX = 2.5


@pytest.fixture(scope="module")
def particles():
    """Particles drawn by a (randomly initialised, smooth) generator at known poses, and its template."""
    return posed_particles(BOX, APIX)


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
    from cryovae.inference import write_star

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
        assert ncc(aligned * win, template * win) > 0.99, i
        # and the wrong sign of psi does not
        wrong = apply_relion_alignment(imgs[i], -psi[i], origin_px[i])
        assert ncc(wrong * win, template * win) < ncc(aligned * win, template * win) - 0.05
