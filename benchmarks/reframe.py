"""``cryovae reframe`` after the default command, side by side with the default command alone.

For each (set, seed) of ``benchmarks/quality.py`` (the same data and the same default training
run, reused from its work folder), runs ``cryovae reframe run -o core`` with its defaults, scores
both with ``cryovae evaluate`` and prints, per run and as medians over the seeds: the
conformation score (|corr| for the hinge, the multiple R of each arm for two arms), the rotation's
circular correlation, the wall times (train, reframe) and the split-half agreement that gates
the realignment. A set whose turns the data do not determine is refused by ``reframe``: its row
says so (and keeps the default command's scores).

    python benchmarks/reframe.py --cases arms-1 --seeds 1,2,3
    python benchmarks/reframe.py --cases hinge-0.1,hinge-1 --seeds 1 --out tmp/reframe_hinge

``--held`` adds the control, ``cryovae reframe run -o held --max-turn 0``: the same rounds of
fixed-pose training with every particle kept at the run's own rotation, so the gain of the
realignment itself is the difference of the two columns.

Writes OUT/reframe.json and OUT/reframe.md (default OUT: docs/quality); the runs stay in the
quality work folder (``<set>-s<seed>/core``, ``<set>-s<seed>/held``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from _common import fmt
from quality import CASES, ROOT, cryovae, recorded, run_one, scores, write_record

log = logging.getLogger("reframe")

REFRAME_ARGS = ["reframe", "run", "-o", "core", "--device", "cpu", "--quiet"]
#: the control: the same rounds of fixed-pose training at the run's own rotations (no realignment)
HELD_ARGS = ["reframe", "run", "-o", "held", "--max-turn", "0", "--device", "cpu", "--quiet"]


def reframed(folder: Path, args: list[str] = REFRAME_ARGS) -> dict:
    """``cryovae reframe`` (``args``, whose ``-o`` names the output folder) on folder/run (kept
    when the same command made that folder from the same run before), scored; its record."""
    sub = args[args.index("-o") + 1]
    out, run_record = folder / sub, recorded(folder / "run", {})
    done = recorded(out, {"command": args, "run": run_record})
    if done and (out / "evaluation" / "metrics.json").is_file():
        seconds = float(done["seconds"])
    else:
        shutil.rmtree(out, ignore_errors=True)
        try:
            seconds = cryovae(args, folder, folder / f"reframe_{sub}.out")
        except RuntimeError as exc:
            if "does not determine" not in str(exc):
                raise
            line = [t for t in (folder / f"reframe_{sub}.out").read_text().splitlines() if "does not determine" in t][-1]
            agreement = float(line.split("split-half agreement ")[1].split(" ")[0])
            return {"refused": True, "agreement": agreement}
        cryovae(["evaluate", f"{sub}/particles.star", "data/truth.csv", "-o", f"{sub}/evaluation"], folder,
                folder / f"evaluate_{sub}.out")
        write_record(out, {"command": args, "run": run_record, "seconds": seconds})
    record = json.loads((out / "reframe.json").read_text())
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    return {"refused": False, "agreement": record["split_half_agreement"], "reframe_s": seconds,
            "rounds": record["rounds"], **scores(metrics)}


def cells(values: list) -> str:
    return " / ".join(fmt(v) for v in values) if values else "—"


def median(rows: list[dict], key: str) -> list[float] | float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    if isinstance(vals[0], list):
        return [float(np.median([v[i] for v in vals])) for i in range(len(vals[0]))]
    return float(np.median(vals))


def row_cells(r: dict) -> list[str]:
    before, after = r["before"], r["after"]
    done = not after["refused"]
    held = [cells(r["held"]["conformation"]), f"{r['held']['reframe_s'] / 60:.1f}"] if "held" in r else []
    return [r["set"], str(r["seed"]), cells(before["conformation"]), *held[:1],
            cells(after["conformation"]) if done else "refused", fmt(before["rotation_corr"]),
            fmt(after["rotation_corr"]) if done else "—", fmt(after["agreement"], 2),
            f"{before['wall_min']:.1f}", *held[1:], f"{after['reframe_s'] / 60:.1f}" if done else "—"]


HEAD = ["set", "seed", "conformation: train", "conformation: train + reframe", "rotation corr.: train",
        "rotation corr.: + reframe", "split-half agreement", "train (min)", "reframe (min)"]
HELD_HEAD = {3: "conformation: train + reframe --max-turn 0", 9: "reframe --max-turn 0 (min)"}


def head(held: bool) -> list[str]:
    cols = list(HEAD)
    if held:
        for at, name in sorted(HELD_HEAD.items()):
            cols.insert(at, name)
    return cols


def markdown(rows: list[list[str]], held: bool = False) -> list[str]:
    cols = head(held)
    return ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)] + ["| " + " | ".join(c) + " |" for c in rows]


def medians(runs: list[dict]) -> list[list[str]]:
    """One row per set: the medians over its seeds (reframe columns over the runs it did not refuse)."""
    out = []
    for name in dict.fromkeys(r["set"] for r in runs):
        mine = [r for r in runs if r["set"] == name]
        before = [r["before"] for r in mine]
        after = [r["after"] for r in mine if not r["after"]["refused"]]
        refused = len(mine) - len(after)
        held = [r["held"] for r in mine if "held" in r]
        held_cells = [cells(median(held, "conformation") or []), f"{median(held, 'reframe_s') / 60:.1f}"] if held else []
        out.append([name, f"{len(mine)} seeds", cells(median(before, "conformation") or []), *held_cells[:1],
                    (cells(median(after, "conformation") or []) if after else "refused")
                    + (f" ({refused} refused)" if refused and after else ""),
                    fmt(median(before, "rotation_corr")), fmt(median(after, "rotation_corr")) if after else "—",
                    fmt(median([r["after"] for r in mine], "agreement"), 2), f"{median(before, 'wall_min'):.1f}",
                    *held_cells[1:], f"{median(after, 'reframe_s') / 60:.1f}" if after else "—"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=lambda t: t.split(","), default=["arms-1"], help="sets of quality.py [arms-1]")
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2, 3], help="[1,2,3]")
    p.add_argument("--n", type=int, default=4000, help="particles per set [4000]")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "quality_work", help="quality.py's work folder")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "quality", help="reframe.md and reframe.json")
    p.add_argument("--held", action="store_true",
                   help="also the control, reframe --max-turn 0: the same fixed-pose rounds at the run's own rotations")
    args = p.parse_args(argv)
    if unknown := sorted(set(args.cases) - set(CASES)):
        p.error(f"--cases: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from cryovae.analysis.output import write_json, write_text

    runs = []
    for name in args.cases:
        for seed in args.seeds:
            before = run_one(name, seed, args.n, 40, args.work)
            folder = Path(before["folder"])
            log.info("%s seed %d: cryovae %s", name, seed, shlex.join(REFRAME_ARGS))
            after = reframed(folder)
            runs.append({"set": name, "seed": seed, "before": before, "after": after})
            if args.held:
                log.info("%s seed %d: cryovae %s", name, seed, shlex.join(HELD_ARGS))
                runs[-1]["held"] = reframed(folder, HELD_ARGS)
            log.info("%s", " | ".join(row_cells(runs[-1])))
    lines = ["# `cryovae reframe` after the default command", "",
             f"Reproduce: `python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}`", "",
             "Each run: the default command of docs/quality (`cryovae train particles.star --group p8 --zdim Z`, "
             "the same data sets and runs), then `cryovae reframe RUN -o CORE` with its defaults; both scored "
             "by `cryovae evaluate`. Conformation: |corr(z, hinge angle)|, or for two arms the multiple R of "
             "z with each arm's angle (arm 1 / arm 2). Rotation: Fisher–Lee circular correlation. "
             "2-core CPU, one command at a time."
             + (" The control, `cryovae reframe RUN -o HELD --max-turn 0`, runs the same rounds of fixed-pose "
                "training with every particle held at the run's own rotation (no realignment, no gate)."
                if args.held else ""), "", "## Medians over the seeds", "",
             *markdown(medians(runs), args.held), "", "## Every run", "",
             *markdown([row_cells(r) for r in runs], args.held), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({"command": shlex.join(sys.argv), "runs": runs}, args.out / "reframe.json")
    write_text("\n".join(lines), args.out / "reframe.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
