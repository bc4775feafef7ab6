"""Particle picking on simulated micrographs: ``cryovae pick`` against topaz's pretrained general
model, on the same micrographs, scored by the same ``cryovae evaluate-picks``.

For every SNR and seed:

1. ``cryovae simulate micrographs`` (the hinge molecule, separated packing: centres at least 1.1
   particle diameters apart; ice blobs and a carbon edge as junk; a background gradient; no CTF)
   with its matching training particle set (``OUT/particles``: same molecule, pixel size, box and
   SNR);
2. ``cryovae``: ``cryovae train particles.star --group p8 --zdim 1`` plus only what the benchmark
   must set (``--epochs`` cap, ``--seed``, ``--device``, and ``--refine-steps 0``: the per-particle
   refinement after training only improves the training particles' own star, which picking
   does not read, and costs minutes; listed under the table), then
   ``cryovae pick RUN micrographs.star`` and ``cryovae evaluate-picks``;
3. ``topaz``: its pretrained general model at its documented settings (below), its picks written
   as RELION coordinate stars in the original micrograph's pixels and scored by the same
   ``cryovae evaluate-picks``;
4. optionally (``--methods ... crops``, "Beyond the anchors" of issue 14): the same training
   command on random crops of the micrographs alone (no particle labels), then the same picking.

A touching and an overlapping set (``--packings``, at ``--packing-snr``) are picked with the run
trained for the separated set of the same SNR and seed. The picking time of one 4096 x 4096
micrograph at 1 Å/px (binned to the run's 4 Å/px inside ``cryovae pick``; topaz downsamples it
with ``topaz preprocess -s 4``) is the median over ``--timing-repeats`` runs of each command, on
``--threads`` CPU threads.

Scores (``cryovae evaluate-picks``, one-to-one Hungarian matching within half the particle
diameter): precision, recall and F1 at each method's own threshold (cryovae: ``cryovae pick``'s
default, the per-micrograph Otsu threshold of its figure of merit, at least 2.5; topaz: a score of 0, i.e. p >= 0.5, the classifier's own decision boundary: topaz
documents no default beyond its extraction floor of -6 and says to choose one from a
precision-recall curve), the average precision (AUPRC) over every candidate each method finds
(cryovae: ``cryovae pick --threshold -inf``, every peak above its z-score floor; topaz: its
extraction floor), the best F1 over thresholds (an oracle threshold, from the same curve) and
the median rotation error of matched picks (cryovae only; topaz gives no angle). Medians over
seeds.

topaz (https://github.com/tbepler/topaz, GPL-3) is called only as a program, never imported.
Install it in its own venv (not a cryovae dependency)::

    python3 -m venv /work/topaz-venv && /work/topaz-venv/bin/pip install topaz-em

(topaz-em 0.3.20 ships its pretrained pickers and runs offline. It needs torchvision, and
torchvision from PyPI is built against PyPI's CUDA torch: a CPU-only torch beside it fails at
``import torchvision``, so let pip bring the torch it wants; several GB.)

``--topaz PATH`` names its executable (default: ``topaz`` on PATH, else
/work/topaz-venv/bin/topaz); without one its rows read "not installed". Its documented settings
(tutorial/01_quick_start_guide.ipynb of its repository, and ``topaz preprocess/extract --help``):

* the pretrained models "assume that micrographs are downsampled to the 4-8 Å per pixel range",
  ~4 Å/px for small and medium particles, ~8 Å/px for large ones (>= 300 Å); ours is about
  136 Å across, so topaz gets the micrographs at ``TOPAZ_APIX`` = 4 Å/px: ``topaz preprocess -s S``
  with S = round(4 Å / micrograph pixel size), at least 1 (1 for the 4 Å/px sets, 4 for the
  timing micrograph). preprocess downsamples (Fourier) and normalises with its default GMM
  (two-component Gaussian mixture) normalisation;
* ``topaz extract -m resnet16_u64 -r R -x S``: resnet16_u64 is the default pretrained model
  (``-m resnet16`` names the same file), R the particle radius in downsampled pixels (the
  tutorial: radius ~74 Å = 14 px after downsampling 8x, ``-r 14``), ``-x S`` scales the
  coordinates back to the original micrograph's pixels; the default extraction floor ``-t -6``;
* output: a tab-separated table ``image_name  x_coord  y_coord  score`` (image_name: the file's
  stem; score: the log-likelihood ratio). x_coord is the column and y_coord the row, 0-based,
  of the score map (same grid as the downsampled micrograph), times ``-x S / -s`` and rounded to
  an integer; a Fourier-downsampled pixel j lies at original pixel j * S, so these are already
  cryovae's convention (docs/conventions.md "Picked particle coordinates") and are written as
  they are. Pinned by hand on a synthetic 768 x 512 px micrograph (dark Gaussian blobs at
  (row, column) (100, 400), (300, 150), (420, 650): topaz picked (x, y) = (406, 103), (149, 304),
  (655, 424)) and on a simulated 1024 px micrograph at SNR 1 (particles dark: median offset of
  matched picks from the truth (0.7, 0.0) px; with y flipped 194 instead of 264 particles
  match); in every run the median offset is in picking.json (``offset_px``).
* contrast: topaz's models were trained on raw micrographs, where protein is dark; the
  simulator writes particles bright (like RELION's contrast-inverted particles), so topaz gets
  the micrographs negated ("topaz, particles dark") and, as a check, as written ("topaz,
  particles bright"; ``--topaz-contrast``).

Usage::

    python benchmarks/picking.py                       # 3 SNRs x 3 seeds, one 640 px micrograph each
                                                       # (~50 min on 2 idle cores, topaz over half of it)
    python benchmarks/picking.py --device cuda
    python benchmarks/picking.py --quick               # a few minutes: 1 seed, 1 small micrograph, a smoke test
    python benchmarks/picking.py --snr 1 --seeds 1 --methods cryovae crops --topaz /opt/topaz/bin/topaz

The table is printed and written to ``OUT/picking.md`` (between its results markers when it has
them, as docs/quality/picking.md does: the method section there is kept) with every number in ``OUT/picking.json``
(``OUT`` = docs/quality, or tmp/picking_quick with ``--quick``). Simulations, runs and picks are
kept in ``--work`` (runs/picking_work, git-ignored) and reused on a second call (the runs; the
picks are redone).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import cached_train, fmt, output_folders, spread

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.picking")
METHODS = ("cryovae", "topaz", "crops")
#: topaz's executable when --topaz is not given and none is on PATH
DEFAULT_TOPAZ = Path("/work/topaz-venv/bin/topaz")
#: the pixel size topaz's pretrained models expect (documented range 4-8 Å/px; ~4 for small and
#: medium particles)
TOPAZ_APIX = 4.0
#: topaz's pretrained general model (its default)
TOPAZ_MODEL = "resnet16_u64"
#: topaz's own decision threshold for precision / recall / F1: log-likelihood ratio 0 (p >= 0.5)
TOPAZ_THRESHOLD = 0.0
LABELS = {"cryovae": "cryovae pick (trained on the particle set)",
          "crops": "cryovae pick (trained on random micrograph crops, no labels)",
          "topaz-dark": "topaz resnet16_u64, particles dark (as in raw micrographs)",
          "topaz-bright": "topaz resnet16_u64, particles bright (as simulated)"}
TOPAZ_CONTRASTS = {"dark": "topaz-dark", "bright": "topaz-bright"}


# -- settings -------------------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict:
    """Sizes of the sets and the training (``--quick``: tiny, a smoke test)."""
    if args.quick:
        s = dict(n_micrographs=1, size=384, n_train=200, epochs=1, timing_size=512, timing_repeats=1,
                 packings=["touching"], topaz_contrast=["dark"])
    else:
        s = dict(n_micrographs=1, size=640, n_train=600, epochs=4, timing_size=4096, timing_repeats=3,
                 packings=["touching", "overlapping"], topaz_contrast=["dark", "bright"])
    for key in ("n_micrographs", "size", "n_train", "epochs", "timing_size", "timing_repeats", "packings",
                "topaz_contrast"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    s.update(apix=4.0, box=40, junk=10, timing_apix=args.timing_apix, packing_snr=args.packing_snr,
             threads=args.threads, train_extra=shlex.split(args.train_args or ""),
             pick_extra=shlex.split(args.pick_args or ""))
    return s


def train_args(s: dict, seed: int, device: str) -> list[str]:
    """``cryovae train`` options of one run: the default command plus what the benchmark must set."""
    return ["--group", "p8", "--zdim", "1", "--epochs", str(s["epochs"]), "--refine-steps", "0", "--seed", str(seed),
            "--device", device, *s["train_extra"]]


def pick_args(s: dict, device: str) -> list[str]:
    """``cryovae pick`` options: its defaults, the device, no PNG overviews (not part of picking)
    and --pick-args."""
    return ["--device", device, "--no-png", *s["pick_extra"]]


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a timed subprocess: ``threads`` BLAS / OpenMP threads."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


# -- data ------------------------------------------------------------------------------------------
def cryovae_cli(argv: list[str]) -> None:
    """One cryovae command, in this process (as cached_train runs ``cryovae train``)."""
    from cryovae.cli.main import cli

    cli.main([str(a) for a in argv], standalone_mode=False)


def simulate(snr: float, seed: int, s: dict, work: Path, packing: str = "separated") -> Path:
    """The micrograph set of one (SNR, seed, packing), written once into ``work``; returns its folder."""
    n_train = s["n_train"] if packing == "separated" else 0
    data = work / (f"mics_{packing}_snr{snr:g}_seed{seed}_m{s['n_micrographs']}_s{s['size']}"
                   f"_n{n_train}_j{s['junk']}")
    if not (data / "simulation.json").exists():
        cryovae_cli(["simulate", "micrographs", "-o", data, "--snr", f"{snr:g}", "--seed", seed,
                     "--n-micrographs", s["n_micrographs"], "--size", s["size"], "--apix", s["apix"],
                     "--box", s["box"], "--packing", packing, "--junk", s["junk"], "--n-train", n_train])
    return data


def simulate_timing(s: dict, work: Path) -> Path:
    """One ``timing_size``-square micrograph at ``timing_apix`` (box scaled to the same particle)."""
    box = int(round(s["box"] * s["apix"] / s["timing_apix"]))
    data = work / f"timing_s{s['timing_size']}_apix{s['timing_apix']:g}"
    if not (data / "simulation.json").exists():
        cryovae_cli(["simulate", "micrographs", "-o", data, "--snr", "1", "--seed", "0", "--n-micrographs", 1,
                     "--size", s["timing_size"], "--apix", s["timing_apix"], "--box", box, "--junk", s["junk"],
                     "--n-train", 0])
    return data


def micrographs(data: Path) -> list[tuple[Path, float | None]]:
    """(micrograph, Å/px) of a simulated set, in order."""
    from cryovae.io import micrograph_paths

    return micrograph_paths([data / "micrographs.star"])


def diameter_px(data: Path) -> float:
    return float(json.loads((data / "simulation.json").read_text())["particle_diameter_px"])


def write_crops(data: Path, n: int, box: int, seed: int) -> Path:
    """``n`` random ``box`` x ``box`` crops of a set's micrographs (anywhere: particles, junk,
    carbon, empty ice) as a RELION 3.1 particle set ``data/crops_n<n>_seed<seed>``; returns its folder."""
    import pandas as pd

    from cryovae.io import read_micrograph, write_stack, write_star

    out = data / f"crops_n{n}_seed{seed}"
    if (out / "particles.star").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mics = micrographs(data)
    per = np.bincount(rng.integers(0, len(mics), n), minlength=len(mics))
    images, rows = [], []
    for (path, _), k in zip(mics, per, strict=True):
        img = read_micrograph(path).data
        h, w = img.shape
        r0 = rng.integers(0, h - box + 1, k)
        c0 = rng.integers(0, w - box + 1, k)
        for r, c in zip(r0, c0, strict=True):
            images.append(img[r:r + box, c:c + box])
            rows.append((path.name, c + box // 2, r + box // 2))
    apix = mics[0][1] or 1.0
    write_stack(out / "particles.mrcs", np.stack(images).astype(np.float32), apix)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnImagePixelSize": [apix], "rlnImageSize": [box], "rlnImageDimensionality": [2],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    particles = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(len(images))],
                              "rlnMicrographName": [r[0] for r in rows],
                              "rlnCoordinateX": [float(r[1]) for r in rows],
                              "rlnCoordinateY": [float(r[2]) for r in rows], "rlnOpticsGroup": 1})
    write_star(out / "particles.star", {"optics": optics, "particles": particles})
    return out


# -- scoring ---------------------------------------------------------------------------------------
def evaluate(pickdir: Path, truth: Path, out: Path, threshold: float | None) -> dict:
    """``cryovae evaluate-picks PICKDIR TRUTH`` (at ``threshold``); the overall scores, with the
    best F1 over thresholds from the precision-recall curve."""
    argv = ["evaluate-picks", pickdir, truth, "-o", out]
    if threshold is not None:
        argv += ["--threshold", repr(float(threshold))]
    cryovae_cli(argv)
    overall = json.loads((out / "metrics.json").read_text())["overall"]
    curve = overall.get("pr_curve") or {}
    p = np.asarray(curve.get("precision", []), dtype=np.float64)
    r = np.asarray(curve.get("recall", []), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"precision": overall["precision"], "recall": overall["recall"], "f1": overall["f1"],
            "ap": overall["average_precision"], "best_f1": float(np.nanmax(f)) if f.size else float("nan"),
            "rotation_error_deg": overall.get("rotation_error_median_deg", float("nan")),
            "n_picks": overall["n_picks"], "n_truth": overall["n_truth"], "n_matched": overall["n_matched"],
            "threshold": overall.get("threshold")}


def matched_offset(pickdir: Path, truth: Path, radius: float) -> list[float]:
    """Median (dx, dy) of matched picks minus their true centres, pixels (pins a coordinate frame)."""
    from cryovae.analysis.picking import coordinate_files, match_picks
    from cryovae.io import read_coordinates

    picks, truths = coordinate_files(pickdir), coordinate_files(truth)
    d = []
    for stem in sorted(set(picks) & set(truths)):
        p = read_coordinates(picks[stem])[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
        t = read_coordinates(truths[stem])[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
        m = match_picks(p, t, radius)
        d.append(p[m.pick_index] - t[m.truth_index])
    d = np.concatenate(d) if d else np.zeros((0, 2))
    return [float(np.median(d[:, 0])), float(np.median(d[:, 1]))] if len(d) else [float("nan")] * 2


# -- the two pickers -------------------------------------------------------------------------------
def cryovae_pick(rundir: Path, data: Path, out: Path, s: dict, device: str, every: bool = False) -> float:
    """``cryovae pick RUN DATA/micrographs.star -o OUT`` at pick's own default threshold, or with
    every candidate (``every``: threshold -inf, so that the AUPRC sees them all, as topaz's floor of
    -6 does for topaz); returns seconds per micrograph."""
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    extra = ["--threshold", "-inf"] if every else []
    cryovae_cli(["pick", rundir, data / "micrographs.star", "-o", out, *extra, *pick_args(s, device)])
    return (time.perf_counter() - t0) / max(1, len(micrographs(data)))


def find_topaz(given: str | None) -> Path | None:
    """topaz's executable: ``--topaz``, else ``topaz`` on PATH, else :data:`DEFAULT_TOPAZ`; None
    when there is none."""
    if given:
        path = Path(shutil.which(given) or given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            log.warning("--topaz %s: not an executable; topaz rows read 'not installed'", given)
            return None
        return path
    found = shutil.which("topaz")
    if found:
        return Path(found)
    return DEFAULT_TOPAZ if DEFAULT_TOPAZ.is_file() and os.access(DEFAULT_TOPAZ, os.X_OK) else None


def topaz_scale(apix: float | None) -> int:
    """topaz's downsampling factor to about :data:`TOPAZ_APIX` (at least 1)."""
    return max(1, int(round(TOPAZ_APIX / apix))) if apix else 1


def topaz_commands(topaz: Path, inputs: list[Path], pre: Path, picks: Path, scale: int, radius: int,
                   threads: int) -> list[list[str]]:
    """The two topaz commands (documented settings; CPU, ``threads`` threads)."""
    return [[str(topaz), "preprocess", "-s", str(scale), "-d", "-1", "-j", str(threads), "-o", f"{pre}/",
             *map(str, inputs)],
            [str(topaz), "extract", "-m", TOPAZ_MODEL, "-r", str(radius), "-x", str(scale), "-d", "-1",
             "-j", str(threads), "-o", str(picks), *[str(pre / f"{p.stem}.mrc") for p in inputs]]]


def shown(cmd: list[str], folder: Path) -> str:
    """A command as the table shows it: ``topaz`` for the executable, paths relative to ``folder``."""
    return shlex.join(["topaz", *cmd[1:]]).replace(f"{folder}/", "")


def run_logged(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> float:
    """Run a program, its output appended to ``logfile``; returns its wall time (s).

    Raises RuntimeError (with the log's tail) when it fails."""
    t0 = time.perf_counter()
    with open(logfile, "a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{cmd[0]} {cmd[1]} failed (exit {rc}); the end of {logfile}:\n{tail}")
    return seconds


def topaz_inputs(mics: list[tuple[Path, float | None]], contrast: str, folder: Path) -> list[Path]:
    """The micrographs topaz reads: negated copies in ``folder`` for ``dark``, the files themselves
    for ``bright`` (the simulator writes particles bright)."""
    from cryovae.io import read_micrograph, write_micrograph

    if contrast == "bright":
        return [p for p, _ in mics]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path, apix in mics:
        target = folder / f"{path.stem}.mrc"
        if not target.exists():
            write_micrograph(target, -read_micrograph(path).data, apix or 0.0)
        out.append(target)
    return out


def topaz_to_stars(table_path: Path, mics: list[tuple[Path, float | None]], pickdir: Path) -> int:
    """topaz's picks table -> one RELION coordinate star per micrograph (rlnCoordinateX/Y = x_coord,
    y_coord as they are: see the module docstring; rlnAutopickFigureOfMerit = score) and an
    autopick.star; returns the number of picks."""
    import pandas as pd

    from cryovae.io import write_autopick_index, write_coordinates

    table = pd.read_csv(table_path, sep="\t")
    missing = {"image_name", "x_coord", "y_coord", "score"} - set(table.columns)
    if missing:
        raise RuntimeError(f"{table_path}: topaz's table lacks {sorted(missing)} (columns: {list(table.columns)})")
    pickdir.mkdir(parents=True, exist_ok=True)
    index = []
    for path, _ in mics:
        rows = table[table["image_name"].astype(str) == path.stem]
        write_coordinates(pickdir / f"{path.stem}.star", pd.DataFrame({
            "rlnCoordinateX": rows["x_coord"].to_numpy(np.float64),
            "rlnCoordinateY": rows["y_coord"].to_numpy(np.float64),
            "rlnAutopickFigureOfMerit": rows["score"].to_numpy(np.float64)}))
        index.append((str(path.resolve()), f"{path.stem}.star"))
    write_autopick_index(pickdir / "autopick.star", index)
    return len(table)


def topaz_pick(topaz: Path, data: Path, out: Path, contrast: str, s: dict) -> tuple[float, list[str]]:
    """topaz on a set's micrographs into ``out/picks`` (coordinate stars); returns seconds per
    micrograph and the commands (as run)."""
    mics = micrographs(data)
    scale = topaz_scale(mics[0][1])
    radius = max(1, int(round(diameter_px(data) / 2 / scale)))
    done = out / "done.json"  # topaz's picks of these exact commands, kept from an earlier run
    cached = json.loads(done.read_text()) if done.exists() and (out / "picks.txt").exists() else None
    if cached is None and out.exists():
        shutil.rmtree(out)  # before topaz_inputs, which may write its input micrographs in there
    out.mkdir(parents=True, exist_ok=True)
    inputs = topaz_inputs(mics, contrast, data / "topaz_dark")
    cmds = topaz_commands(topaz, inputs, out / "preprocessed", out / "picks.txt", scale, radius, s["threads"])
    key = [[str(a) for a in c] for c in cmds]
    if cached is not None and cached["commands"] == key:
        seconds = float(cached["seconds"])
    else:
        shutil.rmtree(out / "preprocessed", ignore_errors=True)
        (out / "preprocessed").mkdir()
        seconds = sum(run_logged(c, out / "topaz.log", thread_env(s["threads"])) for c in cmds)
        done.write_text(json.dumps({"commands": key, "seconds": seconds}))
    if (out / "picks").exists():
        shutil.rmtree(out / "picks")
    topaz_to_stars(out / "picks.txt", mics, out / "picks")
    return seconds / len(mics), [shown(c, data) for c in cmds]


# -- one set ---------------------------------------------------------------------------------------
def score_cryovae(rundir: Path, data: Path, name: str, base: dict, s: dict, device: str) -> dict:
    """Precision, recall and F1 of ``cryovae pick`` at its own default (the per-micrograph Otsu
    threshold of its figure of merit); AUPRC, best F1 and the rotation error over every candidate."""
    from cryovae.inference import DEFAULT_FOM

    own = data / f"picks_{name}"
    per_mic = cryovae_pick(rundir, data, own, s, device)
    scores = evaluate(own, data / "truth", data / f"eval_{name}", None)
    every = data / f"picks_{name}_all"
    cryovae_pick(rundir, data, every, s, device, every=True)
    ranked = evaluate(every, data / "truth", data / f"eval_{name}_all", None)
    return {**base, "method": name, "pick_seconds": per_mic, "fom": DEFAULT_FOM,
            "own_threshold": "Otsu per micrograph (>= 2.5)", **scores,
            "ap": ranked["ap"], "best_f1": ranked["best_f1"], "rotation_error_deg": ranked["rotation_error_deg"]}


def score_topaz(topaz: Path | None, data: Path, contrast: str, base: dict, s: dict) -> dict:
    method = TOPAZ_CONTRASTS[contrast]
    if topaz is None:
        return {**base, "method": method, "status": "not installed"}
    out = data / f"topaz_{contrast}"
    per_mic, commands = topaz_pick(topaz, data, out, contrast, s)
    scores = evaluate(out / "picks", data / "truth", data / f"eval_{method}", TOPAZ_THRESHOLD)
    radius = diameter_px(data) / 2
    return {**base, "method": method, "pick_seconds": per_mic, "own_threshold": TOPAZ_THRESHOLD,
            "topaz_commands": commands, "offset_px": matched_offset(out / "picks", data / "truth", radius), **scores}


def run_set(snr: float, seed: int, s: dict, methods: list[str], topaz: Path | None, work: Path,
            device: str) -> list[dict]:
    """Every method on the separated set of one (SNR, seed), then the touching / overlapping
    sets at ``packing_snr`` with the same runs; one dict per table row."""
    rows = []
    data = simulate(snr, seed, s, work)
    base = {"snr": snr, "seed": seed, "packing": "separated"}
    runs: dict[str, tuple[Path, float]] = {}
    if "cryovae" in methods:
        runs["cryovae"] = cached_train(data.name, data / "particles", train_args(s, seed, device), work)
    if "crops" in methods:
        crops = write_crops(data, s["n_train"], s["box"], seed)
        runs["crops"] = cached_train(f"{data.name}_crops", crops, train_args(s, seed, device), work)
    sets = [(data, base)]
    if snr == s["packing_snr"]:
        sets += [(simulate(snr, seed, s, work, packing), {**base, "packing": packing}) for packing in s["packings"]]
    for folder, b in sets:
        for name, (rundir, seconds) in runs.items():
            rows.append({**score_cryovae(rundir, folder, name, b, s, device), "train_seconds": seconds,
                         "command": shlex.join(["cryovae", "train", "particles.star", *train_args(s, seed, device)])})
        if "topaz" in methods:
            for contrast in s["topaz_contrast"]:
                rows.append(score_topaz(topaz, folder, contrast, b, s))
    return rows


# -- timing ----------------------------------------------------------------------------------------
def startup_seconds(cmd: list[str], repeats: int, env: dict[str, str]) -> float:
    """Median wall time of a command that only starts the program (``--help``)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timing(rundir: Path, topaz: Path | None, s: dict, work: Path, device: str) -> list[dict]:
    """Picking time of one ``timing_size``-square micrograph, median over ``timing_repeats``:
    ``cryovae pick`` and topaz (preprocess + extract) as programs on ``threads`` threads, their
    start-up (``--help``) and ``cryovae.inference.pick_micrograph`` alone (run loaded, micrograph read)."""
    import torch

    from cryovae.inference import PickConfig, TrainedRun, pick_micrograph
    from cryovae.io import read_micrograph

    data = simulate_timing(s, work)
    mics = micrographs(data)
    env = thread_env(s["threads"])
    out = data / "timed"
    rows = []
    # --apix: an MRC header of 1 Å/px reads as "no pixel size" (docs/conventions.md)
    cmd = [sys.executable, "-m", "cryovae", "pick", str(rundir), str(mics[0][0]), "-o", str(out),
           "--apix", f"{s['timing_apix']:g}", *pick_args(s, device)]
    times = []
    for _ in range(s["timing_repeats"]):
        if out.exists():
            shutil.rmtree(out)
        times.append(run_logged(cmd, data / "cryovae_pick.log", env))
    run = TrainedRun.load(rundir, device="cpu" if device == "auto" else device)
    image = read_micrograph(mics[0][0])
    previous = torch.get_num_threads()
    torch.set_num_threads(s["threads"])
    lib = []
    try:
        for _ in range(s["timing_repeats"]):
            t0 = time.perf_counter()
            pick_micrograph(run, image.data, s["timing_apix"], PickConfig())
            lib.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    rows.append({"method": "cryovae", "seconds": statistics.median(times), "runs": times,
                 "library_seconds": statistics.median(lib),
                 # `cryovae --help` imports no subcommand: time the imports `cryovae pick` makes
                 "startup_seconds": startup_seconds([sys.executable, "-c", "import cryovae.cli.pick, "
                                                     "cryovae.workflows.pick"], 3, env),
                 "command": shlex.join(["cryovae", "pick", "RUN", mics[0][0].name, "-o", "OUT", "--apix",
                                        f"{s['timing_apix']:g}", *pick_args(s, device)])})
    if topaz is None:
        rows.append({"method": "topaz-dark", "status": "not installed"})
        return rows
    scale = topaz_scale(s["timing_apix"])
    radius = max(1, int(round(diameter_px(data) / 2 / scale)))
    inputs = topaz_inputs(mics, "dark", data / "topaz_dark")
    times, cmds = [], []
    for _ in range(s["timing_repeats"]):
        tz = data / "topaz_timed"
        if tz.exists():
            shutil.rmtree(tz)
        (tz / "preprocessed").mkdir(parents=True)
        cmds = topaz_commands(topaz, inputs, tz / "preprocessed", tz / "picks.txt", scale, radius, s["threads"])
        times.append(sum(run_logged(c, data / "topaz.log", env) for c in cmds))
    rows.append({"method": "topaz-dark", "seconds": statistics.median(times), "runs": times,
                 "startup_seconds": 2 * startup_seconds([str(topaz), "--help"], 3, env),
                 "command": " && ".join(shown(c, data) for c in cmds)})
    return rows


# -- the table -------------------------------------------------------------------------------------
def own_threshold(rows: list[dict]) -> str:
    """cryovae pick's default threshold as scored (its figure of merit and value)."""
    r = next((r for r in rows if r.get("method") in ("cryovae", "crops") and "own_threshold" in r), None)
    return "n/a" if r is None else f"{r['fom']}, {r['own_threshold']}"


def table(rows: list[dict], timed: list[dict], s: dict, seeds: list[int], command: str, quick: bool) -> str:
    lines = [
        "### Particle picking on simulated micrographs: cryovae pick and topaz",
        "",
        *(["**Quick smoke run: tiny sets, a few epochs. Not a result.**", ""] if quick else []),
        f"Reproduce: `{command}`",
        "",
        f"{s['n_micrographs']} micrographs of {s['size']} x {s['size']} px at {s['apix']:g} Å/px per set "
        f"(cryovae simulate micrographs: hinge, {s['junk']} ice blobs and a carbon edge, background gradient, "
        f"no CTF); training sets of {s['n_train']} particles, box {s['box']} px; at most {s['epochs']} epochs; "
        f"seeds {', '.join(map(str, seeds))} (median [min–max]). Precision, recall and F1 at each method's own "
        f"threshold (cryovae pick's default; topaz: score >= {TOPAZ_THRESHOLD:g}); AUPRC over every candidate "
        "written; best F1: over all thresholds (an oracle threshold); matched within half the particle diameter "
        "(cryovae evaluate-picks); rotation: median error of matched picks after the best global offset; time: "
        "picking wall time per micrograph, seconds (topaz: preprocess + extract, two program starts).",
        "",
        "| method | packing | SNR | precision | recall | F1 | AUPRC | best F1 | rotation err. (°) | picks / true "
        "| time / micrograph (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = ["cryovae", "crops", "topaz-dark", "topaz-bright"]
    keys = []
    for r in rows:
        key = (r["packing"], r["snr"])
        if key not in keys:
            keys.append(key)
    for packing, snr in keys:
        for method in order:
            group = [r for r in rows if (r["packing"], r["snr"], r["method"]) == (packing, snr, method)]
            if not group:
                continue
            if all(r.get("status") == "not installed" for r in group):
                lines.append(f"| {LABELS[method]} | {packing} | {snr:g} | not installed (--topaz) | | | | | | | |")
                continue
            picks = spread([r["n_picks"] for r in group], 0)
            true = spread([r["n_truth"] for r in group], 0)
            lines.append(f"| {LABELS[method]} | {packing} | {snr:g} | {spread([r['precision'] for r in group])} | "
                         f"{spread([r['recall'] for r in group])} | {spread([r['f1'] for r in group])} | "
                         f"{spread([r['ap'] for r in group])} | {spread([r['best_f1'] for r in group])} | "
                         f"{spread([r['rotation_error_deg'] for r in group], 1)} | {picks} / {true} | "
                         f"{spread([r['pick_seconds'] for r in group], 1)} |")
    lines += ["", "Touching and overlapping sets are picked with the run trained for the separated set of the same "
              "SNR and seed.", ""]
    if timed:
        lines += [f"#### Picking time, one {s['timing_size']} x {s['timing_size']} micrograph at "
                  f"{s['timing_apix']:g} Å/px, {s['threads']} CPU threads",
                  "",
                  f"Median of {s['timing_repeats']} runs of each command (wall time, seconds; start-up: Python "
                  "importing what `cryovae pick` imports, and two `topaz --help`, one per topaz command; library: "
                  "`cryovae.inference.pick_micrograph` with the run loaded and the micrograph read).",
                  "",
                  "| method | command (s) | of which start-up (s) | library call (s) |",
                  "| --- | --- | --- | --- |"]
        for r in timed:
            if r.get("status") == "not installed":
                lines.append(f"| {LABELS[r['method']]} | not installed (--topaz) | | |")
                continue
            lines.append(f"| {LABELS[r['method']]} | {fmt(r['seconds'], 1)} | {fmt(r['startup_seconds'], 1)} | "
                         f"{fmt(r.get('library_seconds'), 1)} |")
        lines += ["", *[f"- `{r['command']}`" for r in timed if "command" in r], ""]
    commands = sorted({r["command"] for r in rows if "command" in r})
    topaz_cmds = next((r["topaz_commands"] for r in rows if "topaz_commands" in r), None)
    lines += ["Commands of the runs:", "", *[f"- `{c}`" for c in commands],
              f"- `cryovae pick RUN micrographs.star -o PICKS {shlex.join(pick_args(s, '...'))}` (its default "
              f"threshold, {own_threshold(rows)}: precision, recall, F1), and again with `--threshold -inf` "
              "(every candidate: AUPRC, best F1, rotation error)",
              "- `cryovae evaluate-picks PICKS truth -o EVAL` (topaz: `--threshold "
              f"{TOPAZ_THRESHOLD:g}` for precision, recall, F1)"]
    if topaz_cmds:
        lines += [f"- `{c}`" for c in topaz_cmds]
    return "\n".join(lines) + "\n"


RESULTS_BEGIN = "<!-- results: written by benchmarks/picking.py between these markers -->"
RESULTS_END = "<!-- /results -->"


def write_results(path: Path, text: str) -> None:
    """Write the table into ``path``: between its results markers when it has them (the method
    section around them is kept), else as the whole file."""
    old = path.read_text() if path.exists() else ""
    if RESULTS_BEGIN in old and RESULTS_END in old.split(RESULTS_BEGIN, 1)[1]:
        head, rest = old.split(RESULTS_BEGIN, 1)
        text = f"{head}{RESULTS_BEGIN}\n{text}{RESULTS_END}{rest.split(RESULTS_END, 1)[1]}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sets, a smoke test (a few minutes on a CPU)")
    p.add_argument("--snr", type=float, nargs="+", default=[1.0, 0.1, 0.03], help="SNRs [1 0.1 0.03]")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the sets and runs [1 2 3; 1 quick]")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["cryovae", "topaz"],
                   help="cryovae, topaz, crops (train on random micrograph crops, no labels) [cryovae topaz]")
    p.add_argument("--n-micrographs", dest="n_micrographs", type=int, default=None, help="micrographs per set [1]")
    p.add_argument("--size", type=int, default=None, help="micrograph edge, pixels [640; 384 quick]")
    p.add_argument("--n-train", dest="n_train", type=int, default=None, help="training particles [600; 200 quick]")
    p.add_argument("--epochs", type=int, default=None, help="cap on training epochs [4; 1 quick]")
    p.add_argument("--packings", nargs="*", choices=["touching", "overlapping"], default=None,
                   help="extra packings picked at --packing-snr [touching overlapping; touching quick]")
    p.add_argument("--packing-snr", dest="packing_snr", type=float, default=1.0, help="SNR of those [1]")
    p.add_argument("--timing-size", dest="timing_size", type=int, default=None,
                   help="edge of the timed micrograph, pixels [4096; 512 quick]; 0: no timing")
    p.add_argument("--timing-apix", dest="timing_apix", type=float, default=1.0, help="its pixel size, Å [1]")
    p.add_argument("--timing-repeats", dest="timing_repeats", type=int, default=None, help="[3; 1 quick]")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the timed commands [2]")
    p.add_argument("--topaz", default=None, help=f"topaz executable [topaz on PATH, else {DEFAULT_TOPAZ}]")
    p.add_argument("--topaz-contrast", dest="topaz_contrast", nargs="+", choices=list(TOPAZ_CONTRASTS), default=None,
                   help="what topaz is given: dark (negated, as in raw micrographs), bright (as simulated) "
                        "[dark bright; dark quick]")
    p.add_argument("--train-args", default=None, help="extra cryovae train options (one string)")
    p.add_argument("--pick-args", default=None, help="extra cryovae pick options (one string)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="where picking.md / picking.json go")
    p.add_argument("--work", type=Path, default=None, help="simulations, runs and picks [runs/picking_work]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    s = settings(args)
    seeds, out, work = output_folders(args, "picking", ROOT)
    topaz = find_topaz(args.topaz) if "topaz" in args.methods else None
    if "topaz" in args.methods:
        print(f"topaz: {topaz or 'not installed (give --topaz PATH)'}", flush=True)
    rows: list[dict] = []
    for snr in args.snr:
        for seed in seeds:
            print(f"== SNR {snr:g}, seed {seed}", flush=True)
            for row in run_set(snr, seed, s, args.methods, topaz, work, args.device):
                if "f1" in row:
                    print(f"   {row['method']:12s} {row['packing']:11s} P {fmt(row['precision'])} "
                          f"R {fmt(row['recall'])} F1 {fmt(row['f1'])} AP {fmt(row['ap'])} "
                          f"best F1 {fmt(row['best_f1'])}", flush=True)
                rows.append(row)
    timed: list[dict] = []
    if s["timing_size"] and "cryovae" in args.methods:
        seed = seeds[0]
        data = simulate(s["packing_snr"], seed, s, work)
        rundir, _ = cached_train(data.name, data / "particles", train_args(s, seed, args.device), work)
        print(f"== timing: {s['timing_size']} px micrograph", flush=True)
        timed = timing(rundir, topaz if "topaz" in args.methods else None, s, work, args.device)
        for r in timed:
            if "seconds" in r:
                print(f"   {r['method']:12s} {r['seconds']:.1f} s", flush=True)
    command = shlex.join(["python", "benchmarks/picking.py", *(sys.argv[1:] if argv is None else argv)])
    text = table(rows, timed, s, seeds, command, args.quick)
    write_results(out / "picking.md", text)
    (out / "picking.json").write_text(json.dumps({"settings": s, "seeds": seeds, "topaz": str(topaz) if topaz else None,
                                                  "rows": rows, "timing": timed}, indent=1) + "\n")
    print(text)
    print(f"wrote {out / 'picking.md'} and {out / 'picking.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
