"""Simulate particles with known conformation and pose: hinge, two arms, classes, or a user's map.

KIND is ``hinge`` (two domains, one degree of freedom, like spatial-VAE's 5HDB set),
``arms`` (a core with two independent arms, like CODH/ACS), ``classes`` (--classes K discrete
classes for 2D classification: 1 hinge closed, 2 hinge open, 3 two-arm molecule, 4 trilobe,
5 hook, 6 two-arm molecule bent; the first K, in --shares) or ``volume`` (project the map
given with ``--volume``; one conformation) or ``micrographs`` (see below). Writes OUT/particles.mrcs, OUT/particles.star
(RELION 3.1), OUT/truth.csv (conformation or class, psi, origin in RELION's convention,
defocus), OUT/simulation.json and, for classes, OUT/classes.json (what each class is).

Example: cryovae simulate hinge -o sim_hinge --n 2000 --snr 0.1 --seed 1

Example: cryovae simulate classes -o sim_classes --classes 4 --shares 0.4,0.3,0.2,0.1 --snr 0.1

KIND micrographs: --n-micrographs micrographs of --size pixels with the hinge or two-arm
molecule (--molecule) at known centres, uniform rotations and conformations, --packing
separated (centres >= 1.1 diameters apart), touching (1.0) or overlapping (0.5), --junk ice
blobs and a carbon edge (--no-carbon), a background gradient, noise at --snr (the particle
simulator's definition) and optionally a CTF (--ctf, defocus 1-3 um by default). Writes
OUT/micrographs/mic_000.mrc ..., OUT/micrographs.star, OUT/truth/mic_000.star ... with
OUT/truth/autopick.star (the true particles only), OUT/junk/, OUT/particles/ (a matching
training set of --n-train particles, --shift-sigma 1.5 px by default) and OUT/simulation.json.

Example: cryovae simulate micrographs -o sim_mics --snr 0.1 --junk 10 --seed 1
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

from cryovae.errors import CryovaeError


@click.command("simulate", help=__doc__)
@click.argument("kind", type=click.Choice(["hinge", "arms", "classes", "volume", "micrographs"]))
@click.option("-o", "--out", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (created).")
@click.option("--n", "n", default=2000, show_default=True, type=int, help="Number of particles.")
@click.option("--box", default=40, show_default=True, type=int, help="Box size, pixels.")
@click.option("--apix", default=4.0, show_default=True, type=float, help="Pixel size, Å.")
@click.option("--snr", default="0.1", show_default=True,
              help="Signal variance over the box / noise variance ('inf' for no noise).")
@click.option("--rotation", default="uniform", show_default=True, type=click.Choice(["uniform", "normal"]),
              help="In-plane rotation distribution.")
@click.option("--rotation-sigma", default=30.0, show_default=True, type=float,
              help="Sigma of --rotation normal, degrees.")
@click.option("--shift-sigma", default=0.0, show_default=True, type=float,
              help="Sigma of the centre offset per axis, PIXELS.")
@click.option("--ctf/--no-ctf", default=False, show_default=True, help="Apply a CTF (RELION's formula).")
@click.option("--defocus-min", default=10000.0, show_default=True, type=float, help="Minimum defocus, Å.")
@click.option("--defocus-max", default=25000.0, show_default=True, type=float, help="Maximum defocus, Å.")
@click.option("--astigmatism", default=500.0, show_default=True, type=float,
              help="Maximum defocus U - V, Å.")
@click.option("--voltage", default=300.0, show_default=True, type=float, help="Voltage, kV.")
@click.option("--cs", default=2.7, show_default=True, type=float, help="Spherical aberration, mm.")
@click.option("--amp-contrast", default=0.1, show_default=True, type=float, help="Amplitude contrast.")
@click.option("--hinge-range", default=40.0, show_default=True, type=float,
              help="Turn of an arm from conformation 0 to 1, degrees.")
@click.option("--states", default=None, type=int,
              help="Discrete conformations (e.g. 20 like 5HDB); default continuous.")
@click.option("--tilt-sigma", default=0.0, show_default=True, type=float,
              help="Sigma of a random out-of-plane tilt, degrees.")
@click.option("--volume", "volume_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="3D map (.mrc) to project, with KIND volume.")
@click.option("--volume-apix", default=None, type=float,
              help="Voxel size of --volume in Å (default: from the map's header).")
@click.option("--view", nargs=3, type=float, default=None,
              help="ZYZ Euler angles (degrees) of the map's viewing direction, with KIND volume.")
@click.option("--classes", "n_classes", default=None, type=int,
              help="With KIND classes: number of classes, 2-6 [4].")
@click.option("--shares", default=None,
              help="With KIND classes: fraction of particles per class, comma-separated, summing to 1 "
                   "(e.g. 0.4,0.3,0.2,0.1) [equal].")
@click.option("--n-micrographs", default=None, type=int, help="With KIND micrographs: how many [4].")
@click.option("--size", default=None, help="With KIND micrographs: micrograph size, N or WxH pixels [1024].")
@click.option("--molecule", default=None, type=click.Choice(["hinge", "arms"]),
              help="With KIND micrographs: the particle [hinge].")
@click.option("--packing", default=None, type=click.Choice(["separated", "touching", "overlapping"]),
              help="With KIND micrographs: minimum centre distance 1.1, 1.0 or 0.5 diameters [separated].")
@click.option("--particles", default=None, type=int,
              help="With KIND micrographs: particles per micrograph [as many as the packing's density allows].")
@click.option("--junk", default=None, type=int, help="With KIND micrographs: ice blobs per micrograph [10].")
@click.option("--carbon/--no-carbon", default=None, help="With KIND micrographs: a carbon edge [on].")
@click.option("--n-train", default=None, type=int,
              help="With KIND micrographs: particles of the matching training set (0: none) [2000].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
def command(kind, outdir, n, box, apix, snr, rotation, rotation_sigma, shift_sigma, ctf, defocus_min,
            defocus_max, astigmatism, voltage, cs, amp_contrast, hinge_range, states, tilt_sigma,
            volume_path, volume_apix, view, n_classes, shares, n_micrographs, size, molecule, packing, particles,
            junk, carbon, n_train, seed) -> None:
    from cryovae.simulate import (
        SimulationConfig,
        simulate_arms,
        simulate_classes,
        simulate_hinge,
        simulate_volume,
        write_simulation,
    )

    try:
        snr_value = float(snr)
    except ValueError:
        raise CryovaeError(f"--snr must be a number or 'inf', got {snr!r}") from None
    micrograph_options = {"--n-micrographs": n_micrographs, "--size": size, "--molecule": molecule,
                          "--packing": packing, "--particles": particles, "--junk": junk, "--carbon": carbon,
                          "--n-train": n_train}
    if kind == "micrographs":
        given = click.get_current_context().get_parameter_source
        for name, value in {"--n": "n", "--rotation": "rotation", "--states": "states", "--tilt-sigma": "tilt_sigma",
                            "--volume": "volume_path", "--view": "view", "--classes": "n_classes",
                            "--shares": "shares"}.items():
            if given(value) == click.core.ParameterSource.COMMANDLINE:
                raise CryovaeError(f"{name} does not go with KIND micrographs (see cryovae simulate --help)")
        _micrographs(outdir, box=box, apix=apix, snr=None if math.isinf(snr_value) else snr_value, ctf=ctf,
                     defocus_min=defocus_min,
                     defocus_max=defocus_max if given("defocus_max") == click.core.ParameterSource.COMMANDLINE
                     else 30000.0, astigmatism=astigmatism, voltage=voltage, cs=cs, amp_contrast=amp_contrast,
                     hinge_range=hinge_range,
                     shift_sigma=shift_sigma if given("shift_sigma") == click.core.ParameterSource.COMMANDLINE
                     else 1.5, n_micrographs=n_micrographs, size=size, molecule=molecule, packing=packing,
                     particles=particles, junk=junk, carbon=carbon, n_train=n_train, seed=seed)
        return
    for name, value in micrograph_options.items():
        if value is not None:
            raise CryovaeError(f"{name} goes with KIND micrographs (cryovae simulate micrographs {name} ...)")
    if kind != "classes" and (n_classes is not None or shares is not None):
        raise CryovaeError("--classes/--shares go with KIND classes (cryovae simulate classes --classes 4)")
    if kind == "classes" and states is not None:
        raise CryovaeError("--states does not go with KIND classes (each class is one fixed conformation)")
    share_values = _parse_shares(shares)
    if n_classes is None:
        n_classes = len(share_values) if share_values is not None else 4
    config = SimulationConfig(
        n=n, box=box, pixel_size_A=apix, rotation=rotation, rotation_sigma_deg=rotation_sigma,
        shift_sigma_px=shift_sigma, snr=None if math.isinf(snr_value) else snr_value, ctf=ctf,
        defocus_min_A=defocus_min, defocus_max_A=defocus_max, astigmatism_A=astigmatism,
        voltage_kv=voltage, cs_mm=cs, amplitude_contrast=amp_contrast, hinge_range_deg=hinge_range,
        n_states=states, tilt_sigma_deg=tilt_sigma, n_classes=n_classes, class_shares=share_values, seed=seed)
    if kind == "volume":
        if volume_path is None:
            raise CryovaeError("KIND volume needs --volume MAP.mrc")
        volume, vol_apix = _read_map(volume_path, volume_apix)
        sim = simulate_volume(volume, vol_apix, config, view_euler_deg=tuple(view) if view else None)
    else:
        if volume_path is not None or view:
            raise CryovaeError("--volume/--view go with KIND volume (cryovae simulate volume --volume MAP.mrc)")
        sim = {"hinge": simulate_hinge, "arms": simulate_arms, "classes": simulate_classes}[kind](config)
    paths = write_simulation(sim, outdir)
    click.echo(f"{len(sim)} {kind} particles, box {box}, {apix:g} Å/px, "
               f"SNR {'inf' if sim.noise_sigma == 0 else f'{config.snr:g}'}"
               f"{', CTF' if ctf else ''}"
               + (f", {n_classes} classes of {', '.join(str(c) for c in config.class_counts())} particles"
                  if kind == "classes" else ""))
    for name, path in paths.items():
        click.echo(f"  {name:8s} {path}")


def _micrographs(outdir: Path, *, box, apix, snr, ctf, defocus_min, defocus_max, astigmatism, voltage, cs,
                 amp_contrast, hinge_range, shift_sigma, n_micrographs, size, molecule, packing, particles, junk,
                 carbon, n_train, seed) -> None:
    from cryovae.simulate import MicrographConfig, write_micrograph_simulation

    width, height = _parse_size(size)
    config = MicrographConfig(
        n_micrographs=4 if n_micrographs is None else n_micrographs, width=width, height=height, pixel_size_A=apix,
        box=box, molecule=molecule or "hinge", packing=packing or "separated", particles=particles,
        junk=10 if junk is None else junk, carbon=True if carbon is None else carbon, snr=snr, ctf=ctf,
        defocus_min_A=defocus_min, defocus_max_A=defocus_max, astigmatism_A=astigmatism, voltage_kv=voltage,
        cs_mm=cs, amplitude_contrast=amp_contrast, hinge_range_deg=hinge_range, seed=seed)
    n_train = 2000 if n_train is None else n_train
    if n_train < 0:
        raise CryovaeError(f"--n-train must be >= 0, got {n_train}")
    paths = write_micrograph_simulation(config, outdir, n_train=n_train, shift_sigma_px=shift_sigma)
    click.echo(f"{config.n_micrographs} micrographs of {width} x {height} px, {config.molecule}, {config.packing}, "
               f"{apix:g} Å/px, SNR {'inf' if snr is None else f'{snr:g}'}{', CTF' if ctf else ''}")
    for name, path in paths.items():
        click.echo(f"  {name:11s} {path}")


def _parse_size(text: str | None) -> tuple[int, int]:
    """``"1024"`` -> (1024, 1024); ``"2048x1024"`` -> (2048, 1024) (width x height)."""
    if text is None:
        return 1024, 1024
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise CryovaeError(f"--size must be N or WxH in pixels (e.g. 1024 or 2048x1024), got {text!r}")
    return (values[0], values[-1])


def _parse_shares(text: str | None) -> tuple[float, ...] | None:
    """``"0.4,0.3,0.2,0.1"`` -> (0.4, 0.3, 0.2, 0.1); a one-line error when it is not numbers."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CryovaeError(f"--shares must be comma-separated numbers (e.g. 0.4,0.3,0.2,0.1), got {text!r}") from None


def _read_map(path: Path, apix: float | None):
    """(D, D, D) map and its voxel size through cryovae.io (an .mrc read as a stack of z-slices)."""
    if not path.is_file():
        raise CryovaeError(f"{path}: no such file")
    from cryovae.io import read_particles

    stack = read_particles(path, apix=apix)
    if stack.pixel_sizes is None:
        raise CryovaeError(f"{path}: voxel size unknown (the header has none); pass --volume-apix")
    volume = stack.images(slice(0, len(stack)), check=False)
    if not np.isfinite(volume).all():
        raise CryovaeError(f"{path}: the map has NaN or infinite voxels")
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise CryovaeError(f"{path}: not a cubic 3D map (shape {tuple(volume.shape)})")
    return volume, float(stack.pixel_size)
