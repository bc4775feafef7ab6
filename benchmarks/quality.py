"""Quality of the default command on simulated data (issue #13).

Runs the command a user types, ``cryovae train particles.star --group p8 --zdim 1`` (two-arm sets:
``--zdim 2``; the CTF set adds ``--ctf``) with no other option but ``-o RUN``, on data sets made
with ``cryovae simulate``, scores each run with ``cryovae evaluate`` and writes the medians over
seeds into ``--out``: README.md (the table and the issue's goals, met or not), quality.json (every
run's record and the medians) and, for the first seed of each set, the rotation scatter and
z-vs-conformation pictures that ``cryovae evaluate`` draws.

Sets (4 000 particles, 40 px at 4 Å/px, centre offsets sigma 1.5 px, uniform in-plane rotation):
hinge at SNR 1, 0.1 and 0.03; two arms at SNR 1 and 0.1; hinge at SNR 0.1 with a CTF (defocus
1-3 µm, astigmatism up to 500 Å; trained with ``--ctf``); and the projections of a small L-shaped
map written here (one conformation: only the pose is scored). A seed is the simulation's seed,
so each seed is another data set; training keeps the command's own default seed.

Usage::

    python benchmarks/quality.py                          # every set, seeds 1,2,3: 21 runs, hours on a CPU
    python benchmarks/quality.py --cases hinge-1,arms-1 --seeds 1
    python benchmarks/quality.py --quick                  # smoke test: 200 particles, 24 px, 2 sets, seed 1

Every command runs as a subprocess (``python -m cryovae`` of this checkout), one at a time; the
wall time of ``train`` (preprocessing, training, refinement, writing: what the user waits for) is
measured around it. Data sets and runs are kept in runs/quality_work/<set>-s<seed>/ (git-ignored;
``--quick``: <out>/work) and reused when their recorded command matches, so the script can be
stopped and rerun. ``--quick`` writes to tmp/quality_quick unless ``--out`` is given; its numbers
are a smoke test, not a result. ``--append`` adds this call's runs to those already in
``OUT/quality.json`` (same particle count and box; a run of the same set and seed is replaced) and
recomputes the medians over all of them, so sets can be run in several calls and share one page;
the page lists every call's command and commit.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import fmt, output_folders
from conformation_bound import bound

log = logging.getLogger("quality")
ROOT = Path(__file__).resolve().parents[1]

BOX, APIX = 40, 4.0  # the simulator's defaults: a 160 Å field of view
N_PARTICLES, QUICK_N, QUICK_BOX = 4000, 200, 24
SHIFT_SIGMA_PX = 1.5
DEFOCUS_A = (10000, 30000)  # 1-3 µm
MAP_FILE = "maps/l_molecule.mrc"  # under the work folder


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # cryovae simulate KIND
    snr: float
    zdim: int = 1
    ctf: bool = False


CASES = {
    "hinge-1": Case("hinge", 1.0),
    "hinge-0.1": Case("hinge", 0.1),
    "hinge-0.03": Case("hinge", 0.03),
    "arms-1": Case("arms", 1.0, zdim=2),
    "arms-0.1": Case("arms", 0.1, zdim=2),
    "hinge-ctf-0.1": Case("hinge", 0.1, ctf=True),
    "volume-1": Case("volume", 1.0),
}
QUICK_CASES = ("hinge-1", "arms-1")
#: the issue's goals: (|corr(z, conformation)| of each coordinate, rotation circular corr.) at least, minutes at most
GOALS = {"hinge-1": (0.95, 0.95, 10), "hinge-0.1": (0.90, 0.90, 15), "arms-1": (0.90, 0.95, 15)}


# -- the commands ---------------------------------------------------------------------------------

def simulate_args(case: Case, n: int, box: int, seed: int) -> list[str]:
    """``cryovae simulate`` into ``data`` (run from the set's folder)."""
    args = ["simulate", case.kind, "-o", "data", "--n", str(n), "--box", str(box)]
    if box != BOX:  # the same 160 Å field of view at another box (--quick)
        args += ["--apix", f"{APIX * BOX / box:.4g}"]
    args += ["--snr", f"{case.snr:g}", "--shift-sigma", f"{SHIFT_SIGMA_PX:g}", "--seed", str(seed)]
    if case.ctf:
        args += ["--ctf", "--defocus-min", str(DEFOCUS_A[0]), "--defocus-max", str(DEFOCUS_A[1])]
    if case.kind == "volume":
        args += ["--volume", f"../{MAP_FILE}"]
    return args


def train_args(case: Case) -> list[str]:
    """The default command (and ``-o run``, which does not change training)."""
    return ["train", "data/particles.star", "--group", "p8", "--zdim", str(case.zdim),
            *(["--ctf"] if case.ctf else []), "-o", "run"]


EVALUATE_ARGS = ["evaluate", "run/particles.star", "data/truth.csv", "-o", "run/evaluation"]


def cryovae(args: list[str], cwd: Path, output: Path) -> float:
    """Run ``python -m cryovae ARGS`` of this checkout in ``cwd``, stdout and stderr into ``output``;
    returns the wall time (s). Raises RuntimeError (with the output's end) when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(output, "w") as fh:
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "cryovae", *args], cwd=cwd, env=env, stdout=fh,
                            stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t0
    if rc:
        tail = "\n".join(output.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"`cryovae {shlex.join(args)}` in {cwd} exited {rc}:\n{tail}")
    return seconds


def recorded(folder: Path, record: dict) -> dict | None:
    """folder/benchmark.json when it holds ``record``'s keys with equal values, else None."""
    path = folder / "benchmark.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved if all(saved.get(k) == v for k, v in record.items()) else None


def write_record(folder: Path, record: dict) -> None:
    from cryovae.analysis.output import write_json

    write_json(record, folder / "benchmark.json")


# -- one (set, seed) ------------------------------------------------------------------------------

def write_l_molecule(path: Path) -> None:
    """A 48^3 map at 4 Å/voxel: 50 Gaussian pseudo-atoms (sigma 5 Å) in an L of unequal arms, two atoms
    thick, with a knob above one end, so that its projection has no rotational or mirror symmetry."""
    import mrcfile

    from cryovae.io import atomic_path

    def row(start, end, k):  # k atoms from start to end, in two layers 8 Å apart along z
        line = np.linspace(start, end, k)
        return np.concatenate([line + (0, 0, -4), line + (0, 0, 4)])

    knob = np.array([[34, -10, 10], [40, -6, 14], [30, -4, 16], [38, -14, 18]], dtype=np.float64)
    atoms = np.concatenate([row((-40, -20, 0), (40, -20, 0), 14), row((-40, -12, 0), (-40, 36, 0), 9), knob])
    atoms = atoms + np.random.default_rng(13).normal(0, 2.0, atoms.shape) - atoms.mean(axis=0)
    d, sigma = 48, 5.0
    grid = (np.arange(d) - d // 2) * APIX
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")  # an MRC map is indexed [z, y, x]
    volume = np.zeros((d, d, d))
    for ax, ay, az in atoms:
        volume += np.exp(-((x - ax) ** 2 + (y - ay) ** 2 + (z - az) ** 2) / (2 * sigma ** 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(volume.astype(np.float32))
        mrc.voxel_size = APIX
    log.info("wrote %s (%d pseudo-atoms, at most %.0f Å from the centre)", path, len(atoms),
             float(np.linalg.norm(atoms, axis=1).max()))


def simulated(folder: Path, args: list[str]) -> None:
    """folder/data made by ``cryovae simulate ARGS`` (kept when made by the same command)."""
    data = folder / "data"
    if recorded(data, {"command": args}):
        return
    shutil.rmtree(data, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("%s: cryovae %s", folder.name, shlex.join(args))
    cryovae(args, folder, folder / "simulate.out")
    write_record(data, {"command": args})


def trained(folder: Path, args: list[str], data_args: list[str]) -> float:
    """folder/run trained by ``cryovae train ARGS`` on that data (kept when it was); its wall time (s)."""
    run = folder / "run"
    want = {"command": args, "data": data_args}
    done = recorded(run, want)
    if done and (run / "particles.star").is_file():
        return float(done["seconds"])
    shutil.rmtree(run, ignore_errors=True)
    log.info("%s: cryovae %s", folder.name, shlex.join(args))
    seconds = cryovae(args, folder, folder / "train.out")
    write_record(run, {**want, "seconds": seconds})
    return seconds


def evaluated(folder: Path) -> dict:
    """folder/run/evaluation/metrics.json, written by ``cryovae evaluate`` when missing."""
    metrics = folder / "run" / "evaluation" / "metrics.json"
    if not metrics.is_file():
        cryovae(EVALUATE_ARGS, folder, folder / "evaluate.out")
    return json.loads(metrics.read_text())


def training_course(run: Path) -> dict:
    """Epochs run, the first epoch with z (the one after the last z-delay row, the rows that carry
    rotation_change_deg) and the likelihood mask and centre prior the run chose (config.yaml)."""
    import yaml

    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = max(int(r["epoch"]) for r in rows)
    delay = [int(r["epoch"]) for r in rows if r.get("rotation_change_deg")]
    z_on = (max(delay) + 1 if delay else 1)
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    return {"epochs": epochs, "z_on_epoch": z_on if z_on <= epochs else None,
            "likelihood_mask": model.get("likelihood_mask"), "translation_prior_px": model.get("translation_prior_px"),
            "model_box": model.get("box")}


def scores(metrics: dict) -> dict:
    """The numbers of the table from ``cryovae evaluate``'s metrics.json."""
    conf, rot = metrics.get("conformation", {}), metrics["rotation"]
    best = list(conf.get("best_abs_pearson", {}).values())
    multiple = list(conf.get("multiple_correlation", {}).values())
    return {"conformation": best if len(best) == 1 else multiple,  # one: |Pearson|; several: multiple R each
            "best_abs_pearson": best, "multiple_correlation": multiple,
            "rotation_corr": rot["circular_correlation"], "rotation_median_error_deg": rot["median_error_deg"],
            "translation_rmse_A": metrics.get("translation", {}).get("rmse_after_template_offset_A")}


def finished(name: str, seed: int, n: int, box: int, work: Path) -> bool:
    """Whether (set, seed) was simulated and trained by this script's commands (``--existing``)."""
    case, folder = CASES[name], work / f"{name}-s{seed}"
    sim = simulate_args(case, n, box, seed)
    done = recorded(folder / "run", {"command": train_args(case), "data": sim})
    return bool(recorded(folder / "data", {"command": sim}) and done and (folder / "run" / "particles.star").is_file())


def run_one(name: str, seed: int, n: int, box: int, work: Path) -> dict:
    """Simulate, train and evaluate one (set, seed) (each step reused when done); its record."""
    case, folder = CASES[name], work / f"{name}-s{seed}"
    if case.kind == "volume" and not (work / MAP_FILE).is_file():
        write_l_molecule(work / MAP_FILE)
    sim, train = simulate_args(case, n, box, seed), train_args(case)
    simulated(folder, sim)
    seconds = trained(folder, train, sim)
    record = {"set": name, "seed": seed, "kind": case.kind, "snr": case.snr, "ctf": case.ctf,
              "simulate": "cryovae " + shlex.join(sim), "train": "cryovae " + shlex.join(train),
              "folder": str(folder), "wall_s": seconds, "wall_min": seconds / 60,
              **training_course(folder / "run"), **scores(evaluated(folder))}
    log.info("%s seed %d: z~conformation %s, rotation corr %s (median error %s°), %.1f min, %s epochs, z on at %s",
             name, seed, " / ".join(fmt(v) for v in record["conformation"]) or "-", fmt(record["rotation_corr"]),
             fmt(record["rotation_median_error_deg"], 1), record["wall_min"], record["epochs"], record["z_on_epoch"])
    return record


# -- medians, goals and the page ------------------------------------------------------------------

MEDIAN_KEYS = ("rotation_corr", "rotation_median_error_deg", "translation_rmse_A", "wall_min", "epochs",
               "z_on_epoch")


def median(values) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.median(v)) if v else None


def medians(runs: list[dict]) -> dict:
    """Per set: the seeds and the median of every number over them (conformation: per coordinate)."""
    out = {}
    for name in dict.fromkeys(r["set"] for r in runs):
        mine = [r for r in runs if r["set"] == name]
        k = len(mine[0]["conformation"])
        out[name] = {"snr": mine[0]["snr"], "ctf": mine[0]["ctf"], "seeds": [r["seed"] for r in mine],
                     "conformation": [median(r["conformation"][j] for r in mine) for j in range(k)],
                     **{key: median(r[key] for r in mine) for key in MEDIAN_KEYS}}
    return out


def goals(med: dict) -> list[dict]:
    """The issue's goals of the sets that were run, met or not by the medians."""
    rows = []
    for name, (conf, rot, minutes) in GOALS.items():
        if name not in med:
            continue
        m = med[name]
        each = " each arm" if len(m["conformation"]) > 1 else ""
        for goal, values, ok, digits in (
                (f"corr(z, conformation){each} ≥ {conf:.2f}", m["conformation"], lambda v, t=conf: v >= t, 3),
                (f"rotation circular corr. ≥ {rot:.2f}", [m["rotation_corr"]], lambda v, t=rot: v >= t, 3),
                (f"wall time ≤ {minutes:g} min", [m["wall_min"]], lambda v, t=minutes: v <= t, 1)):
            met = None if any(v is None for v in values) else all(ok(v) for v in values)
            rows.append({"set": name, "goal": goal, "median": values, "digits": digits, "met": met})
    return rows


#: particles the Cramér-Rao bound of a set averages over
BOUND_PARTICLES = 200


def bounds(med: dict, box: int) -> None:
    """Add to each set's medians the highest |corr(z, conformation)| per coordinate that its data
    allow with the pose unknown (``benchmarks/conformation_bound.py``: the Cramér-Rao bound of the
    conformation estimated together with the rotation and centre, with the set's CTF where it has
    one; hinge and arms sets; None otherwise)."""
    for name, m in med.items():
        case = CASES[name]
        m["bound"] = None
        if case.kind in ("hinge", "arms"):
            _, r = bound(case.kind, 40.0, case.snr, BOUND_PARTICLES, box, APIX * BOX / box, SHIFT_SIGMA_PX,
                         DEFOCUS_A if case.ctf else None)
            m["bound"] = [float(v) for v in r[1]]


def cell(values: list, digits: int = 3) -> str:
    return " / ".join(fmt(v, digits) for v in values) if values else "— (one conformation)"


def count(x: float | None) -> str:
    return "n/a" if x is None else f"{x:g}"


def snr_text(snr: float, ctf: bool) -> str:
    return f"{snr:g}{' (CTF)' if ctf else ''}"


def merge_runs(previous: dict, result: dict) -> dict:
    """``result`` with the runs of ``previous`` (an earlier quality.json of the same particle count
    and box) that it does not redo: a previous run or failure of the same (set, seed) as one of this
    call's is dropped. The calls' commands are listed in order, a call made again once, last."""
    old, new = previous["settings"], result["settings"]
    if (old["n"], old["box"], old["quick"]) != (new["n"], new["box"], new["quick"]):
        raise SystemExit(f"--append: the page's runs have {old['n']} particles of {old['box']} px, this call's "
                         f"{new['n']} of {new['box']} px")
    redone = {(r["set"], r["seed"]) for r in result["runs"] + result["failed"]}
    order = {name: i for i, name in enumerate(CASES)}

    def merged(key: str) -> list[dict]:
        kept = [r for r in previous.get(key, []) if (r["set"], r["seed"]) not in redone]
        return sorted(kept + result[key], key=lambda r: (order[r["set"]], r["seed"]))

    calls = previous.get("calls") or [{"reproduce": previous["reproduce"].replace(" --existing", ""),
                                       "commit": previous.get("commit", "unknown")}]
    again = {c["reproduce"] for c in result["calls"]}
    runs = merged("runs")
    med = medians(runs)
    return {**result, "calls": [c for c in calls if c["reproduce"] not in again] + result["calls"],
            "runs": runs, "failed": merged("failed"),
            "note": result["note"] or previous.get("note", ""),  # a note is about the whole page
            "settings": {**new, "seeds": sorted({r["seed"] for r in runs}),
                         "cases": {**old.get("cases", {}), **new["cases"]}},
            "medians": med, "goals": goals(med),
            "pictures": {name: result["pictures"][name] if name in result["pictures"]
                         else previous.get("pictures", {}).get(name, []) for name in med}}


def page(result: dict, out_dir: Path | None = None) -> str:
    """README.md: what was run, the medians, every run, the goals and the pictures."""
    med, runs, s = result["medians"], result["runs"], result["settings"]
    lines = ["# Quality of the default command on simulated data", ""]
    if s["quick"]:
        lines += [f"**Quick smoke test ({s['n']} particles, {s['box']} px): its numbers mean nothing. "
                  "Not a result.**", ""]
    calls = "; then ".join(f"`{c['reproduce']}` (commit {c['commit']})" for c in result["calls"])
    lines += [
        f"Reproduce: {calls} (cryovae {result['cryovae_version']}).",
        "",
        "Each run is the command a user types, with no other option than the output folder:",
        "",
        "    cryovae train particles.star --group p8 --zdim 1 -o RUN     # two-arm sets: --zdim 2; CTF set: --ctf",
        "    cryovae evaluate RUN/particles.star truth.csv -o RUN/evaluation",
        "",
        f"on data made with `cryovae simulate KIND -o D --n {s['n']} --box {s['box']}"
        f"{'' if s['box'] == BOX else ' --apix ' + format(APIX * BOX / s['box'], '.4g')}"
        f" --snr SNR --shift-sigma {SHIFT_SIGMA_PX:g} --seed S` "
        f"({APIX * BOX:.0f} Å field of view, uniform in-plane rotation); the CTF set adds "
        f"`--ctf --defocus-min {DEFOCUS_A[0]} --defocus-max {DEFOCUS_A[1]}` (astigmatism up to 500 Å, the default), "
        "the volume set projects a 48³ L-shaped map of 50 Gaussian pseudo-atoms written by the script "
        "(`--volume`; one conformation, so only the pose is scored). The seed S is the simulation's: each seed "
        "is another data set, and training keeps the command's default seed. Every command of every run is in "
        "quality.json.",
        "",
        f"Machine: {result['machine']}; runs one at a time. Wall time: the whole `cryovae train` command "
        "(preprocessing, training, refinement, writing).",
        *([result["note"], ""] if result["note"] else [""]),
        "corr(z, conformation): |Pearson| of z with the hinge angle; arms: the multiple correlation R of z with "
        "each arm's angle (arm 1 / arm 2). Rotation: Fisher–Lee circular correlation and median error after the "
        "best global offset. Medians over the seeds; each run is in the second table. Bound: the highest "
        "|corr| an unbiased per-particle estimate of the conformation can reach on such data when the rotation "
        "and centre are estimated too (CTF set: with each particle's CTF known, as `--ctf` has it; the Cramér–Rao bound of `benchmarks/conformation_bound.py`, "
        f"{BOUND_PARTICLES} particles; a local bound, so the real limit is lower still).",
        "",
        "| set | SNR | seeds | corr(z, conformation) | bound (pose unknown) | rotation circ. corr. | "
        "rotation median error (°) | wall time (min) | epochs | z on at epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in med.items():
        limit = "n/a" if not m.get("bound") else cell(m["bound"])
        lines.append(f"| {name} | {snr_text(m['snr'], m['ctf'])} | {len(m['seeds'])} | {cell(m['conformation'])} | "
                     f"{limit} | "
                     f"{fmt(m['rotation_corr'])} | {fmt(m['rotation_median_error_deg'], 1)} | "
                     f"{fmt(m['wall_min'], 1)} | {count(m['epochs'])} | {count(m['z_on_epoch'])} |")
    lines += ["", "## Every run", "",
              "| set | seed | corr(z, conformation) | rotation circ. corr. | rotation median error (°) | "
              "translation RMSE (Å) | wall time (min) | epochs | z on at epoch | likelihood mask | centre prior (px) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        lines.append(f"| {r['set']} | {r['seed']} | {cell(r['conformation'])} | {fmt(r['rotation_corr'])} | "
                     f"{fmt(r['rotation_median_error_deg'], 1)} | {fmt(r['translation_rmse_A'], 1)} | "
                     f"{fmt(r['wall_min'], 1)} | {r['epochs']} | {r['z_on_epoch'] or 'n/a'} | "
                     f"{fmt(r['likelihood_mask'], 2)} | {fmt(r['translation_prior_px'], 2)} |")
    for f in result["failed"]:
        why = f["error"].splitlines()[0].replace("|", "/")
        lines.append(f"| {f['set']} | {f['seed']} | failed: {why} |" + " |" * 8)
    if result["goals"]:
        lines += ["", "## The goals of issue #13", "", "| set | goal | median | met |", "| --- | --- | --- | --- |"]
        for g in result["goals"]:
            met = "n/a" if g["met"] is None else "met" if g["met"] else "not met"
            lines.append(f"| {g['set']} | {g['goal']} | {cell(g['median'], g['digits'])} | {met} |")
        above = [(name, GOALS[name][0], med[name]["bound"]) for name in GOALS
                 if name in med and med[name].get("bound") and min(med[name]["bound"]) < GOALS[name][0]]
        for name, goal, limit in above:
            lines += ["", f"{name}: the goal {goal:.2f} for corr(z, conformation) lies above what its data allow "
                          f"with the pose unknown ({cell(limit)}, the bound column above): an unbiased per-particle estimate "
                          "cannot reach it on such data."]
    if out_dir is not None and (out_dir / "reframe.md").is_file():
        lines += ["", "The two-arm frame after training, `cryovae reframe` (a command of its own, not the default "
                      "command): [reframe.md](reframe.md)."]
    lines += ["", "## Pictures", "", "From `cryovae evaluate` on the first seed of each set.", ""]
    for name, files in result["pictures"].items():
        lines += [f"### {name} (seed {med[name]['seeds'][0]})", "", *(f"![{f}]({f})" for f in files), ""]
    return "\n".join(lines).rstrip() + "\n"


def copy_pictures(runs: list[dict], out: Path) -> dict[str, list[str]]:
    """The evaluation pictures of each set's first run, copied into ``out`` as <set>_<name>.png."""
    from cryovae.io import atomic_path

    pictures = {}
    for r in runs:
        if r["set"] in pictures:
            continue
        pictures[r["set"]] = []
        for name in ("rotation", "latents"):
            src = Path(r["folder"]) / "run" / "evaluation" / f"{name}.png"
            if src.is_file():
                dst = out / f"{r['set']}_{name}.png"
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
                pictures[r["set"]].append(dst.name)
    return pictures


def machine() -> str:
    """The cores and the device ``cryovae train --device auto`` picks here."""
    from cryovae.device import resolve_device

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = resolve_device("auto")
    if device.type == "cuda":
        import torch

        return f"{cores}-core CPU with {torch.cuda.get_device_name(device)} (cryovae picked cuda)"
    return f"{cores}-core CPU, no GPU (cryovae picked cpu)"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=lambda t: t.split(","), default=None,
                   help=f"comma-separated sets [all: {','.join(CASES)}; --quick: {','.join(QUICK_CASES)}]")
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=None,
                   help="comma-separated simulation seeds [1,2,3; --quick: 1]")
    p.add_argument("--n", type=int, default=None, help=f"particles per set [{N_PARTICLES}; --quick: {QUICK_N}]")
    p.add_argument("--work", type=Path, default=None,
                   help="data sets and runs, reused [runs/quality_work; --quick: OUT/work]")
    p.add_argument("--out", type=Path, default=None, help="README.md, quality.json, pictures "
                   "[docs/quality; --quick: tmp/quality_quick]")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_N} particles of {QUICK_BOX} px, {', '.join(QUICK_CASES)}, seed 1")
    p.add_argument("--existing", action="store_true",
                   help="report only the (set, seed) runs already finished in --work (nothing is trained)")
    p.add_argument("--note", default="", help="a sentence for the page (e.g. that the machine was shared; "
                   "with --append it replaces the page's note)")
    p.add_argument("--append", action="store_true",
                   help="add the runs to those of OUT/quality.json (same --n and box; same set and seed replaced)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cases = args.cases or list(QUICK_CASES if args.quick else CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    n = args.n or (QUICK_N if args.quick else N_PARTICLES)
    box = QUICK_BOX if args.quick else BOX
    seeds, out, work = output_folders(args, "quality", ROOT)
    runs, failed = [], []
    for name in cases:
        for seed in seeds:
            if args.existing and not finished(name, seed, n, box, work):
                log.info("%s seed %d: not run (--existing)", name, seed)
                continue
            try:
                runs.append(run_one(name, seed, n, box, work))
            except RuntimeError as exc:  # a failed command: reported, never scored
                log.error("%s seed %d failed: %s", name, seed, exc)
                failed.append({"set": name, "seed": seed, "error": str(exc)})
    given = list(sys.argv[1:] if argv is None else argv)
    if "--note" in given:  # an annotation, not a setting
        del given[given.index("--note"):given.index("--note") + 2]
    given = [a for a in given if a != "--existing"]  # the command that makes these runs trains them
    from cryovae import __version__
    from cryovae.analysis.output import write_json, write_text

    here = commit()
    if not args.existing:  # --existing cannot tell the commit a run was trained at
        runs = [{**r, "commit": here} for r in runs]
    reproduce = shlex.join(["python", "benchmarks/quality.py", *given])
    med = medians(runs)
    result = {"reproduce": reproduce, "calls": [{"reproduce": reproduce, "commit": here}],
              "cryovae_version": __version__, "commit": here, "machine": machine(), "note": args.note,
              "settings": {"quick": args.quick, "n": n, "box": box, "apix": APIX * BOX / box, "seeds": seeds,
                           "cases": {c: dataclasses.asdict(CASES[c]) for c in cases}},
              "medians": med, "goals": goals(med), "runs": runs, "failed": failed,
              "pictures": copy_pictures(runs, out)}
    if args.append and (out / "quality.json").is_file():
        result = merge_runs(json.loads((out / "quality.json").read_text()), result)
    bounds(result["medians"], box)
    write_json(result, out / "quality.json")
    text = page(result, out)
    write_text(text, out / "README.md")
    print(text[text.index("| set |"):text.index("## Every run")].strip())
    log.info("wrote %s and %s", out / "README.md", out / "quality.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
