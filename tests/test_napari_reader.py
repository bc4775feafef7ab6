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
    assert {w.display_name for w in manifest.contributions.widgets} == {"Latent explorer", "Particle finder"}
    assert {s.key for s in manifest.contributions.sample_data} == {"hinge_particles", "hinge_run"}
    assert set(manifest.contributions.readers[0].filename_patterns) >= {"*.mrcs", "*.mrc", "*.star"}


# --------------------------------------------------------------------------- micrographs and coordinate stars
def _micrograph(path: Path, shape=(64, 128), bright=(30, 70), apix=2.5) -> Path:
    import mrcfile

    data = np.zeros(shape, np.float32)
    data[bright] = 10.0
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = apix
    return path


def test_a_one_image_mrc_opens_as_a_micrograph_in_pixels(tmp_path, make_napari_viewer):
    path = _micrograph(tmp_path / "mic_001.mrc")
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="cryovae")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == (64, 128) and layer.ndim == 2  # non-square: not a particle stack
    assert tuple(layer.scale) == (1.0, 1.0) and tuple(layer.translate) == (0.0, 0.0)
    assert layer.metadata["apix"] == pytest.approx(2.5) and layer.metadata["path"] == str(path)
    assert layer.data[30, 70] == 10.0  # row 0 of the file is row 0 of the layer


def test_a_coordinate_star_opens_as_points_with_psi(tmp_path, make_napari_viewer):
    import pandas as pd

    from cryovae.io import read_coordinates, write_coordinates

    star = write_coordinates(tmp_path / "mic_001.star", pd.DataFrame({
        "rlnCoordinateX": [70.0, 10.5, 100.0], "rlnCoordinateY": [30.0, 50.25, 5.0],
        "rlnAutopickFigureOfMerit": [2.5, -999.0, 1.0], "rlnAnglePsi": [90.0, -999.0, 0.0],
        "cryovaeZ1": [0.1, np.nan, -0.3], "rlnClassNumber": [1, -999, 1]}))
    viewer = make_napari_viewer()
    layers = viewer.open(str(star), plugin="cryovae")
    points, vectors = layers
    assert points._type_string == "points" and vectors._type_string == "vectors"
    np.testing.assert_allclose(points.data, [[30.0, 70.0], [50.25, 10.5], [5.0, 100.0]])  # (row, col) = (y, x)
    feats = points.features
    np.testing.assert_allclose(feats["fom"], [2.5, np.nan, 1.0])
    np.testing.assert_allclose(feats["psi_deg"], [90.0, np.nan, 0.0])
    np.testing.assert_allclose(feats["z_1"], [0.1, np.nan, -0.3])
    assert list(feats["rlnClassNumber"]) == [1, -999, 1]
    # psi drawn for the two picks that have one: 90 deg points up (row - 1), 0 deg along +x (col + 1)
    assert vectors.data.shape == (2, 2, 2)
    np.testing.assert_allclose(vectors.data[:, 0], [[30.0, 70.0], [5.0, 100.0]])
    direction = vectors.data[:, 1] / np.linalg.norm(vectors.data[:, 1], axis=1, keepdims=True)
    np.testing.assert_allclose(direction, [[-1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    # an empty coordinate star (a micrograph without picks) is an empty Points layer
    empty = write_coordinates(tmp_path / "none.star", read_coordinates(star).iloc[:0])
    (layer,) = viewer.open(str(empty), plugin="cryovae")
    assert layer._type_string == "points" and len(layer.data) == 0


def test_a_particle_star_with_coordinates_stays_a_particle_stack(test_data):
    # relion31.star has rlnCoordinateX/Y and rlnImageName: particles, not a coordinate star
    import starfile

    assert "rlnCoordinateX" in starfile.read(test_data / "relion31.star")["particles"].columns
    (layer,) = read_particle_layers(str(test_data / "relion31.star"))
    assert layer[2] == "image" and layer[0].shape == (5, 256, 256)


def test_a_point_at_a_known_pixel_saves_and_loads_at_the_same_place(tmp_path, make_napari_viewer):
    """napari (row, col) -> rlnCoordinateX = col, rlnCoordinateY = row -> back at (row, col), and a
    box cut there by the shared convention has the marked pixel at its centre N//2."""
    from cryovae.io import read_coordinates, read_micrograph, write_coordinates
    from napari_plugin.finder_points import star_table

    mic = _micrograph(tmp_path / "mic.mrc", bright=(30, 70))
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(mic), plugin="cryovae")
    row, col = np.unravel_index(np.argmax(image.data), image.data.shape)
    points = viewer.add_points(np.zeros((0, 2)), scale=image.scale, translate=image.translate)
    points.add([row, col])  # what a click on that pixel in add mode does
    np.testing.assert_allclose(points.data, [[30.0, 70.0]])
    table = star_table(points.data, points.features)
    assert table.loc[0, "rlnCoordinateX"] == 70.0 and table.loc[0, "rlnCoordinateY"] == 30.0
    star = write_coordinates(tmp_path / "mic.star", table)
    back = read_coordinates(star)
    x, y = back.loc[0, "rlnCoordinateX"], back.loc[0, "rlnCoordinateY"]
    box = 16
    r0, c0 = int(round(y)) - box // 2, int(round(x)) - box // 2
    cut = read_micrograph(mic).data[r0:r0 + box, c0:c0 + box]
    assert np.unravel_index(np.argmax(cut), cut.shape) == (box // 2, box // 2)
    (loaded,) = viewer.open(str(star), plugin="cryovae")
    np.testing.assert_allclose(loaded.data, points.data)
    assert tuple(loaded.scale) == tuple(image.scale)


def test_bad_micrographs_and_stars_are_one_line_errors(tmp_path):
    import mrcfile

    bad = tmp_path / "nan.mrc"
    with mrcfile.new(bad) as mrc:
        mrc.set_data(np.full((8, 12), np.nan, np.float32))
    with pytest.raises(InputFileError, match="NaN") as err:
        read_particle_layers(str(bad))
    assert "\n" not in str(err.value)
    index = tmp_path / "autopick.star"
    index.write_text("data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
                     "a.mrc a.star\n")
    with pytest.raises(InputFileError) as err:
        read_particle_layers(str(index))
    assert "\n" not in str(err.value) and "autopick.star" in str(err.value)
