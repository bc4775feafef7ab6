"""The particle finder dock widget in a real napari viewer (headless under Xvfb).

The micrograph (320 x 256 px at 5 Å) is made by ``cryovae simulate micrographs`` (hinge
particles at SNR 1, two ice blobs and a carbon edge; the true centres in its truth star) and
opened with the plugin's reader; the run is the shipped tiny TARGET-VAE run
(napari_plugin/sample_run/z1, trained on hinge particles at 5 Å, 32 px).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")

from cryovae.io import read_coordinates  # noqa: E402
from napari_plugin import particle_finder  # noqa: E402
from napari_plugin.finder_points import CANDIDATE, HAND_COLOUR, PickEdits, star_table  # noqa: E402
from napari_plugin.particle_finder import PICKS, PSI, SCORE, THRESHOLD_STEPS, ParticleFinder  # noqa: E402
from napari_plugin.sample_data import sample_run_paths  # noqa: E402

pytestmark = pytest.mark.napari
WAIT_MS = 60_000
SHAPE = (256, 320)
APIX = 5.0
#: a pick within this many pixels of a true centre found it (the particles are 40+ px apart; the
#: tiny sample run reads centres to a few pixels)
RADIUS = 8.0


@pytest.fixture(scope="module")
def micrograph(tmp_path_factory):
    """(path of the .mrc, truth table x_px, y_px of the true particles)."""
    from click.testing import CliRunner

    from cryovae.cli.main import cli

    out = tmp_path_factory.mktemp("finder") / "sim"
    res = CliRunner().invoke(cli, ["simulate", "micrographs", "-o", str(out), "--box", "32", "--apix", str(APIX),
                                   "--snr", "1", "--size", f"{SHAPE[1]}x{SHAPE[0]}", "--n-micrographs", "1",
                                   "--junk", "2", "--n-train", "0", "--seed", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    truth = read_coordinates(out / "truth" / "mic_000.star")
    truth = truth.rename(columns={"rlnCoordinateX": "x_px", "rlnCoordinateY": "y_px"})
    assert len(truth) >= 10
    return out / "micrographs" / "mic_000.mrc", truth


def _finder(make_napari_viewer, qtbot, micrograph, tile: int | None = None):
    """A viewer with the micrograph opened by the plugin's reader and the finder docked, after one
    pick with the sample run."""
    from cryovae.inference import PickConfig

    viewer = make_napari_viewer()
    (opened,) = viewer.open(str(micrograph[0]), plugin="cryovae")
    layer = viewer.layers[opened.name]
    _, widget = viewer.window.add_plugin_dock_widget("cryovae", "Particle finder")
    assert isinstance(widget, ParticleFinder)
    assert widget.micrograph_layer().name == layer.name and widget.apix_spin.value() == pytest.approx(APIX)
    if tile is not None:
        widget.config = PickConfig(tile=tile)
    with qtbot.waitSignal(widget.picks_ready, timeout=WAIT_MS):
        widget.find_particles(sample_run_paths(1)[0])
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    return viewer, widget, layer


def _nearest(points_rc: np.ndarray, truth: pd.DataFrame) -> np.ndarray:
    """Distance (pixels) from each true centre to the nearest point (row, col)."""
    true_rc = truth[["y_px", "x_px"]].to_numpy()
    if not len(points_rc):
        return np.full(len(true_rc), np.inf)
    return np.linalg.norm(true_rc[:, None, :] - points_rc[None, :, :], axis=2).min(axis=1)


def test_find_particles_shows_score_picks_and_psi_over_the_micrograph(make_napari_viewer, qtbot, micrograph):
    viewer, widget, layer = _finder(make_napari_viewer, qtbot, micrograph, tile=128)
    # the progress bar counted the tiles: 2 x 3 tiles of 128 run pixels over 256 x 320
    assert widget.progress.maximum() == 2 * 3 and widget.progress.value() == 6 and widget.progress.isHidden()
    picks = viewer.layers[PICKS]
    truth = micrograph[1]
    # every true particle has a pick near its centre, and the best len(truth) picks are all true ones
    assert _nearest(picks.data, truth).max() < RADIUS
    best = picks.features.sort_values("fom", ascending=False).index[:len(truth)]
    true_rc = truth[["y_px", "x_px"]].to_numpy()
    assert all(np.linalg.norm(true_rc - picks.data[k], axis=1).min() < RADIUS for k in best)
    # points: same frame as the micrograph, features, rings one diameter wide
    assert tuple(picks.scale) == tuple(layer.scale) and tuple(picks.translate) == tuple(layer.translate)
    assert {"fom", "psi_deg", "z_1", CANDIDATE} <= set(picks.features.columns)
    assert np.all(picks.size == pytest.approx(widget.picks.distance_px)) and widget.picks.distance_px == 16
    np.testing.assert_allclose(picks.face_color[:, 3], 0.0)  # transparent face, edge ring
    shown = widget.picks.table.iloc[picks.features[CANDIDATE].to_numpy()]
    np.testing.assert_allclose(picks.data, shown[["y_px", "x_px"]].to_numpy())  # (row, col) = (y, x)
    assert (shown["fom"] >= widget.threshold).all() and widget.threshold == pytest.approx(widget.picks.threshold)
    # the score map lies over the micrograph, pixel for pixel here (same pixel size as the run)
    score = viewer.layers[SCORE]
    assert score.data.shape == SHAPE and score.blending == "additive" and score.opacity < 1
    assert score.colormap.name == "inferno" and tuple(score.scale) == (1.0, 1.0)
    i, j = np.unravel_index(np.argmax(score.data), score.data.shape)
    assert _nearest(np.array([[i, j]], float), truth).min() < RADIUS  # its best pixel is a particle
    # psi: one line per pick, half a diameter long, along (-sin psi, cos psi) in (row, col)
    vectors = viewer.layers[PSI]
    assert vectors.data.shape == (len(picks.data), 2, 2)
    np.testing.assert_allclose(vectors.data[:, 0], picks.data)
    psi = np.deg2rad(picks.features["psi_deg"].to_numpy())
    np.testing.assert_allclose(vectors.data[:, 1], 8.0 * np.stack([-np.sin(psi), np.cos(psi)], 1), atol=1e-9)


def test_the_threshold_updates_the_points_live_and_restores_them(make_napari_viewer, qtbot, micrograph,
                                                                monkeypatch):
    viewer, widget, _ = _finder(make_napari_viewer, qtbot, micrograph)
    calls = []
    monkeypatch.setattr(particle_finder, "pick_micrograph", lambda *a, **k: calls.append(1))
    picks = viewer.layers[PICKS]
    start_pos, start_data = widget.threshold_slider.value(), np.array(picks.data)
    fom = widget.picks.table["fom"].to_numpy()
    counts = []
    for pos in range(0, THRESHOLD_STEPS + 1, 50):
        widget.threshold_slider.setValue(pos)
        assert widget.threshold_spin.value() == pytest.approx(widget.threshold, abs=1e-3)
        counts.append(len(picks.data))
        assert counts[-1] == int((fom >= widget.threshold).sum())  # exactly the candidates above it
        assert len(viewer.layers[PSI].data) == counts[-1]
    assert counts[0] == len(fom) and counts[-1] >= 1 and np.all(np.diff(counts) <= 0) and counts[0] > counts[-1]
    n_true = len(micrograph[1])
    widget.threshold_spin.setValue(float(np.sort(fom)[-n_true]) - 5e-4)  # the spin box sets it too (3 decimals)
    assert len(picks.data) == n_true and _nearest(picks.data, micrograph[1]).max() < RADIUS
    widget.threshold_slider.setValue(start_pos)
    np.testing.assert_allclose(picks.data, start_data)
    assert not calls  # no new encoder pass


def test_hand_added_and_deleted_points_survive_the_threshold_and_save(make_napari_viewer, qtbot, micrograph,
                                                                     tmp_path):
    viewer, widget, layer = _finder(make_napari_viewer, qtbot, micrograph)
    picks = viewer.layers[PICKS]
    n0 = len(picks.data)
    # delete the best pick (select mode + Delete does exactly this), add one by hand (add mode's click)
    best = int(picks.features["fom"].to_numpy().argmax())
    gone = int(picks.features[CANDIDATE].iloc[best])
    picks.selected_data = {best}
    picks.remove_selected()
    picks.add([200.5, 30.25])
    assert len(picks.data) == n0
    hand = picks.features.iloc[-1]
    assert math.isnan(hand["fom"]) and math.isnan(hand["psi_deg"]) and int(hand[CANDIDATE]) == -1
    np.testing.assert_allclose(picks.border_color[-1], HAND_COLOUR)
    assert len(viewer.layers[PSI].data) == n0 - 1  # no psi line for the hand pick
    assert widget.count_label.text() == f"{n0} picks (1 by hand)"
    # a stricter threshold, then back: the hand pick stays, the deleted one stays deleted
    widget.threshold_slider.setValue(THRESHOLD_STEPS)
    assert [200.5, 30.25] in picks.data.tolist() and gone not in picks.features[CANDIDATE].tolist()
    widget.threshold_slider.setValue(0)
    assert [200.5, 30.25] in picks.data.tolist() and gone not in picks.features[CANDIDATE].tolist()
    assert len(picks.data) == len(widget.picks.table)  # every candidate but the deleted one, plus the hand pick

    with qtbot.waitSignal(widget.saved, timeout=WAIT_MS):
        out = widget.save(tmp_path / "mic_000.star")
    table = read_coordinates(out)
    assert len(table) == len(picks.data) and widget.status.text().startswith(f"saved {len(table)} picks (1 by hand)")
    np.testing.assert_allclose(table[["rlnCoordinateY", "rlnCoordinateX"]].to_numpy(), picks.data)
    row = table.iloc[-1]
    assert (row["rlnCoordinateX"], row["rlnCoordinateY"]) == (30.25, 200.5)
    assert row["rlnAutopickFigureOfMerit"] == -999 and row["rlnAnglePsi"] == -999 and math.isnan(row["cryovaeZ1"])
    cand = widget.picks.table.iloc[picks.features[CANDIDATE].to_numpy()[:-1]]
    np.testing.assert_allclose(table["rlnAutopickFigureOfMerit"].to_numpy()[:-1], cand["fom"], rtol=1e-6)
    np.testing.assert_allclose(table["rlnAnglePsi"].to_numpy()[:-1], cand["psi_deg"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table["cryovaeZ1"].to_numpy()[:-1], cand["z_1"], rtol=1e-6, atol=1e-6)
    # the saved star opens as the same points, over the micrograph
    loaded = viewer.open(str(out), plugin="cryovae")[0]
    np.testing.assert_allclose(loaded.data, picks.data)
    assert math.isnan(loaded.features["fom"].iloc[-1]) and tuple(loaded.scale) == tuple(layer.scale)


def test_a_spatial_vae_run_and_a_bad_folder_are_status_lines(make_napari_viewer, qtbot, micrograph, tmp_path):
    import torch

    from cryovae.models import ModelConfig, build_model
    from cryovae.runs import RunConfig, RunDir, TrainConfig

    torch.manual_seed(0)
    cfg = ModelConfig.for_model("spatial", box=16, zdim=1, gen_hidden=8, pixel_size=APIX)
    rundir = RunDir(tmp_path / "spatial").create()
    rundir.write_config(RunConfig(model=cfg, train=TrainConfig(), preprocess={"box": 16}))
    rundir.save_best(build_model(cfg).state_dict(), 0, 0.0)

    viewer = make_napari_viewer()
    widget = ParticleFinder(viewer)
    viewer.window.add_dock_widget(widget)
    widget.find_particles(rundir.path)
    assert "open a micrograph first" in widget.status.text()
    viewer.open(str(micrograph[0]), plugin="cryovae")
    with qtbot.waitSignal(widget.failed, timeout=WAIT_MS) as blocker:
        widget.find_particles(rundir.path)
    assert "picking needs TARGET-VAE's attention" in blocker.args[0] and "\n" not in blocker.args[0]
    assert widget.status.text() == blocker.args[0]
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    assert PICKS not in viewer.layers and SCORE not in viewer.layers and widget.find_button.isEnabled()
    with qtbot.waitSignal(widget.failed, timeout=WAIT_MS) as blocker:
        widget.find_particles(tmp_path / "nothing here")
    assert "not a cryovae run directory" in widget.status.text()
    widget.save(tmp_path / "x.star")
    assert widget.status.text() == "nothing to save: find particles first"


def test_pick_edits_absorb_deletes_moves_and_adds():
    """PickEdits without a viewer: what the layer holds after edits is what comes back."""
    cands = pd.DataFrame({"x_px": [10.0, 20.0, 30.0, 40.0], "y_px": [1.0, 2.0, 3.0, 4.0],
                          "fom": [9.0, 7.0, 5.0, 3.0], "psi_deg": [0.0, 10.0, 20.0, 30.0], "z_1": [0.1, 0.2, 0.3, 0.4]})
    edits = PickEdits(cands)
    data, feats = edits.points(4.0)
    assert feats[CANDIDATE].tolist() == [0, 1, 2]
    np.testing.assert_allclose(data, [[1, 10], [2, 20], [3, 30]])
    # the user deletes candidate 1, drags candidate 2, adds a point
    data = np.array([[1, 10], [3.5, 31], [50, 60]], float)
    feats = pd.concat([feats.iloc[[0, 2]], feats.iloc[[0]].assign(fom=np.nan, candidate=-1)], ignore_index=True)
    edits.absorb(data, feats, 4.0)
    assert edits.deleted == {1} and edits.moved == {2: (3.5, 31.0)}
    np.testing.assert_allclose(edits.added, [[50, 60]])
    data, feats = edits.points(0.0)
    assert feats[CANDIDATE].tolist() == [0, 2, 3, -1]
    np.testing.assert_allclose(data, [[1, 10], [3.5, 31], [4, 40], [50, 60]])
    table = star_table(data, feats)
    assert table["rlnCoordinateX"].tolist() == [10, 31, 40, 60] and table["rlnCoordinateY"].tolist() == [1, 3.5, 4, 50]
    assert table["rlnAutopickFigureOfMerit"].tolist() == [9.0, 5.0, 3.0, -999.0]
    assert table["rlnAnglePsi"].tolist() == [0.0, 20.0, 30.0, -999.0]
