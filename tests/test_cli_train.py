"""`cryovae train` / `cryovae encode` end to end on a tiny star + mrcs (real files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from click.testing import CliRunner
from test_models_synthetic import blob_particles

from cryovae.cli.main import cli

io = pytest.importorskip("cryovae.io")

BOX = 24
APIX = 3.0
COMMON = ["--box", "24", "--gen-hidden", "16", "--fourier-features", "8", "--batch-size", "16", "--device", "cpu",
          "--val-fraction", "0.25"]
TARGET_ONLY = ["--group", "p4", "--enc-fields", "2", "--enc-kernel", "9"]
TINY = [*COMMON, *TARGET_ONLY]


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    n = 40
    imgs = blob_particles(BOX, rng.uniform(-np.pi, np.pi, n), np.zeros((n, 2)), noise=0.1)
    io.write_stack(d / "p.mrcs", imgs, APIX)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [APIX],
                           "rlnImageSize": [BOX], "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1}@p.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n,
                          "rlnDefocusU": [15000.0] * n, "rlnDefocusV": [14500.0] * n,
                          "rlnDefocusAngle": [30.0] * n, "rlnMyColumn": np.arange(n)})
    io.write_star(d / "p.star", {"optics": optics, "particles": parts})
    return d / "p.star"


def _particles(path):
    blocks = starfile.read(path, always_dict=True)
    return blocks["particles"]


def test_train_writes_the_run_directory_and_resume_continues(tmp_path, star):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(run), "--epochs", "1", *TINY])
    assert r.exit_code == 0, r.output
    for name in ("config.yaml", "checkpoint.pt", "best.pt", "metrics.csv", "train.log", "latents.npz",
                 "particles.star", "images.npy", "alignment.npz"):  # TARGET-VAE aligns first by default
        assert (run / name).exists(), name
    cfg = yaml.safe_load(open(run / "config.yaml"))
    assert cfg["model"]["group"] == "p4" and cfg["model"]["box"] == BOX
    assert cfg["model"]["pixel_size"] == pytest.approx(APIX)
    assert "cryovae train" in cfg["command_line"] and cfg["cryovae_version"]
    df = _particles(run / "particles.star")
    assert {"rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "cryovaeZ1", "cryovaeProb", "rlnMyColumn"} <= set(df.columns)
    lat = np.load(run / "latents.npz")
    np.testing.assert_allclose(df["rlnAnglePsi"].to_numpy(float), lat["psi_deg"], atol=1e-4)
    np.testing.assert_allclose(df["rlnOriginXAngst"].to_numpy(float), lat["origin_A"][:, 0], atol=1e-4)
    assert set(lat.files) == {"z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A", "prob"}

    r = CliRunner().invoke(cli, ["train", "--resume", "-o", str(run), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    metrics = pd.read_csv(run / "metrics.csv")
    assert sorted(metrics["epoch"].unique()) == [1, 2]

    out = tmp_path / "enc.star"
    r = CliRunner().invoke(cli, ["encode", str(run), str(star), "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    enc = _particles(out)
    lat = np.load(run / "latents.npz")
    np.testing.assert_allclose(enc["rlnAnglePsi"].to_numpy(float), lat["psi_deg"], atol=1e-3)
    np.testing.assert_allclose(enc["cryovaeZ1"].to_numpy(float), lat["z_mean"][:, 0], atol=1e-4)

    # --refine-steps 0 --no-posterior-grid: the encoder's own values, which train's refinement and
    # posterior grid had moved
    r = CliRunner().invoke(cli, ["encode", str(run), str(star), "-o", str(tmp_path / "raw.star"), "--refine-steps", "0",
                                 "--no-posterior-grid"])
    assert r.exit_code == 0, r.output
    raw = _particles(tmp_path / "raw.star")
    assert np.abs(raw["cryovaeZ1"].to_numpy(float) - lat["z_mean"][:, 0]).max() > 1e-3
    r = CliRunner().invoke(cli, ["encode", str(run), str(star), "-o", str(tmp_path / "x.star"), "--refine-steps", "-1"])
    assert r.exit_code == 2 and "--refine-steps" in r.output and "Traceback" not in r.output


def test_train_with_ctf_and_spatial_vae(tmp_path, star):
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "s"), "--model", "spatial",
                                 "--enc-hidden", "32", "--epochs", "1", "--ctf", *COMMON])
    assert r.exit_code == 0, r.output
    df = _particles(tmp_path / "s" / "particles.star")
    assert "cryovaeProb" not in df.columns and "cryovaeZ1" in df.columns
    cfg = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert cfg["model"]["kind"] == "spatial" and cfg["model"]["enc_hidden"] == [32]
    assert "group" not in cfg["model"] and cfg["train"]["rotate_encoder"] is True  # spatial-VAE's own default


def test_an_option_of_another_model_is_a_one_line_error(tmp_path, star):
    """--group belongs to TARGET-VAE: with --model spatial it is refused, not silently ignored."""
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "s"), "--model", "spatial",
                                 "--epochs", "1", *TINY])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == [
        "cryovae train: error: --group, --enc-fields, --enc-kernel: not an option of spatial-VAE "
        "(--model spatial); see cryovae train --help"]
    assert not (tmp_path / "s").exists()
    r = CliRunner().invoke(cli, ["train", str(star), "--model", "nonesuch"])
    assert r.exit_code == 2 and "nonesuch" in r.output and "target" in r.output and "spatial" in r.output


@pytest.mark.parametrize("args,message", [
    (["--group", "p5"], "p5"),
    (["--box", "4"], "--box"),
    (["--epochs", "0"], "--epochs"),
    (["--device", "tpu"], "device"),
    (["--refine-steps", "-1"], "--refine-steps"),
])
def test_bad_options_are_one_line_errors(tmp_path, star, args, message):
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "r"), *args])
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_missing_input_and_existing_run_are_errors(tmp_path, star):
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "nope.star"), "-o", str(tmp_path / "r")])
    assert r.exit_code == 2 and "cryovae train: error:" in r.output and "nope.star" in r.output
    r = CliRunner().invoke(cli, ["train", "--resume", "-o", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "config.yaml" in r.output


def test_train_without_o_writes_cryovae_stem_in_the_current_folder(tmp_path, star, monkeypatch):
    """The command users type, `cryovae train particles.star --group p8 --zdim 1`, needs no -o."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["train", str(star), "--epochs", "1", *TINY])
    assert r.exit_code == 0, r.output
    assert (tmp_path / f"cryovae_{star.stem}" / "particles.star").exists()
    # a second identical call must not overwrite that run
    again = CliRunner().invoke(cli, ["train", str(star), "--epochs", "1", *TINY])
    assert again.exit_code == 2 and "already holds a run" in again.output
    # the form: --resume RUNDIR
    run = tmp_path / f"cryovae_{star.stem}"
    r = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(pd.read_csv(run / "metrics.csv")["epoch"].unique()) == [1, 2]


@pytest.mark.parametrize("extra", [["--zdim", "3"], ["--apix", "2.0"], ["--skip-bad"], ["--lr", "0.01", "--box", "16"]])
def test_options_a_resume_would_ignore_are_refused(tmp_path, extra):
    """A resumed run keeps its config.yaml: an option it would silently ignore is one line."""
    r = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run"), *extra])
    assert r.exit_code == 2 and "Traceback" not in r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("cryovae train: error: ") and "not with --resume" in line
    for opt in extra[::2] if extra != ["--skip-bad"] else extra:
        assert opt in line
    assert not (tmp_path / "run").exists()


def test_resume_without_o_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(cli, ["train", "--resume"])
    assert r.exit_code == 2 and "-o RUNDIR is required with --resume" in r.output


@pytest.mark.parametrize("with_outdir", [False, True])
def test_train_without_particles_names_the_missing_argument(tmp_path, monkeypatch, with_outdir):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["train", *(["-o", "run"] if with_outdir else [])])
    assert r.exit_code == 2
    assert "PARTICLES is required" in r.output and "-o RUNDIR is required" not in r.output
    assert "Traceback" not in r.output and list(tmp_path.iterdir()) == []


def _small_star(d, box, n=16):
    """A RELION 3.1 star + stack of ``n`` blob particles of ``box`` px (3 Å/px) in folder ``d``."""
    d.mkdir()
    rng = np.random.default_rng(1)
    io.write_stack(d / "p.mrcs", blob_particles(box, rng.uniform(-np.pi, np.pi, n), np.zeros((n, 2)), noise=0.1), APIX)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [APIX], "rlnImageSize": [box],
                           "rlnImageDimensionality": [2]})
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1}@p.mrcs" for i in range(n)], "rlnOpticsGroup": [1] * n})
    io.write_star(d / "p.star", {"optics": optics, "particles": parts})
    return d / "p.star"


@pytest.mark.parametrize("size, box, crop", [(32, 32, False), (25, 25, False), (48, 40, True)])
def test_default_box_is_the_images_own_up_to_40_px_else_40(tmp_path, size, box, crop):
    """Without --box: no crop for images <= 40 px (odd sizes too), a Fourier crop to 40 above; one log line."""
    star = _small_star(tmp_path / "data", size)
    run = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--box", "24")]
    r = CliRunner().invoke(cli, ["train", str(star), "--zdim", "1", "-o", str(run), "--epochs", "1",
                                 "--refine-steps", "0", *tiny])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(open(run / "config.yaml"))
    assert cfg["model"]["box"] == box and cfg["preprocess"]["box"] == box
    assert cfg["model"]["pixel_size"] == pytest.approx(APIX * size / box)
    assert np.load(run / "images.npy", mmap_mode="r").shape == (16, box, box)
    said = [line for line in (run / "train.log").read_text().splitlines() if "model box" in line]
    assert len(said) == 1 and f"model box {box} px" in said[0] and ("cropped" in said[0]) == crop
    assert len(_particles(run / "particles.star")) == 16


def test_images_too_small_for_any_model_are_a_one_line_error(tmp_path):
    star = _small_star(tmp_path / "data", 6, n=4)
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "run"), *TINY[2:]])
    assert r.exit_code == 2 and "the images are 6 px" in r.output and "p.star" in r.output
    assert "Traceback" not in r.output


def test_alignment_guides_training_and_is_kept_for_resume(tmp_path, star):
    """--align-rotations: the EM alignment is made once (alignment.npz, one rotation and std per
    particle), its penalty is a training column beside the ELBO for --guide-epochs epochs, and a
    resumed run reads the file back instead of aligning again."""
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(run), "--epochs", "1", "--align-rotations", "12",
                                 "--guide-epochs", "1", "--refine-steps", "0", "--no-posterior-grid", *TINY])
    assert r.exit_code == 0, r.output
    with np.load(run / "alignment.npz") as d:
        assert d["theta"].shape == d["theta_std"].shape == d["confidence"].shape == (40,)
        assert np.isfinite(d["theta"]).all() and (d["theta_std"] > 0).all()
    stamp = (run / "alignment.npz").stat().st_mtime_ns
    cfg = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert cfg["align_rotations"] == 12 and cfg["guide_epochs"] == 1
    r = CliRunner().invoke(cli, ["train", "--resume", "-o", str(run), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert (run / "alignment.npz").stat().st_mtime_ns == stamp
    m = pd.read_csv(run / "metrics.csv")
    train, val = m[m["split"] == "train"].set_index("epoch"), m[m["split"] == "val"]
    assert np.isfinite(train.loc[1, "rotation_guide"]) and train.loc[1, "rotation_guide"] > -50
    assert np.isnan(train.loc[2, "rotation_guide"]) and val["rotation_guide"].isna().all()  # only --guide-epochs, never in val
    # the ELBO column stays the ELBO: recon - kl
    np.testing.assert_allclose(m["elbo"], m["recon"] - m["kl"], rtol=1e-5)

    (run / "alignment.npz").write_bytes(b"not an npz")
    r = CliRunner().invoke(cli, ["train", "--resume", "-o", str(run), "--epochs", "3"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "alignment.npz: damaged alignment file" in r.output


def test_a_model_without_rotation_guidance_trains_without_alignment(tmp_path, star):
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "s"), "--model", "spatial",
                                 "--enc-hidden", "16", "--epochs", "1", "--align-rotations", "12", *COMMON])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "s" / "alignment.npz").exists()
    assert "rotation_guide" not in pd.read_csv(tmp_path / "s" / "metrics.csv").columns


def test_a_run_config_from_before_the_alignment_reads_as_trained_without_it():
    from cryovae.runs import TrainConfig

    assert TrainConfig().align_rotations == 36
    assert TrainConfig.from_dict({"epochs": 5}).align_rotations == 0


@pytest.mark.parametrize("args,message", [
    (["--align-rotations", "2"], "--align-rotations"),
    (["--guide-epochs", "-1"], "--guide-epochs"),
    (["--guide-weight", "-1"], "--guide-weight"),
])
def test_bad_alignment_options_are_one_line_errors(tmp_path, star, args, message):
    r = CliRunner().invoke(cli, ["train", str(star), "-o", str(tmp_path / "r"), *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
