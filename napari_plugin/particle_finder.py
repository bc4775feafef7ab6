"""The particle finder dock widget: pick a micrograph with a trained TARGET-VAE run, edit, save.

Layout (top to bottom): the micrograph layer and its pixel size, the run folder, *Find
particles* with a progress bar (tiles done), the threshold (slider and spin box) with the count
of picks, *Save…*, and the status line. *Find particles* runs
:func:`cryovae.inference.pick_micrograph` in a napari ``thread_worker`` and then shows, over the
micrograph (same scale and translation, so everything is in the micrograph layer's data
coordinates, i.e. its pixels):

* ``cryovae score``: the score map (``MicrographPicks.score``, one pixel per ``scale``
  micrograph pixels), colormap inferno, additive blending, opacity 0.5;
* ``cryovae picks``: a Points layer, one ring per pick above the threshold (size = the
  particle diameter in micrograph pixels, transparent face, yellow edge; cyan for points added
  by hand), features ``fom``, ``psi_deg``, ``z_1..``, ``candidate``;
* ``cryovae psi``: a Vectors layer, one line per pick from its centre along its psi (the
  reference's +x axis, :mod:`napari_plugin.finder_points`), half a diameter long.

The threshold re-selects the points from the picker's candidate table (no new encoder pass);
points added or deleted by hand (the Points layer's own add / select / delete tools) survive a
change of threshold. *Save…* writes the layer's points as a RELION coordinate star
(:func:`cryovae.io.write_coordinates`, atomic). Errors go to the status line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from cryovae.errors import CryovaeError
from cryovae.inference import MicrographPicks, PickConfig, TrainedRun, pick_micrograph
from cryovae.io import write_coordinates
from napari_plugin.finder_points import (
    CANDIDATE,
    HAND_COLOUR,
    PickEdits,
    border_colours,
    fom_range,
    hand_features,
    psi_vectors,
    slider_threshold,
    star_table,
    threshold_position,
)

log = logging.getLogger(__name__)

SCORE = "cryovae score"
PICKS = "cryovae picks"
PSI = "cryovae psi"
#: integer positions of the threshold slider.
THRESHOLD_STEPS = 1000
SCORE_OPACITY = 0.5


def particle_diameter_px(picks: MicrographPicks) -> float:
    """The particle diameter drawn, micrograph pixels: the picker's minimum distance between
    picks (by default half the run's box at the micrograph's pixel size, about one particle
    diameter for a box twice the particle)."""
    return float(picks.distance_px)


class ParticleFinder(QWidget):
    """Dock widget picking particles in a micrograph layer with a trained run.

    Parameters
    ----------
    napari_viewer : the viewer (napari passes it in).
    device : torch device the run is loaded on ("cpu", "cuda", ...).

    Signals
    -------
    picks_ready : the picker finished and the layers are shown.
    saved(str) : a coordinate star was written (its path).
    failed(str) : the picker or the save failed; the one-line message.
    """

    picks_ready = Signal()
    saved = Signal(str)
    failed = Signal(str)
    _tiles_done = Signal(int, int)

    def __init__(self, napari_viewer, device: str = "cpu"):
        super().__init__()
        self.viewer = napari_viewer
        self.device = device
        #: how :func:`cryovae.inference.pick_micrograph` picks (its defaults; the threshold is the slider's).
        self.config = PickConfig()
        self.picks: MicrographPicks | None = None
        self.edits: PickEdits | None = None
        self.threshold: float | None = None
        self.diameter_px = 1.0
        self._range = (0.0, 1.0)
        self._runs: dict[str, TrainedRun] = {}
        self._workers: list = []
        self._updating = False
        self._build_ui()
        self._tiles_done.connect(self._show_tiles)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ================================================================== UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        grid = QGridLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The micrograph: a 2-D image layer (File > Open a micrograph .mrc)")
        self.layer_combo.currentIndexChanged.connect(self._layer_changed)
        self.apix_spin = QDoubleSpinBox()
        self.apix_spin.setRange(0.0, 100.0)
        self.apix_spin.setDecimals(3)
        self.apix_spin.setSuffix(" Å/px")
        self.apix_spin.setSpecialValueText("run's pixel size")
        self.apix_spin.setToolTip("The micrograph's pixel size (from its header when known); the picker "
                                  "brings the micrograph to the run's pixel size")
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("cryovae train output folder (TARGET-VAE)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_run)
        grid.addWidget(QLabel("micrograph"), 0, 0)
        grid.addWidget(self.layer_combo, 0, 1, 1, 2)
        grid.addWidget(QLabel("pixel size"), 1, 0)
        grid.addWidget(self.apix_spin, 1, 1, 1, 2)
        grid.addWidget(QLabel("run"), 2, 0)
        grid.addWidget(self.run_edit, 2, 1)
        grid.addWidget(browse, 2, 2)
        outer.addLayout(grid)

        self.find_button = QPushButton("Find particles")
        self.find_button.setToolTip("Run the run's encoder over the micrograph (in the background)")
        self.find_button.clicked.connect(self._find_clicked)
        outer.addWidget(self.find_button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m tiles")
        self.progress.setVisible(False)
        outer.addWidget(self.progress)

        row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, THRESHOLD_STEPS)
        self.threshold_slider.setToolTip("Figure of merit a candidate needs to be shown (live)")
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(self.set_threshold)
        row.addWidget(QLabel("threshold"))
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        outer.addLayout(row)
        self.count_label = QLabel("no picks")
        outer.addWidget(self.count_label)

        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the points of 'cryovae picks' (hand-added ones too) as a RELION "
                                    "coordinate star")
        self.save_button.clicked.connect(self._save_clicked)
        outer.addWidget(self.save_button)
        self.status = QLabel("open a micrograph and choose a run")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        outer.addStretch(1)
        self._set_enabled()

    def _set_enabled(self) -> None:
        have = self.edits is not None and len(self.edits.candidates) > 0
        self.threshold_slider.setEnabled(have)
        self.threshold_spin.setEnabled(have)
        self.save_button.setEnabled(PICKS in self.viewer.layers)
        self.find_button.setEnabled(not self._workers)

    def _show_status(self, text: str) -> None:
        self.status.setText(text)

    def _browse_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "cryovae run folder", self.run_edit.text())
        if path:
            self.run_edit.setText(path)

    # ================================================================== micrograph layer
    def micrograph_layers(self) -> list:
        """The viewer's 2-D image layers (the finder's own score map excluded)."""
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim == 2 and layer.name != SCORE]

    def _refresh_layers(self, *_) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.micrograph_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if current not in names:
            self._layer_changed()
        self._set_enabled()

    def _layer_changed(self, *_) -> None:
        layer = self.micrograph_layer()
        apix = layer.metadata.get("apix") if layer is not None else None
        self.apix_spin.setValue(float(apix) if apix else 0.0)

    def micrograph_layer(self):
        """The chosen micrograph layer, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def set_micrograph(self, layer) -> None:
        """Choose ``layer`` (a layer or its name) as the micrograph."""
        name = layer if isinstance(layer, str) else layer.name
        self.layer_combo.setCurrentText(name)
        self._layer_changed()

    # ================================================================== picking
    def _find_clicked(self) -> None:
        self.find_particles()

    def find_particles(self, rundir: str | Path | None = None):
        """Pick the chosen micrograph with run ``rundir`` (default: the run field) in the
        background; ``picks_ready`` (or ``failed``) fires when done. Returns the worker, or None
        when there is nothing to pick."""
        if rundir is not None:
            self.run_edit.setText(str(rundir))
        layer = self.micrograph_layer()
        if layer is None:
            return self._fail("open a micrograph first (a 2-D image layer)")
        folder = self.run_edit.text().strip()
        if not folder:
            return self._fail("choose a run folder first")
        image = np.asarray(layer.data, dtype=np.float32)
        apix = self.apix_spin.value() or None
        cached = self._runs.get(folder)
        tiles = self._tiles_done
        config = self.config

        def job():
            run = cached if cached is not None else TrainedRun.load(folder, device=self.device)
            picks = pick_micrograph(run, image, apix, config, progress=lambda done, total: tiles.emit(done, total))
            return folder, run, picks, apix

        from napari.qt.threading import create_worker

        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._picked(layer, result))
        worker.errored.connect(self._job_failed)
        worker.finished.connect(lambda: self._job_done(worker))
        self._workers.append(worker)
        self.progress.setRange(0, 0)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self._show_status(f"finding particles in {layer.name} with {Path(folder).name}…")
        self._set_enabled()
        worker.start()
        return worker

    def busy(self) -> bool:
        """True while the picker runs."""
        return bool(self._workers)

    def _show_tiles(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))

    def _job_done(self, worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if not self._workers:
            self.progress.setVisible(False)
        self._set_enabled()

    def _fail(self, message: str) -> None:
        self._show_status(message)
        self.failed.emit(message)
        return None

    def _job_failed(self, exc: Exception) -> None:
        if isinstance(exc, CryovaeError):
            message = str(exc)
        else:
            log.error("particle finder failed", exc_info=exc)
            message = f"{type(exc).__name__}: {exc}"
        self._fail(message)

    def _picked(self, layer, result) -> None:
        folder, run, picks, apix = result
        self._runs[folder] = run
        self.picks = picks
        self.edits = PickEdits(picks.table.reset_index(drop=True))
        self.diameter_px = particle_diameter_px(picks)
        self._range = fom_range(self.edits.candidates)
        lo, hi = self._range
        self.threshold = float(min(max(picks.threshold, lo), hi))
        for w in (self.threshold_spin, self.threshold_slider):
            w.blockSignals(True)
        self.threshold_spin.setRange(lo, hi)
        self.threshold_spin.setSingleStep((hi - lo) / 100)
        self.threshold_spin.setValue(self.threshold)
        self.threshold_slider.setValue(threshold_position(self.threshold, self._range, THRESHOLD_STEPS))
        for w in (self.threshold_spin, self.threshold_slider):
            w.blockSignals(False)
        self._show_score(layer, picks)
        self._show_points(layer, run)
        self._show_status(f"{run.rundir.name} found {len(self.edits.candidates)} candidates in {layer.name} "
                          f"(threshold {self.threshold:.3g}: the picker's default); add or delete points with the "
                          "layer's tools, then Save")
        self._set_enabled()
        self.picks_ready.emit()

    # ================================================================== layers
    @staticmethod
    def _frame(layer) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(layer.scale[-2:], np.float64), np.asarray(layer.translate[-2:], np.float64)

    def _show_score(self, layer, picks: MicrographPicks) -> None:
        scale, translate = self._frame(layer)
        score = np.asarray(picks.score, np.float32)
        finite = score[np.isfinite(score)]
        lo, hi = (float(v) for v in np.percentile(finite, [1, 99.9])) if finite.size else (0.0, 1.0)
        sx, sy = picks.scale_xy  # score pixel (i, j) is centred at micrograph (x, y) = (j sx, i sy)
        kwargs = {"scale": scale * np.array([sy, sx]), "translate": translate,
                  "contrast_limits": (lo, hi if hi > lo else lo + 1.0)}
        if SCORE in self.viewer.layers:
            self.viewer.layers.remove(SCORE)
        self.viewer.add_image(score, name=SCORE, colormap="inferno", blending="additive", opacity=SCORE_OPACITY,
                              metadata={"micrograph": layer.name, "score_scale": float(picks.scale)}, **kwargs)

    def _show_points(self, layer, run: TrainedRun) -> None:
        scale, translate = self._frame(layer)
        data, features = self.edits.points(self.threshold)
        self._updating = True
        try:
            for name in (PICKS, PSI):
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
            vectors = psi_vectors(data, features["psi_deg"].to_numpy(), self.diameter_px / 2)
            self.viewer.add_vectors(vectors, name=PSI, scale=scale, translate=translate, edge_color="yellow",
                                    edge_width=max(self.diameter_px / 10, 1.0), vector_style="line", length=1.0)
            defaults = hand_features(1, self.edits.zcols)
            points = self.viewer.add_points(
                data, name=PICKS, scale=scale, translate=translate, features=features, feature_defaults=defaults,
                size=self.diameter_px, face_color="transparent", border_color=border_colours(features),
                border_width=0.08, border_width_is_relative=True,
                metadata={"micrograph": layer.name, "micrograph_path": layer.metadata.get("path"),
                          "run": str(run.rundir), "threshold": self.threshold})
            points.current_size = self.diameter_px
            points.current_border_color = "cyan"
            points.current_face_color = "transparent"
            points.events.data.connect(self._points_edited)
        finally:
            self._updating = False
        self._refresh_count()

    def _points_edited(self, event) -> None:
        """After the user adds, deletes or moves a point: mark added points as hand picks (fom,
        psi and z NaN, candidate -1, cyan) and redraw the psi lines."""
        if self._updating:
            return
        action = str(getattr(event, "action", ""))
        layer = self.viewer.layers[PICKS]
        if action.endswith("ADDED") or action == "added":
            n = len(layer.data)
            rows = sorted({int(i) % n for i in (event.data_indices or ())})
            if rows:
                hand = hand_features(len(rows), self.edits.zcols if self.edits else [])
                for col in hand.columns:
                    if col in layer.features.columns:
                        layer.features.loc[rows, col] = hand[col].to_numpy()
                colours = np.asarray(layer.border_color).copy()
                colours[rows] = HAND_COLOUR
                self._updating = True
                try:
                    layer.border_color = colours
                finally:
                    self._updating = False
        if action.endswith("ED") or action in ("added", "removed", "changed"):
            self._update_vectors()
            self._refresh_count()

    def _update_vectors(self) -> None:
        if PICKS not in self.viewer.layers or PSI not in self.viewer.layers:
            return
        layer = self.viewer.layers[PICKS]
        psi = layer.features["psi_deg"].to_numpy(np.float64) if len(layer.features) else np.zeros(0)
        self.viewer.layers[PSI].data = psi_vectors(layer.data, psi, self.diameter_px / 2)

    def _refresh_count(self) -> None:
        if PICKS not in self.viewer.layers:
            self.count_label.setText("no picks")
            return
        features = self.viewer.layers[PICKS].features
        hand = int((features[CANDIDATE].to_numpy() < 0).sum()) if len(features) else 0
        self.count_label.setText(f"{len(features)} picks" + (f" ({hand} by hand)" if hand else ""))

    # ================================================================== threshold
    def _slider_moved(self, pos: int) -> None:
        self.set_threshold(slider_threshold(pos, self._range, THRESHOLD_STEPS))

    def set_threshold(self, threshold: float) -> None:
        """Show the candidates with ``fom >= threshold`` (keeping the hand edits); the slider and
        spin box follow."""
        if self.edits is None or PICKS not in self.viewer.layers:
            return
        threshold = float(threshold)
        layer = self.viewer.layers[PICKS]
        self.edits.absorb(layer.data, layer.features, self.threshold)
        self.threshold = threshold
        for w in (self.threshold_spin, self.threshold_slider):
            w.blockSignals(True)
        self.threshold_spin.setValue(threshold)
        self.threshold_slider.setValue(threshold_position(threshold, self._range, THRESHOLD_STEPS))
        for w in (self.threshold_spin, self.threshold_slider):
            w.blockSignals(False)
        data, features = self.edits.points(threshold)
        self._updating = True
        try:
            layer.selected_data = set()
            layer.data = data
            layer.features = features
            layer.size = np.full(len(data), self.diameter_px)
            layer.border_color = border_colours(features)
            layer.metadata["threshold"] = threshold
        finally:
            self._updating = False
        self._update_vectors()
        self._refresh_count()

    def shown_candidates(self) -> np.ndarray:
        """Candidate ids of the picker's points now in the layer (sorted)."""
        if PICKS not in self.viewer.layers:
            return np.zeros(0, np.int64)
        ids = self.viewer.layers[PICKS].features[CANDIDATE].to_numpy()
        return np.sort(ids[ids >= 0]).astype(np.int64)

    # ================================================================== save
    def coordinate_table(self):
        """The RELION coordinate table of the points in ``cryovae picks`` (hand-added ones too;
        :func:`napari_plugin.finder_points.star_table`)."""
        if PICKS not in self.viewer.layers:
            raise CryovaeError("nothing to save: find particles first")
        layer = self.viewer.layers[PICKS]
        return star_table(layer.data, layer.features)

    def save(self, path: str | Path) -> Path | None:
        """Write the picks to ``path`` as a RELION coordinate star (atomic); errors go to the
        status line (and ``failed``), success to ``saved``. Returns the path, or None."""
        try:
            table = self.coordinate_table()
            out = write_coordinates(path, table)
        except (CryovaeError, OSError) as exc:
            return self._fail(str(exc))
        features = self.viewer.layers[PICKS].features
        hand = int((features[CANDIDATE].to_numpy() < 0).sum()) if len(features) else 0
        self._show_status(f"saved {len(table)} picks ({hand} by hand) to {out}")
        self.saved.emit(str(out))
        return Path(out)

    def _save_clicked(self) -> None:
        layer = self.micrograph_layer()
        start = "picks.star"
        if layer is not None and layer.metadata.get("path"):
            start = str(Path(layer.metadata["path"]).with_suffix(".star"))
        path, _ = QFileDialog.getSaveFileName(self, "Save picks as a RELION coordinate star", start,
                                              "RELION star (*.star)")
        if path:
            self.save(path)


__all__ = ["PICKS", "PSI", "SCORE", "ParticleFinder"]
