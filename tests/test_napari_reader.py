"""The napari reader, the sample data and the npe2 manifest, in a real viewer under Xvfb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from cryovae.errors import InputFileError  # noqa: E402
from cryovae.io import read_particles  # noqa: E402
from napari_plugin.reader import get_reader, lazy_images, particle_layer, read_particle_layers  # noqa: E402

pytestmark = pytest.mark.napari
MANIFEST = Path(__file__).resolve().parents[1] / "napari_plugin" / "napari.yaml"


def test_reader_claims_particle_files_only():
    for name in ("a.mrcs", "b.MRC", "c.star", "d.cs", ["e.star"]):
        assert get_reader(name) is read_particle_layers
    for name in ("a.tif", "b.txt", ["a.star", "b.star"]):
        assert get_reader(name) is None


def test_star_opens_as_a_particle_stack_scaled_in_angstrom(test_data, make_napari_viewer):
    star = test_data / "relion31.star"
    viewer = make_napari_viewer()
    layers = viewer.open(str(star), plugin="cryovae")
    assert len(layers) == 1
    layer = layers[0]
    stack = read_particles(star)
    np.testing.assert_array_equal(np.asarray(layer.data), stack.images(slice(None)))
    assert layer.data.shape == (5, 256, 256) and viewer.dims.nsteps[0] == 5  # one slider over particles
    assert layer.scale[1:] == pytest.approx([stack.pixel_size] * 2) and stack.pixel_size == pytest.approx(2.806)
    table = layer.metadata["table"]
    assert len(table) == 5 and {"rlnDefocusU", "rlnImagePixelSize", "rlnImageName"} <= set(table.columns)
    viewer.dims.set_current_step(0, 3)
    assert viewer.dims.current_step[0] == 3


def test_bare_stack_and_a_header_only_mrc(test_data, make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.open(str(test_data / "toy_projections.mrcs"), plugin="cryovae")[0]
    assert layer.data.shape == (250, 30, 30) and layer.metadata["source_kind"] == "mrcs"
    # malformed header (no MAP id): readable, shown in pixels because it has no pixel size
    data, kwargs, kind = read_particle_layers(str(test_data / "empiar_10076_7.mrc"))[0]
    assert kind == "image" and data.shape == (2, 320, 320) and kwargs["scale"] == (1.0, 1.0, 1.0)


def test_big_stacks_are_read_lazily_one_chunk_at_a_time(test_data, make_napari_viewer):
    stack = read_particles(test_data / "toy_projections.star")
    data, kwargs, _ = particle_layer(stack, eager_bytes=0, chunk=50)
    import dask.array as da

    assert isinstance(data, da.Array) and data.shape == (250, 30, 30)
    reads = []
    original = stack.images
    stack.images = lambda idx: reads.append(len(np.arange(len(stack))[idx])) or original(idx)
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, **kwargs)
    reads.clear()
    viewer.dims.set_current_step(0, 200)
    np.testing.assert_array_equal(np.asarray(layer.data[200]), original(np.array([200]))[0])
    assert reads and max(reads) <= 50  # the chunk holding particle 200, never the whole stack
    assert lazy_images(stack).chunksize[0] == 250  # default: about 16 MiB per chunk
    small = lazy_images(stack, chunk=7)
    np.testing.assert_array_equal(small[5:16].compute(), original(np.arange(5, 16)))


def test_bad_particle_files_are_one_line_errors(test_data):
    with pytest.raises(InputFileError) as err:
        read_particle_layers(str(test_data / "empty_loop.star"))
    assert "\n" not in str(err.value)
    with pytest.raises(InputFileError, match="not found"):
        read_particle_layers(str(test_data / "FinalRefinement-OriginalParticles-PfCRT.star"))


def test_sample_hinge_particles_open(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("cryovae", "hinge_particles")
    layer = viewer.layers["simulated hinge"]
    assert layer.data.shape == (300, 32, 32) and layer.scale[-1] == pytest.approx(5.0)
    truth = layer.metadata["table"]
    assert len(truth) == 300 and truth["conformation_1"].between(0, 1).all()


def test_sample_run_opens_the_explorer_with_the_run(make_napari_viewer, qtbot):
    from napari_plugin.explorer_widget import DECODED, LatentExplorer

    viewer = make_napari_viewer()
    viewer.open_sample("cryovae", "hinge_run")
    layer = viewer.layers["sample hinge particles"]
    assert layer.data.shape == (300, 32, 32) and len(layer.metadata["table"]) == 300
    qtbot.waitUntil(lambda: DECODED in viewer.layers, timeout=60_000)
    _, explorer = viewer.window.add_plugin_dock_widget("cryovae", "Latent explorer")  # the docked one
    assert isinstance(explorer, LatentExplorer) and explorer.session is not None
    assert explorer.session.n_particles == 300 and explorer.session.run.rundir.name == "z1"


def test_npe2_manifest_validates_with_imports():
    """What ``npe2 validate --imports cryovae`` does: the installed entry point's manifest
    parses against npe2's schema and every ``python_name`` imports."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("cryovae")
    manifest.validate_imports()
    assert manifest == PluginManifest.from_file(MANIFEST)
    assert {w.display_name for w in manifest.contributions.widgets} == {"Latent explorer"}
    assert {s.key for s in manifest.contributions.sample_data} == {"hinge_particles", "hinge_run"}
    assert set(manifest.contributions.readers[0].filename_patterns) >= {"*.mrcs", "*.mrc", "*.star"}
