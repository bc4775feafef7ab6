"""`cryovae info` on every fixture and on synthetic files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_mrc

from cryovae.cli.main import cli
from cryovae.io import write_star


def info_json(*args) -> dict:
    result = CliRunner().invoke(cli, ["info", "--json", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("name, n, box, apix, groups, missing", [
    ("relion5.star", 17, 448, 0.89, 1, ["toy_images_a.mrcs", "toy_images_b.mrcs"]),
    ("FinalRefinement-OriginalParticles-PfCRT.star", 5, None, 1.035, 1,
     ["Extract/job012/FinalRefinement-OriginalParticles-PfCRT.mrcs"]),
    ("cryosparc_J2_particles_exported.cs", 22, 300, 1.345, 1,
     ["J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs"]),
    ("cryosparc_P12_J24_001_particles.cs", 2019, 180, 2.95, 1, None),
])
def test_info_fixtures_without_stacks(test_data, name, n, box, apix, groups, missing):
    s = info_json(test_data / name)
    assert (s["n_particles"], s["box"], s["n_optics_groups"]) == (n, box, groups)
    assert s["pixel_size"] == pytest.approx(apix)
    if missing is not None:
        assert s["stacks_missing"] == missing
    else:
        assert len(s["stacks_missing"]) == s["n_stacks"] == 50
    assert {"rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"} <= set(s["ctf_columns"])


@pytest.mark.parametrize("name, n, box, apix", [("relion31.star", 5, 256, 2.806), ("toy_projections.star", 250, 30, 1.0),
                                                ("empiar_10076_7.star", 2, 320, 5e4 / 38168)])
def test_info_fixtures_with_stacks(test_data, name, n, box, apix):
    s = info_json(test_data / name)  # the stacks sit beside the stars in tests/data
    assert (s["n_particles"], s["box"], s["stacks_missing"]) == (n, box, [])
    assert s["pixel_size"] == pytest.approx(apix)


def test_info_text_and_several_optics_groups(tmp_path):
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 8, 8), np.float32))
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnImagePixelSize": [1.0, 1.2], "rlnImageSize": [8, 8]})
    particles = pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs", "1@b.mrcs"], "rlnOpticsGroup": [1, 2, 2]})
    write_star(tmp_path / "p.star", {"optics": optics, "particles": particles})
    s = info_json(tmp_path / "p.star")
    assert s["n_optics_groups"] == 2 and s["pixel_size"] is None and s["pixel_sizes"] == [1.0, 1.2]
    assert s["stacks_missing"] == ["b.mrcs"] and s["stacks_found"] == 1 and s["ctf_columns"] == []
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "p.star"), "--apix", "2.5"])
    assert result.exit_code == 0
    assert "particles     3" in result.stdout and "2.5 Å/px" in result.stdout
    assert "missing     b.mrcs" in result.stdout and "1 of 2 found" in result.stdout
