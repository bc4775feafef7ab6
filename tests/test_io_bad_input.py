"""Every bad input exits with status 2 and one line naming the file, never a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_mrc

from cryovae.cli.main import cli
from cryovae.io import write_star


def images(n=3, box=8):
    return np.random.default_rng(0).normal(size=(n, box, box)).astype(np.float32)


def star30(path, names):
    write_star(path, {"images": pd.DataFrame({"rlnImageName": names})})
    return path


def run(args):
    result = CliRunner().invoke(cli, args)
    return result, result.stderr


def assert_clean_error(args, names_in_message: str, fragment: str):
    result, err = run(args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in err.splitlines() if ln.startswith(f"cryovae {args[0]}: error:")]
    assert len(lines) == 1, err
    assert names_in_message in lines[0] and fragment in lines[0], lines[0]


def case_missing_file(tmp):
    return ["info", str(tmp / "nope.star")], "nope.star", "no such file"


def case_missing_stack(tmp):
    star = star30(tmp / "p.star", ["1@gone.mrcs"])
    return ["preprocess", str(star), "-o", str(tmp / "o.star"), "--apix", "1"], "gone.mrcs", "not found"


def case_index_past_end(tmp):
    write_mrc(tmp / "s.mrcs", images(3))
    star = star30(tmp / "p.star", ["1@s.mrcs", "4@s.mrcs"])
    return ["info", str(star)], "p.star", "holds only 3 images"


def case_index_zero(tmp):
    write_mrc(tmp / "s.mrcs", images(3))
    star = star30(tmp / "p.star", ["0@s.mrcs"])
    return ["info", str(star)], "p.star", "1-based"


def case_truncated_mrc(tmp):
    path = write_mrc(tmp / "s.mrcs", images(4, 16))
    path.write_bytes(path.read_bytes()[:-300])
    star = star30(tmp / "p.star", ["1@s.mrcs"])
    return ["info", str(star)], "s.mrcs", "truncated"


def case_truncated_bare_mrc(tmp):
    path = write_mrc(tmp / "s.mrcs", images(4, 16))
    path.write_bytes(path.read_bytes()[:-300])
    return ["info", str(path)], "s.mrcs", "truncated"


def case_corrupt_header(tmp):
    (tmp / "s.mrcs").write_bytes(b"this is not an MRC file " * 100)
    return ["info", str(tmp / "s.mrcs")], "s.mrcs", "MRC"


def case_tiny_file(tmp):
    (tmp / "s.mrcs").write_bytes(b"MRC?")
    return ["info", str(tmp / "s.mrcs")], "s.mrcs", "MRC"


def case_empty_star(tmp):
    (tmp / "p.star").write_text("")
    return ["info", str(tmp / "p.star")], "p.star", "empty"


def case_empty_loop(tmp):
    from conftest import TEST_DATA
    return ["info", str(TEST_DATA / "empty_loop.star")], "empty_loop.star", "empty loop"


def case_empty_particle_loop(tmp):
    (tmp / "p.star").write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n")
    return ["info", str(tmp / "p.star")], "p.star", "empty loop"


def case_no_image_name(tmp):
    write_star(tmp / "p.star", {"particles": pd.DataFrame({"rlnCoordinateX": [1.0, 2.0]})})
    return ["info", str(tmp / "p.star")], "p.star", "rlnImageName"


def case_unknown_optics_group(tmp):
    write_mrc(tmp / "s.mrcs", images(2))
    write_star(tmp / "p.star", {"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
                                "particles": pd.DataFrame({"rlnImageName": ["1@s.mrcs", "2@s.mrcs"],
                                                           "rlnOpticsGroup": [1, 3]})})
    return ["info", str(tmp / "p.star")], "p.star", "unknown optics group 3"


def case_mixed_box(tmp):
    write_mrc(tmp / "a.mrcs", images(2, 8))
    write_mrc(tmp / "b.mrcs", images(2, 10))
    star = star30(tmp / "p.star", ["1@a.mrcs", "1@b.mrcs"])
    return ["info", str(star)], "p.star", "mixed box sizes"


def case_non_square(tmp):
    write_mrc(tmp / "s.mrcs", np.zeros((2, 8, 10), np.float32))
    return ["info", str(tmp / "s.mrcs")], "s.mrcs", "square"


def case_nan_pixels(tmp):
    data = images(4)
    data[2, 3, 3] = np.nan
    write_mrc(tmp / "s.mrcs", data)
    return ["preprocess", str(tmp / "s.mrcs"), "-o", str(tmp / "o.star"), "--batch-size", "2"], "s.mrcs", \
        "particle 3"


def case_inf_pixels(tmp):
    data = images(4)
    data[0, 0, 0] = np.inf
    write_mrc(tmp / "s.mrcs", data)
    return ["preprocess", str(tmp / "s.mrcs"), "-o", str(tmp / "o.star")], "s.mrcs", "infinite"


def case_box_too_big(tmp):
    write_mrc(tmp / "s.mrcs", images(2, 16))
    return ["preprocess", str(tmp / "s.mrcs"), "--box", "32", "-o", str(tmp / "o.star")], "--box 32", "larger"


def case_box_odd(tmp):
    write_mrc(tmp / "s.mrcs", images(2, 16))
    return ["preprocess", str(tmp / "s.mrcs"), "--box", "9", "-o", str(tmp / "o.star")], "--box 9", "odd"


def case_bad_cs(tmp):
    (tmp / "p.cs").write_bytes(b"\x93NUMPY garbage")
    return ["info", str(tmp / "p.cs")], "p.cs", "cryoSPARC"


def case_cs_without_blob(tmp):
    np.save(tmp / "p.npy", np.zeros(3, dtype=[("uid", "<u8")]))
    (tmp / "p.npy").rename(tmp / "p.cs")
    return ["info", str(tmp / "p.cs")], "p.cs", "blob/path"


def case_unknown_suffix(tmp):
    (tmp / "p.txt").write_text("x")
    return ["info", str(tmp / "p.txt")], "p.txt", "unknown particle file type"


def case_output_is_input(tmp):
    write_mrc(tmp / "s.mrcs", images(2, 16))
    star = star30(tmp / "p.star", ["1@s.mrcs", "2@s.mrcs"])
    return ["preprocess", str(star), "--apix", "1", "-o", str(star)], "p.star", "overwrite the input"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    args, name, fragment = case(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert_clean_error(args, name, fragment)
    # input files untouched, nothing half-written left behind
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_permissive_header_reads_with_a_warning(tmp_path, caplog):
    path = write_mrc(tmp_path / "s.mrcs", images(2))
    raw = bytearray(path.read_bytes())
    raw[208:212] = b"XXXX"
    path.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="cryovae"):
        result, err = run(["info", "--json", str(path)])
    assert result.exit_code == 0, err
    assert '"n_particles": 2' in result.stdout
    assert any("permissive" in r.getMessage() and "s.mrcs" in r.getMessage() for r in caplog.records)
