"""The latent explorer on an MCE-VAE run (a real napari viewer, headless under Xvfb): the class
gallery layer and list, a click on a class selects its particles, ticked classes are selected
together and "Save selection" writes what ``cryovae select --class`` writes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

import starfile  # noqa: E402
from _classes import class_run_dir  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from test_napari_explorer import WAIT_MS  # noqa: E402

from cryovae.cli.main import cli  # noqa: E402
from cryovae.inference import TrainedRun  # noqa: E402
from napari_plugin.explorer_widget import CLASSES, GAP, LatentExplorer  # noqa: E402
from napari_plugin.sample_data import sample_run_paths  # noqa: E402

pytestmark = pytest.mark.napari


@pytest.fixture(scope="session")
def class_run(tmp_path_factory):
    return class_run_dir(tmp_path_factory.getbasetemp() / "class_run")


def _load(make_napari_viewer, qtbot, rundir, star):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("cryovae", "Latent explorer")
    assert isinstance(widget, LatentExplorer)
    with qtbot.waitSignal(widget.run_loaded, timeout=WAIT_MS):
        widget.load_run(rundir, star)
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    return viewer, widget


def _star_body(path):
    return [line for line in path.read_text().splitlines() if not line.startswith("# Created by")]


def test_class_gallery_click_tick_and_save(make_napari_viewer, qtbot, class_run, tmp_path):
    rundir, star, _ = class_run
    viewer, widget = _load(make_napari_viewer, qtbot, rundir, star)
    classes = np.asarray(widget.session.latents.extras["class"])
    counts = np.bincount(classes, minlength=4)[1:]
    assert not widget.classes_box.isHidden()
    # the list: every class once, largest first, with its count
    order = widget.class_numbers()
    assert sorted(order) == [1, 2, 3] and [counts[k - 1] for k in order] == sorted(counts, reverse=True)
    assert f"{counts[order[0] - 1]} particles" in widget.class_list.item(0).text()
    # the gallery layer: the class images tiled in that order, in Å
    images = TrainedRun.load(rundir).model.class_images().numpy()
    layer = viewer.layers[CLASSES]
    box = images.shape[-1]
    for i, k in enumerate(order):
        tile = layer.data[:, i * (box + GAP): i * (box + GAP) + box]
        np.testing.assert_allclose(tile, images[k - 1], atol=1e-5)
    assert layer.scale[-1] == pytest.approx(widget.session.run.pixel_size)
    assert layer.metadata["class_order"] == order

    # a click on a class selects exactly its particles
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        widget.class_list.itemClicked.emit(widget.class_list.item(1))
    np.testing.assert_array_equal(widget.selection, classes == order[1])
    assert widget.checked_classes() == [order[1]]

    # ticking a second class selects both; Save selection writes what cryovae select writes
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        widget.class_list.item(0).setCheckState(Qt.CheckState.Checked)
    chosen = sorted([order[0], order[1]])
    assert sorted(widget.checked_classes()) == chosen
    np.testing.assert_array_equal(widget.selection, np.isin(classes, chosen))
    saved = widget.save_selection(tmp_path / "napari.star")
    cli_out = tmp_path / "cli.star"
    r = CliRunner().invoke(cli, ["select", str(rundir), "--class", ",".join(map(str, chosen)), "-o", str(cli_out)])
    assert r.exit_code == 0, r.output
    assert _star_body(saved) == _star_body(cli_out)
    assert set(starfile.read(saved)["particles"]["rlnClassNumber"]) == set(chosen)

    # unticking everything clears the selection
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        widget.select_classes([])
    assert widget.selection is None and widget.checked_classes() == []


def test_a_run_without_classes_shows_no_class_view(make_napari_viewer, qtbot):
    viewer, widget = _load(make_napari_viewer, qtbot, *sample_run_paths(2))
    assert widget.classes_box.isHidden() and CLASSES not in viewer.layers
    assert widget.class_numbers() == []
