"""`cryovae demo --tiny` runs the whole pipeline end to end and reuses finished steps."""

from __future__ import annotations

import json

import pandas as pd
import starfile
from click.testing import CliRunner

from cryovae.cli.main import cli

PNG = b"\x89PNG\r\n\x1a\n"


def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", "--tiny", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    star = starfile.read(out / "run" / "particles.star", always_dict=True)["particles"]
    truth = pd.read_csv(out / "data" / "truth.csv")
    assert len(star) == len(truth) == 64
    assert {"cryovaeZ1", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"} <= set(star.columns)
    for png in ["hinge_motion.png", "traversal/traversal.png", "evaluation/rotation.png",
                "evaluation/latents.png", "evaluation/translation.png"]:
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000, png
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["n"] == 64
    assert -1.0 <= metrics["rotation"]["circular_correlation"] <= 1.0
    assert 0.0 <= metrics["conformation"]["multiple_correlation"]["conformation_1"] <= 1.0
    for word in ("latent star", "traversal", "hinge_motion.png", "metrics.json", "circular correlation"):
        assert word in res.output

    # a second call reuses the simulation and the finished run
    stamp = (out / "run" / "checkpoint.pt").stat().st_mtime_ns
    data_stamp = (out / "data" / "particles.mrcs").stat().st_mtime_ns
    again = CliRunner().invoke(cli, ["demo", "--tiny", "-o", str(out), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert (out / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert (out / "data" / "particles.mrcs").stat().st_mtime_ns == data_stamp


def test_demo_rejects_bad_epochs(tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--tiny", "--epochs", "0", "-o", str(tmp_path / "d")])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("cryovae demo: error:") and "epochs" in res.stderr


def test_true_motion_row_follows_the_learned_frame():
    import numpy as np

    from cryovae.geometry import transform_image
    from cryovae.simulate import SimulationConfig, simulate_hinge
    from cryovae.workflows.demo import motion_rows

    sim = simulate_hinge(SimulationConfig(n=200, box=32, pixel_size_A=5.0, snr=None, seed=0), progress=False)
    frames = np.zeros((4, 32, 32), np.float32)
    direct = {"conformation": {"pearson": {"cryovaeZ1": {"conformation_1": 0.9}}},
              "rotation": {"best_fit": "direct", "offset_deg": 0.0}}
    (_, plain, labels), _ = motion_rows(sim, frames, np.arange(4.0), direct)
    assert labels[0] < labels[-1]  # c increases with z1 when they correlate positively
    turned = {"conformation": {"pearson": {"cryovaeZ1": {"conformation_1": -0.9}}},
              "rotation": {"best_fit": "direct", "offset_deg": 90.0}}
    (_, rot, labels2), _ = motion_rows(sim, frames, np.arange(4.0), turned)
    assert labels2 == labels[::-1]
    # psi_pred = psi_true + 90: the model's template is the true one turned by R(-90 deg)
    np.testing.assert_allclose(rot[-1], transform_image(plain[0], -np.pi / 2, (0.0, 0.0)), atol=1e-4)
