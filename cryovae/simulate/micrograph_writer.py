"""Write a simulated micrograph set and its matching training particle set.

Layout of ``OUT`` (every file written atomically)::

    micrographs/mic_000.mrc ...   the micrographs (2D MRC, voxel size in the header)
    micrographs.star              RELION 3.1 micrograph star: data_optics (pixel size, voltage, Cs,
                                  amplitude contrast) + data_micrographs (rlnMicrographName relative
                                  to OUT; rlnDefocusU/V/Angle with the CTF)
    truth/mic_000.star ...        RELION coordinate stars of the TRUE particles only: rlnCoordinateX/Y
                                  (micrograph pixels), rlnAnglePsi (RELION), cryovaeConformation1[, 2]
    truth/autopick.star           RELION 4 index of the truth stars (paths relative to truth/)
    junk/mic_000.star ...         where the ice blobs are (rlnCoordinateX/Y, cryovaeJunkRadius px,
                                  cryovaeJunkAmplitude); not particles, never in truth/
    particles/                    the matching training set (cryovae simulate hinge/arms at the same
                                  pixel size, box, SNR, CTF range and molecule): particles.star/.mrcs,
                                  truth.csv, simulation.json
    simulation.json               every option, particle_diameter_px, noise_sigma, signal_variance,
                                  scale, and per micrograph what is on it (particles, junk, carbon
                                  edge, gradient, defocus)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cryovae import __version__
from cryovae.io import (
    atomic_path,
    write_autopick_index,
    write_coordinates,
    write_micrograph,
    write_star,
)
from cryovae.simulate.config import SimulationConfig
from cryovae.simulate.micrographs import (
    MicrographConfig,
    MicrographLayout,
    MicrographPlan,
    plan_micrographs,
    render_micrograph,
)
from cryovae.simulate.simulator import simulate_arms, simulate_hinge
from cryovae.simulate.writer import write_simulation

log = logging.getLogger(__name__)

MICROGRAPHS = "micrographs"
MICROGRAPH_STAR = "micrographs.star"
TRUTH = "truth"
JUNK = "junk"
PARTICLES = "particles"
SETTINGS = "simulation.json"
INDEX = "autopick.star"


def training_config(config: MicrographConfig, n_train: int, shift_sigma_px: float) -> SimulationConfig:
    """The particle simulator's options matching ``config`` (pixel size, box, SNR, CTF, molecule)."""
    return SimulationConfig(
        n=n_train, box=config.box, pixel_size_A=config.pixel_size_A, rotation="uniform",
        shift_sigma_px=shift_sigma_px, snr=config.snr, ctf=config.ctf, defocus_min_A=config.defocus_min_A,
        defocus_max_A=config.defocus_max_A, astigmatism_A=config.astigmatism_A, voltage_kv=config.voltage_kv,
        cs_mm=config.cs_mm, amplitude_contrast=config.amplitude_contrast, hinge_range_deg=config.hinge_range_deg,
        atom_sigma_A=config.atom_sigma_A, seed=config.seed)


def truth_table(layout: MicrographLayout) -> pd.DataFrame:
    """The RELION coordinate table of a micrograph's true particles."""
    p = layout.particles
    table = pd.DataFrame({"rlnCoordinateX": p["x_px"].to_numpy(), "rlnCoordinateY": p["y_px"].to_numpy(),
                          "rlnAnglePsi": p["psi_deg"].to_numpy()})
    for col in p.columns:
        if col.startswith("conformation_"):
            table[f"cryovaeConformation{col.split('_')[1]}"] = p[col].to_numpy()
    return table


def junk_table(layout: MicrographLayout) -> pd.DataFrame:
    j = layout.junk
    return pd.DataFrame({"rlnCoordinateX": j["x_px"].to_numpy(), "rlnCoordinateY": j["y_px"].to_numpy(),
                         "cryovaeJunkRadius": j["radius_px"].to_numpy(),
                         "cryovaeJunkAmplitude": j["amplitude"].to_numpy()})


def micrograph_star_tables(plan: MicrographPlan) -> dict[str, pd.DataFrame]:
    """``{"optics": ..., "micrographs": ...}`` of ``micrographs.star``."""
    cfg = plan.config
    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
        "rlnMicrographOriginalPixelSize": [float(cfg.pixel_size_A)], "rlnVoltage": [float(cfg.voltage_kv)],
        "rlnSphericalAberration": [float(cfg.cs_mm)], "rlnAmplitudeContrast": [float(cfg.amplitude_contrast)],
        "rlnMicrographPixelSize": [float(cfg.pixel_size_A)]})
    mics = pd.DataFrame({"rlnMicrographName": [f"{MICROGRAPHS}/{lay.name}.mrc" for lay in plan.layouts],
                         "rlnOpticsGroup": [1] * len(plan.layouts)})
    if cfg.ctf:
        mics["rlnDefocusU"] = [lay.defocus[0] for lay in plan.layouts if lay.defocus]
        mics["rlnDefocusV"] = [lay.defocus[1] for lay in plan.layouts if lay.defocus]
        mics["rlnDefocusAngle"] = [lay.defocus[2] for lay in plan.layouts if lay.defocus]
        mics["rlnPhaseShift"] = 0.0
    return {"optics": optics, "micrographs": mics}


def write_micrograph_simulation(config: MicrographConfig, outdir: str | Path, n_train: int = 2000,
                                shift_sigma_px: float = 1.5, progress: bool = True) -> dict[str, Path]:
    """Simulate and write the micrographs, their truth and the matching training set.

    Parameters
    ----------
    config : the micrographs' options.
    outdir : output folder (created; files in it are replaced).
    n_train : particles in the training set (``OUT/particles``); 0 writes none.
    shift_sigma_px : the training set's centre offset sigma, pixels (as in issue #13's sets).
    progress : tqdm bars.

    Returns
    -------
    dict
        ``{"micrographs": folder, "star": micrographs.star, "truth": truth/autopick.star, "junk":
        folder, "particles": particles/particles.star (when n_train > 0), "settings":
        simulation.json}``. Memory: one micrograph (and its FFT) at a time.
    """
    out = Path(outdir)
    for sub in (MICROGRAPHS, TRUTH, JUNK):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plan = plan_micrographs(config)
    for k in tqdm(range(len(plan.layouts)), desc="micrographs", unit="micrograph", disable=not progress):
        mic = render_micrograph(plan, k)
        write_micrograph(out / MICROGRAPHS / f"{mic.name}.mrc", mic.image, config.pixel_size_A)
        write_coordinates(out / TRUTH / f"{mic.name}.star", truth_table(mic.layout))
        write_coordinates(out / JUNK / f"{mic.name}.star", junk_table(mic.layout))
    write_star(out / MICROGRAPH_STAR, micrograph_star_tables(plan))
    index = write_autopick_index(out / TRUTH / INDEX, [(f"../{MICROGRAPHS}/{lay.name}.mrc", f"{lay.name}.star")
                                                      for lay in plan.layouts])
    paths = {"micrographs": out / MICROGRAPHS, "star": out / MICROGRAPH_STAR, "truth": index, "junk": out / JUNK}
    train = None
    if n_train > 0:
        tcfg = training_config(config, n_train, shift_sigma_px)
        sim = (simulate_hinge if config.molecule == "hinge" else simulate_arms)(tcfg, progress=progress)
        paths["particles"] = write_simulation(sim, out / PARTICLES)["star"]
        train = {"n": n_train, "shift_sigma_px": shift_sigma_px, "noise_sigma": sim.noise_sigma,
                 "signal_variance": sim.signal_variance, "folder": PARTICLES}
    settings = {"cryovae_version": __version__, "kind": "micrographs", **config.to_dict(),
                "particle_diameter_px": plan.particle_diameter_px, "particle_box_px": config.box,
                "noise_sigma": plan.noise_sigma, "signal_variance": plan.signal_variance, "scale": plan.scale,
                "particle_density": plan.particle_density, "training_set": train,
                "micrograph_list": [lay.describe() for lay in plan.layouts]}
    paths["settings"] = out / SETTINGS
    with atomic_path(paths["settings"]) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=2) + "\n")
    log.info("wrote %d micrographs, %d particles, to %s", len(plan.layouts),
             sum(len(lay.particles) for lay in plan.layouts), out)
    return paths
