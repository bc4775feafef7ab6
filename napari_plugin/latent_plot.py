"""The latent-space plot of the explorer: a matplotlib figure embedded in Qt.

A histogram of z1 (one latent dimension) or a scatter of the chosen 2-D view (optionally
coloured by a third quantity); a cross marks the latent being decoded, a ring the selected
particle, yellow points (or bars) the particles of the current selection. With the "decode" tool
a left press/drag reports a point (``point_clicked``); with "box" or "lasso" a left drag draws a
region and its release reports the region's vertices (``region_selected``). A right click asks
for the nearest particle (``particle_clicked``).
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
    region_selected = Signal(object)

    TOOLS = ("decode", "box", "lasso")

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
        self.tool = "decode"
        self._region: list[tuple[float, float]] | None = None
        self._region_line = None
        self._selection_artist = None
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

    def set_tool(self, tool: str) -> None:
        """What a left drag does: "decode" (the latent under the mouse), "box" or "lasso" (select)."""
        if tool not in self.TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool

    def set_view(self, view: LatentView, colors: np.ndarray | None = None, color_name: str | None = None) -> None:
        """Draw the particles of ``view`` (histogram for 1-D, scatter for 2-D, coloured by
        ``colors`` (n,) when given)."""
        self.view = view
        self._selection_artist = None
        self._region_line = None
        ax = self.ax
        ax.clear()
        ax.set_axis_on()
        self._style()
        n = len(view.coords)
        if view.ndim == 1:
            _, self._bins, _ = ax.hist(view.coords[:, 0], bins=max(10, min(60, n // 10)), color=POINTS, alpha=0.85)
            ax.set_xlabel(view.names[0])
            ax.set_ylabel("particles")
            self._current = ax.axvline(np.nan, color=CURRENT, lw=2)
            self._selected = ax.axvline(np.nan, color=SELECTED, lw=1.5, ls="--")
        else:
            size = float(np.clip(3000 / max(n, 1), 1, 12))
            self._size = size
            if colors is None:
                ax.scatter(view.coords[:, 0], view.coords[:, 1], s=size, color=POINTS, alpha=0.6, lw=0)
            else:
                ax.scatter(view.coords[:, 0], view.coords[:, 1], s=size, c=colors, cmap="viridis", alpha=0.8,
                           lw=0)
            ax.set_xlabel(view.names[0])
            ax.set_ylabel(view.names[1])
            (self._current,) = ax.plot([np.nan], [np.nan], "+", color=CURRENT, ms=16, mew=2.5)
            (self._selected,) = ax.plot([np.nan], [np.nan], "o", mfc="none", mec=SELECTED, ms=11, mew=2)
        coloured = f", colour: {color_name}" if colors is not None and view.ndim > 1 else ""
        ax.set_title(f"{n} particles{coloured}: left-drag decodes or selects, right-click picks", fontsize=8)
        self.canvas.draw_idle()

    def mark_selection(self, mask: np.ndarray | None) -> None:
        """Highlight the particles of ``mask`` (n,) bool (None or all-False: no highlight)."""
        if self.view is None:
            return
        if self._selection_artist is not None:
            for artist in np.atleast_1d(self._selection_artist):
                artist.remove()
            self._selection_artist = None
        if mask is not None and np.any(mask):
            coords = self.view.coords[np.asarray(mask, bool)]
            if self.view.ndim == 1:
                *_, patches = self.ax.hist(coords[:, 0], bins=self._bins, color=SELECTED, alpha=0.9)
                self._selection_artist = list(patches)
            else:
                self._selection_artist = self.ax.scatter(coords[:, 0], coords[:, 1], s=self._size * 1.6,
                                                         color=SELECTED, alpha=0.9, lw=0)
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
        elif event.button == 1 and self.tool != "decode":
            self._region = [(float(event.xdata), float(event.ydata))]
            (self._region_line,) = self.ax.plot([event.xdata], [event.ydata], "-", color=SELECTED, lw=1.2)
        elif event.button == 1:
            self._dragging = True
            self.point_clicked.emit(float(event.xdata), float(event.ydata if self.view.ndim > 1 else 0.0))

    def _region_vertices(self) -> np.ndarray:
        pts = np.asarray(self._region, np.float64)
        if self.tool == "box":
            (x0, y0), (x1, y1) = pts[0], pts[-1]
            return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return pts

    def _on_motion(self, event) -> None:
        if self.view is None or event.inaxes is not self.ax or event.xdata is None:
            return
        if self._region is not None:
            point = (float(event.xdata), float(event.ydata))
            if self.tool == "box":
                self._region[1:] = [point]
            else:
                self._region.append(point)
            v = self._region_vertices()
            v = np.vstack([v, v[:1]])
            self._region_line.set_data(v[:, 0], v[:, 1])
            self.canvas.draw_idle()
        elif self._dragging:
            self.point_clicked.emit(float(event.xdata), float(event.ydata if self.view.ndim > 1 else 0.0))

    def _on_release(self, event) -> None:
        self._dragging = False
        if self._region is None:
            return
        if event.inaxes is self.ax and event.xdata is not None:
            self._on_motion(event)
        vertices = self._region_vertices()
        self._region = None
        if self._region_line is not None:
            self._region_line.remove()
            self._region_line = None
        self.canvas.draw_idle()
        self.region_selected.emit(vertices)

    def data_to_pixels(self, point) -> tuple[float, float]:
        """Canvas pixel position (matplotlib's, origin bottom left) of plot coordinates ``point``."""
        # Autoscaled limits and the layout are settled lazily, at draw time; settle them first so
        # this mapping is the one a mouse event on the drawn canvas will use.
        self.canvas.draw()
        x = point[0]
        y = point[1] if len(point) > 1 else sum(self.ax.get_ylim()) / 2
        px, py = self.ax.transData.transform((x, y))
        return float(px), float(py)
