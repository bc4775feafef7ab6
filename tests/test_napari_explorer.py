"""The latent explorer dock widget in a real napari viewer (headless under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from matplotlib.backend_bases import MouseEvent  # noqa: E402

from cryovae.inference import TrainedRun  # noqa: E402
from napari_plugin.explorer_widget import (  # noqa: E402
    DECODED,
    PANELS,
    POSE_FREE,
    RECONSTRUCTION,
    SLIDER_STEPS,
    TRAVERSAL,
    LatentExplorer,
)
from napari_plugin.latent_space import particle_panels, slider_value  # noqa: E402
from napari_plugin.sample_data import sample_run_paths  # noqa: E402

pytestmark = pytest.mark.napari
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def runs():
    return {z: TrainedRun.load(sample_run_paths(z)[0]) for z in (1, 2)}


def _explorer(make_napari_viewer, qtbot, zdim=1):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("cryovae", "Latent explorer")
    assert isinstance(widget, LatentExplorer)
    rundir, star = sample_run_paths(zdim)
    with qtbot.waitSignal(widget.run_loaded, timeout=WAIT_MS):
        widget.load_run(rundir, star)
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    return viewer, widget


def _mouse(plot, point, button, name="button_press_event"):
    x, y = plot.data_to_pixels(point)
    event = MouseEvent(name, plot.canvas, x, y, button=button)
    plot.canvas.callbacks.process(name, event)


def test_slider_decodes_the_generator_live_and_traversal_builds_a_row(make_napari_viewer, qtbot, runs):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=1)
    run = runs[1]
    assert len(widget.sliders) == 1 and widget.plot.view.ndim == 1  # histogram of z1
    layer = viewer.layers[DECODED]
    assert layer.scale[-1] == pytest.approx(run.pixel_size)
    frames = {}
    for pos in (40, 360):
        widget.sliders[0].setValue(pos)
        z = slider_value(pos, widget.slider_range(0), SLIDER_STEPS)
        assert widget.z[0] == pytest.approx(z)
        np.testing.assert_allclose(layer.data, run.decode(np.array([[z]]))[0], rtol=1e-5, atol=1e-6)
        frames[pos] = np.asarray(layer.data)
    # the two ends of the latent range are different molecules, not the same image
    assert np.abs(frames[40] - frames[360]).max() > 0.2 * frames[40].std()

    widget.steps_spin.setValue(7)
    with qtbot.waitSignal(widget.traversal_ready, timeout=WAIT_MS):
        widget.traverse_button.click()
    trav = viewer.layers[TRAVERSAL]
    assert trav.data.shape == (7, run.box, run.box)
    np.testing.assert_allclose(trav.data, run.decode(trav.metadata["traversal_z"]), rtol=1e-5, atol=1e-6)
    z1 = trav.metadata["traversal_z"][:, 0]
    assert np.all(np.diff(z1) > 0)


def test_selecting_a_particle_shows_raw_reconstruction_and_pose_free(make_napari_viewer, qtbot, runs):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=1)
    widget.particle_spin.setValue(5)  # 1-based
    expected = particle_panels(widget.session, 4)
    for name, image in zip(PANELS, (expected.raw, expected.reconstruction, expected.pose_free), strict=True):
        np.testing.assert_allclose(viewer.layers[name].data, image, rtol=1e-6)
    # side by side: same row, no overlap
    xs = [viewer.layers[n].translate[-1] for n in PANELS]
    ys = {viewer.layers[n].translate[-2] for n in PANELS}
    width = runs[1].box * runs[1].pixel_size
    assert len(ys) == 1 and np.all(np.diff(xs) > width)
    # right-click in the histogram picks the particle nearest that latent value
    k = 77
    _mouse(widget.plot, [float(widget.session.latents.z_mean[k, 0])], 3)
    assert widget.selected is not None
    chosen = widget.selected
    assert abs(widget.session.latents.z_mean[chosen, 0] - widget.session.latents.z_mean[k, 0]) < 1e-4
    assert widget.particle_spin.value() == chosen + 1
    np.testing.assert_allclose(viewer.layers[RECONSTRUCTION].data,
                               particle_panels(widget.session, chosen).reconstruction, rtol=1e-6)
    np.testing.assert_allclose(viewer.layers[POSE_FREE].metadata["particle"], chosen)


def test_clicking_the_2d_scatter_decodes_there_and_traverse_builds_a_grid(make_napari_viewer, qtbot, runs):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=2)
    run = runs[2]
    assert len(widget.sliders) == 2 and widget.plot.view.ndim == 2
    zm = widget.session.latents.z_mean
    target = np.percentile(zm, [20, 80], axis=0).diagonal()  # (z1 at its 20th, z2 at its 80th pct)
    _mouse(widget.plot, target, 1)
    np.testing.assert_allclose(widget.z, target, atol=1e-6 * np.ptp(zm) + 1e-9)
    np.testing.assert_allclose(viewer.layers[DECODED].data, run.decode(widget.z[None])[0], rtol=1e-5, atol=1e-6)
    # the sliders followed the click
    for d in range(2):
        pos = widget.sliders[d].value()
        assert abs(slider_value(pos, widget.slider_range(d), SLIDER_STEPS) - target[d]) <= \
            np.ptp(widget.slider_range(d)) / SLIDER_STEPS

    widget.steps_spin.setValue(4)
    with qtbot.waitSignal(widget.traversal_ready, timeout=WAIT_MS):
        widget.traverse()
    trav = viewer.layers[TRAVERSAL]
    assert trav.data.shape == (4, 4, run.box, run.box)
    tz = trav.metadata["traversal_z"].reshape(4, 4, 2)
    np.testing.assert_allclose(trav.data[2, 1], run.decode(tz[2, 1][None])[0], rtol=1e-5, atol=1e-6)


def test_encoding_a_particle_file_runs_in_a_worker_with_progress(make_napari_viewer, qtbot, runs):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=1)
    before = widget.session.latents
    _, star = sample_run_paths(1)
    with qtbot.waitSignal(widget.latents_ready, timeout=WAIT_MS):
        widget.encode_particles(star)
        assert widget.busy() and not widget.progress.isHidden()
        assert widget.progress.maximum() == 3  # 300 particles in chunks of 128
    assert widget.status.text().startswith(f"encoded {len(before)} particles")
    after = widget.session.latents
    assert after is not before and len(after) == len(before)
    direct = runs[1].encode(runs[1].preprocess(widget.session.stack.images(np.arange(20))))
    np.testing.assert_allclose(after.z_mean[:20], direct.z_mean, rtol=1e-4, atol=1e-4)
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    assert widget.progress.isHidden()


def test_a_bad_run_folder_is_a_status_line_not_a_crash(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = LatentExplorer(viewer)
    viewer.window.add_dock_widget(widget)
    with qtbot.waitSignal(widget.failed, timeout=WAIT_MS) as blocker:
        widget.load_run(tmp_path)
    assert "not a cryovae run directory" in blocker.args[0]
    assert "not a cryovae run directory" in widget.status.text()
    assert widget.session is None and DECODED not in viewer.layers
