"""Regenerate the napari plugin's sample data: napari_plugin/sample_run/ (under 2 MB).

Runs ``cryovae simulate`` and ``cryovae train`` themselves (the real commands), then drops the
files a viewer does not need (the resumable checkpoint and the preprocessed-image cache), so
the folder holds a simulated hinge stack and two tiny TARGET-VAE runs trained on it:

    sample_run/sim/     particles.mrcs, particles.star, truth.csv, simulation.json
    sample_run/z1/      config.yaml, best.pt, metrics.csv, train.log, latents.npz, particles.star
    sample_run/z2/      the same with two content latents (a 2-D latent space to click in)

Run it again whenever the model code changes the checkpoint format:

    python examples/make_napari_sample_run.py            # about 10-20 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "napari_plugin" / "sample_run"
SIMULATE = ["hinge", "--n", "300", "--box", "32", "--apix", "5.0", "--snr", "2", "--shift-sigma", "1",
            "--seed", "7"]
TRAIN = ["--model", "target", "--group", "p8", "--box", "32", "--enc-fields", "4", "--enc-kernel", "11",
         "--gen-hidden", "48", "--fourier-features", "16", "--batch-size", "32", "--lr", "2e-3",
         "--val-fraction", "0.1", "--patience", "0", "--translation-prior", "2", "--z-delay", "1",
         "--seed", "0", "--device", "cpu"]
KEEP = {"config.yaml", "best.pt", "metrics.csv", "train.log", "latents.npz", "particles.star"}
LIMIT_BYTES = 2 * 2**20


def cryovae(*args: str) -> None:
    exe = Path(sys.executable).with_name("cryovae")
    cmd = [str(exe) if exe.exists() else "cryovae", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cryovae("simulate", *SIMULATE, "-o", str(tmp / "sim"))
    for zdim in (1, 2):
        rundir = tmp / f"z{zdim}"
        cryovae("train", str(tmp / "sim" / "particles.star"), "-o", str(rundir), "--zdim", str(zdim),
                "--epochs", str(args.epochs), *TRAIN)
        for f in rundir.iterdir():
            if f.name not in KEEP:
                f.unlink()
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    if size > LIMIT_BYTES:
        sys.exit(f"{tmp} is {size / 2**20:.2f} MiB, over the 2 MiB limit")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
