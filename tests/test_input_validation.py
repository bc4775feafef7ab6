"""Data that is not what it says: MRC size vs header, duplicated star columns, NaN truth rows.

Each is one line naming the file on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner
from conftest import write_mrc

from cryovae.cli.main import cli
from cryovae.io import read_particles, write_star
from cryovae.simulate import SimulationConfig, simulate_hinge
from cryovae.simulate.writer import star_tables


def one_line_error(args, *fragments):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(f"cryovae {args[0]}: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def images(n=4, box=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)


def set_header_mode(path, mode):
    raw = bytearray(path.read_bytes())
    raw[12:16] = np.int32(mode).tobytes()  # word 4 of the header: MODE
    path.write_bytes(bytes(raw))


def star_for(tmp_path, stack_name, n):
    write_star(tmp_path / "p.star", {"images": pd.DataFrame({"rlnImageName": [f"{i + 1}@{stack_name}"
                                                                               for i in range(n)]})})
    return tmp_path / "p.star"


# --------------------------------------------------------------------- MRC size against header
@pytest.mark.parametrize("through_star", [False, True], ids=["bare_stack", "star"])
def test_float32_pixels_under_an_int16_header_are_refused(tmp_path, through_star):
    path = write_mrc(tmp_path / "s.mrcs", images())  # float32: 4 * 8 * 8 * 4 bytes of data
    set_header_mode(path, 1)
    target = star_for(tmp_path, "s.mrcs", 4) if through_star else path
    one_line_error(["info", target, "--apix", "1"], "s.mrcs", "header says 4 x 8 x 8 mode 1 (int16)",
                   "holds 1024 bytes of data, as mode 2 (float32) would")


def test_int16_pixels_under_a_float32_header_are_refused(tmp_path):
    path = write_mrc(tmp_path / "s.mrcs", (images() * 100).astype(np.int16))
    set_header_mode(path, 2)
    one_line_error(["info", path], "s.mrcs", "mode 2 (float32)", "as mode 1 (int16) would")


@pytest.mark.parametrize("extra, fragment", [(100, "100 more than the header describes"),
                                             (8 * 8 * 4, "as 5 images would")], ids=["bytes", "one_image"])
def test_a_file_longer_than_its_header_is_refused(tmp_path, extra, fragment):
    path = write_mrc(tmp_path / "s.mrcs", images())
    path.write_bytes(path.read_bytes() + b"\0" * extra)
    one_line_error(["info", path], "s.mrcs", "header says 4 x 8 x 8 mode 2 (float32)", fragment)


def test_a_truncated_file_says_truncated(tmp_path):
    path = write_mrc(tmp_path / "s.mrcs", images())
    path.write_bytes(path.read_bytes()[:-100])
    one_line_error(["info", path], "s.mrcs", "truncated")


def test_permissive_headers_of_the_right_size_still_read_exactly(tmp_path):
    """The real fixture stacks have no MAP id and a zero machine stamp (permissive mode only)."""
    data = images(3, 12)
    path = write_mrc(tmp_path / "s.mrcs", data, voxel_size=2.0)
    raw = bytearray(path.read_bytes())
    raw[208:216] = b"\0" * 8  # MAP id and machine stamp, as in relion31.mrcs / toy_projections.mrcs
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        mrcfile.mmap(path, "r").close()  # strict mrcfile refuses it
    stack = read_particles(path)
    np.testing.assert_array_equal(stack.images(slice(None)), data)
    assert stack.pixel_size == pytest.approx(2.0)


# --------------------------------------------------------------------- duplicated star columns
@pytest.mark.parametrize("block, column", [("particles", "rlnImageName"), ("optics", "rlnImagePixelSize")])
def test_duplicated_star_column_names_file_block_and_column(tmp_path, block, column):
    write_mrc(tmp_path / "s.mrcs", images(2))
    optics = ["_rlnOpticsGroup #1", "_rlnImagePixelSize #2"] + (["_rlnImagePixelSize #3"] if block == "optics" else [])
    parts = ["_rlnImageName #1", "_rlnOpticsGroup #2"] + (["_rlnImageName #3"] if block == "particles" else [])
    text = ("data_optics\n\nloop_\n" + "\n".join(optics) + "\n1 1.0" + (" 1.0" if block == "optics" else "")
            + "\n\ndata_particles\n\nloop_\n" + "\n".join(parts) + "\n"
            + "".join(f"{i}@s.mrcs 1" + (f" {i}@s.mrcs" if block == "particles" else "") + "\n" for i in (1, 2)))
    (tmp_path / "p.star").write_text(text)
    one_line_error(["info", tmp_path / "p.star"], "p.star", f"data_{block}", f"_{column} twice")


# --------------------------------------------------------------------- NaN rows in evaluate
@pytest.fixture(scope="module")
def sim():
    return simulate_hinge(SimulationConfig(n=40, box=16, snr=None, seed=3), progress=False)


def perfect_star(tmp_path, sim, nan_row=None):
    tables = star_tables(sim)
    parts = tables["particles"]
    parts["rlnAnglePsi"] = sim.truth["psi_deg"].to_numpy()
    parts["rlnOriginXAngst"] = sim.truth["origin_x_A"].to_numpy()
    parts["rlnOriginYAngst"] = sim.truth["origin_y_A"].to_numpy()
    parts["cryovaeZ1"] = sim.truth["conformation_1"].to_numpy()
    if nan_row is not None:
        parts.loc[nan_row, "cryovaeZ1"] = np.nan
    starfile.write({"optics": tables["optics"], "particles": parts}, tmp_path / "out.star")
    return tmp_path / "out.star"


def test_nan_truth_rows_are_named_not_scored(tmp_path, sim):
    star = perfect_star(tmp_path, sim)
    truth = sim.truth.copy()
    truth.loc[[3, 7], "psi_deg"] = np.nan
    truth.loc[9, "conformation_1"] = np.nan
    truth.to_csv(tmp_path / "truth.csv", index=False)
    one_line_error(["evaluate", star, tmp_path / "truth.csv", "-o", tmp_path / "ev"], "truth.csv",
                   "3 of 40 rows", "rows 4, 8, 10", "conformation_1, psi_deg")
    assert not (tmp_path / "ev" / "metrics.json").exists()
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)  # the same files without the NaNs score
    result = CliRunner().invoke(cli, ["evaluate", str(star), str(tmp_path / "truth.csv"), "-o", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ev" / "metrics.json").exists()


def test_nan_predictions_are_named(tmp_path, sim):
    star = perfect_star(tmp_path, sim, nan_row=4)
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    one_line_error(["evaluate", star, tmp_path / "truth.csv"], "out.star", "1 of 40 particles", "row 5",
                   "column cryovaeZ1")
