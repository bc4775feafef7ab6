"""The latent explorer dock widget: load a run, drag through its latent space, pick particles.

Layout (top to bottom): run folder and particle file, the latent-space plot (view, colour and
tool: decode, box or lasso selection), one slider per latent dimension, traversal steps, the
selection (count, Clear, Save selection), particle number. It owns these layers, all in Å
(scale = the run's pixel size): the decoded image at theta = 0, c = 0 (``cryovae decoded``), the
traversal stack to its right, the selected particle's raw / reconstruction / pose-free images in
a row below, and, for a selection, the aligned average of its particles and the decoded image at
its mean latent in a third row. Loading, encoding and traversing run in napari ``thread_worker``s with
progress; the computations live in :mod:`napari_plugin.latent_space`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cryovae.errors import CryovaeError
from cryovae.inference import Latents
from cryovae.io import read_particles
from napari_plugin.latent_plot import LatentPlot
from napari_plugin.latent_space import (
    PCA_MODE,
    Session,
    class_gallery,
    class_mask,
    colour_options,
    colour_values,
    decode_one,
    decoded_range,
    encode_session_stack,
    latent_ranges,
    latent_view,
    load_session,
    mode_label,
    particle_panels,
    plot_modes,
    region_mask,
    save_selection,
    selection_images,
    session_classes,
    slider_position,
    slider_value,
    traversal_for,
    traversal_stack,
)

log = logging.getLogger(__name__)

DECODED = "cryovae decoded"
TRAVERSAL = "cryovae traversal"
PARTICLE = "cryovae particle"
RECONSTRUCTION = "cryovae reconstruction"
POSE_FREE = "cryovae pose-free"
PANELS = (PARTICLE, RECONSTRUCTION, POSE_FREE)
SELECTION_AVERAGE = "cryovae selection average"
SELECTION_MEAN = "cryovae selection decoded mean"
CLASSES = "cryovae classes"
#: integer positions of each latent slider.
SLIDER_STEPS = 400
#: gap between tiled layers, in model pixels.
GAP = 4
ENCODE_BATCH = 128


class LatentExplorer(QWidget):
    """Dock widget exploring a trained cryovae run in a napari viewer.

    Parameters
    ----------
    napari_viewer : the viewer (napari passes it in).
    device : torch device for decoding and encoding ("cpu", "cuda", ...).

    Signals
    -------
    run_loaded : a run is installed (sliders, plot and decoded layer ready).
    latents_ready : the particles' latents are known (after loading or encoding).
    traversal_ready : the traversal layer was (re)built.
    selection_changed : the particle selection (``selection``) changed.
    failed(str) : a background job failed; the one-line message.
    """

    run_loaded = Signal()
    latents_ready = Signal()
    traversal_ready = Signal()
    selection_changed = Signal()
    failed = Signal(str)

    def __init__(self, napari_viewer, device: str = "cpu"):
        super().__init__()
        self.viewer = napari_viewer
        self.device = device
        self.session: Session | None = None
        self.z = np.zeros(0)
        self.view = None
        self.selected: int | None = None
        self.selection: np.ndarray | None = None  # (n,) bool over the session's particles
        self._ranges = np.zeros((0, 2))
        self._sliders: list[QSlider] = []
        self._slider_labels: list[QLabel] = []
        self._contrast = (0.0, 1.0)
        self._workers: list = []
        self.class_averages = None
        self._build_ui()

    # ================================================================== UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)

        files = QGroupBox("Run")
        grid = QGridLayout(files)
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("cryovae train output folder")
        run_browse = QPushButton("…")
        run_browse.clicked.connect(self._browse_run)
        self.particles_edit = QLineEdit()
        self.particles_edit.setPlaceholderText("particle file (default: the run's training file)")
        particles_browse = QPushButton("…")
        particles_browse.clicked.connect(self._browse_particles)
        grid.addWidget(QLabel("folder"), 0, 0)
        grid.addWidget(self.run_edit, 0, 1)
        grid.addWidget(run_browse, 0, 2)
        grid.addWidget(QLabel("particles"), 1, 0)
        grid.addWidget(self.particles_edit, 1, 1)
        grid.addWidget(particles_browse, 1, 2)
        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load run")
        self.load_button.clicked.connect(self._load_clicked)
        self.encode_button = QPushButton("Encode particles")
        self.encode_button.setToolTip("Encode the particle file with the run (replaces the plotted latents)")
        self.encode_button.clicked.connect(self._encode_clicked)
        self.sample_button = QPushButton("Sample run")
        self.sample_button.setToolTip("Load the pretrained tiny hinge run shipped with cryovae")
        self.sample_button.clicked.connect(self.load_sample_run)
        for b in (self.load_button, self.encode_button, self.sample_button):
            buttons.addWidget(b)
        grid.addLayout(buttons, 2, 0, 1, 3)
        self.status = QLabel("no run loaded")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        grid.addWidget(self.status, 3, 0, 1, 3)
        grid.addWidget(self.progress, 4, 0, 1, 3)
        outer.addWidget(files)

        space = QGroupBox("Latent space")
        space_layout = QVBoxLayout(space)
        self.mode_combo = QComboBox()
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        space_layout.addWidget(self.mode_combo)
        view_row = QHBoxLayout()
        self.colour_combo = QComboBox()
        self.colour_combo.setToolTip("Colour the 2-D plot by a third quantity")
        self.colour_combo.currentIndexChanged.connect(self._mode_changed)
        self.tool_combo = QComboBox()
        self.tool_combo.addItems(list(LatentPlot.TOOLS))
        self.tool_combo.setToolTip("Left drag: decode the latent under the mouse, or select particles with a box "
                                   "or a lasso")
        self.tool_combo.currentTextChanged.connect(lambda tool: self.plot.set_tool(tool))
        view_row.addWidget(QLabel("colour"))
        view_row.addWidget(self.colour_combo, 1)
        view_row.addWidget(QLabel("tool"))
        view_row.addWidget(self.tool_combo, 1)
        space_layout.addLayout(view_row)
        self.plot = LatentPlot()
        self.plot.point_clicked.connect(self._plot_point)
        self.plot.particle_clicked.connect(self.select_particle)
        self.plot.region_selected.connect(self._region_selected)
        space_layout.addWidget(self.plot)
        self.slider_form = QFormLayout()
        space_layout.addLayout(self.slider_form)
        row = QHBoxLayout()
        self.median_button = QPushButton("Median")
        self.median_button.setToolTip("Set every slider to the particles' median latent")
        self.median_button.clicked.connect(self.reset_to_median)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(2, 40)
        self.steps_spin.setValue(9)
        self.steps_spin.setPrefix("steps ")
        self.traverse_button = QPushButton("Traverse")
        self.traverse_button.setToolTip("Decode a row (1-D) or grid (2-D) of images along the plotted axes")
        self.traverse_button.clicked.connect(self.traverse)
        row.addWidget(self.median_button)
        row.addWidget(self.steps_spin)
        row.addWidget(self.traverse_button)
        space_layout.addLayout(row)
        outer.addWidget(space)

        chosen = QGroupBox("Selection")
        srow = QHBoxLayout(chosen)
        self.selection_label = QLabel("none (draw a box or lasso)")
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear_selection)
        self.save_button = QPushButton("Save selection…")
        self.save_button.setToolTip("Write the selected particles as a RELION .star or cryoSPARC .cs "
                                    "(the same file cryovae select writes)")
        self.save_button.clicked.connect(self._save_clicked)
        srow.addWidget(self.selection_label, 1)
        srow.addWidget(self.clear_button)
        srow.addWidget(self.save_button)
        outer.addWidget(chosen)

        self.classes_box = QGroupBox("2D classes")
        crow = QVBoxLayout(self.classes_box)
        self.class_list = QListWidget()
        self.class_list.setToolTip("Click a class to select its particles; tick classes to select them "
                                   "together, then Save selection")
        self.class_list.itemClicked.connect(self._class_clicked)
        self.class_list.itemChanged.connect(self._class_ticked)
        crow.addWidget(self.class_list)
        self.classes_box.setVisible(False)
        outer.addWidget(self.classes_box)

        particles = QGroupBox("Particle")
        prow = QHBoxLayout(particles)
        self.particle_spin = QSpinBox()
        self.particle_spin.setRange(0, 0)
        self.particle_spin.setSpecialValueText("none")
        self.particle_spin.setToolTip("Particle number (1-based, file order); right-click the plot to pick")
        self.particle_spin.valueChanged.connect(self._particle_spin_changed)
        prow.addWidget(QLabel("number"))
        prow.addWidget(self.particle_spin, 1)
        outer.addWidget(particles)
        outer.addStretch(1)
        self._set_enabled(False)

    def _set_enabled(self, loaded: bool) -> None:
        has_latents = loaded and self.session is not None and self.session.latents is not None
        has_z = loaded and self.session is not None and self.session.zdim > 0
        self.encode_button.setEnabled(loaded)
        self.median_button.setEnabled(has_latents and has_z)
        self.traverse_button.setEnabled(has_latents and has_z)
        self.mode_combo.setEnabled(has_latents and has_z)
        self.colour_combo.setEnabled(has_latents and has_z)
        self.tool_combo.setEnabled(has_latents and has_z)
        has_selection = has_latents and self.selection is not None and bool(self.selection.any())
        self.clear_button.setEnabled(has_selection)
        self.save_button.setEnabled(has_selection and self.session.stack is not None)
        self.particle_spin.setEnabled(has_latents and self.session.stack is not None)

    def _browse_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "cryovae run folder", self.run_edit.text())
        if path:
            self.run_edit.setText(path)
            self.particles_edit.clear()

    def _browse_particles(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Particle file", self.particles_edit.text(),
                                              "Particles (*.star *.mrcs *.mrc *.cs)")
        if path:
            self.particles_edit.setText(path)

    def _load_clicked(self) -> None:
        if not self.run_edit.text().strip():
            self._show_status("choose a run folder first")
            return
        self.load_run(self.run_edit.text().strip(), self.particles_edit.text().strip() or None)

    def _encode_clicked(self) -> None:
        path = self.particles_edit.text().strip()
        if not path:
            self._show_status("choose a particle file to encode")
            return
        self.encode_particles(path)

    def _show_status(self, text: str) -> None:
        self.status.setText(text)

    # ================================================================== background jobs
    def _start(self, func, *args, on_return=None, on_yield=None, progress=None, desc: str = "working"):
        """Run ``func(*args)`` in a napari thread worker; errors go to the status line."""
        from napari.qt.threading import create_worker

        worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True,
                               _progress={"total": progress, "desc": desc} if progress else None)
        if on_return is not None:
            worker.returned.connect(on_return)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        worker.errored.connect(self._job_failed)
        worker.finished.connect(lambda: self._job_done(worker))
        self._workers.append(worker)
        self.progress.setVisible(True)
        self.progress.setRange(0, progress or 0)
        self.progress.setValue(0)
        self._show_status(f"{desc}…")
        worker.start()
        return worker

    def _job_done(self, worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if not self._workers:
            self.progress.setVisible(False)

    def _job_failed(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, CryovaeError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, CryovaeError):
            log.error("latent explorer job failed", exc_info=exc)
        self._show_status(message)
        try:
            from napari.utils.notifications import show_error

            show_error(message)
        except Exception:  # pragma: no cover - notifications are a nicety
            pass
        self.failed.emit(message)

    def busy(self) -> bool:
        """True while a background job runs."""
        return bool(self._workers)

    # ================================================================== loading
    def load_run(self, rundir: str | Path, particles: str | Path | None = None):
        """Load ``rundir`` (and ``particles``, default its training file) in the background;
        ``run_loaded`` fires when done. Returns the worker."""
        self.run_edit.setText(str(rundir))
        if particles is not None:
            self.particles_edit.setText(str(particles))
        return self._start(load_session, Path(rundir), particles, self.device, on_return=self._install,
                           desc=f"loading {Path(rundir).name}")

    def load_sample_run(self):
        """Load the pretrained tiny hinge run shipped with the plugin."""
        from napari_plugin.sample_data import sample_run_paths

        rundir, particles = sample_run_paths()
        return self.load_run(rundir, particles)

    def _install(self, session: Session) -> None:
        self.session = session
        run = session.run
        stack_text = f"{len(session.stack)} particles" if session.stack is not None else "particles not found"
        self._show_status(f"{run.rundir.name}: {run.config.model.kind}, zdim {run.zdim}, box {run.box} px, "
                          f"{run.pixel_size:.2f} Å/px; {stack_text}")
        if session.stack is not None and not self.particles_edit.text():
            self.particles_edit.setText(str(session.stack.path))
        self._clear_sliders()
        z_ref = session.latents.z_mean if session.latents is not None else np.zeros((1, run.zdim))
        self._ranges = latent_ranges(z_ref)
        self.z = np.median(z_ref, axis=0) if run.zdim else np.zeros(0)
        for d in range(run.zdim):
            self._add_slider(d)
        self._contrast = decoded_range(run.decode, z_ref)
        self._install_latents()
        self._decode()
        for name in (TRAVERSAL, *PANELS):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._set_enabled(True)
        self.run_loaded.emit()
        if session.latents is None and session.stack is not None:
            self._show_status(f"{run.rundir.name} has no latents.npz yet: encoding its particles")
            self._encode(session.stack)

    def _install_latents(self) -> None:
        """Refresh the plot modes, plot and particle range after latents change."""
        session = self.session
        self.mode_combo.blockSignals(True)
        self.mode_combo.clear()
        modes = plot_modes(session.zdim) if session.latents is not None else []
        for mode in modes:
            self.mode_combo.addItem(mode_label(mode), mode)
        self.mode_combo.blockSignals(False)
        self.colour_combo.blockSignals(True)
        self.colour_combo.clear()
        self.colour_combo.addItems(colour_options(session))
        self.colour_combo.blockSignals(False)
        self.selected = None
        self.selection = None
        self.selection_label.setText("none (draw a box or lasso)")
        for name in (SELECTION_AVERAGE, SELECTION_MEAN):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.particle_spin.blockSignals(True)
        self.particle_spin.setRange(0, session.n_particles if session.stack is not None else 0)
        self.particle_spin.setValue(0)
        self.particle_spin.blockSignals(False)
        self._install_classes()
        if modes:
            self._mode_changed()
        elif session.zdim == 0:
            self.plot.show_message("this run has no content latents (zdim 0)")
        else:
            self.plot.show_message("no latents yet: encode the particles")
        self._set_enabled(True)

    # ================================================================== classes
    def _install_classes(self) -> None:
        """The class list (largest class first) and the ``cryovae classes`` gallery layer for a run
        whose model assigns classes; both hidden / removed for another."""
        self.class_averages = session_classes(self.session)
        self.class_list.blockSignals(True)
        self.class_list.clear()
        if CLASSES in self.viewer.layers:
            self.viewer.layers.remove(CLASSES)
        avg = self.class_averages
        self.classes_box.setVisible(avg is not None)
        if avg is not None:
            for k in avg.order():
                item = QListWidgetItem(f"class {k + 1}: {int(avg.counts[k])} particles ({100 * avg.fractions[k]:.0f}%)")
                item.setData(Qt.ItemDataRole.UserRole, int(k + 1))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                self.class_list.addItem(item)
            layer = self._show(CLASSES, class_gallery(avg, gap=GAP), 0, 3)
            layer.metadata["class_order"] = [int(k + 1) for k in avg.order()]
        self.class_list.blockSignals(False)

    def class_numbers(self) -> list[int]:
        """The 1-based classes in the list's order (largest first)."""
        return [int(self.class_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.class_list.count())]

    def checked_classes(self) -> list[int]:
        """The ticked classes, 1-based, in the list's order."""
        return [int(self.class_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.class_list.count())
                if self.class_list.item(i).checkState() == Qt.CheckState.Checked]

    def select_classes(self, classes) -> None:
        """Select the particles of the 1-based ``classes`` (highlighted on the plot, their aligned
        average shown; Save selection writes them); the list's ticks follow."""
        wanted = {int(c) for c in classes}
        self.class_list.blockSignals(True)
        for i in range(self.class_list.count()):
            item = self.class_list.item(i)
            checked = int(item.data(Qt.ItemDataRole.UserRole)) in wanted
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.class_list.blockSignals(False)
        if not wanted:
            self.clear_selection()
            return
        self.set_selection(class_mask(self.session, sorted(wanted)))

    def _class_clicked(self, item) -> None:
        self.select_classes([int(item.data(Qt.ItemDataRole.UserRole))])

    def _class_ticked(self, _item) -> None:
        self.select_classes(self.checked_classes())

    # ================================================================== encoding
    def encode_particles(self, path: str | Path):
        """Encode particle file ``path`` with the loaded run in the background (replaces the
        latents and the particle file); ``latents_ready`` fires when done. Returns the worker."""
        if self.session is None:
            raise CryovaeError("load a run before encoding particles")
        stack = read_particles(path)
        stack.check_stacks()
        return self._encode(stack)

    def _encode(self, stack):
        run = self.session.run

        def job():
            latents = None
            for item in encode_session_stack(run, stack, ENCODE_BATCH):
                if isinstance(item, Latents):
                    latents = item
                else:
                    yield item
            return stack, latents

        chunks = math.ceil(len(stack) / ENCODE_BATCH)
        return self._start(job, on_return=self._encoded, on_yield=self._encode_progress, progress=chunks,
                           desc=f"encoding {len(stack)} particles")

    def _encode_progress(self, done: int) -> None:
        self.progress.setValue(math.ceil(done / ENCODE_BATCH))
        self._show_status(f"encoded {done} particles")

    def _encoded(self, result) -> None:
        stack, latents = result
        self.session = Session(run=self.session.run, latents=latents, stack=stack)
        self._ranges = latent_ranges(latents.z_mean) if self.session.zdim else self._ranges
        self._show_status(f"encoded {len(latents)} particles of {stack.path.name}")
        self._install_latents()
        self.latents_ready.emit()

    # ================================================================== latent sliders
    def _clear_sliders(self) -> None:
        while self.slider_form.rowCount():
            self.slider_form.removeRow(0)
        self._sliders, self._slider_labels = [], []

    def _add_slider(self, d: int) -> None:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, SLIDER_STEPS)
        slider.setValue(slider_position(self.z[d], self._ranges[d], SLIDER_STEPS))
        slider.valueChanged.connect(lambda pos, d=d: self._slider_moved(d, pos))
        label = QLabel(f"{self.z[d]:+.2f}")
        label.setMinimumWidth(44)
        row = QHBoxLayout()
        row.addWidget(slider, 1)
        row.addWidget(label)
        self.slider_form.addRow(f"z{d + 1}", row)
        self._sliders.append(slider)
        self._slider_labels.append(label)

    @property
    def sliders(self) -> list[QSlider]:
        """One QSlider per latent dimension (positions 0..SLIDER_STEPS over its range)."""
        return list(self._sliders)

    def slider_range(self, d: int) -> tuple[float, float]:
        return float(self._ranges[d, 0]), float(self._ranges[d, 1])

    def _slider_moved(self, d: int, pos: int) -> None:
        self.z = self.z.copy()
        self.z[d] = slider_value(pos, self._ranges[d], SLIDER_STEPS)
        self._slider_labels[d].setText(f"{self.z[d]:+.2f}")
        self._decode()

    def set_z(self, z) -> None:
        """Decode latent ``z`` (zdim,) and move the sliders (clipped to their range) to it."""
        self.z = np.asarray(z, np.float64).copy()
        for d, slider in enumerate(self._sliders):
            slider.blockSignals(True)
            slider.setValue(slider_position(self.z[d], self._ranges[d], SLIDER_STEPS))
            slider.blockSignals(False)
            self._slider_labels[d].setText(f"{self.z[d]:+.2f}")
        self._decode()

    def reset_to_median(self) -> None:
        if self.session is not None and self.session.latents is not None:
            self.set_z(np.median(self.session.latents.z_mean, axis=0))

    def _plot_point(self, x: float, y: float) -> None:
        if self.view is not None:
            self.set_z(self.view.to_latent((x, y), self.z))

    def _mode_changed(self, *_) -> None:
        mode = self.mode_combo.currentData()
        if mode is None or self.session is None or self.session.latents is None:
            return
        self.view = latent_view(self.session.latents.z_mean, mode)
        colour = self.colour_combo.currentText() or "none"
        self.plot.set_view(self.view, colour_values(self.session, colour), colour)
        self.plot.mark_current(self.view.project(self.z))
        self.plot.mark_selection(self.selection)
        if self.selected is not None:
            self.plot.mark_selected(self.view.coords[self.selected])

    # ================================================================== layers
    @property
    def _px(self) -> float:
        return float(self.session.run.pixel_size)

    def _offset(self, col: int, row: int) -> tuple[float, float]:
        step = (self.session.run.box + GAP) * self._px
        return row * step, col * step

    def _show(self, name: str, data: np.ndarray, col: int, row: int, contrast=None):
        """Create or update 2-D (or stacked) layer ``name`` tiled at (col, row)."""
        data = np.asarray(data, np.float32)
        lead = data.ndim - 2
        scale = (1.0,) * lead + (self._px, self._px)
        translate = (0.0,) * lead + self._offset(col, row)
        contrast = contrast or (float(data.min()), float(max(data.max(), data.min() + 1e-6)))
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.data.ndim == data.ndim:
                layer.data = data
                layer.scale, layer.translate = scale, translate
                layer.contrast_limits = contrast
                return layer
            self.viewer.layers.remove(name)
        return self.viewer.add_image(data, name=name, scale=scale, translate=translate, colormap="gray",
                                     contrast_limits=contrast, metadata={"cryovae_run": str(self.session.run.rundir)})

    def _decode(self) -> None:
        if self.session is None:
            return
        image = decode_one(self.session.run.decode, self.z)
        layer = self._show(DECODED, image, 0, 0, self._contrast)
        layer.metadata["z"] = self.z.copy()
        if self.view is not None:
            self.plot.mark_current(self.view.project(self.z))

    def decoded_image(self) -> np.ndarray:
        """The image in the ``cryovae decoded`` layer (box, box)."""
        return np.asarray(self.viewer.layers[DECODED].data)

    def traverse(self):
        """Decode a traversal along the plotted axes into the ``cryovae traversal`` stack layer,
        in the background; ``traversal_ready`` fires when done. Returns the worker."""
        if self.session is None or self.session.latents is None or self.session.zdim == 0:
            self._show_status("load a run with latents first")
            return None
        mode = self.mode_combo.currentData()
        traversal = traversal_for(self.session.latents.z_mean, mode, self.steps_spin.value())
        decode = self.session.run.decode

        def job():
            return traversal, traversal_stack(decode, traversal)

        return self._start(job, on_return=self._traversed, desc=f"decoding {len(traversal)} frames")

    def _traversed(self, result) -> None:
        traversal, frames = result
        layer = self._show(TRAVERSAL, frames, 1, 0, self._contrast)
        layer.metadata["traversal_z"] = traversal.z
        layer.metadata["traversal_axes"] = traversal.axes
        lead = frames.ndim - 2
        for axis in range(lead):
            world = self.viewer.dims.ndim - frames.ndim + axis
            self.viewer.dims.set_current_step(world, frames.shape[axis] // 2)
        axes = " × ".join(traversal.axes)
        self._show_status(f"traversal along {axes}: {len(traversal)} frames {traversal.shape[0]}×{traversal.shape[1]}"
                          " (use the viewer's sliders)")
        self.traversal_ready.emit()

    # ================================================================== selection
    def _region_selected(self, vertices) -> None:
        if self.view is not None:
            self.set_selection(region_mask(self.view, vertices))

    def set_selection(self, mask) -> None:
        """Select the particles of ``mask`` (n,) bool: highlight them and show their aligned
        average and the decoded image at their mean latent (empty: clear)."""
        if self.session is None or self.session.latents is None:
            return
        mask = np.asarray(mask, bool)
        if mask.shape != (self.session.n_particles,):
            raise CryovaeError(f"a selection of {mask.shape} for {self.session.n_particles} particles")
        if not mask.any():
            self.clear_selection()
            return
        self.selection = mask
        self.plot.mark_selection(mask)
        images = selection_images(self.session, mask)
        self._show(SELECTION_MEAN, images.decoded_mean, 1, 2, self._contrast)
        if images.average is not None:
            self._show(SELECTION_AVERAGE, images.average, 0, 2)
        n, total = int(mask.sum()), len(mask)
        self.selection_label.setText(f"{n} of {total} particles")
        self._show_status(f"selected {n} of {total} particles" + (
            f"; average of {images.used} aligned by their pose" if images.average is not None else ""))
        self._set_enabled(True)
        self.selection_changed.emit()

    def clear_selection(self) -> None:
        self.selection = None
        self.plot.mark_selection(None)
        for name in (SELECTION_AVERAGE, SELECTION_MEAN):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.selection_label.setText("none (draw a box or lasso)")
        if self.session is not None:
            self._set_enabled(True)
        self.selection_changed.emit()

    def save_selection(self, path: str | Path) -> Path:
        """Write the selected particles to ``path`` (.star or .cs), as ``cryovae select`` does."""
        if self.selection is None or not self.selection.any():
            raise CryovaeError("nothing selected: draw a box or lasso on the latent plot")
        out = save_selection(self.session, self.selection, path)
        self._show_status(f"saved {int(self.selection.sum())} particles to {out}")
        return out

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save selected particles", "selection.star",
                                              "RELION star (*.star);;cryoSPARC (*.cs)")
        if path:
            try:
                self.save_selection(path)
            except CryovaeError as exc:
                self._show_status(str(exc))

    # ================================================================== particles
    def _particle_spin_changed(self, value: int) -> None:
        if value >= 1:
            self.select_particle(value - 1)

    def select_particle(self, index: int) -> None:
        """Show particle ``index`` (0-based): raw, reconstruction and pose-free image layers."""
        if self.session is None or self.session.stack is None or self.session.latents is None:
            self._show_status("no particle file loaded for this run")
            return
        panels = particle_panels(self.session, int(index))
        self.selected = int(index)
        self.particle_spin.blockSignals(True)
        self.particle_spin.setValue(self.selected + 1)
        self.particle_spin.blockSignals(False)
        model = (min(panels.reconstruction.min(), panels.pose_free.min()),
                 max(panels.reconstruction.max(), panels.pose_free.max()))
        self._show(PARTICLE, panels.raw, 0, 1)
        self._show(RECONSTRUCTION, panels.reconstruction, 1, 1, model)
        self._show(POSE_FREE, panels.pose_free, 2, 1, model)
        lat = self.session.latents
        for name in PANELS:
            self.viewer.layers[name].metadata["particle"] = self.selected
        if self.view is not None:
            self.plot.mark_selected(self.view.coords[self.selected])
        z_text = ", ".join(f"{v:+.2f}" for v in lat.z_mean[self.selected])
        self._show_status(f"particle {self.selected + 1}: psi {lat.psi_deg[self.selected]:.1f}°, "
                          f"origin ({lat.origin_A[self.selected, 0]:.1f}, {lat.origin_A[self.selected, 1]:.1f}) Å"
                          + (f", z = ({z_text})" if z_text else ""))


__all__ = ["CLASSES", "DECODED", "PANELS", "PCA_MODE", "POSE_FREE", "PARTICLE", "RECONSTRUCTION", "SELECTION_AVERAGE",
           "SELECTION_MEAN", "TRAVERSAL", "LatentExplorer"]
