"""Write a simulated dataset: ``particles.mrcs``, ``particles.star`` (RELION 3.1), ``truth.csv``.

``particles.star`` has a ``data_optics`` block (one optics group with pixel size, box, voltage,
Cs, amplitude contrast) and a ``data_particles`` block with ``rlnImageName`` = ``k@particles.mrcs``
(k 1-based), ``rlnOpticsGroup`` and, when the CTF is on, ``rlnDefocusU/V``, ``rlnDefocusAngle``,
``rlnPhaseShift``. The true poses are *not* in the star (a model must not see them); they are in
``truth.csv``, one row per particle in star order (see :class:`SimulatedParticles`).
``simulation.json`` records every option. A ``classes`` simulation also writes ``classes.json``:
one entry per class (``class`` 1-based as in truth.csv's ``class`` column, ``name``, ``molecule``,
``conformation``, ``share``, ``count``). All files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cryovae import __version__
from cryovae.simulate.simulator import SimulatedParticles

STACK = "particles.mrcs"
STAR = "particles.star"
TRUTH = "truth.csv"
SETTINGS = "simulation.json"
CLASSES = "classes.json"


def star_tables(sim: SimulatedParticles, stack_name: str = STACK) -> dict[str, pd.DataFrame]:
    """The ``{"optics": ..., "particles": ...}`` tables of the simulation's star file."""
    cfg = sim.config
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnImagePixelSize": [float(cfg.pixel_size_A)],
        "rlnImageSize": [int(cfg.box)],
        "rlnImageDimensionality": [2],
        "rlnVoltage": [float(cfg.voltage_kv)],
        "rlnSphericalAberration": [float(cfg.cs_mm)],
        "rlnAmplitudeContrast": [float(cfg.amplitude_contrast)],
    })
    n = len(sim)
    particles = pd.DataFrame({
        "rlnImageName": [f"{k:06d}@{stack_name}" for k in range(1, n + 1)],
        "rlnOpticsGroup": [1] * n,
    })
    if cfg.ctf:
        particles["rlnDefocusU"] = sim.truth["defocus_u_A"].to_numpy()
        particles["rlnDefocusV"] = sim.truth["defocus_v_A"].to_numpy()
        particles["rlnDefocusAngle"] = sim.truth["defocus_angle_deg"].to_numpy()
        particles["rlnPhaseShift"] = 0.0
    return {"optics": optics, "particles": particles}


def write_simulation(sim: SimulatedParticles, outdir: str | Path) -> dict[str, Path]:
    """Write the stack, star, truth and settings into ``outdir`` (created if needed).

    Returns
    -------
    ``{"stack": ..., "star": ..., "truth": ..., "settings": ...}`` paths (and ``"classes"`` for a
    ``classes`` simulation).
    """
    from cryovae.io import write_stack, write_star
    from cryovae.io.atomic import atomic_path

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"stack": outdir / STACK, "star": outdir / STAR, "truth": outdir / TRUTH,
             "settings": outdir / SETTINGS}
    write_stack(paths["stack"], sim.images, sim.pixel_size)
    write_star(paths["star"], star_tables(sim, STACK))
    with atomic_path(paths["truth"]) as tmp:
        sim.truth.to_csv(tmp, index=False, float_format="%.6f")
    settings = {"cryovae_version": __version__, "kind": sim.kind, **sim.config.to_dict(),
                "noise_sigma": sim.noise_sigma, "signal_variance": sim.signal_variance}
    with atomic_path(paths["settings"]) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=2) + "\n")
    if sim.classes is not None:
        paths["classes"] = outdir / CLASSES
        with atomic_path(paths["classes"]) as tmp:
            Path(tmp).write_text(json.dumps(class_table(sim), indent=2) + "\n")
    return paths


def class_table(sim: SimulatedParticles) -> list[dict]:
    """What ``classes.json`` holds: per class, its number, molecule, conformation, share and count."""
    labels = sim.truth["class"].to_numpy()
    n = len(labels)
    return [{"class": j, **spec.describe(), "count": int((labels == j).sum()),
             "share": float((labels == j).sum() / n)} for j, spec in enumerate(sim.classes or (), start=1)]


def read_truth(path: str | Path) -> pd.DataFrame:
    """Read a ``truth.csv`` written by :func:`write_simulation`.

    Raises
    ------
    InputFileError (one line naming the file) when it is missing, unreadable, empty or lacks
    ``psi_deg``.
    """
    from cryovae.errors import InputFileError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        truth = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a readable CSV ({str(exc).splitlines()[0] if str(exc) else 'empty'})") from None
    if len(truth) == 0:
        raise InputFileError(f"{path}: no rows")
    if "psi_deg" not in truth.columns:
        raise InputFileError(f"{path}: no psi_deg column (not a cryovae simulate truth.csv?)")
    return truth
