"""The latent-space plot of the explorer: a matplotlib figure embedded in Qt.

A histogram of z1 (one latent dimension) or a scatter of the chosen 2-D view; a cross marks
the latent being decoded and a ring the selected particle. Left press/drag reports a point
(``point_clicked``), right click asks for the nearest particle (``particle_clicked``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_plugin.latent_space import LatentView

BACKGROUND = "#262930"  # napari's dark theme
FOREGROUND = "#f0f1f2"
POINTS = "#5a8fd6"
CURRENT = "#ff6f3c"
SELECTED = "#e8e03c"


class LatentPlot(QWidget):
    """Histogram / scatter of a :class:`LatentView` with the current point and particle marked.

    Signals
    -------
    point_clicked(float, float) : plot coordinates under a left press or drag (y = 0 for 1-D).
    particle_clicked(int) : index of the particle nearest a right click.
    """

    point_clicked = Signal(float, float)
    particle_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.figure = Figure(figsize=(3.6, 3.0), dpi=100, facecolor=BACKGROUND, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.ax = self.figure.add_subplot(111)
        self.view: LatentView | None = None
        self._current = None
        self._selected = None
        self._dragging = False
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_release_event", self._on_release)
        self.show_message("load a run to see its latent space")

    # ------------------------------------------------------------------ drawing
    def _style(self) -> None:
        ax = self.ax
        ax.set_facecolor(BACKGROUND)
        for spine in ax.spines.values():
            spine.set_color(FOREGROUND)
        ax.tick_params(colors=FOREGROUND, labelsize=8)
        ax.xaxis.label.set_color(FOREGROUND)
        ax.yaxis.label.set_color(FOREGROUND)
        ax.title.set_color(FOREGROUND)

    def show_message(self, text: str) -> None:
        """Replace the plot by a line of text."""
        self.view = None
        self.ax.clear()
        self._style()
        self.ax.set_axis_off()
        self.ax.text(0.5, 0.5, text, ha="center", va="center", color=FOREGROUND, fontsize=9,
                     transform=self.ax.transAxes, wrap=True)
        self.canvas.draw_idle()

    def set_view(self, view: LatentView) -> None:
        """Draw the particles of ``view`` (histogram for 1-D, scatter for 2-D)."""
        self.view = view
        ax = self.ax
        ax.clear()
        ax.set_axis_on()
        self._style()
        n = len(view.coords)
        if view.ndim == 1:
            ax.hist(view.coords[:, 0], bins=max(10, min(60, n // 10)), color=POINTS, alpha=0.85)
            ax.set_xlabel(view.names[0])
            ax.set_ylabel("particles")
            self._current = ax.axvline(np.nan, color=CURRENT, lw=2)
            self._selected = ax.axvline(np.nan, color=SELECTED, lw=1.5, ls="--")
        else:
            size = float(np.clip(3000 / max(n, 1), 1, 12))
            ax.scatter(view.coords[:, 0], view.coords[:, 1], s=size, color=POINTS, alpha=0.6, lw=0)
            ax.set_xlabel(view.names[0])
            ax.set_ylabel(view.names[1])
            (self._current,) = ax.plot([np.nan], [np.nan], "+", color=CURRENT, ms=16, mew=2.5)
            (self._selected,) = ax.plot([np.nan], [np.nan], "o", mfc="none", mec=SELECTED, ms=11, mew=2)
        ax.set_title(f"{n} particles: left-drag decodes, right-click picks", fontsize=8)
        self.canvas.draw_idle()

    def _move(self, artist, point) -> None:
        if self.view is None or artist is None:
            return
        if self.view.ndim == 1:
            artist.set_xdata([point[0], point[0]])
        else:
            artist.set_data([point[0]], [point[1]])
        self.canvas.draw_idle()

    def mark_current(self, point) -> None:
        """Move the cross (or line) of the decoded latent to plot coordinates ``point``."""
        self._move(self._current, point)

    def mark_selected(self, point) -> None:
        """Move the ring (or dashed line) of the selected particle to ``point``."""
        self._move(self._selected, point)

    # ------------------------------------------------------------------ mouse
    def _on_press(self, event) -> None:
        if self.view is None or event.inaxes is not self.ax or event.xdata is None:
            return
        if event.button == 3:
            self.particle_clicked.emit(self.view.nearest([event.xdata, event.ydata]))
        elif event.button == 1:
            self._dragging = True
            self.point_clicked.emit(float(event.xdata), float(event.ydata if self.view.ndim > 1 else 0.0))

    def _on_motion(self, event) -> None:
        if self._dragging and self.view is not None and event.inaxes is self.ax and event.xdata is not None:
            self.point_clicked.emit(float(event.xdata), float(event.ydata if self.view.ndim > 1 else 0.0))

    def _on_release(self, event) -> None:
        self._dragging = False

    def data_to_pixels(self, point) -> tuple[float, float]:
        """Canvas pixel position (matplotlib's, origin bottom left) of plot coordinates ``point``."""
        # Autoscaled limits and the layout are settled lazily, at draw time; settle them first so
        # this mapping is the one a mouse event on the drawn canvas will use.
        self.canvas.draw()
        x = point[0]
        y = point[1] if len(point) > 1 else sum(self.ax.get_ylim()) / 2
        px, py = self.ax.transData.transform((x, y))
        return float(px), float(py)
