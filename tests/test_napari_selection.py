"""Selecting particles in the latent explorer (a real napari viewer, headless under Xvfb): box
and lasso drags on the plot select exactly the particles inside, their aligned average and the
decoded image at their mean latent appear as layers, and "Save selection" writes the same star
as ``cryovae select`` with the equivalent ranges."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from click.testing import CliRunner  # noqa: E402
from matplotlib.backend_bases import MouseEvent  # noqa: E402
from test_napari_explorer import WAIT_MS, _explorer  # noqa: E402

from cryovae.cli.main import cli  # noqa: E402
from cryovae.geometry import apply_relion_alignment  # noqa: E402
from napari_plugin.explorer_widget import SELECTION_AVERAGE, SELECTION_MEAN  # noqa: E402
from napari_plugin.sample_data import sample_run_paths  # noqa: E402

pytestmark = pytest.mark.napari


def _drag(plot, points):
    """Press at the first point, move through the others, release at the last (left button)."""
    for k, point in enumerate(points):
        name = "button_press_event" if k == 0 else "motion_notify_event"
        x, y = plot.data_to_pixels(point)
        plot.canvas.callbacks.process(name, MouseEvent(name, plot.canvas, x, y, button=1))
    x, y = plot.data_to_pixels(points[-1])
    plot.canvas.callbacks.process("button_release_event",
                                  MouseEvent("button_release_event", plot.canvas, x, y, button=1))


def _star_body(path):
    """The star's text without starfile's header line (it holds the time of writing)."""
    return [line for line in path.read_text().splitlines() if not line.startswith("# Created by")]


def test_a_box_on_the_2d_plot_selects_the_particles_inside_and_saves_what_select_writes(
        make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=2)
    z = widget.session.latents.z_mean
    lo, hi = np.percentile(z, 25, axis=0), np.percentile(z, 75, axis=0)
    widget.tool_combo.setCurrentText("box")
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        _drag(widget.plot, [lo, (lo + hi) / 2, hi])
    inside = np.all((z >= lo) & (z <= hi), axis=1)
    # the drag's ends are mapped through canvas pixels: compare away from the box's edges
    near_edge = np.any(np.abs(z - lo) < 0.01 * np.ptp(z, 0), 1) | np.any(np.abs(z - hi) < 0.01 * np.ptp(z, 0), 1)
    assert inside.sum() > 10
    np.testing.assert_array_equal(widget.selection[~near_edge], inside[~near_edge])
    assert widget.selection_label.text() == f"{widget.selection.sum()} of {len(z)} particles"

    # the decoded mean and the aligned average of the selection
    run, lat, sel = widget.session.run, widget.session.latents, np.flatnonzero(widget.selection)
    np.testing.assert_allclose(viewer.layers[SELECTION_MEAN].data, run.decode(z[sel].mean(0)[None])[0],
                               rtol=1e-5, atol=1e-6)
    raw = run.preprocess(widget.session.stack.images(sel))
    aligned = np.mean([apply_relion_alignment(im, lat.psi_deg[i], -lat.center_px[i], order=1)
                       for im, i in zip(raw, sel, strict=True)], axis=0)
    np.testing.assert_allclose(viewer.layers[SELECTION_AVERAGE].data, aligned, rtol=1e-4, atol=1e-5)

    # Save selection == cryovae select with the same ranges (the box's own corners)
    saved = widget.save_selection(tmp_path / "napari.star")
    vz = np.asarray(z[widget.selection])
    a, b = vz.min(0), vz.max(0)
    outside = z[~widget.selection]
    assert not np.any(np.all((outside >= a) & (outside <= b), axis=1))  # the box is that range
    rundir, star = sample_run_paths(2)
    r = CliRunner().invoke(cli, ["select", str(rundir), "--particles", str(star), "--z1", f"{float(a[0])!r}:{float(b[0])!r}",
                                 "--z2", f"{float(a[1])!r}:{float(b[1])!r}", "-o", str(tmp_path / "cli.star")])
    assert r.exit_code == 0, r.output
    assert _star_body(saved) == _star_body(tmp_path / "cli.star")


def test_a_lasso_selects_the_particles_inside_its_polygon_and_clear_removes_it(make_napari_viewer, qtbot):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=2)
    z = widget.session.latents.z_mean
    (x0, y0), (x1, y1) = np.percentile(z, 10, axis=0), np.percentile(z, 90, axis=0)  # inside the axes
    triangle = [np.array([x0, y0]), np.array([x1, y0]), np.array([(x0 + x1) / 2, y1])]
    widget.tool_combo.setCurrentText("lasso")
    path = [triangle[0], *np.linspace(triangle[0], triangle[1], 6)[1:], *np.linspace(triangle[1], triangle[2], 6)[1:],
            *np.linspace(triangle[2], triangle[0], 6)[1:-1]]
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        _drag(widget.plot, path)

    def inside_triangle(p, margin):
        (x1, y1), (x2, y2), (x3, y3) = triangle
        d = (y2 - y3) * (x1 - x3) + (x3 - x2) * (y1 - y3)
        l1 = ((y2 - y3) * (p[:, 0] - x3) + (x3 - x2) * (p[:, 1] - y3)) / d
        l2 = ((y3 - y1) * (p[:, 0] - x3) + (x1 - x3) * (p[:, 1] - y3)) / d
        return np.minimum.reduce([l1, l2, 1 - l1 - l2]) > margin

    sure_in, sure_out = inside_triangle(z, 0.02), ~inside_triangle(z, -0.02)
    assert sure_in.sum() > 10 and sure_out.sum() > 10
    assert widget.selection[sure_in].all() and not widget.selection[sure_out].any()
    assert SELECTION_MEAN in viewer.layers and widget.save_button.isEnabled()
    widget.clear_button.click()
    assert widget.selection is None and SELECTION_MEAN not in viewer.layers and not widget.save_button.isEnabled()


def test_a_box_on_the_histogram_selects_a_z1_range_and_colour_options(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = _explorer(make_napari_viewer, qtbot, zdim=1)
    z1 = widget.session.latents.z_mean[:, 0]
    lo, hi = np.percentile(z1, [60, 95])
    widget.tool_combo.setCurrentText("box")
    with qtbot.waitSignal(widget.selection_changed, timeout=WAIT_MS):
        _drag(widget.plot, [[lo], [hi]])
    sel = widget.selection
    a, b = z1[sel].min(), z1[sel].max()
    assert np.all((z1 < a) | (z1 > b) | sel)  # an interval of z1
    assert abs(sel.mean() - 0.35) < 0.05
    saved = widget.save_selection(tmp_path / "napari.star")
    rundir, star = sample_run_paths(1)
    r = CliRunner().invoke(cli, ["select", str(rundir), "--particles", str(star), "--z1", f"{float(a)!r}:{float(b)!r}",
                                 "-o", str(tmp_path / "cli.star")])
    assert r.exit_code == 0, r.output
    assert _star_body(saved) == _star_body(tmp_path / "cli.star")
    options = [widget.colour_combo.itemText(i) for i in range(widget.colour_combo.count())]
    assert options == ["none", "z1", "psi", "prob"]
