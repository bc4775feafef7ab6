"""Screenshot of the particle finder in use: docs/img/napari_particle_finder.png.

Simulates one micrograph with ``cryovae simulate micrographs`` (hinge particles at 5 Å/px, SNR
1, ice blobs and a carbon edge), opens it with the plugin's reader (under a virtual X display
when there is no $DISPLAY), docks the Particle finder, picks it with the shipped tiny run
(napari_plugin/sample_run/z1), sets the threshold, adds one point by hand and saves the whole
window (canvas and dock).

    python examples/napari_finder_screenshot.py [-o docs/img/napari_particle_finder.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "napari_particle_finder.png"
SIMULATE = ["simulate", "micrographs", "--box", "32", "--apix", "5", "--snr", "1", "--size", "640x480",
            "--n-micrographs", "1", "--junk", "4", "--n-train", "0", "--seed", "3"]


def wait_for(signal, timeout_ms: int = 120_000) -> None:
    """Run the Qt event loop until ``signal`` fires."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    parser.add_argument("--threshold", type=float, default=None,
                        help="figure of merit shown (default: the picker's own threshold)")
    args = parser.parse_args()

    from click.testing import CliRunner

    from cryovae.cli.main import cli

    work = Path(tempfile.mkdtemp(prefix="cryovae_finder_"))
    res = CliRunner().invoke(cli, [*SIMULATE, "-o", str(work / "sim")], catch_exceptions=False)
    if res.exit_code != 0:
        raise SystemExit(res.output)

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1600, 1000), color_depth=24)
        display.start()
    try:
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_plugin.particle_finder import PICKS
        from napari_plugin.sample_data import sample_run_paths

        viewer = napari.Viewer(title="cryovae particle finder")
        viewer.window._qt_window.resize(1500, 900)
        app = QApplication.instance()
        viewer.open(str(work / "sim" / "micrographs" / "mic_000.mrc"), plugin="cryovae")
        _, widget = viewer.window.add_plugin_dock_widget("cryovae", "Particle finder")
        widget.find_particles(sample_run_paths(1)[0])
        wait_for(widget.picks_ready)
        if args.threshold is not None:
            widget.set_threshold(args.threshold)
        picks = viewer.layers[PICKS]
        picks.add([120.0, 560.0])  # one point added by hand (cyan ring, no psi)
        picks.selected_data = set()
        viewer.layers.selection.active = picks
        viewer.reset_view()
        viewer.camera.center = (230.0, 420.0)  # the carbon edge is left of the view, an ice blob in it
        viewer.camera.zoom *= 1.8
        app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.stem + ".tmp.png")
        viewer.screenshot(str(tmp), canvas_only=False)
        from PIL import Image

        # the micrograph's noise makes a large PNG: 256 colours (octree, which keeps the rare cyan) make it smaller
        Image.open(tmp).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(tmp, optimize=True)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
        viewer.close()
    finally:
        if display is not None:
            display.stop()


if __name__ == "__main__":
    main()
