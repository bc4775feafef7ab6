"""Pin the numbers a seeded run gives, to check that a refactor changes no science.

Runs, with the commands a user types (in subprocesses, 2 threads):

1. ``simulate hinge`` (400 particles, 32 px) → ``train`` TARGET-VAE P8 z=1 with the hinge
   example's flags at 4 epochs and 5 refinement steps → ``encode`` → ``evaluate``;
2. the same data → ``train --model spatial`` (3 epochs) → ``evaluate``;
3. ``demo --tiny``.

and prints every epoch's validation ELBO (metrics.csv), the evaluation figures, and the
largest absolute difference between the numeric columns of the stars written, so that two runs
(before/after a change) compare line by line::

    python benchmarks/pin_behaviour.py OUT            # prints the figures, keeps OUT
    python benchmarks/pin_behaviour.py OUT --against BEFORE_OUT   # + star differences
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _cryovae(*args: str) -> None:
    # the checkout this script sits in, whatever is installed
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "cryovae.cli.main", *args]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _val_elbo(run: Path) -> list[str]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k not in ("epoch", "split", "lr", "seconds")]
    return [f"epoch {r['epoch']}: " + " ".join(f"{k}={float(r[k]):.6f}" for k in keys if r[k] != "")
            for r in rows if r["split"] == "val"]


def _evaluation(folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = value

    walk("", metrics)
    return "\n".join(f"  {k} = {v:.6f}" for k, v in sorted(flat.items()))


def _star_numbers(star: Path) -> dict[str, np.ndarray]:
    import starfile

    table = starfile.read(star, always_dict=True)
    table = table.get("particles", next(iter(table.values())))
    return {c: table[c].to_numpy(float) for c in table.columns if table[c].dtype.kind in "if"}


def run(out: Path) -> list[tuple[str, Path]]:
    data = out / "data"
    stars = []
    print("== hinge data", flush=True)
    _cryovae("simulate", "hinge", "-o", str(data), "--n", "400", "--box", "32", "--apix", "5",
             "--snr", "1", "--shift-sigma", "1", "--seed", "1")
    flags = ["--zdim", "1", "--box", "32", "--translation-prior", "1", "--z-delay", "2",
             "--patience", "0", "--seed", "0", "--refine-steps", "5"]
    target = ["--group", "p8", "--enc-fields", "16", "--enc-kernel", "21", "--epochs", "4"]
    for name, extra in (("target", target), ("spatial", ["--model", "spatial", "--epochs", "3"])):
        run_dir = out / name
        _cryovae("train", str(data / "particles.star"), "-o", str(run_dir), *extra, *flags)
        _cryovae("evaluate", str(run_dir / "particles.star"), str(data / "truth.csv"),
                 "-o", str(out / f"{name}_evaluation"))
        print(f"== {name}: validation per epoch")
        print("\n".join(_val_elbo(run_dir)))
        print(f"== {name}: evaluation")
        print(_evaluation(out / f"{name}_evaluation"), flush=True)
        stars.append((f"{name}/particles.star", run_dir / "particles.star"))
    _cryovae("encode", str(out / "target"), str(data / "particles.star"), "-o",
             str(out / "encoded.star"), "--refine-steps", "5")
    stars.append(("encoded.star", out / "encoded.star"))
    _cryovae("demo", "--tiny", "-o", str(out / "demo"))
    demo_run = next(p.parent for p in (out / "demo").rglob("metrics.csv"))
    print("== demo --tiny: validation per epoch")
    print("\n".join(_val_elbo(demo_run)))
    for star in sorted((out / "demo").rglob("*.star")):
        stars.append((str(star.relative_to(out)), star))
    return stars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--against", type=Path, default=None, help="an earlier OUT to compare with")
    args = parser.parse_args()
    stars = run(args.out)
    if args.against is None:
        return
    print("== written stars: largest |after - before| per file (numeric columns)")
    for name, star in stars:
        before = args.against / name
        if not before.exists():
            print(f"{name}: no such file in {args.against}")
            continue
        a, b = _star_numbers(star), _star_numbers(before)
        if set(a) != set(b):
            print(f"{name}: columns differ: {sorted(set(a) ^ set(b))}")
        diff = max((float(np.max(np.abs(a[c] - b[c]))) for c in set(a) & set(b) if len(a[c])),
                   default=0.0)
        print(f"{name}: {len(a)} numeric columns, max |diff| {diff:.3g}")


if __name__ == "__main__":
    main()
