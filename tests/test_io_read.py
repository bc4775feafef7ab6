"""read_particles on real fixtures and on synthetic stacks written with mrcfile/starfile."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from conftest import write_mrc

from cryovae.io import read_particles, resolve_stack, write_star
from cryovae.io.mrc import imod_unsigned_header_bytes


def numbered_images(n: int, box: int, offset: float = 0.0) -> np.ndarray:
    """Image k holds the value offset + k + 1 in pixel (0, 0) and a ramp elsewhere."""
    ramp = np.arange(box * box, dtype=np.float32).reshape(box, box) / (box * box)
    imgs = np.repeat(ramp[None], n, axis=0)
    imgs[:, 0, 0] = offset + np.arange(1, n + 1)
    return imgs


def two_stack_project(tmp_path, apix=(1.5, 1.5)):
    """Two stacks, two optics groups, particles interleaved; RELION 3.1 star."""
    write_mrc(tmp_path / "a.mrcs", numbered_images(5, 16, 100.0), voxel_size=9.9)
    write_mrc(tmp_path / "b.mrcs", numbered_images(3, 16, 200.0), voxel_size=9.9)
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnImagePixelSize": list(apix), "rlnImageSize": [16, 16],
                           "rlnImageDimensionality": [2, 2], "rlnVoltage": [300.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.0], "rlnAmplitudeContrast": [0.1, 0.07]})
    names = ["3@a.mrcs", "1@b.mrcs", "5@a.mrcs", "3@b.mrcs", "1@a.mrcs"]
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1, 2, 1, 2, 1],
                              "rlnDefocusU": [1e4, 1.1e4, 1.2e4, 1.3e4, 1.4e4]})
    star = tmp_path / "particles.star"
    write_star(star, {"optics": optics, "particles": particles}, version=30001)
    return star


def test_relion31_two_optics_groups_two_stacks_one_based_index(tmp_path):
    star = two_stack_project(tmp_path)
    stack = read_particles(star)
    assert stack.source_kind == "relion31" and len(stack) == 5 and stack.box == 16
    assert stack.n_optics_groups == 2
    # optics merged per particle through rlnOpticsGroup
    assert stack.table["rlnVoltage"].tolist() == [300.0, 200.0, 300.0, 200.0, 300.0]
    assert stack.table["rlnDefocusU"].tolist() == [1e4, 1.1e4, 1.2e4, 1.3e4, 1.4e4]
    # image k@stack is the k-th image (1-based): its (0,0) pixel holds offset + k
    imgs = stack.images(np.arange(5))
    assert imgs[:, 0, 0].tolist() == [103.0, 201.0, 105.0, 203.0, 101.0]
    assert stack.images(3)[0, 0] == 203.0
    assert stack.images(slice(None, None, -1))[:, 0, 0].tolist() == [101.0, 203.0, 105.0, 201.0, 103.0]
    # rlnImagePixelSize wins over the header's voxel size
    assert stack.pixel_size == 1.5
    seen = np.concatenate([idx for idx, _ in stack.chunks(2)])
    assert seen.tolist() == [0, 1, 2, 3, 4]
    got = np.concatenate([im for _, im in stack.chunks(2)])
    np.testing.assert_array_equal(got, imgs)


def test_images_are_read_through_a_memory_map_not_loaded(tmp_path):
    star = two_stack_project(tmp_path)
    stack = read_particles(star)
    assert stack._preloaded is None
    stack.images([0])
    assert isinstance(stack._cache.array(tmp_path / "a.mrcs"), np.memmap)
    pre = read_particles(star, preload=True)
    np.testing.assert_array_equal(pre.images(np.arange(5)), stack.images(np.arange(5)))


def test_stack_pickles_for_worker_processes_and_threads(tmp_path):
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    stack = read_particles(two_stack_project(tmp_path))
    expected = stack.images(np.arange(5))
    clone = pickle.loads(pickle.dumps(stack))
    np.testing.assert_array_equal(clone.images(np.arange(5)), expected)
    stack._cache.max_open = 1  # force files to be closed and reopened between threads
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda k: stack.images([k % 5])[0], range(40)))
    np.testing.assert_array_equal(np.stack(got), expected[np.arange(40) % 5])


def test_different_pixel_sizes_per_optics_group(tmp_path):
    stack = read_particles(two_stack_project(tmp_path, apix=(1.5, 2.0)))
    np.testing.assert_allclose(stack.pixel_sizes, [1.5, 2.0, 1.5, 2.0, 1.5])
    with pytest.raises(Exception, match="different pixel sizes"):
        _ = stack.pixel_size


@pytest.mark.parametrize("dtype", [np.float16, np.int16, np.int8, np.uint16])
def test_non_float32_modes_read_as_float32(tmp_path, dtype):
    data = (np.arange(2 * 8 * 8) % 100 - 40).reshape(2, 8, 8)
    if dtype == np.uint16:
        data = data + 40
    write_mrc(tmp_path / "s.mrcs", data.astype(dtype))
    imgs = read_particles(tmp_path / "s.mrcs").images(np.arange(2))
    assert imgs.dtype == np.float32
    np.testing.assert_array_equal(imgs, data.astype(np.float32))


def test_uint8_imod_mode0_read_unsigned(tmp_path):
    data = np.array([0, 100, 200, 255] * 16, dtype=np.uint8).reshape(1, 8, 8)
    path = write_mrc(tmp_path / "u8.mrcs", data.view(np.int8))
    raw = bytearray(path.read_bytes())
    raw[152:160] = imod_unsigned_header_bytes()
    path.write_bytes(bytes(raw))
    assert read_particles(path).images(0)[0, 2] == 200.0
    imgs = read_particles(tmp_path / "u8.mrcs").images(np.arange(1))
    np.testing.assert_array_equal(imgs, data.astype(np.float32))


def test_relion30_pixel_size_from_detector_and_magnification(tmp_path):
    write_mrc(tmp_path / "s.mrcs", numbered_images(2, 8), voxel_size=3.0)
    df = pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"], "rlnDetectorPixelSize": [5.0, 5.0],
                       "rlnMagnification": [25000.0, 25000.0], "rlnOriginX": [1.0, 2.0]})
    write_star(tmp_path / "p.star", {"images": df})
    stack = read_particles(tmp_path / "p.star")
    assert stack.source_kind == "relion30" and stack.relion_version == "3.0"
    assert stack.pixel_size == pytest.approx(5.0 * 1e4 / 25000.0)
    assert read_particles(tmp_path / "p.star", apix=1.25).pixel_size == 1.25
    # without the columns, the header's voxel size
    write_star(tmp_path / "q.star", {"images": df[["rlnImageName"]]})
    assert read_particles(tmp_path / "q.star").pixel_size == pytest.approx(3.0)


def test_stack_path_resolution_order(tmp_path):
    (tmp_path / "star").mkdir()
    (tmp_path / "data" / "Extract").mkdir(parents=True)
    write_mrc(tmp_path / "data" / "Extract" / "s.mrcs", numbered_images(2, 8))
    write_mrc(tmp_path / "data" / "t.mrcs", numbered_images(2, 8))
    base, ddir = tmp_path / "star", tmp_path / "data"
    assert resolve_stack("Extract/s.mrcs", base, None) is None
    assert resolve_stack("Extract/s.mrcs", base, ddir) == ddir / "Extract" / "s.mrcs"
    assert resolve_stack("Other/t.mrcs", base, ddir) == ddir / "t.mrcs"
    write_mrc(base / "Extract.mrcs", numbered_images(1, 8))
    assert resolve_stack("Extract.mrcs", base, ddir) == base / "Extract.mrcs"
    df = pd.DataFrame({"rlnImageName": ["2@Extract/s.mrcs", "1@Other/t.mrcs"]})
    write_star(base / "p.star", {"images": df})
    missing = read_particles(base / "p.star")
    assert missing.stacks_missing == ["Extract/s.mrcs", "Other/t.mrcs"]
    found = read_particles(base / "p.star", datadir=ddir)
    assert found.stacks_missing == [] and found.images(np.arange(2))[:, 0, 0].tolist() == [2.0, 1.0]


def test_cryosparc_blob_path_and_zero_based_idx(tmp_path):
    write_mrc(tmp_path / "J1" / "s.mrcs" if (tmp_path / "J1").mkdir() is None else None, numbered_images(4, 8))
    dtype = [("uid", "<u8"), ("blob/path", "S12"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
             ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df_angle_rad", "<f4")]
    arr = np.zeros(3, dtype=dtype)
    arr["blob/path"] = [b">J1/s.mrcs"] * 3
    arr["blob/idx"] = [3, 0, 2]
    arr["blob/shape"] = 8
    arr["blob/psize_A"] = 1.345
    arr["ctf/accel_kv"] = 300
    arr["ctf/df1_A"] = [1e4, 2e4, 3e4]
    arr["ctf/df_angle_rad"] = np.pi / 2
    with open(tmp_path / "p.cs", "wb") as fh:
        np.save(fh, arr)
    stack = read_particles(tmp_path / "p.cs")
    assert stack.source_kind == "cryosparc" and stack.stack_refs == ["J1/s.mrcs"]
    assert stack.images(np.arange(3))[:, 0, 0].tolist() == [4.0, 1.0, 3.0]
    assert stack.pixel_size == pytest.approx(1.345)
    assert stack.table["rlnDefocusU"].tolist() == [1e4, 2e4, 3e4]
    np.testing.assert_allclose(stack.table["rlnDefocusAngle"], 90.0, rtol=1e-6)
    assert stack.table["rlnVoltage"].tolist() == [300.0] * 3


def test_bare_stack_pixel_size_from_header(tmp_path):
    write_mrc(tmp_path / "s.mrcs", numbered_images(3, 8), voxel_size=2.5)
    stack = read_particles(tmp_path / "s.mrcs")
    assert stack.source_kind == "mrcs" and len(stack) == 3 and stack.pixel_size == 2.5
    assert stack.images(np.arange(3))[:, 0, 0].tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------ real fixtures
def test_relion31_fixture(test_data):
    stack = read_particles(test_data / "relion31.star")
    assert (len(stack), stack.box, stack.pixel_size, stack.source_kind) == (5, 256, 2.806, "relion31")
    with mrcfile.mmap(test_data / "relion31.mrcs", permissive=True) as mrc:
        expected = np.asarray(mrc.data, dtype=np.float32)
    np.testing.assert_array_equal(stack.images(np.arange(5)), expected)


def test_relion5_fixture_without_stacks(test_data):
    stack = read_particles(test_data / "relion5.star")
    assert len(stack) == 17 and stack.box == 448 and stack.pixel_size == pytest.approx(0.89)
    assert stack.stacks_missing == ["toy_images_a.mrcs", "toy_images_b.mrcs"]
    assert stack.table["rlnOddZernike"].iloc[0].startswith("[0.068")
    with pytest.raises(Exception, match="toy_images_a.mrcs"):
        stack.images([0])


def test_relion30_pfcrt_fixture(test_data):
    stack = read_particles(test_data / "FinalRefinement-OriginalParticles-PfCRT.star")
    assert stack.source_kind == "relion30" and stack.data_block == "images" and len(stack) == 5
    assert stack.pixel_size == pytest.approx(1.035)  # 1.035 (detector, µm) * 1e4 / 10000 (mag)
    assert stack.box_known is None and len(stack.stacks_missing) == 1


def test_toy_projections_fixture(test_data):
    stack = read_particles(test_data / "toy_projections.star")
    assert (len(stack), stack.box) == (250, 30) and "dummyVariable" in stack.table.columns
    with mrcfile.mmap(test_data / "toy_projections.mrcs", permissive=True) as mrc:
        np.testing.assert_array_equal(stack.images([249, 0]), mrc.data[[249, 0]])


@pytest.mark.parametrize("name, n, box, apix, n_stacks",
                         [("cryosparc_J2_particles_exported.cs", 22, 300, 1.345, 1),
                          ("cryosparc_P12_J24_001_particles.cs", 2019, 180, 2.95, 50)])
def test_cryosparc_fixtures(test_data, name, n, box, apix, n_stacks):
    stack = read_particles(test_data / name)
    assert (len(stack), stack.box, len(stack.stack_refs)) == (n, box, n_stacks)
    assert stack.pixel_size == pytest.approx(apix, rel=1e-6)
    assert not any(ref.startswith(">") for ref in stack.stack_refs)
    assert stack.image_index.min() == 0


def test_empiar_permissive_header(test_data, caplog):
    stack = read_particles(test_data / "empiar_10076_7.star")
    assert (len(stack), stack.box) == (2, 320)
    assert stack.pixel_size == pytest.approx(5 * 1e4 / 38168)
    assert stack.images(np.arange(2)).shape == (2, 320, 320)


def test_permissive_header_is_read_with_a_warning(tmp_path, caplog):
    path = write_mrc(tmp_path / "s.mrcs", numbered_images(2, 8))
    raw = bytearray(path.read_bytes())
    raw[208:212] = b"\0\0\0\0"  # the MAP id
    path.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="cryovae"):
        stack = read_particles(path)
    assert stack.images(np.arange(2))[:, 0, 0].tolist() == [1.0, 2.0]
    assert any("permissive" in r.message and "s.mrcs" in r.message for r in caplog.records)


def test_star_written_by_starfile_reads_back(tmp_path):
    df = pd.DataFrame({"rlnImageName": ["1@s.mrcs"]})
    starfile.write({"particles": df}, tmp_path / "p.star")
    assert read_particles(tmp_path / "p.star").stacks_missing == ["s.mrcs"]
