"""What the benchmarks that train through the CLI share: a cached training run and the
``median [min–max]`` cells of their tables. (Imported as ``_common`` from a script in this folder.)"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from pathlib import Path

import numpy as np


def cached_train(name: str, data: Path, args: list[str], work: Path) -> tuple[Path, float]:
    """``cryovae train DATA/particles.star`` with ``args`` into ``work/run_<name>_<data>_<hash of args>``,
    or that run reused when it finished before; returns the run folder and the training wall time (s)."""
    from cryovae.cli.main import cli

    key = hashlib.sha1(" ".join(args).encode()).hexdigest()[:8]  # the options name the run: reused only for equal ones
    rundir = work / f"run_{name}_{data.name}_{key}"
    timing = rundir / "train_seconds.txt"
    if not ((rundir / "particles.star").exists() and timing.exists()):
        if rundir.exists():
            shutil.rmtree(rundir)
        t0 = time.perf_counter()
        cli.main(["train", str(data / "particles.star"), "-o", str(rundir), *args], standalone_mode=False)
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return rundir, float(timing.read_text())


def output_folders(args, name: str, root: Path) -> tuple[list[int], Path, Path]:
    """The seeds (``--seeds``, else 1 for ``--quick`` and 1, 2, 3 otherwise), the folder of the table
    (``--out``, else root/tmp/<name>_quick or root/docs/quality) and of the simulations and runs
    (``--work``, else under the table's folder for ``--quick`` or root/runs/<name>_work), created."""
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    out = args.out or (root / "tmp" / f"{name}_quick" if args.quick else root / "docs" / "quality")
    work = args.work or (out / "work" if args.quick else root / "runs" / f"{name}_work")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return seeds, out, work


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def spread(values: list[float], digits: int = 3) -> str:
    """``median [min–max]`` of the finite values (one value alone: itself)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return "n/a"
    if len(v) == 1:
        return fmt(float(v[0]), digits)
    return f"{fmt(float(np.median(v)), digits)} [{fmt(float(v.min()), digits)}–{fmt(float(v.max()), digits)}]"
