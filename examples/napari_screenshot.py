"""Screenshot of the latent explorer in use: docs/img/napari_explorer.png.

Opens napari (under a virtual X display when there is no $DISPLAY), loads the shipped tiny
hinge run through File > Open Sample, moves the latent slider, builds a traversal, selects a
particle and saves the whole window.

    python examples/napari_screenshot.py [-o docs/img/napari_explorer.png] [--zdim 1]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "napari_explorer.png"


def wait_for(signal, app, timeout_ms: int = 120_000) -> None:
    """Run the Qt event loop until ``signal`` fires."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    parser.add_argument("--zdim", type=int, default=1, choices=(1, 2))
    parser.add_argument("--particle", type=int, default=12, help="1-based particle to show")
    args = parser.parse_args()

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1600, 1000), color_depth=24)
        display.start()
    try:
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_plugin.explorer_widget import SLIDER_STEPS
        from napari_plugin.sample_data import sample_run_paths

        viewer = napari.Viewer(title="cryovae latent explorer")
        viewer.window._qt_window.resize(1500, 900)
        app = QApplication.instance()
        _, widget = viewer.window.add_plugin_dock_widget("cryovae", "Latent explorer")
        rundir, star = sample_run_paths(args.zdim)
        widget.load_run(rundir, star)
        wait_for(widget.run_loaded, app)
        widget.steps_spin.setValue(7)
        widget.traverse()
        wait_for(widget.traversal_ready, app)
        widget.sliders[0].setValue(int(SLIDER_STEPS * 0.8))
        widget.particle_spin.setValue(args.particle)
        viewer.layers.selection.active = viewer.layers["cryovae decoded"]
        viewer.reset_view()
        app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.stem + ".tmp.png")
        viewer.screenshot(str(tmp), canvas_only=False)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
        viewer.close()
    finally:
        if display is not None:
            display.stop()


if __name__ == "__main__":
    main()
