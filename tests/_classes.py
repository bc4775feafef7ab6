"""A small simulated set of discrete 2D classes for the MCE-VAE tests, built here from
cryovae.simulate's molecules (not ``cryovae simulate classes``).

Three classes: the hinge molecule closed (conformation 0) and open (conformation 1, the arm
turned by ``HINGE_RANGE_DEG``), and the two-arm molecule; uniform in-plane rotation, small
shifts, Gaussian noise at ``SNR``. ``write_class_set(folder)`` writes particles.mrcs, a
RELION 3.1 particles.star and truth.csv (``class``, 1-based, ``psi_deg``, origins) and returns
the true classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.geometry import internal_to_relion
from cryovae.io import write_stack, write_star
from cryovae.simulate import arms_molecule, hinge_molecule
from cryovae.simulate.render import render_atoms

BOX = 24
APIX = 6.0
HINGE_RANGE_DEG = 90.0
SNR = 1.0
N_CLASSES = 3


def class_templates() -> list[np.ndarray]:
    """(m, 3) Å atom coordinates of each class."""
    hinge = hinge_molecule(HINGE_RANGE_DEG)
    arms = arms_molecule(40.0)
    return [hinge.coordinates(np.array([[0.0]]))[0], hinge.coordinates(np.array([[1.0]]))[0],
            arms.coordinates(np.array([[0.5, 0.5]]))[0]]


def render_classes(n: int, seed: int = 0, snr: float | None = SNR, shift_px: float = 0.7
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, BOX, BOX) float32, classes (n,) 1-based, theta (n,) radians, centre (n, 2) px)."""
    rng = np.random.default_rng(seed)
    templates = class_templates()
    classes = rng.integers(0, len(templates), n)
    theta = rng.uniform(-np.pi, np.pi, n)
    center = rng.normal(0.0, shift_px, (n, 2))
    images = np.empty((n, BOX, BOX), np.float32)
    for k, atoms in enumerate(templates):
        sel = np.flatnonzero(classes == k)
        if len(sel):
            images[sel] = render_atoms(np.repeat(atoms[None], len(sel), 0), theta[sel], center[sel], BOX, APIX, 5.0)
    images /= images.std()
    if snr is not None:
        sigma = np.sqrt(np.mean(images.reshape(n, -1).var(1)) / snr)
        images += rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return images, classes + 1, theta, center


def write_class_set(folder: Path, n: int = 300, seed: int = 0, snr: float | None = SNR) -> np.ndarray:
    """Write the set into ``folder``; returns the (n,) 1-based true classes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, classes, theta, center = render_classes(n, seed, snr)
    write_stack(folder / "particles.mrcs", images, APIX)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [APIX], "rlnImageSize": [BOX], "rlnImageDimensionality": [2],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    particles = pd.DataFrame({"rlnImageName": [f"{k:06d}@particles.mrcs" for k in range(1, n + 1)],
                              "rlnOpticsGroup": [1] * n})
    write_star(folder / "particles.star", {"optics": optics, "particles": particles})
    psi, origin = internal_to_relion(theta, center)
    pd.DataFrame({"class": classes, "psi_deg": psi, "origin_x_A": origin[:, 0] * APIX,
                  "origin_y_A": origin[:, 1] * APIX}).to_csv(folder / "truth.csv", index=False)
    return classes


#: ``cryovae train`` options of the shared class run (measured: see tests/test_mce_train.py)
TRAIN_ARGS = ["--model", "mce", "--classes", str(N_CLASSES), "--box", str(BOX), "--epochs", "25", "--lr", "0.002",
              "--batch-size", "32", "--gen-hidden", "64", "--gen-layers", "2", "--fourier-features", "16",
              "--enc-channels", "16", "--head-hidden", "64", "--refine-steps", "0", "--device", "cpu",
              "--seed", "0"]
N_PARTICLES = 300


def class_run_dir(base: Path) -> tuple[Path, Path, np.ndarray]:
    """(run folder, particles.star, true 1-based classes) of an MCE-VAE run trained with
    :data:`TRAIN_ARGS` on :func:`write_class_set`'s particles under ``base``, once per ``base``
    (a finished run found there is reused). Use it through a session-scoped fixture."""
    from click.testing import CliRunner

    from cryovae.cli.main import cli

    base = Path(base)
    run, sim = base / "run", base / "sim"
    if (run / "classes.star").exists() and (sim / "truth.csv").exists():
        return run, sim / "particles.star", pd.read_csv(sim / "truth.csv")["class"].to_numpy()
    truth = write_class_set(sim, n=N_PARTICLES, seed=0)
    res = CliRunner().invoke(cli, ["train", str(sim / "particles.star"), "-o", str(run), *TRAIN_ARGS],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run, sim / "particles.star", truth
