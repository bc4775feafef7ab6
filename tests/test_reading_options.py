"""One set of reading options (--datadir, --apix, --skip-bad) and bad particles, through the CLI.

A stack with NaN/infinite or constant particles stops every reading command with one line that
counts them, names the first and points to --skip-bad; with --skip-bad they are listed in
*bad_particles.txt and the written star holds only the good particles (and --resume reads the
same way). A stack of constant images is refused by train.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from click.testing import CliRunner
from conftest import write_mrc
from test_models_synthetic import blob_particles

from cryovae.cli.main import cli
from cryovae.io import write_star

BOX = 16
N = 24
NAN_ROWS = (3, 10)  # 0-based: NaN pixel, inf pixels
CONSTANT_ROW = 6  # 0-based: all pixels 0.0
TINY = ["--box", str(BOX), "--group", "p4", "--enc-fields", "2", "--enc-kernel", "5", "--gen-hidden", "8",
        "--gen-layers", "1", "--fourier-features", "4", "--batch-size", "8", "--device", "cpu",
        "--val-fraction", "0.25", "--refine-steps", "0", "--z-delay", "0", "--epochs", "1"]
READERS = ["info", "preprocess", "train", "encode"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result, command):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(f"cryovae {command}: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def clean_images(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return blob_particles(BOX, rng.uniform(-np.pi, np.pi, n), np.zeros((n, 2)), noise=0.1).astype(np.float32)


def relion31_star(folder, data, apix=2.0, name="p"):
    """``folder/name.star`` (RELION 3.1, rlnMyRow = 0-based row) over ``folder/name.mrcs``."""
    write_mrc(folder / f"{name}.mrcs", data, voxel_size=apix)
    n = len(data)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [apix],
                           "rlnImageSize": [BOX], "rlnImageDimensionality": [2]})
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1}@{name}.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n,
                          "rlnMyRow": np.arange(n)})
    write_star(folder / f"{name}.star", {"optics": optics, "particles": parts})
    return folder / f"{name}.star"


@pytest.fixture(scope="module")
def bad_star(tmp_path_factory):
    data = clean_images()
    data[NAN_ROWS[0], 2, 5] = np.nan
    data[NAN_ROWS[1]] = np.inf
    data[CONSTANT_ROW] = 0.0
    return relion31_star(tmp_path_factory.mktemp("bad"), data)


@pytest.fixture(scope="module")
def skip_bad_run(bad_star, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("train", bad_star, "-o", run, "--skip-bad", *TINY)
    assert result.exit_code == 0, result.output
    return run


GOOD_ROWS = [r for r in range(N) if r not in (*NAN_ROWS, CONSTANT_ROW)]


@pytest.mark.parametrize("command", READERS)
def test_every_reading_command_takes_the_same_reading_options(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for option in ("--datadir", "--apix", "--skip-bad"):
        assert option in result.output, (command, option)


def test_train_reads_a_star_without_pixel_size_with_apix(tmp_path):
    write_mrc(tmp_path / "s.mrcs", clean_images(), voxel_size=0.0)  # header without a pixel size
    write_star(tmp_path / "p.star", {"images": pd.DataFrame({"rlnImageName": [f"{i + 1}@s.mrcs" for i in range(N)]})})
    line = error_line(invoke("train", tmp_path / "p.star", "-o", tmp_path / "r0", *TINY), "train")
    assert "pixel size unknown" in line and "--apix" in line
    result = invoke("train", tmp_path / "p.star", "-o", tmp_path / "run", "--apix", "2.5", *TINY)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["input"]["apix"] == 2.5 and cfg["input"]["pixel_size"] == 2.5
    assert cfg["model"]["pixel_size"] == pytest.approx(2.5)  # model box = image box


@pytest.mark.parametrize("command", ["preprocess", "train"])
def test_bad_particles_without_skip_bad_are_counted_first_named_and_skip_bad_suggested(bad_star, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    args = {"preprocess": ["preprocess", bad_star, "-o", out / "p.star"],
            "train": ["train", bad_star, "-o", out / "run", *TINY]}[command]
    line = error_line(invoke(*args), command)
    assert "p.star: particle 4 (4@p.mrcs) has NaN or infinite pixels" in line
    assert f"3 of {N} particles are bad (2 with NaN or infinite pixels, 1 constant): rows 4, 7 and 11" in line
    assert "--skip-bad" in line
    assert not (out / "p.star").exists() and not (out / "p.mrcs").exists()
    assert not (out / "run" / "particles.star").exists()


def test_info_skip_bad_lists_the_bad_particles(bad_star):
    result = invoke("info", bad_star, "--json")  # without --skip-bad info reads no pixels
    assert result.exit_code == 0 and json.loads(result.stdout)["n_particles"] == N
    assert "bad_particles" not in json.loads(result.stdout)
    result = invoke("info", bad_star, "--json", "--skip-bad")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["n_particles"] == N - 3
    assert [b["row"] for b in s["bad_particles"]] == [4, 7, 11]
    assert [b["reason"] for b in s["bad_particles"]] == ["NaN or infinite pixels", "constant image (all pixels 0.0)",
                                                        "NaN or infinite pixels"]


def read_bad_list(path):
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return [(int(r), name, reason) for r, name, reason in lines]


def test_train_skip_bad_lists_drops_and_writes_only_the_good_particles(skip_bad_run, bad_star):
    listed = read_bad_list(skip_bad_run / "bad_particles.txt")
    assert listed == [(4, "4@p.mrcs", "NaN or infinite pixels"), (7, "7@p.mrcs", "constant image (all pixels 0.0)"),
                      (11, "11@p.mrcs", "NaN or infinite pixels")]
    parts = starfile.read(skip_bad_run / "particles.star", always_dict=True)["particles"]
    assert parts["rlnMyRow"].tolist() == GOOD_ROWS  # the good rows, in order, with their own columns
    assert parts["rlnImageName"].str.split("@").str[0].astype(int).tolist() == [r + 1 for r in GOOD_ROWS]
    assert len(np.load(skip_bad_run / "latents.npz")["psi_deg"]) == len(GOOD_ROWS)
    cfg = yaml.safe_load((skip_bad_run / "config.yaml").read_text())
    assert cfg["input"]["skip_bad"] is True and cfg["input"]["n_particles"] == len(GOOD_ROWS)
    log = (skip_bad_run / "train.log").read_text()
    assert "--skip-bad: 3 of 24 particles are bad" in log and "rows 4, 7 and 11" in log


def test_resume_reads_the_particles_the_same_way(skip_bad_run, tmp_path):
    result = invoke("train", "--resume", skip_bad_run, "--epochs", "2")  # no --skip-bad: the run's config says so
    assert result.exit_code == 0, result.output
    parts = starfile.read(skip_bad_run / "particles.star", always_dict=True)["particles"]
    assert parts["rlnMyRow"].tolist() == GOOD_ROWS


def test_encode_skip_bad_lists_and_drops(skip_bad_run, bad_star, tmp_path):
    line = error_line(invoke("encode", skip_bad_run, bad_star, "-o", tmp_path / "e.star", "--device", "cpu"), "encode")
    assert "3 of 24 particles are bad" in line and "--skip-bad" in line
    result = invoke("encode", skip_bad_run, bad_star, "-o", tmp_path / "e.star", "--device", "cpu", "--skip-bad",
                    "--refine-steps", "0")
    assert result.exit_code == 0, result.output
    parts = starfile.read(tmp_path / "e.star", always_dict=True)["particles"]
    assert parts["rlnMyRow"].tolist() == GOOD_ROWS
    assert [r for r, _, _ in read_bad_list(tmp_path / "e_bad_particles.txt")] == [4, 7, 11]


def test_preprocess_skip_bad_writes_the_good_particles_and_the_list(bad_star, tmp_path):
    result = invoke("preprocess", bad_star, "-o", tmp_path / "p.star", "--skip-bad")
    assert result.exit_code == 0, result.output
    parts = starfile.read(tmp_path / "p.star", always_dict=True)["particles"]
    assert parts["rlnMyRow"].tolist() == GOOD_ROWS
    assert [r for r, _, _ in read_bad_list(tmp_path / "p_bad_particles.txt")] == [4, 7, 11]


@pytest.mark.parametrize("skip_bad", [False, True])
def test_train_refuses_a_stack_of_constant_images(tmp_path, skip_bad):
    star = relion31_star(tmp_path, np.zeros((N, BOX, BOX), np.float32))
    line = error_line(invoke("train", star, "-o", tmp_path / "run", *TINY, *(["--skip-bad"] if skip_bad else [])),
                      "train")
    assert line == f"cryovae train: error: {star}: every image is constant (all pixels 0.0): nothing to learn"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_few_constant_particles_are_one_warning(tmp_path, caplog):
    data = clean_images()
    data[[2, 5]] = 7.0
    star = relion31_star(tmp_path, data)
    with caplog.at_level("WARNING", logger="cryovae"):
        result = invoke("preprocess", star, "-o", tmp_path / "o.star")
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if "constant" in r.getMessage()]
    assert len(warnings) == 1
    assert f"2 of {N} particles are constant images (rows 3, 6)" in warnings[0] and "--skip-bad" in warnings[0]
