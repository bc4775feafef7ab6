"""Simulated micrographs: truth where the particles are, packing, junk, SNR, CTF, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import starfile
from click.testing import CliRunner
from scipy.spatial.distance import pdist

from cryovae.cli.main import cli
from cryovae.geometry import apply_relion_alignment
from cryovae.io import (
    micrograph_paths,
    read_autopick_index,
    read_coordinates,
    read_micrograph,
    read_particles,
)
from cryovae.io.coordinates import box_corner
from cryovae.simulate import MicrographConfig, plan_micrographs, render_micrograph, simulate_hinge
from cryovae.simulate.ctf import apply_ctf, ctf_2d
from cryovae.simulate.micrograph_writer import training_config
from cryovae.simulate.micrographs import render_object
from cryovae.simulate.render import render_atoms


def corr(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def cut(image, x, y, box):
    row0, col0 = box_corner(x, y, box)
    return image[int(row0):int(row0) + box, int(col0):int(col0) + box]


def canonical(plan, conformation):
    """The particle at theta = 0, c = 0, as the particle simulator renders it."""
    cfg = plan.config
    coords = plan.molecule.coordinates(np.atleast_2d(conformation))
    return render_atoms(coords, np.zeros(1), np.zeros((1, 2)), cfg.box, cfg.pixel_size_A, cfg.atom_sigma_A)[0] \
        * np.float32(plan.scale)


def small(**kw):
    base = {"n_micrographs": 1, "width": 360, "height": 300, "junk": 4, "snr": None, "seed": 3}
    return MicrographConfig(**{**base, **kw})


def test_truth_coordinates_and_psi_are_where_the_particles_are():
    plan = plan_micrographs(small(gradient=0.0))
    layout = plan.layouts[0]
    assert len(layout.particles) >= 10
    mic = render_micrograph(plan, 0, keep_clean=True).clean
    box = plan.config.box
    good, wrong_sign, swapped = [], [], []
    for p in layout.particles.itertuples():
        window = cut(mic, p.x_px, p.y_px, box)
        offset = np.array([p.x_px - np.rint(p.x_px), p.y_px - np.rint(p.y_px)])
        ref = canonical(plan, [p.conformation_1])
        good.append(corr(apply_relion_alignment(window, p.psi_deg, -offset), ref))
        wrong_sign.append(corr(apply_relion_alignment(window, -p.psi_deg, -offset), ref))
        if p.x_px < mic.shape[0] - box:  # x and y exchanged: a wrong axis convention
            swapped.append(corr(apply_relion_alignment(cut(mic, p.y_px, p.x_px, box), p.psi_deg, -offset), ref))
    assert min(good) > 0.9, min(good)
    assert np.median(wrong_sign) < 0.7 and np.median(swapped) < 0.7  # the test can tell a wrong convention


def test_particle_matches_the_training_simulators_clean_image():
    cfg = small(junk=0, carbon=False, gradient=0.0, particles=3, width=400, height=400)
    plan = plan_micrographs(cfg)
    sim = simulate_hinge(training_config(cfg, 50, 0.0), progress=False)
    assert plan.scale == pytest.approx(sim.scale, rel=1e-12)
    obj = render_object(plan, plan.layouts[0])
    p = plan.layouts[0].particles.iloc[0]
    offset = np.array([[p.x_px - np.rint(p.x_px), p.y_px - np.rint(p.y_px)]])
    # the particle simulator's image formation, at this particle's conformation, rotation and offset
    coords = sim.molecule.coordinates([[p.conformation_1]])
    expected = render_atoms(coords, [p.theta_rad], offset, cfg.box, cfg.pixel_size_A, cfg.atom_sigma_A)[0] * sim.scale
    window = cut(obj, p.x_px, p.y_px, cfg.box)
    rows, cols = np.mgrid[0:cfg.box, 0:cfg.box] - cfg.box // 2
    inner = rows**2 + cols**2 <= 12**2  # neighbours (>= 1.1 diameters away) reach no closer
    assert np.abs(window - expected)[inner].max() < 1e-4 * expected.max()
    assert corr(window, expected) > 0.99


@pytest.mark.parametrize("packing,factor", [("separated", 1.1), ("touching", 1.0), ("overlapping", 0.5)])
def test_packing_holds_its_minimum_distance(packing, factor):
    plan = plan_micrographs(small(packing=packing, width=500, height=500, junk=0, carbon=False))
    xy = plan.layouts[0].particles[["x_px", "y_px"]].to_numpy()
    d = pdist(xy)
    diameter = plan.particle_diameter_px
    assert d.min() >= factor * diameter - 1e-9
    if packing == "separated":
        assert len(xy) >= 40  # the default density fills the micrograph
    if packing == "overlapping":
        assert (d < diameter).sum() >= 5  # particles do overlap
    box = plan.config.box
    assert (xy >= box // 2).all() and (xy[:, 0] <= 500 - 1 - box // 2).all() and (xy[:, 1] <= 500 - 1 - box // 2).all()


def test_junk_never_overlaps_particles_in_the_separated_case():
    plan = plan_micrographs(small(junk=25, width=500, height=500, carbon=False, seed=5))
    layout = plan.layouts[0]
    junk_only = render_object(plan, layout, particles=False)
    r = plan.particle_diameter_px / 2
    rows, cols = np.mgrid[0:500, 0:500]
    assert len(layout.junk) == 25 and len(layout.particles) > 10
    worst = 0.0
    for p in layout.particles.itertuples():
        disc = (cols - p.x_px) ** 2 + (rows - p.y_px) ** 2 <= r * r
        worst = max(worst, float(np.abs(junk_only[disc]).max()))
    smallest_blob = float(np.abs(layout.junk["amplitude"]).min()) * plan.particle_density
    assert worst < 0.05 * smallest_blob, (worst, smallest_blob)
    assert np.abs(junk_only).max() > 0.5 * smallest_blob  # the blobs are there


def test_particles_keep_clear_of_the_carbon_rim():
    plan = plan_micrographs(small(junk=0, carbon=True, width=500, height=500, seed=11))
    layout = plan.layouts[0]
    normal, offset = np.asarray(layout.carbon["normal"]), layout.carbon["offset"]
    xy = layout.particles[["x_px", "y_px"]].to_numpy()
    side = xy @ normal - offset
    assert (np.abs(side) >= plan.particle_diameter_px / 2).all()
    carbon_only = render_object(plan, layout, particles=False)
    rows, cols = np.mgrid[0:500, 0:500]
    on_line = np.abs(cols * normal[0] + rows * normal[1] - offset) < 0.5
    away = np.abs(cols * normal[0] + rows * normal[1] - offset) > 20
    assert carbon_only[on_line].mean() > carbon_only[away].max() + layout.carbon["rim"] * plan.particle_density / 2


def test_snr_definition_and_noise_match_the_training_set():
    cfg = small(snr=0.5, width=500, height=500, n_micrographs=2, seed=7)
    plan = plan_micrographs(cfg)
    # the definition, from the truth: var over each particle's box of its noise-free signal, mean, / snr
    variances = []
    for layout in plan.layouts:
        for p in layout.particles.itertuples():
            offset = np.array([[p.x_px - np.rint(p.x_px), p.y_px - np.rint(p.y_px)]])
            img = render_atoms(plan.molecule.coordinates([[p.conformation_1]]), [p.theta_rad], offset, cfg.box,
                               cfg.pixel_size_A, cfg.atom_sigma_A)[0] * plan.scale
            variances.append(img.var(dtype=np.float64))
    assert plan.noise_sigma == pytest.approx(np.sqrt(np.mean(variances) / 0.5), rel=1e-5)
    mic = render_micrograph(plan, 1, keep_clean=True)
    assert np.std(mic.image - mic.clean) == pytest.approx(plan.noise_sigma, rel=0.01)
    # the matching training set: same scale, same signal level, same noise sigma
    sim = simulate_hinge(training_config(cfg, 2000, 1.5), progress=False)
    assert sim.noise_sigma == pytest.approx(plan.noise_sigma, rel=0.03)
    obj = render_object(plan, plan.layouts[1], junk=False)
    cut_var = np.mean([cut(obj, p.x_px, p.y_px, cfg.box).var() for p in plan.layouts[1].particles.itertuples()])
    assert cut_var == pytest.approx(float(sim.clean.reshape(len(sim), -1).var(axis=1).mean()), rel=0.08)


def test_ctf_is_the_micrographs_ctf_in_the_star(tmp_path):
    cfg = small(ctf=True, junk=0, carbon=False, gradient=0.0, width=400, height=400, particles=6, seed=2)
    plan = plan_micrographs(cfg)
    layout = plan.layouts[0]
    du, dv, ang = layout.defocus
    assert 10000 <= du <= 30000 and 0 <= du - dv <= 500
    mic = render_micrograph(plan, 0, keep_clean=True).clean
    ctf = ctf_2d(cfg.box, cfg.pixel_size_A, [du], [dv], [ang], cfg.voltage_kv, cfg.cs_mm, cfg.amplitude_contrast)
    other = ctf_2d(cfg.box, cfg.pixel_size_A, [du * 0.6], [dv * 0.6], [ang], cfg.voltage_kv, cfg.cs_mm,
                   cfg.amplitude_contrast)
    good, bad = [], []
    for p in layout.particles.itertuples():
        offset = np.array([[p.x_px - np.rint(p.x_px), p.y_px - np.rint(p.y_px)]])
        img = render_atoms(plan.molecule.coordinates([[p.conformation_1]]), [p.theta_rad], offset, cfg.box,
                           cfg.pixel_size_A, cfg.atom_sigma_A) * plan.scale
        window = cut(mic, p.x_px, p.y_px, cfg.box)
        good.append(corr(window, apply_ctf(img, ctf)[0]))
        bad.append(corr(window, apply_ctf(img, other)[0]))
    assert min(good) > 0.999 and max(bad) < 0.99, (good, bad)  # the defocus written is the one applied


def test_cli_writes_micrographs_truth_and_training_set(tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(cli, ["simulate", "micrographs", "-o", str(out), "--n-micrographs", "2", "--size",
                                      "300x200", "--n-train", "64", "--ctf", "--junk", "3", "--seed", "4"])
    assert result.exit_code == 0, result.output
    mics = micrograph_paths([out / "micrographs.star"], cwd=tmp_path)
    assert [p.name for p, _ in mics] == ["mic_000.mrc", "mic_001.mrc"]
    assert all(apix == pytest.approx(4.0) for _, apix in mics)
    mic = read_micrograph(mics[0][0])
    assert mic.data.shape == (200, 300) and mic.apix == pytest.approx(4.0)
    settings = json.loads((out / "simulation.json").read_text())
    assert settings["particle_diameter_px"] == pytest.approx(34.0, abs=1.0)
    star = starfile.read(out / "micrographs.star", always_dict=True)
    assert star["micrographs"]["rlnDefocusU"].tolist() == [m["defocus_u_A"] for m in settings["micrograph_list"]]
    assert star["optics"]["rlnMicrographPixelSize"].tolist() == [4.0]
    pairs = read_autopick_index(out / "truth" / "autopick.star", cwd=tmp_path)
    assert [m for m, _ in pairs] == [out / "truth" / ".." / "micrographs" / f"mic_00{k}.mrc" for k in range(2)]
    truth = read_coordinates(pairs[0][1])
    assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAnglePsi", "cryovaeConformation1"} <= set(truth.columns)
    assert len(truth) == settings["micrograph_list"][0]["n_particles"] > 0
    assert len(read_coordinates(out / "junk" / "mic_000.star")) == 3
    particles = read_particles(out / "particles" / "particles.star")
    assert len(particles) == 64 and particles.box == 40 and particles.pixel_size == pytest.approx(4.0)
    train = json.loads((out / "particles" / "simulation.json").read_text())
    assert train["shift_sigma_px"] == 1.5 and train["ctf"] and train["defocus_max_A"] == 30000.0


@pytest.mark.parametrize("args,fragment", [
    (["--n", "10"], "--n does not go with KIND micrographs"),
    (["--size", "12x"], "--size must be N or WxH"),
    (["--size", "50"], "too small for box 40"),
])
def test_cli_bad_options_are_one_line(tmp_path, args, fragment):
    result = CliRunner().invoke(cli, ["simulate", "micrographs", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert fragment in result.output, result.output


def test_micrograph_options_refused_with_particle_kinds(tmp_path):
    result = CliRunner().invoke(cli, ["simulate", "hinge", "-o", str(tmp_path / "o"), "--junk", "3"])
    assert result.exit_code == 2 and "--junk goes with KIND micrographs" in result.output
