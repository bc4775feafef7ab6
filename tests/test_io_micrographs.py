"""Micrograph reading, micrograph stars and RELION coordinate files (cryovae.io.micrographs/coordinates)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from pandas.testing import assert_frame_equal

from cryovae.errors import InputFileError
from cryovae.io import (
    micrograph_paths,
    read_autopick_index,
    read_coordinates,
    read_micrograph,
    write_autopick_index,
    write_coordinates,
)


def write_micrograph(path, data, voxel_size=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


def ramp(h=6, w=9):
    """Pixel (i, j) holds 100 i + j, so a read that swaps or flips axes shows."""
    return (100 * np.arange(h)[:, None] + np.arange(w)[None, :]).astype(np.float32)


# --- micrographs -------------------------------------------------------------------------------

def test_read_micrograph_keeps_rows_and_columns_and_apix(tmp_path):
    path = write_micrograph(tmp_path / "m.mrc", ramp(), voxel_size=2.5)
    mic = read_micrograph(path)
    assert mic.data.dtype == np.float32 and mic.data.shape == (6, 9)
    assert mic.data[0, 0] == 0 and mic.data[2, 7] == 207  # row y = 2, column x = 7
    assert mic.apix == pytest.approx(2.5)
    assert mic.path == path


def test_read_micrograph_unset_voxel_size_is_none_and_one_section_3d_ok(tmp_path):
    assert read_micrograph(write_micrograph(tmp_path / "a.mrc", ramp())).apix is None  # header 0
    assert read_micrograph(write_micrograph(tmp_path / "b.mrc", ramp(), voxel_size=1.0)).apix == pytest.approx(1.0)
    mic = read_micrograph(write_micrograph(tmp_path / "c.mrc", ramp()[None], voxel_size=3.0))
    assert mic.data.shape == (6, 9) and mic.data[5, 8] == 508 and mic.apix == pytest.approx(3.0)


def test_read_micrograph_int16(tmp_path):
    mic = read_micrograph(write_micrograph(tmp_path / "i.mrc", ramp().astype(np.int16)))
    assert mic.data.dtype == np.float32 and mic.data[3, 4] == 304


@pytest.mark.parametrize("case", ["missing", "corrupt", "nan", "sections"])
def test_read_micrograph_bad_input_is_one_line(tmp_path, case):
    path = tmp_path / "bad.mrc"
    if case == "corrupt":
        path.write_bytes(b"not an mrc file" * 10)
        fragment = "MRC"
    elif case == "nan":
        data = ramp()
        data[4, 2] = np.nan
        write_micrograph(path, data)
        fragment = "row 4, column 2"
    elif case == "sections":
        write_micrograph(path, np.stack([ramp(), ramp()]))
        fragment = "2 sections"
    else:
        fragment = "no such file"
    with pytest.raises(InputFileError) as err:
        read_micrograph(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg


def test_micrograph_paths_from_mrc_arguments(tmp_path):
    a = write_micrograph(tmp_path / "a.mrc", ramp(), voxel_size=4.0)
    b = write_micrograph(tmp_path / "b.mrc", ramp())
    assert micrograph_paths([a, b]) == [(a, pytest.approx(4.0)), (b, None)]


def micrographs_ctf_star(folder):
    """A RELION 3.1 micrographs_ctf.star with two optics groups and project-relative names."""
    (folder / "MotionCorr" / "job002" / "Movies").mkdir(parents=True)
    names = [f"MotionCorr/job002/Movies/mic_{k}.mrc" for k in range(3)]
    for name in names:
        write_micrograph(folder / name, ramp())
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"], "rlnOpticsGroup": [1, 2],
                           "rlnMicrographOriginalPixelSize": [0.885, 0.5], "rlnVoltage": [300.0, 300.0],
                           "rlnSphericalAberration": [2.7, 2.7], "rlnAmplitudeContrast": [0.1, 0.1],
                           "rlnMicrographPixelSize": [1.77, 1.0]})
    mics = pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": [1, 2, 1],
                         "rlnCtfImage": [n.replace(".mrc", ".ctf:mrc") for n in names],
                         "rlnDefocusU": [10000.0, 12000.0, 15000.0], "rlnDefocusV": [9800.0, 11900.0, 14800.0],
                         "rlnDefocusAngle": [10.0, 20.0, 30.0]})
    (folder / "CtfFind" / "job004").mkdir(parents=True)
    star = folder / "CtfFind" / "job004" / "micrographs_ctf.star"
    starfile.write({"optics": optics, "micrographs": mics}, star)
    return star, names


def test_micrograph_paths_from_relion31_star_project_relative(tmp_path):
    star, names = micrographs_ctf_star(tmp_path)
    got = micrograph_paths([star], cwd=tmp_path)  # RELION: names relative to the project folder
    assert [p for p, _ in got] == [tmp_path / n for n in names]
    assert [a for _, a in got] == [pytest.approx(1.77), pytest.approx(1.0), pytest.approx(1.77)]


def test_micrograph_paths_from_star_folder_and_relion30(tmp_path):
    (tmp_path / "mics").mkdir()
    write_micrograph(tmp_path / "mics" / "m1.mrc", ramp())
    star = tmp_path / "mics" / "micrographs.star"
    starfile.write({"": pd.DataFrame({"rlnMicrographName": ["m1.mrc"], "rlnDetectorPixelSize": [5.0],
                                      "rlnMagnification": [25000.0]})}, star)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert micrograph_paths([star], cwd=elsewhere) == [(tmp_path / "mics" / "m1.mrc", pytest.approx(2.0))]
    starfile.write({"": pd.DataFrame({"rlnMicrographName": ["m1.mrc"]})}, star)
    assert micrograph_paths([star], cwd=elsewhere) == [(tmp_path / "mics" / "m1.mrc", None)]


@pytest.mark.parametrize("case", ["missing", "no_column", "empty_loop", "gone", "suffix"])
def test_micrograph_paths_bad_input_is_one_line(tmp_path, case):
    star = tmp_path / "micrographs.star"
    if case == "no_column":
        starfile.write({"micrographs": pd.DataFrame({"rlnDefocusU": [1.0]})}, star)
        fragment, named = "rlnMicrographName", star
    elif case == "empty_loop":
        star.write_text("data_micrographs\n\nloop_\n_rlnMicrographName #1\n")
        fragment, named = "empty loop", star
    elif case == "gone":
        starfile.write({"micrographs": pd.DataFrame({"rlnMicrographName": ["gone.mrc"]})}, star)
        fragment, named = "gone.mrc not found", star
    elif case == "suffix":
        star = tmp_path / "m.tif"
        star.write_bytes(b"II*")
        fragment, named = "not a micrograph", star
    else:
        fragment, named = "no such file", star
    with pytest.raises(InputFileError) as err:
        micrograph_paths([star], cwd=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(named) in msg and fragment in msg, msg


# --- coordinates -------------------------------------------------------------------------------

def coordinate_table():
    return pd.DataFrame({"rlnCoordinateX": [10.5, 200.0, 3.25], "rlnCoordinateY": [7.0, 0.0, 1023.75],
                         "rlnAutopickFigureOfMerit": [0.9, 0.5, 0.1], "rlnAnglePsi": [-30.0, 170.5, 0.0],
                         "cryovaeZ1": [0.1, -1.5, 2.0]})


def test_coordinates_round_trip_through_starfile(tmp_path):
    table = coordinate_table()
    path = write_coordinates(tmp_path / "mic.star", table)
    assert_frame_equal(read_coordinates(path), table)
    text = path.read_text()
    assert "# version 30001" in text and "data_\n" in text and "data_optics" not in text
    assert_frame_equal(starfile.read(path), table)  # a plain starfile reader sees the same table


def test_empty_coordinates_are_legal(tmp_path):
    empty = coordinate_table().iloc[:0]
    path = write_coordinates(tmp_path / "none.star", empty)
    got = read_coordinates(path)
    assert len(got) == 0 and list(got.columns) == list(empty.columns)
    (tmp_path / "blank.star").write_text("")
    (tmp_path / "header.star").write_text("# version 30001\n\ndata_\n\n")
    for name in ("blank.star", "header.star"):
        got = read_coordinates(tmp_path / name)
        assert len(got) == 0 and list(got.columns) == ["rlnCoordinateX", "rlnCoordinateY"]


def test_read_relion30_and_named_block_coordinates(tmp_path):
    # RELION 3.0 autopick output: a bare data_ block, integers for coordinates
    path = tmp_path / "mic_autopick.star"
    path.write_text("\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnClassNumber #3\n"
                    "_rlnAutopickFigureOfMerit #4\n_rlnAnglePsi #5\n 1204 389 0 1.5 -999.0\n 96 1010 0 0.7 -999.0\n")
    got = read_coordinates(path)
    assert got["rlnCoordinateX"].tolist() == [1204.0, 96.0] and got["rlnCoordinateX"].dtype == np.float64
    assert got["rlnCoordinateY"].tolist() == [389.0, 1010.0]
    starfile.write({"general": {"rlnImageSize": 40}, "particles": coordinate_table()}, tmp_path / "n.star")
    assert read_coordinates(tmp_path / "n.star")["rlnAnglePsi"].tolist() == [-30.0, 170.5, 0.0]


@pytest.mark.parametrize("case", ["missing", "no_columns", "not_a_number"])
def test_read_coordinates_bad_input_is_one_line(tmp_path, case):
    path = tmp_path / "c.star"
    if case == "no_columns":
        starfile.write({"": pd.DataFrame({"rlnCoordinateX": [1.0], "rlnAnglePsi": [3.0]})}, path)
        fragment = "_rlnCoordinateY"
    elif case == "not_a_number":
        path.write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\nabc 4\n")
        fragment = "row 2"
    else:
        fragment = "no such file"
    with pytest.raises(InputFileError) as err:
        read_coordinates(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg


def test_autopick_index_round_trip_and_resolution(tmp_path):
    picks = tmp_path / "picks"
    picks.mkdir()
    (picks / "mic_000.star").write_text("")
    index = write_autopick_index(picks / "autopick.star", [("../micrographs/mic_000.mrc", "mic_000.star"),
                                                          ("/abs/mic_001.mrc", "/abs/mic_001.star")])
    blocks = starfile.read(index, always_dict=True)
    assert list(blocks) == ["coordinate_files"]
    assert list(blocks["coordinate_files"].columns) == ["rlnMicrographName", "rlnMicrographCoordinates"]
    assert "# version 30001" in index.read_text()
    # a file of the same name in the project folder must not shadow the one beside the index
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "mic_000.star").write_text("")
    got = read_autopick_index(index, cwd=cwd)
    assert got == [(picks / "../micrographs/mic_000.mrc", picks / "mic_000.star"),
                   (tmp_path / "/abs/mic_001.mrc", tmp_path / "/abs/mic_001.star")]


def test_relion4_autopick_index_relative_to_project(tmp_path):
    job = tmp_path / "AutoPick" / "job006"
    (job / "Movies").mkdir(parents=True)
    write_coordinates(job / "Movies" / "m1_autopick.star", coordinate_table())
    (job / "autopick.star").write_text(
        "\n# version 30001\n\ndata_coordinate_files\n\nloop_ \n_rlnMicrographName #1 \n"
        "_rlnMicrographCoordinates #2 \nMotionCorr/job002/Movies/m1.mrc AutoPick/job006/Movies/m1_autopick.star \n")
    (mic, coords), = read_autopick_index(job / "autopick.star", cwd=tmp_path)
    assert coords == tmp_path / "AutoPick/job006/Movies/m1_autopick.star"
    assert mic == job / "MotionCorr/job002/Movies/m1.mrc"  # exists nowhere: named beside the index
    assert len(read_coordinates(coords)) == 3


@pytest.mark.parametrize("case", ["missing", "no_columns", "empty_loop"])
def test_read_autopick_index_bad_input_is_one_line(tmp_path, case):
    path = tmp_path / "autopick.star"
    if case == "no_columns":
        starfile.write({"coordinate_files": pd.DataFrame({"rlnMicrographName": ["a.mrc"]})}, path)
        fragment = "rlnMicrographCoordinates"
    elif case == "empty_loop":
        path.write_text("data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n")
        fragment = "empty loop"
    else:
        fragment = "no such file"
    with pytest.raises(InputFileError) as err:
        read_autopick_index(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and fragment in msg, msg


def test_box_corner_puts_the_centre_on_pixel_box_half():
    from cryovae.io.coordinates import box_corner

    mic = np.zeros((50, 60), np.float32)
    mic[17, 31] = 1.0  # row y = 17, column x = 31
    for box in (8, 9):
        row0, col0 = box_corner(31.2, 16.8, box)
        window = mic[row0:row0 + box, col0:col0 + box]
        assert window.shape == (box, box)
        assert np.unravel_index(np.argmax(window), window.shape) == (box // 2, box // 2)
    rows, cols = box_corner(np.array([0.0, 10.0]), np.array([5.0, 5.0]), 4)
    assert rows.tolist() == [3, 3] and cols.tolist() == [-2, 8]


def test_write_micrograph_round_trip(tmp_path):
    from cryovae.io import write_micrograph

    path = write_micrograph(tmp_path / "w.mrc", ramp().astype(np.float64), apix=4.0)
    with mrcfile.open(path) as mrc:
        assert mrc.data.shape == (6, 9) and mrc.data.dtype == np.float32  # 2D, not a stack
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, ramp())
    assert mic.apix == pytest.approx(4.0)
