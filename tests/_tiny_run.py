"""A tiny trained run shared by the analysis and napari tests.

``tiny_run_dir(base)`` simulates 160 hinge particles (24 px, 6 Å/px, SNR 1, with a CTF, so the
RELION 3.1 star has rlnDefocusU/V) and trains (without --ctf) TARGET-VAE (p4, zdim 2, 2 epochs, small widths) on them with
``cryovae train`` on the CPU, once per ``base`` folder; a finished run found there is reused.

Use it through a session-scoped fixture in a test module::

    from _tiny_run import tiny_run_dir

    @pytest.fixture(scope="session")
    def tiny_run(tmp_path_factory):
        return tiny_run_dir(tmp_path_factory.getbasetemp() / "tiny_run")
"""

from __future__ import annotations

from pathlib import Path

N_PARTICLES = 160
BOX = 24
ZDIM = 2

TRAIN_ARGS = ["--model", "target", "--group", "p4", "--zdim", str(ZDIM), "--box", str(BOX),
              "--epochs", "2", "--batch-size", "32", "--enc-fields", "4", "--enc-kernel", "9",
              "--enc-layers", "0", "--gen-hidden", "32", "--gen-layers", "1", "--fourier-features", "16",
              "--z-delay", "0", "--val-fraction", "0.2", "--device", "cpu", "--seed", "0"]


def tiny_run_dir(base: Path) -> Path:
    """Path of a finished tiny run under ``base`` (``base/run``; data in ``base/sim``)."""
    from click.testing import CliRunner

    from cryovae.cli.main import cli

    base = Path(base)
    run = base / "run"
    if (run / "latents.npz").exists() and (run / "particles.star").exists():
        return run
    sim = base / "sim"
    runner = CliRunner()
    res = runner.invoke(cli, ["simulate", "hinge", "-o", str(sim), "--n", str(N_PARTICLES), "--box", str(BOX),
                              "--apix", "6", "--snr", "1", "--ctf", "--seed", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["train", str(sim / "particles.star"), "-o", str(run), *TRAIN_ARGS],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run
