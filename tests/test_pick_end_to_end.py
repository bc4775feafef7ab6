"""simulate micrographs -> train on the matching particles -> pick -> evaluate-picks -> extract ->
train again, all through the CLI on tiny sizes (2 micrographs of 256 px, 14-px particles in
20-px boxes at 10 Å/px, SNR 3, a tiny TARGET-VAE for a few epochs).

The science asserted: the picks find the particles (recall and precision floors at this high
SNR), and the picker's psi is the run's own reading of those particles: it agrees with what
``cryovae encode`` gives for the boxes extracted at the picks, and its error against the truth
(after one global offset) is no worse than the run's error on its own training set. (A model
this small and short-trained learns the rotation poorly, so the truth bound is the run's own.)
"""

from __future__ import annotations

import json

import numpy as np
import starfile
from click.testing import CliRunner

from cryovae.analysis.picking import match_picks, pick_metrics
from cryovae.cli.main import cli
from cryovae.io import read_coordinates, read_particles

TRAIN = ["--model", "target", "--group", "p8", "--zdim", "1", "--enc-fields", "4", "--enc-kernel", "13",
         "--enc-layers", "0", "--gen-hidden", "32", "--gen-layers", "1", "--fourier-features", "16",
         "--batch-size", "32", "--z-delay", "1", "--device", "cpu", "--seed", "0", "--refine-steps", "0",
         # the attention trained over the whole 20-px box (a 3-px centre prior: a 19 x 19 window), as
         # this test was written for; the default box/20 (1 px) trains only a 7 x 7 window
         "--translation-prior", "3"]


def _ok(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _circ_diff(a_deg, b_deg):
    return np.remainder(np.asarray(a_deg) - np.asarray(b_deg) + 180.0, 360.0) - 180.0


def _aligned_error(pred_deg, true_deg):
    """|error| after the best global offset (circular mean of the differences), degrees."""
    d = _circ_diff(pred_deg, true_deg)
    off = np.degrees(np.angle(np.exp(1j * np.radians(d)).mean()))
    return np.abs(_circ_diff(d, off))


def test_simulate_train_pick_evaluate_extract_train(tmp_path):
    sim, run, picks = tmp_path / "sim", tmp_path / "run", tmp_path / "picks"
    _ok(["simulate", "micrographs", "-o", str(sim), "--n-micrographs", "2", "--size", "256", "--box", "20",
         "--apix", "10", "--snr", "3", "--junk", "3", "--n-train", "256", "--seed", "1"])
    _ok(["train", str(sim / "particles" / "particles.star"), "-o", str(run), "--epochs", "4", "--no-posterior-grid", *TRAIN])
    _ok(["pick", str(run), str(sim / "micrographs.star"), "-o", str(picks), "--no-png"])
    _ok(["evaluate-picks", str(picks), str(sim / "truth"), "-o", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["overall"]
    assert metrics["recall"] >= 0.85, metrics
    assert metrics["precision"] >= 0.85, metrics

    # psi: the picker's reading equals the encoder's on the boxes extracted at the picks
    ext = tmp_path / "ext" / "particles.star"
    _ok(["extract", str(picks), "-o", str(ext), "--box", "20"])
    stack = read_particles(ext)
    assert len(stack) >= 0.8 * metrics["n_picks"]
    _ok(["encode", str(run), str(ext), "-o", str(tmp_path / "encoded.star"), "--device", "cpu", "--refine-steps", "0",
         "--no-posterior-grid"])
    enc = starfile.read(tmp_path / "encoded.star", always_dict=True)["particles"]
    diff = np.abs(_circ_diff(enc["rlnAnglePsi"], enc["rlnAnglePsiPrior"]))
    assert np.median(diff) < 30.0, np.median(diff)  # a sign or 90-degree slip would give ~90

    # against the truth: as good as the run on its own training set (its refined encoder reading:
    # the run is trained with --no-posterior-grid, as the picker reads the encoder alone)
    truth_all, picked_all = [], []
    for k in range(2):
        truth = read_coordinates(sim / "truth" / f"mic_00{k}.star")
        mine = read_coordinates(picks / f"mic_00{k}.star")
        m = pick_metrics(mine[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(),
                         truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), 6.0)
        assert m.n_matched >= 0.85 * len(truth)
        mt = match_picks(mine[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(),
                         truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), 6.0)
        picked_all.append(mine["rlnAnglePsi"].to_numpy()[mt.pick_index])
        truth_all.append(truth["rlnAnglePsi"].to_numpy()[mt.truth_index])
    picked_err = np.median(_aligned_error(np.concatenate(picked_all), np.concatenate(truth_all)))
    trained = starfile.read(run / "particles.star", always_dict=True)["particles"]
    truth_csv = np.genfromtxt(sim / "particles" / "truth.csv", delimiter=",", names=True)
    run_err = np.median(_aligned_error(trained["rlnAnglePsi"], truth_csv["psi_deg"]))
    assert picked_err <= run_err + 10.0, (picked_err, run_err)

    # the loop closes: the extracted particles train a new run
    _ok(["train", str(ext), "-o", str(tmp_path / "run2"), "--epochs", "1", *TRAIN])
    assert (tmp_path / "run2" / "particles.star").exists()
