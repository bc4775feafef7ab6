"""cryoSPARC output: the .cs + .csg cryovae writes, read back with cryosparc-tools.

Convention (docs/conventions.md, ``## cryoSPARC output``): pyem's csparc2star and cryoDRGN's
parse_pose_csparc read ``alignments2D/pose`` as rlnAnglePsi in radians and
``alignments2D/shift`` as (rlnOriginX, rlnOriginY) in pixels. So applying RELION's alignment
with psi = degrees(pose) and origin = shift to a particle must land it on the template.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from _posed import ncc, posed_particles
from click.testing import CliRunner
from cryosparc.dataset import Dataset
from test_models_synthetic import blob_particles

from cryovae.cli.main import cli
from cryovae.errors import CryovaeError
from cryovae.geometry import apply_relion_alignment
from cryovae.inference import Latents, write_cs

io = pytest.importorskip("cryovae.io")

APIX = 2.5


def _star_input(folder, n=6, box=16, two_stacks=True):
    """A RELION 3.1 star over one or two stacks in ``folder`` with CTF and beam tilt columns."""
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(n, box, box)).astype(np.float32)
    half = n // 2 if two_stacks else n
    io.write_stack(folder / "a.mrcs", imgs[:half], APIX)
    names = [f"{i + 1:06d}@a.mrcs" for i in range(half)]
    if two_stacks:
        (folder / "sub").mkdir()
        io.write_stack(folder / "sub" / "b.mrcs", imgs[half:], APIX)
        names += [f"{i + 1:06d}@sub/b.mrcs" for i in range(n - half)]
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnImagePixelSize": [APIX, APIX], "rlnImageSize": [box, box],
                           "rlnImageDimensionality": [2, 2], "rlnVoltage": [300.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.0], "rlnAmplitudeContrast": [0.1, 0.07],
                           "rlnBeamTiltX": [0.5, 0.0], "rlnBeamTiltY": [-0.25, 0.0]})
    parts = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1, 2] * (n // 2),
                          "rlnDefocusU": rng.uniform(10000, 20000, n), "rlnDefocusV": rng.uniform(9000, 10000, n),
                          "rlnDefocusAngle": rng.uniform(-180, 180, n), "rlnPhaseShift": [10.0] * n,
                          "rlnCtfBfactor": [5.0] * n})
    io.write_star(folder / "in.star", {"optics": optics, "particles": parts})
    return folder / "in.star", imgs


def test_star_input_written_as_cs_reads_back_in_cryosparc_tools(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    star, imgs = _star_input(tmp_path / "data")
    stack = io.read_particles(star)
    n = len(stack)
    rng = np.random.default_rng(2)
    psi = rng.uniform(-180, 180, n)
    origin_A = rng.uniform(-5, 5, (n, 2))
    z = rng.normal(size=(n, 3))
    (tmp_path / "out").mkdir()
    cs, csg = io.write_particles_cs(stack, tmp_path / "out" / "enc.cs", psi, origin_A, latents=z,
                                    extra={"cryovaeProb": np.full(n, 0.5)})
    assert csg == tmp_path / "out" / "enc.csg"

    d = Dataset.load(cs)
    assert len(d) == n and len(set(d["uid"].tolist())) == n and d["uid"].dtype == np.uint64
    # blob: absolute paths to the stacks found, 0-based index, shape and pixel size
    paths = [str(p) for p in d["blob/path"]]
    assert all(os.path.isabs(p) for p in paths)
    assert [os.path.samefile(p, stack.stack_paths[f]) for p, f in zip(paths, stack.file_index, strict=True)] == [True] * n
    np.testing.assert_array_equal(d["blob/idx"], stack.image_index)
    assert d["blob/idx"][0] == 0 and d["blob/idx"][n // 2] == 0  # 1-based star index - 1
    np.testing.assert_array_equal(d["blob/shape"], np.tile([16, 16], (n, 1)))
    np.testing.assert_allclose(d["blob/psize_A"], APIX)
    # pose in radians in [0, 2 pi), shift in pixels with the RELION origin's sign
    pose = d["alignments2D/pose"]
    assert pose.dtype == np.float32 and (pose >= 0).all() and (pose < 2 * np.pi).all()
    np.testing.assert_allclose(np.degrees(np.angle(np.exp(1j * pose))), psi, atol=1e-4)
    np.testing.assert_allclose(d["alignments2D/shift"], origin_A / APIX, atol=1e-5)
    np.testing.assert_allclose(d["alignments2D/psize_A"], APIX)
    # ctf in cryoSPARC's units, per particle from the star and its optics group
    t = stack.table
    np.testing.assert_allclose(d["ctf/df1_A"], t["rlnDefocusU"], rtol=1e-6)
    np.testing.assert_allclose(d["ctf/df2_A"], t["rlnDefocusV"], rtol=1e-6)
    np.testing.assert_allclose(d["ctf/df_angle_rad"], np.radians(t["rlnDefocusAngle"]), atol=1e-6)
    np.testing.assert_allclose(d["ctf/phase_shift_rad"], np.radians(10.0), atol=1e-6)
    np.testing.assert_allclose(d["ctf/accel_kv"], np.where(t["rlnOpticsGroup"] == 1, 300.0, 200.0))
    np.testing.assert_allclose(d["ctf/cs_mm"], np.where(t["rlnOpticsGroup"] == 1, 2.7, 2.0), rtol=1e-6)
    np.testing.assert_allclose(d["ctf/amp_contrast"], np.where(t["rlnOpticsGroup"] == 1, 0.1, 0.07), rtol=1e-6)
    np.testing.assert_array_equal(d["ctf/exp_group_id"], t["rlnOpticsGroup"] - 1)
    np.testing.assert_allclose(d["ctf/bfactor"], 5.0)
    g1 = (t["rlnOpticsGroup"] == 1).to_numpy()
    # beam tilt back through pyem's csparc2star conversion (mrad = asin(tilt_A / Cs / 1e7) * 1e3)
    mrad = np.arcsin(d["ctf/tilt_A"][g1] / d["ctf/cs_mm"][g1, None] * 1e-7) * 1e3
    np.testing.assert_allclose(mrad, np.tile([0.5, -0.25], (g1.sum(), 1)), rtol=1e-4)
    assert set(d["ctf/type"].tolist()) == {"imported"}
    # cryovae's own fields
    for j in range(3):
        np.testing.assert_allclose(d[f"cryovae/z{j + 1}"], z[:, j], rtol=1e-6)
    np.testing.assert_allclose(d["cryovae/prob"], 0.5)

    groups = yaml.safe_load(csg.read_text())
    assert groups["group"]["type"] == "particle"
    assert set(groups["results"]) == {"blob", "ctf", "alignments2D"}
    for prefix, result in groups["results"].items():
        assert result == {"metafile": ">enc.cs", "num_items": n, "type": f"particle.{prefix}"}

    # cryovae reads its own .cs from another folder and finds the same images
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    back = io.read_particles(os.path.relpath(cs, elsewhere))
    assert back.stacks_missing == []
    np.testing.assert_array_equal(back.images(np.arange(n)), imgs)
    np.testing.assert_allclose(back.table["rlnDefocusU"], t["rlnDefocusU"], rtol=1e-6)


@pytest.mark.parametrize("name", ["cryosparc_J2_particles_exported.cs", "cryosparc_P12_J24_001_particles.cs"])
def test_cs_input_fields_pass_through_in_order_and_dtype(tmp_path, test_data, name):
    """Real cryoSPARC files (stacks absent): every input field comes back bit-identical except
    the alignments2D pose/shift/psize_A cryovae owns; alignments2D is added when absent."""
    src = tmp_path / name
    shutil.copy(test_data / name, src)
    before = src.read_bytes()
    stack = io.read_particles(src)
    n = len(stack)
    rng = np.random.default_rng(3)
    psi = rng.uniform(-180, 180, n)
    origin_A = rng.uniform(-9, 9, (n, 2))
    (tmp_path / "o").mkdir()
    cs, _ = io.write_particles_cs(stack, tmp_path / "o" / "out.cs", psi, origin_A, latents=rng.normal(size=(n, 1)))
    assert src.read_bytes() == before  # the input is never modified

    inp = np.load(src)
    out = np.load(cs)
    names_in = list(inp.dtype.names)
    assert list(out.dtype.names)[:len(names_in)] == names_in
    owned = {"alignments2D/pose", "alignments2D/shift", "alignments2D/psize_A"}
    for field in names_in:
        assert out.dtype[field] == inp.dtype[field], field
        if field not in owned:
            np.testing.assert_array_equal(out[field], inp[field], err_msg=field)
    apix = inp["blob/psize_A"].astype(np.float64)
    np.testing.assert_allclose(out["alignments2D/shift"], origin_A / apix[:, None], atol=1e-4)
    np.testing.assert_allclose(np.degrees(np.angle(np.exp(1j * out["alignments2D/pose"]))), psi, atol=1e-3)
    added = list(out.dtype.names)[len(names_in):]
    assert added[-1] == "cryovae/z1"
    if "alignments2D/pose" not in names_in:  # a 3D refinement: alignments3D kept, alignments2D added
        assert "alignments3D/pose" in names_in and "alignments2D/pose" in added
        np.testing.assert_array_equal(out["alignments2D/class"], 0)
    csg = yaml.safe_load(cs.with_suffix(".csg").read_text())
    assert {"blob", "ctf", "alignments2D"} <= set(csg["results"])
    assert ("alignments3D" in csg["results"]) == ("alignments3D/pose" in names_in)


def test_cs_input_with_stacks_gets_absolute_blob_paths_and_keeps_the_rest(tmp_path):
    """A .cs built with cryosparc-tools over a stack beside it: blob/path becomes the absolute
    path (cryoSPARC resolves relative paths against its project folder, which cryovae does
    not know); uid, location/* and an earlier cryovae result are kept / replaced."""
    n, box = 5, 12
    data = tmp_path / "project"
    data.mkdir()
    imgs = np.random.default_rng(4).normal(size=(n, box, box)).astype(np.float32)
    io.write_stack(data / "s.mrcs", imgs, APIX)
    d = Dataset.allocate(n, [("blob/path", "O"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
                             ("blob/psize_A", "<f4"), ("location/center_x_frac", "<f4"),
                             ("cryovae/z1", "<f4"), ("cryovae/z2", "<f4")])
    d["blob/path"] = "s.mrcs"
    d["blob/idx"] = np.arange(n)[::-1]
    d["blob/shape"] = [box, box]
    d["blob/psize_A"] = APIX
    d["location/center_x_frac"] = np.linspace(0.1, 0.9, n)
    d.save(data / "in.cs")
    stack = io.read_particles(data / "in.cs")
    (tmp_path / "o").mkdir()
    cs, _ = io.write_particles_cs(stack, tmp_path / "o" / "out.cs", np.zeros(n), np.zeros((n, 2)),
                                  latents=np.ones((n, 1)))
    out = Dataset.load(cs)
    assert [str(p) for p in out["blob/path"]] == [str((data / "s.mrcs").resolve())] * n
    np.testing.assert_array_equal(out["uid"], d["uid"])
    np.testing.assert_array_equal(out["location/center_x_frac"], d["location/center_x_frac"])
    assert "cryovae/z2" not in out.fields()  # an old result with more latents is replaced
    np.testing.assert_array_equal(out["cryovae/z1"], 1.0)
    back = io.read_particles(cs)
    np.testing.assert_array_equal(back.images(np.arange(n)), imgs[::-1])


def test_cs_writer_refuses_bad_outputs(tmp_path):
    star, _ = _star_input(tmp_path, n=2, two_stacks=False)
    stack = io.read_particles(star)
    with pytest.raises(CryovaeError, match="must end in .cs"):
        io.write_particles_cs(stack, tmp_path / "out.star", np.zeros(2), np.zeros((2, 2)))
    cs_in = _cs_over(tmp_path)
    before = cs_in.read_bytes()
    with pytest.raises(CryovaeError, match="overwrite the input"):
        io.write_particles_cs(io.read_particles(cs_in), cs_in, np.zeros(2), np.zeros((2, 2)))
    assert cs_in.read_bytes() == before
    with pytest.raises(CryovaeError, match="does not exist"):
        io.write_particles_cs(stack, tmp_path / "nofolder" / "o.cs", np.zeros(2), np.zeros((2, 2)))
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "out.star").exists()


def _cs_over(folder):
    d = Dataset.allocate(2, [("blob/path", "O"), ("blob/idx", "<u4"), ("blob/psize_A", "<f4")])
    d["blob/path"] = "a.mrcs"
    d["blob/idx"] = [0, 1]
    d["blob/psize_A"] = APIX
    d.save(folder / "cs_in.cs")
    return folder / "cs_in.cs"


# ------------------------------------------------------------------ the 2D sign convention
BOX = 32


@pytest.fixture(scope="module")
def posed():
    """Particles drawn by a (random, smooth) generator at known poses, and its template."""
    return posed_particles(BOX, APIX)


def test_cs_pose_aligns_particles_onto_the_decoded_template(tmp_path, posed):
    imgs, template, theta, center, win = posed
    io.write_stack(tmp_path / "stack.mrcs", imgs, APIX)
    stack = io.read_particles(tmp_path / "stack.mrcs")
    lat = Latents.from_pose(np.zeros((len(theta), 1)), np.ones((len(theta), 1)), theta, center, APIX)
    write_cs(stack, lat, tmp_path / "out.cs")

    d = Dataset.load(tmp_path / "out.cs")
    for i in range(len(imgs)):
        # the mapping pyem / cryoDRGN apply: psi = degrees(pose), origin (px) = shift
        pose, shift = float(d["alignments2D/pose"][i]), d["alignments2D/shift"][i].astype(np.float64)
        aligned = apply_relion_alignment(imgs[i], np.degrees(pose), shift)
        good = ncc(aligned * win, template * win)
        assert good > 0.99, i
        for wrong in (apply_relion_alignment(imgs[i], -np.degrees(pose), shift),
                      apply_relion_alignment(imgs[i], np.degrees(pose), -shift)):
            assert ncc(wrong * win, template * win) < good - 0.05


# ------------------------------------------------------------------ train / encode CLI
TINY = ["--box", "24", "--group", "p4", "--enc-fields", "2", "--enc-kernel", "9", "--gen-hidden", "16",
        "--fourier-features", "8", "--batch-size", "16", "--device", "cpu", "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def cs_run(tmp_path_factory):
    """A .cs over a 24-px stack (with a uid and an alignments3D field) and a 1-epoch run on it."""
    d = tmp_path_factory.mktemp("csdata")
    rng = np.random.default_rng(0)
    n = 32
    io.write_stack(d / "p.mrcs", blob_particles(24, rng.uniform(-np.pi, np.pi, n), np.zeros((n, 2)), noise=0.1), 3.0)
    ds = Dataset.allocate(n, [("blob/path", "O"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
                              ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
                              ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
                              ("ctf/df_angle_rad", "<f4"), ("alignments3D/pose", "<f4", (3,))])
    ds["blob/path"] = "p.mrcs"
    ds["blob/idx"] = np.arange(n)
    ds["blob/shape"] = [24, 24]
    ds["blob/psize_A"] = 3.0
    ds["ctf/accel_kv"], ds["ctf/cs_mm"], ds["ctf/amp_contrast"] = 300.0, 2.7, 0.1
    ds["ctf/df1_A"], ds["ctf/df2_A"], ds["ctf/df_angle_rad"] = 15000.0, 14000.0, 0.5
    ds["alignments3D/pose"] = rng.normal(size=(n, 3))
    ds.save(d / "in.cs")
    run = d / "run"
    r = CliRunner().invoke(cli, ["train", str(d / "in.cs"), "-o", str(run), "--epochs", "1", *TINY])
    assert r.exit_code == 0, r.output
    return d / "in.cs", run


def test_train_on_cs_writes_particles_cs_and_csg_beside_the_star(cs_run):
    src, run = cs_run
    for name in ("particles.star", "particles.cs", "particles.csg"):
        assert (run / name).exists(), name
    lat = np.load(run / "latents.npz")
    inp, out = Dataset.load(src), Dataset.load(run / "particles.cs")
    np.testing.assert_array_equal(out["uid"], inp["uid"])
    np.testing.assert_array_equal(out["alignments3D/pose"], inp["alignments3D/pose"])
    np.testing.assert_allclose(out["alignments2D/pose"], np.mod(np.radians(lat["psi_deg"]), 2 * np.pi), atol=1e-5)
    np.testing.assert_allclose(out["alignments2D/shift"], lat["origin_A"] / 3.0, atol=1e-5)
    np.testing.assert_allclose(out["cryovae/z1"], lat["z_mean"][:, 0], atol=1e-6)
    np.testing.assert_allclose(out["cryovae/prob"], lat["prob"], atol=1e-6)
    csg = yaml.safe_load((run / "particles.csg").read_text())
    assert csg["results"]["alignments2D"]["metafile"] == ">particles.cs"


def test_encode_writes_cs_and_csg_and_refuses_other_suffixes(tmp_path, cs_run):
    src, run = cs_run
    r = CliRunner().invoke(cli, ["encode", str(run), str(src), "-o", str(tmp_path / "enc.cs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    enc = Dataset.load(tmp_path / "enc.cs")
    assert len(enc) == len(Dataset.load(src)) and (tmp_path / "enc.csg").exists()
    assert np.isfinite(enc["alignments2D/shift"]).all() and "cryovae/z1" in enc.fields()
    # star text is never written into a .cs: the file is a numpy structured array
    assert np.load(tmp_path / "enc.cs").dtype.names[0] == "uid"

    # an output kind cryovae does not write: one line, exit 2, before any work (no run needed)
    for bad in ("enc.mrcs", "enc.txt", "enc"):
        r = CliRunner().invoke(cli, ["encode", str(tmp_path / "no_run"), str(src), "-o", str(tmp_path / bad)])
        assert r.exit_code == 2 and "unknown output type" in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / bad).exists()
