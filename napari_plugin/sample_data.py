"""File > Open Sample > cryovae: a simulated hinge stack and a pretrained tiny hinge run.

The run is committed under ``napari_plugin/sample_run/`` (made by
``examples/make_napari_sample_run.py`` with ``cryovae simulate`` and ``cryovae train``): a
300-particle simulated hinge stack (32 px, 5 Å/px) and TARGET-VAE runs with one (``z1``) and
two (``z2``) content latents trained on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.runs import RunDir
from cryovae.simulate import SimulationConfig, simulate_hinge

SAMPLE_ROOT = Path(__file__).parent / "sample_run"
#: the simulated hinge of File > Open Sample > Simulated hinge particles.
HINGE_CONFIG = SimulationConfig(n=300, box=32, pixel_size_A=5.0, snr=2.0, shift_sigma_px=1.0, seed=7)


def sample_run_paths(zdim: int = 1) -> tuple[Path, Path]:
    """(run folder, particle star) of the shipped tiny run with ``zdim`` (1 or 2) latents."""
    rundir = SAMPLE_ROOT / f"z{zdim}"
    star = SAMPLE_ROOT / "sim" / "particles.star"
    for path in (RunDir(rundir).config, star):
        if not path.is_file():
            raise CryovaeError(f"{path}: sample run missing (run examples/make_napari_sample_run.py)")
    return rundir, star


def hinge_particles() -> list[tuple]:
    """A freshly simulated hinge stack (one slider over particles, Å scale); the ground truth
    (conformation, RELION psi and origin) is ``metadata["table"]``."""
    sim = simulate_hinge(HINGE_CONFIG, progress=False)
    apix = sim.pixel_size
    meta = {"table": sim.truth, "pixel_size": apix, "simulation": sim.config.to_dict()}
    lo, hi = np.percentile(sim.images[:64], [0.5, 99.5])
    return [(sim.images, {"name": "simulated hinge", "scale": (1.0, apix, apix), "metadata": meta,
                          "contrast_limits": (float(lo), float(hi)), "colormap": "gray"}, "image")]


def hinge_run() -> list[tuple]:
    """The sample run's particles as a stack layer (left of the explorer's images), and the
    latent explorer docked with the run loaded when a viewer is open."""
    from napari_plugin.reader import particle_layer

    rundir, star = sample_run_paths()
    from cryovae.io import read_particles

    data, kwargs, kind = particle_layer(read_particles(star), name="sample hinge particles")
    kwargs["translate"] = (0.0, 0.0, -(data.shape[-1] + 4) * kwargs["scale"][-1])
    kwargs["metadata"]["cryovae_run"] = str(rundir)
    _open_explorer(rundir, star)
    return [(data, kwargs, kind)]


def _open_explorer(rundir: Path, star: Path) -> None:
    """Dock the latent explorer in the current viewer (if any) and load ``rundir``."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return
    _, widget = viewer.window.add_plugin_dock_widget("cryovae", "Latent explorer")
    widget.load_run(rundir, star)
