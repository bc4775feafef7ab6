"""The CTF follows RELION's formula: value at zero frequency, zeros, astigmatism, application."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cryovae.models import apply_ctf, compute_ctf, ctf_parameters
from cryovae.models.ctf import electron_wavelength


def _params(du=15000.0, dv=15000.0, ang=0.0, kv=300.0, cs=2.7, w=0.1, phase=0.0):
    return torch.tensor([[du, dv, ang, kv, cs, w, phase]], dtype=torch.float32)


def test_wavelength_at_300_kv():
    assert float(electron_wavelength(torch.tensor(300.0, dtype=torch.float64))) == pytest.approx(0.019687, abs=2e-6)


def test_zero_frequency_is_the_amplitude_contrast_and_phase_plate_shifts_it():
    ctf = compute_ctf(_params(w=0.07), 64, 1.5)
    assert float(ctf[0, 0, 0]) == pytest.approx(0.07, abs=1e-6)
    ctf_pp = compute_ctf(_params(w=0.0, phase=90.0), 64, 1.5)
    assert float(ctf_pp[0, 0, 0]) == pytest.approx(1.0, abs=1e-6)  # -sin(-pi/2)


def test_first_zero_matches_the_closed_form_without_cs():
    """With Cs = 0 and w = 0: CTF = sin(pi lambda dz s^2), first zero at s = 1/sqrt(lambda dz)."""
    box, apix, dz = 256, 1.0, 20000.0
    ctf = compute_ctf(_params(du=dz, dv=dz, cs=0.0, w=0.0), box, apix)[0, 0].double().numpy()
    s = np.fft.rfftfreq(box, d=apix)
    lam = float(electron_wavelength(torch.tensor(300.0, dtype=torch.float64)))
    expected = np.sin(math.pi * lam * dz * s**2)
    np.testing.assert_allclose(ctf, expected, atol=1e-5)
    assert ctf[1] > 0  # positive at low frequency for underfocus (RELION's sign)


def test_astigmatism_angle_rotates_the_pattern():
    """Defocus U along the astigmatism angle: along that direction the CTF equals the isotropic
    CTF of defocus U, perpendicular to it that of defocus V."""
    box, apix = 128, 2.0
    du, dv = 20000.0, 14000.0
    for ang in (0.0, 90.0):
        ctf = compute_ctf(_params(du=du, dv=dv, ang=ang), box, apix)[0].numpy()
        iso_u = compute_ctf(_params(du=du, dv=du), box, apix)[0].numpy()
        iso_v = compute_ctf(_params(du=dv, dv=dv), box, apix)[0].numpy()
        along_x, along_y = ctf[0, :], ctf[:box // 2, 0]
        if ang == 0.0:
            np.testing.assert_allclose(along_x, iso_u[0, :], atol=1e-5)
            np.testing.assert_allclose(along_y, iso_v[:box // 2, 0], atol=1e-5)
        else:
            np.testing.assert_allclose(along_x, iso_v[0, :], atol=1e-5)
            np.testing.assert_allclose(along_y, iso_u[:box // 2, 0], atol=1e-5)


def test_apply_ctf_is_a_fourier_filter():
    img = torch.randn(2, 32, 32)
    ones = torch.ones(2, 32, 17)
    torch.testing.assert_close(apply_ctf(img, ones), img, atol=1e-5, rtol=0)
    ctf = compute_ctf(_params().repeat(2, 1), 32, 3.0)
    out = apply_ctf(img, ctf)
    np.testing.assert_allclose(np.fft.rfft2(out.numpy()), np.fft.rfft2(img.numpy()) * ctf.numpy(), atol=1e-3)


def test_ctf_parameters_from_a_star_table():
    table = pd.DataFrame({"rlnDefocusU": [1.0e4], "rlnDefocusV": [0.9e4], "rlnDefocusAngle": [10.0],
                          "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    p = ctf_parameters(table)
    assert p.shape == (1, 7) and p[0, 6] == 0.0
    with pytest.raises(KeyError, match="rlnVoltage"):
        ctf_parameters(table.drop(columns="rlnVoltage"))
