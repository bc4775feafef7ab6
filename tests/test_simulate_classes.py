"""`cryovae simulate classes`: discrete classes in the requested shares, distinguishable, with a
consistent truth (class, pose) and files; bad class options are one-line errors."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import starfile
from click.testing import CliRunner

from cryovae.cli.main import cli
from cryovae.errors import CryovaeError
from cryovae.geometry import apply_relion_alignment, transform_image
from cryovae.simulate import (
    CLASS_NAMES,
    SimulationConfig,
    class_templates,
    read_truth,
    simulate_classes,
    write_simulation,
)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def run(*args):
    return CliRunner().invoke(cli, ["simulate", *map(str, args)])


def test_class_templates_are_the_noise_free_particles_at_their_rotation():
    # the benchmark's bound compares particles with these: they must be the set's own images
    cfg = SimulationConfig(n=12, box=24, snr=None, shift_sigma_px=0.0, n_classes=4, seed=3)
    sim = simulate_classes(cfg, progress=False)
    labels = sim.truth["class"].to_numpy()
    templates = class_templates(cfg, sim.theta_rad)
    assert templates.shape == (4, 12, 24, 24)
    for i in range(12):
        np.testing.assert_allclose(templates[labels[i] - 1, i], sim.clean[i], atol=1e-5)


def test_shares_are_respected_and_classes_are_shuffled():
    sim = simulate_classes(SimulationConfig(n=200, box=24, snr=None, class_shares=(0.4, 0.3, 0.2, 0.1), seed=1),
                           progress=False)
    labels = sim.truth["class"].to_numpy()
    np.testing.assert_array_equal(np.bincount(labels, minlength=5)[1:], [80, 60, 40, 20])
    assert labels.min() == 1 and labels.max() == 4  # 1-based
    assert not (np.diff(labels) >= 0).all()  # not written class by class
    # equal shares by default; a remainder goes to the first classes
    equal = SimulationConfig(n=10, n_classes=3)
    np.testing.assert_array_equal(equal.class_counts(), [4, 3, 3])
    # shares that sum to 1 only to 3 decimals are rescaled, the counts still sum to n
    third = SimulationConfig(n=100, n_classes=3, class_shares=(0.333, 0.333, 0.334))
    assert third.class_counts().sum() == 100


def test_every_kind_of_class_is_distinguishable_at_any_rotation():
    """No two classes' clean canonical images match, whichever way one of them is turned, and
    the two conformations of the hinge are classes 1 and 2."""
    sim = simulate_classes(SimulationConfig(n=6, box=32, pixel_size_A=5.0, n_classes=len(CLASS_NAMES), snr=None),
                           progress=False)
    assert [c.name for c in sim.classes][:2] == ["hinge-closed", "hinge-open"]
    assert sim.classes[0].molecule is sim.classes[1].molecule
    images = sim.class_images()
    turns = np.radians(np.arange(0.0, 360.0, 4.0))
    for j in range(len(images)):
        for k in range(j + 1, len(images)):
            best = max(ncc(images[j], transform_image(images[k], float(t), np.zeros(2))) for t in turns)
            assert best < 0.95, (sim.classes[j].name, sim.classes[k].name, best)
    # the same check passes a class against itself (the rotation search can find a match)
    turned = transform_image(images[0], 1.0, np.zeros(2))
    assert max(ncc(images[0], transform_image(turned, float(t), np.zeros(2))) for t in turns) > 0.97


def test_truth_aligns_each_particle_onto_its_class_image():
    cfg = SimulationConfig(n=16, box=32, pixel_size_A=5.0, shift_sigma_px=1.5, snr=0.5, n_classes=4, seed=4)
    sim = simulate_classes(cfg, progress=False)
    images = sim.class_images()
    labels = sim.truth["class"].to_numpy()
    np.testing.assert_allclose(sim.canonical_images(), images[labels - 1], atol=1e-5)
    for i in range(len(sim)):
        origin = sim.truth[["origin_x_A", "origin_y_A"]].to_numpy()[i] / cfg.pixel_size_A
        aligned = apply_relion_alignment(sim.clean[i], sim.truth.psi_deg[i], origin)
        scores = [ncc(aligned, im) for im in images]
        assert int(np.argmax(scores)) + 1 == labels[i] and scores[labels[i] - 1] > 0.999
    assert sim.signal_variance / sim.noise_sigma**2 == pytest.approx(0.5)


def test_files_star_stack_truth_and_classes_json_agree(tmp_path):
    out = tmp_path / "sim"
    res = run("classes", "-o", out, "--n", 30, "--box", 24, "--apix", 6.0, "--snr", 0.2, "--classes", 3,
              "--shares", "0.5,0.3,0.2", "--ctf", "--seed", 2)
    assert res.exit_code == 0, res.output
    assert "3 classes of 15, 9, 6 particles" in res.output
    star = starfile.read(out / "particles.star", always_dict=True)
    assert len(star["particles"]) == 30 and "rlnClassNumber" not in star["particles"].columns  # truth not given away
    with mrcfile.open(out / "particles.mrcs", permissive=True) as mrc:
        stack = np.asarray(mrc.data)
    truth = read_truth(out / "truth.csv")
    assert list(truth.columns[:4]) == ["class", "psi_deg", "origin_x_A", "origin_y_A"]
    np.testing.assert_allclose(truth.defocus_u_A, star["particles"].rlnDefocusU, rtol=1e-5)
    sim = simulate_classes(SimulationConfig(n=30, box=24, pixel_size_A=6.0, snr=0.2, ctf=True, n_classes=3,
                                            class_shares=(0.5, 0.3, 0.2), seed=2), progress=False)
    np.testing.assert_allclose(stack, sim.images, atol=1e-6)
    np.testing.assert_array_equal(truth["class"], sim.truth["class"])
    classes = json.loads((out / "classes.json").read_text())
    assert [c["class"] for c in classes] == [1, 2, 3]
    assert [c["name"] for c in classes] == list(CLASS_NAMES[:3])
    assert [c["count"] for c in classes] == [int((truth["class"] == j).sum()) for j in (1, 2, 3)] == [15, 9, 6]
    assert classes[0]["molecule"] == classes[1]["molecule"] == "hinge"
    assert classes[0]["conformation"] != classes[1]["conformation"]
    settings = json.loads((out / "simulation.json").read_text())
    assert settings["kind"] == "classes" and settings["n_classes"] == 3 and settings["class_shares"] == [0.5, 0.3, 0.2]


def test_written_files_of_the_api_hold_the_class_table(tmp_path):
    sim = simulate_classes(SimulationConfig(n=8, box=24, snr=None, n_classes=2), progress=False)
    paths = write_simulation(sim, tmp_path / "s")
    assert json.loads(paths["classes"].read_text())[1]["name"] == "hinge-open"
    # the other kinds write no classes.json
    from cryovae.simulate import simulate_hinge

    assert "classes" not in write_simulation(simulate_hinge(SimulationConfig(n=4, box=24, snr=None), progress=False),
                                             tmp_path / "h")


@pytest.mark.parametrize("bad", [dict(n_classes=1), dict(n_classes=len(CLASS_NAMES) + 1),
                                 dict(class_shares=(0.5, 0.5)), dict(class_shares=(0.5, 0.5, 0.5, -0.5)),
                                 dict(class_shares=(0.4, 0.4, 0.4, 0.4)), dict(n=10, class_shares=(0.97, 0.01, 0.01, 0.01))])
def test_bad_class_config_is_a_user_error(bad):
    with pytest.raises(CryovaeError):
        SimulationConfig(**bad)


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "\n" not in err and err.startswith("cryovae simulate: error:"), err
    for w in words:
        assert w in err, err


def test_bad_class_options_exit_2_with_one_line(tmp_path):
    one_line_error(run("classes", "-o", tmp_path / "a", "--classes", 7), "classes", "2 to 6")
    one_line_error(run("classes", "-o", tmp_path / "b", "--classes", 1), "2 to 6")
    one_line_error(run("classes", "-o", tmp_path / "c", "--shares", "0.5,half"), "--shares")
    one_line_error(run("classes", "-o", tmp_path / "d", "--shares", "0.6,0.6"), "sum to 1")
    one_line_error(run("classes", "-o", tmp_path / "e", "--classes", 4, "--shares", "0.5,0.5"), "2 class shares", "4")
    one_line_error(run("classes", "-o", tmp_path / "f", "--shares", "0.5,0,0.5"), "positive")
    one_line_error(run("hinge", "-o", tmp_path / "g", "--classes", 3), "KIND classes")
    one_line_error(run("classes", "-o", tmp_path / "h", "--states", 5), "--states")
    assert not any((tmp_path / d).exists() for d in "abcdefgh")
    # the number of classes follows --shares when --classes is not given
    res = run("classes", "-o", tmp_path / "ok", "--n", 12, "--box", 16, "--shares", "0.5,0.25,0.25")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ok" / "classes.json").read_text())[-1]["count"] == 3
