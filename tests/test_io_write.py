"""Writers: atomic files, write_stack/write_star, and write_particles_star round trips."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from conftest import write_mrc

from cryovae.errors import CryovaeError
from cryovae.geometry import (
    apply_relion_alignment,
    internal_to_relion,
    pixel_coordinates,
    transform_image,
)
from cryovae.io import (
    atomic_path,
    read_particles,
    refuse_overwrite_input,
    write_particles_star,
    write_stack,
    write_star,
)

FIXTURE_STARS = ["relion31.star", "relion5.star", "FinalRefinement-OriginalParticles-PfCRT.star",
                 "toy_projections.star", "empiar_10076_7.star"]
RESULT_COLUMNS = {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginX",
                  "rlnOriginY"}


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_text("new")
        assert out.read_text() == "old"
    assert out.read_text() == "new" and list(tmp_path.iterdir()) == [out]


def test_refuse_overwrite_input(tmp_path):
    (tmp_path / "a.star").write_text("x")
    with pytest.raises(CryovaeError, match="overwrite the input"):
        refuse_overwrite_input(tmp_path / "sub" / ".." / "a.star", [None, tmp_path / "a.star"])
    refuse_overwrite_input(tmp_path / "b.star", [tmp_path / "a.star"])


def test_write_stack_float32_mode2_with_voxel_size(tmp_path):
    images = np.random.default_rng(0).normal(size=(4, 12, 12))
    write_stack(tmp_path / "s.mrcs", images, pixel_size=2.25)
    with mrcfile.open(tmp_path / "s.mrcs") as mrc:  # strict mode: a valid header
        assert mrc.header.mode == 2 and mrc.data.dtype == np.float32 and mrc.is_image_stack()
        assert mrc.voxel_size.x == pytest.approx(2.25)
        np.testing.assert_array_equal(mrc.data, images.astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["s.mrcs"]


def test_write_star_round_trips_floats_exactly(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0 / 3.0]})
    particles = pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"], "rlnDefocusU": [12345.678901234, 1e-9],
                              "rlnOpticsGroup": [1, 1]})
    write_star(tmp_path / "p.star", {"optics": optics, "particles": particles}, version=30001)
    back = starfile.read(tmp_path / "p.star", always_dict=True)
    pd.testing.assert_frame_equal(back["particles"], particles)
    pd.testing.assert_frame_equal(back["optics"], optics)
    assert (tmp_path / "p.star").read_text().count("# version 30001") == 2


@pytest.mark.parametrize("name", FIXTURE_STARS)
def test_round_trip_keeps_every_input_column(test_data, tmp_path, name):
    stack = read_particles(test_data / name)
    if stack.pixel_sizes is None:  # a star without a pixel size and a header without one
        stack = read_particles(test_data / name, apix=1.0)
    n = len(stack)
    rng = np.random.default_rng(1)
    psi, origin, z = rng.uniform(-180, 180, n), rng.normal(size=(n, 2)) * 3, rng.normal(size=(n, 3))
    out = write_particles_star(stack, tmp_path / "out.star", psi, origin, latents=z,
                               extra={"cryovaeProb": np.full(n, 0.5)})
    back = read_particles(out, apix=1.0 if name == "toy_projections.star" else None)
    assert back.source_kind == stack.source_kind and back.data_block == stack.data_block
    assert list(back.blocks) == list(stack.blocks)
    before, after = stack.blocks[stack.data_block], back.blocks[back.data_block]
    kept = [c for c in before.columns if c not in RESULT_COLUMNS | {"rlnImageName"}]
    pd.testing.assert_frame_equal(after[kept], before[kept])
    # rlnImageName: the path part may be rewritten for the new folder; every stack found from
    # the input is found from the written star, with the same index and pixels
    assert [p is None for p in back.stack_paths] == [p is None for p in stack.stack_paths]
    if all(p is not None for p in stack.stack_paths):
        np.testing.assert_array_equal(back.image_index, stack.image_index)
        k = np.arange(min(n, 3))
        np.testing.assert_array_equal(back.images(k), stack.images(k))
    else:
        pd.testing.assert_series_equal(after["rlnImageName"], before["rlnImageName"])
    if stack.optics_block:
        pd.testing.assert_frame_equal(back.blocks["optics"], stack.blocks["optics"])
    np.testing.assert_allclose(after["rlnAnglePsi"], psi)
    np.testing.assert_allclose(after[["cryovaeZ1", "cryovaeZ2", "cryovaeZ3"]], z)
    if stack.relion_version == "3.0":
        np.testing.assert_allclose(after[["rlnOriginX", "rlnOriginY"]], origin / stack.pixel_sizes[:, None])
        assert "rlnOriginXAngst" not in after.columns
    else:
        np.testing.assert_allclose(after[["rlnOriginXAngst", "rlnOriginYAngst"]], origin)
    # one 2D pose; the input's own pose columns kept under cryovaeInput* names, values unchanged
    assert (after["rlnAngleRot"] == 0).all() and (after["rlnAngleTilt"] == 0).all()
    for col in RESULT_COLUMNS & set(before.columns):
        kept_as = "cryovaeInput" + col.removeprefix("rln")
        pd.testing.assert_series_equal(after[kept_as], before[col], check_names=False)
    # a star cryovae wrote, written again, reads back identically in every column
    again = write_particles_star(back, tmp_path / "again.star", psi, origin, latents=z,
                                 extra={"cryovaeProb": np.full(n, 0.5)})
    again_df = read_particles(again, apix=1.0).blocks[stack.data_block]
    pd.testing.assert_frame_equal(again_df[after.columns], after)
    # cryovaeInput* already there are kept; where none were, the first pass's pose becomes them
    added = set(again_df.columns) - set(after.columns)
    assert all(c.startswith("cryovaeInput") for c in added)
    assert bool(added) == (not RESULT_COLUMNS & set(before.columns))


#: columns write_particles_star writes or may rewrite (pose, stack paths); every other input column is untouched
WRITTEN_COLUMNS = RESULT_COLUMNS | {"rlnAngleRot", "rlnAngleTilt", "rlnImageName"}


@pytest.mark.parametrize("name", FIXTURE_STARS)
def test_untouched_input_values_are_written_unchanged(test_data, tmp_path, name):
    """Every column the writer does not compute reads back (with starfile, not cryovae) as the very
    same value and text as in the input star: no float32 round trip, no int -> float, no -0.0."""
    stack = read_particles(test_data / name, apix=None if name != "toy_projections.star" else 1.0)
    n = len(stack)
    out = write_particles_star(stack, tmp_path / "out.star", -np.zeros(n, np.float32),
                               -np.zeros((n, 2), np.float32), latents=-np.zeros((n, 1), np.float32))
    before = starfile.read(test_data / name, always_dict=True)
    after = starfile.read(out, always_dict=True)
    assert list(after) == list(before)
    compared = 0
    for block, df in before.items():
        for col in df.columns:
            if block != "optics" and col in WRITTEN_COLUMNS:
                continue
            old, new = df[col].reset_index(drop=True), after[block][col].reset_index(drop=True)
            assert new.dtype == old.dtype, (block, col)
            assert new.astype(str).tolist() == old.astype(str).tolist(), (block, col)  # repr: -0.0 != 0.0
            compared += 1
    assert compared >= 5  # every fixture has at least five untouched columns
    # the values cryovae computed: 0.0, not -0.0, and float32 results as their shortest text
    text = out.read_text()
    assert "-0.0\t" not in text and not text.rstrip().endswith("-0.0")
    written = after[stack.data_block]
    assert not np.signbit(written[["rlnAnglePsi", "cryovaeZ1"]].to_numpy()).any()


def test_cryosparc_unit_conversion_keeps_float32_precision(tmp_path, make_mrc):
    """``ctf/df_angle_rad`` (float32) 5.28 degrees becomes rlnDefocusAngle 5.28, not 5.280000028344188."""
    make_mrc(tmp_path / "s.mrcs", np.zeros((2, 8, 8), np.float32))
    arr = np.zeros(2, dtype=[("uid", "<u8"), ("blob/path", "S8"), ("blob/idx", "<u4"), ("blob/psize_A", "<f4"),
                             ("ctf/df1_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4")])
    arr["uid"], arr["blob/path"], arr["blob/idx"] = [7, 8], b"s.mrcs", [0, 1]
    arr["blob/psize_A"], arr["ctf/df1_A"] = 1.345, [15301.1, 0.0]
    arr["ctf/df_angle_rad"], arr["ctf/phase_shift_rad"] = np.radians([5.28, 0.0]), np.radians([90.0, 0.0])
    with open(tmp_path / "p.cs", "wb") as fh:
        np.save(fh, arr)
    out = write_particles_star(read_particles(tmp_path / "p.cs"), tmp_path / "out.star", np.zeros(2), np.zeros((2, 2)))
    p = starfile.read(out, always_dict=True)["particles"]
    assert p["rlnDefocusAngle"].astype(str).tolist() == ["5.28", "0.0"]
    assert p["rlnPhaseShift"].astype(str).tolist() == ["90.0", "0.0"]
    assert p["rlnDefocusU"].astype(str).tolist() == ["15301.1", "0.0"]


def test_refuses_to_overwrite_the_input(test_data, tmp_path):
    src = tmp_path / "in.star"
    src.write_bytes((test_data / "relion5.star").read_bytes())
    stack = read_particles(src)
    with pytest.raises(CryovaeError, match="overwrite"):
        write_particles_star(stack, src, np.zeros(17), np.zeros((17, 2)))
    assert src.read_bytes() == (test_data / "relion5.star").read_bytes()


def test_cryosparc_becomes_relion31_pointing_at_original_stacks(test_data, tmp_path):
    stack = read_particles(test_data / "cryosparc_J2_particles_exported.cs")
    n = len(stack)
    out = write_particles_star(stack, tmp_path / "out.star", np.zeros(n), np.zeros((n, 2)))
    blocks = starfile.read(out, always_dict=True)
    optics, particles = blocks["optics"], blocks["particles"]
    assert optics["rlnImagePixelSize"].iloc[0] == pytest.approx(1.345)
    assert optics["rlnImageSize"].iloc[0] == 300 and optics["rlnVoltage"].iloc[0] == 300.0
    # blob/idx is 0-based, rlnImageName 1-based; blob/path without its '>'
    idx = np.load(test_data / "cryosparc_J2_particles_exported.cs")["blob/idx"]
    assert particles["rlnImageName"].tolist() == [
        f"{i + 1:06d}@J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs" for i in idx]
    back = read_particles(out)
    assert back.source_kind == "relion31" and back.pixel_size == pytest.approx(1.345)
    np.testing.assert_allclose(back.table["rlnDefocusU"], stack.table["rlnDefocusU"])


def test_bare_stack_becomes_relion31_star_with_relative_names(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    images = np.random.default_rng(2).normal(size=(3, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "in" / "s.mrcs", images, voxel_size=1.7)
    stack = read_particles(tmp_path / "in" / "s.mrcs")
    out = write_particles_star(stack, tmp_path / "out" / "p.star", np.zeros(3), np.zeros((3, 2)))
    back = read_particles(out)
    assert back.table["rlnImageName"].tolist() == [f"{k:06d}@../in/s.mrcs" for k in (1, 2, 3)]
    assert back.pixel_size == pytest.approx(1.7)
    np.testing.assert_array_equal(back.images(np.arange(3)), images)


def asymmetric(box: int) -> np.ndarray:
    p = pixel_coordinates(box).reshape(box, box, 2)
    img = np.zeros((box, box), np.float32)
    for (x, y), s, a in [((0.0, 0.0), 3.0, 1.0), ((6.0, 0.0), 2.0, 0.7), ((0.0, -8.0), 2.0, 0.5)]:
        img += a * np.exp(-((p[..., 0] - x) ** 2 + (p[..., 1] - y) ** 2) / (2 * s**2))
    return img


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("version", ["3.0", "3.1"])
def test_written_pose_aligns_the_particle(tmp_path, version):
    """Rotate and shift a template ourselves, write the star, undo it from the star alone."""
    box, apix = 48, 2.0
    template = asymmetric(box)
    theta, center = np.radians(np.array([40.0, -115.0])), np.array([[3.0, -2.0], [-4.0, 1.0]])
    particles = np.stack([transform_image(template, t, c) for t, c in zip(theta, center, strict=True)])
    write_mrc(tmp_path / "s.mrcs", particles, voxel_size=apix)
    names = {"rlnImageName": ["1@s.mrcs", "2@s.mrcs"]}
    if version == "3.1":
        write_star(tmp_path / "in.star", {"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [apix],
                                                                  "rlnImageSize": [box]}),
                                          "particles": pd.DataFrame({**names, "rlnOpticsGroup": [1, 1]})})
    else:
        write_star(tmp_path / "in.star", {"images": pd.DataFrame({**names, "rlnDetectorPixelSize": [10.0, 10.0],
                                                                  "rlnMagnification": [5e4, 5e4]})})
    stack = read_particles(tmp_path / "in.star")
    assert stack.pixel_size == pytest.approx(apix)
    psi, origin_px = internal_to_relion(theta, center)
    write_particles_star(stack, tmp_path / "out.star", psi, origin_px * apix)
    table = starfile.read(tmp_path / "out.star", always_dict=True)
    df = table["particles" if version == "3.1" else "images"]
    if version == "3.1":
        origins = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / apix  # Å
    else:
        origins = df[["rlnOriginX", "rlnOriginY"]].to_numpy()  # pixels
    for k in range(2):
        aligned = apply_relion_alignment(particles[k], df["rlnAnglePsi"].iloc[k], origins[k])
        assert ncc(aligned, template) > 0.98


def test_open_stack_for_writing_streams_chunks_with_header_stats(tmp_path):
    from cryovae.io import open_stack_for_writing

    x = np.random.default_rng(3).normal(2.0, 3.0, (10, 8, 8)).astype(np.float32)
    with open_stack_for_writing(tmp_path / "w.mrcs", 10, 8, 1.5) as out:
        out[0:4] = x[:4]
        out[4:10] = x[4:]
    with mrcfile.open(tmp_path / "w.mrcs") as mrc:
        np.testing.assert_array_equal(mrc.data, x)
        assert (mrc.header.dmin, mrc.header.dmax) == (x.min(), x.max())
        assert mrc.header.dmean == pytest.approx(x.mean(), rel=1e-5)
        assert mrc.header.rms == pytest.approx(x.std(), rel=1e-5)
    with pytest.raises(ValueError):
        with open_stack_for_writing(tmp_path / "v.mrcs", 10, 8, 1.5) as out:
            out[0:2] = x[:2]
            raise ValueError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mrcs"]
