"""Atomic writers of the pictures and pages made by the analysis commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cryovae.io.atomic import atomic_path


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib Figure as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an (h, w) uint8 array as a greyscale PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(tmp, format="PNG")
    return path


def write_gif(frames: np.ndarray, path: str | Path, duration_ms: int = 120) -> Path:
    """Write (n, h, w) uint8 frames as a looping animated greyscale GIF, atomically."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8), mode="L") for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms,
                       loop=0, optimize=False)
    return path


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file (UTF-8), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, inf) replaced by None, so it is valid JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (non-finite floats as null), atomically."""
    return write_text(json.dumps(json_safe(obj), indent=2) + "\n", path)
