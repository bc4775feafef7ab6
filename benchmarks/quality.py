"""Recovery quality on simulated data: spatial-VAE and TARGET-VAE against the ground truth.

Trains each model on the hinge set at SNR 1, 0.1 and 0.03 and on the two-arm set (SNR 1),
scores the latent star with the metrics of ``cryovae evaluate`` and writes a markdown table
beside the papers' figures, with pictures (rotation scatter, z vs conformation, true vs learned
hinge motion), into ``--out``.

Paper figures for comparison: spatial-VAE on 5HDB (20 000 particles, 40 px, 500 epochs):
|corr(z1, conformation)| 0.95, rotation circular correlation 0.92 (Table 1). TARGET-VAE on
MNIST(U): rotation correlation 0.80 / 0.86 / 0.93 for P4 / P8 / P16.

Usage::

    python benchmarks/quality.py                       # 2 000 particles, 32 px, 40 epochs (CPU: ~2 h)
    python benchmarks/quality.py --device cuda         # the same on a GPU
    python benchmarks/quality.py --quick               # minutes on a CPU: tiny sets and models
    python benchmarks/quality.py --cases hinge-0.1 --models target

The full run writes docs/quality/README.md and docs/quality/*.png; ``--quick`` writes to
tmp/quality_quick unless ``--out`` is given (its numbers are a smoke test, not a result).
Simulations and runs are kept in runs/quality_work (git-ignored) and reused on a second call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {  # name -> (kind, snr)
    "hinge-1": ("hinge", 1.0),
    "hinge-0.1": ("hinge", 0.1),
    "hinge-0.03": ("hinge", 0.03),
    "arms-1": ("arms", 1.0),
}
MODELS = ("spatial", "target")


def settings(quick: bool, n: int | None, epochs: int | None, box: int | None, group: str | None = None,
             z_delay: int | None = None) -> dict:
    """Sizes of the datasets, models and training."""
    if quick:
        s = dict(n=300, box=24, epochs=3, batch_size=32,
                 target=dict(group="p8", enc_fields=4, enc_kernel=9, gen_hidden=32, fourier_features=16),
                 spatial=dict(enc_hidden=(64, 64), gen_hidden=64))
    else:
        # Sized for a 2-core CPU (the demo's TARGET-VAE network); spatial-VAE at its defaults.
        s = dict(n=2000, box=32, epochs=40, batch_size=64,
                 target=dict(group="p8", enc_fields=8, enc_kernel=21, gen_hidden=128, fourier_features=64),
                 spatial=dict())
    for key, value in (("n", n), ("epochs", epochs), ("box", box)):
        if value is not None:
            s[key] = value
    if group is not None:
        s["target"] = {**s["target"], "group": group}
    s["z_delay"] = {"spatial": 2, "target": 2 if quick else 15}
    if z_delay is not None:
        s["z_delay"]["target"] = z_delay
    return s


def run_case(case: str, model: str, s: dict, work: Path, out: Path, device: str) -> dict:
    """Simulate (cached), train, evaluate one (dataset, model); pictures into ``out``."""
    from cryovae.analysis.evaluation import evaluation_report, motion_figure
    from cryovae.analysis.metrics import align_predictions
    from cryovae.analysis.output import save_figure
    from cryovae.analysis.traverse import decode_frames
    from cryovae.analysis.traverse_run import TraverseConfig, build_traversal
    from cryovae.cli.main import cli
    from cryovae.inference import TrainedRun
    from cryovae.io import read_star_table
    from cryovae.models import ModelConfig
    from cryovae.simulate import (
        SimulationConfig,
        read_truth,
        simulate_arms,
        simulate_hinge,
        write_simulation,
    )
    from cryovae.workflows.demo import motion_rows

    kind, snr = CASES[case]
    sim_cfg = SimulationConfig(n=s["n"], box=s["box"], pixel_size_A=160.0 / s["box"], snr=snr,
                               shift_sigma_px=1.0, seed=1)
    sim = (simulate_hinge if kind == "hinge" else simulate_arms)(sim_cfg, progress=False)
    data = work / f"data_{case}_n{s['n']}_b{s['box']}"
    if not (data / "truth.csv").exists():
        write_simulation(sim, data)
    zdim = 1 if kind == "hinge" else 2
    mcfg = ModelConfig.for_model(model, box=s["box"], zdim=zdim, **s[model])
    label = model if model == "spatial" else f"target-{mcfg.group}-zd{s['z_delay']['target']}"
    display = "spatial-VAE" if model == "spatial" else f"TARGET-VAE {mcfg.group.upper()}"
    rundir = work / f"run_{case}_{label}_n{s['n']}_b{s['box']}_e{s['epochs']}"
    train_args = train_command(model, zdim, s, device)
    timing = rundir / "train_seconds.txt"
    if not (rundir / "particles.star").exists() or not timing.exists():
        if rundir.exists():
            shutil.rmtree(rundir)
        t0 = time.perf_counter()
        cli.main(["train", str(data / "particles.star"), "-o", str(rundir), *train_args], standalone_mode=False)
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    trained = TrainedRun.load(rundir, device="cpu")
    built = trained.config.model
    if dataclasses.replace(built, pixel_size=mcfg.pixel_size) != mcfg:  # the command builds this model
        raise RuntimeError(f"{rundir}: the trained model {built} differs from {mcfg}")
    seconds = float(timing.read_text())
    truth = read_truth(data / "truth.csv")
    predicted, aligned, _ = align_predictions(read_star_table(rundir / "particles.star"), truth)
    metrics, figures = evaluation_report(predicted, aligned)
    tag = f"{case}_{label}"
    pictures = {}
    for name, fig in figures.items():
        if name == "translation":
            continue
        fig.suptitle(f"{display} on {case}", fontsize=10)
        pictures[name] = out / f"{tag}_{name}.png"
        save_figure(fig, pictures[name], dpi=90)
    if kind == "hinge":
        trav, _ = build_traversal(trained.latents().z_mean, TraverseConfig(steps=10))
        frames = decode_frames(trained.decode, trav)
        fig = motion_figure(motion_rows(sim, frames, trav.values[:, 0], metrics),
                            title=f"{display} on {case}: truth (top), learned z1 traversal (bottom)")
        pictures["motion"] = out / f"{tag}_motion.png"
        save_figure(fig, pictures["motion"], dpi=90)
    return {"case": case, "model": label, "name": display, "snr": snr, "metrics": metrics, "train_seconds": seconds,
            "pictures": {k: p.name for k, p in pictures.items()}, "model_config": mcfg.__dict__,
            "epochs": s["epochs"], "n": s["n"], "box": s["box"],
            "command": "cryovae train particles.star " + " ".join(train_args)}


def train_command(model: str, zdim: int, s: dict, device: str) -> list[str]:
    """The ``cryovae train`` options of one benchmark run (the command a user would type)."""
    args = ["--model", model, "--zdim", str(zdim), "--box", str(s["box"]), "--epochs", str(s["epochs"]),
            "--batch-size", str(s["batch_size"]), "--seed", "0", "--patience", "0", "--device", device,
            "--z-delay", str(s["z_delay"][model])]
    flags = {"group": "--group", "enc_fields": "--enc-fields", "enc_kernel": "--enc-kernel",
             "gen_hidden": "--gen-hidden", "fourier_features": "--fourier-features"}
    for key, value in s[model].items():
        if key == "enc_hidden":
            args += ["--enc-hidden", ",".join(str(h) for h in value)]
        else:
            args += [flags[key], str(value)]
    return args


def fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(rows: list[dict], s: dict, command: str, quick: bool, note: str = "") -> str:
    lines = [
        "# Recovery quality on simulated data",
        "",
        ("**Quick smoke run: tiny sets and models, a few epochs. Not a result.**\n" if quick else ""),
        f"Reproduce: `{command}`",
        "",
        f"{s['n']} particles per set, {s['box']} px at {160 / s['box']:.1f} Å/px, uniform in-plane rotation, "
        "centre offsets sigma 1 px; epochs per row. SNR = signal variance over the box / noise variance. "
        "Conformation: |Pearson| of the best latent and multiple correlation R (all latents); rotation: "
        "Fisher-Lee circular correlation (JS: the Jammalamadaka-SenGupta r_c that spatial-VAE cites; it is unstable "
        "for uniformly distributed angles), and median error / fraction within 15° after the best "
        "global offset; mod 180°: the same with a half turn counted as no error (Fisher-Lee of the doubled "
        "angles, median of the folded errors), for particles that look alike both ways round; translation: "
        "RMSE of the origin after the learned template's offset.",
        "",
        "| set | SNR | model | best abs(r) z~conf | R | rot. circ. corr (FL) | JS | median err (°) | within 15° | "
        "fit | mod 180°: corr / median err | trans. RMSE (Å) | epochs | train (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        m = r["metrics"]
        conf = m.get("conformation", {})
        best = ", ".join(fmt(v) for v in conf.get("best_abs_pearson", {}).values())
        mult = ", ".join(fmt(v) for v in conf.get("multiple_correlation", {}).values())
        rot, tr = m["rotation"], m.get("translation", {})
        lines.append(f"| {r['case'].split('-')[0]} | {r['snr']:g} | {r['name']} | {best} | {mult} | "
                     f"{fmt(rot['circular_correlation'])} | {fmt(rot['circular_correlation_js'])} | "
                     f"{fmt(rot['median_error_deg'], 1)} | "
                     f"{fmt(rot['fraction_within_15deg'])} | {rot['best_fit']} | "
                     f"{fmt(rot['modulo_180']['circular_correlation'])} / {fmt(rot['modulo_180']['median_error_deg'], 1)}° | "
                     f"{fmt(tr.get('rmse_after_template_offset_A'), 1)} | {r['epochs']} | {r['train_seconds']:.0f} |")
    lines += [
        "| 5HDB (paper) | noise sigma 25, SNR not stated | spatial-VAE | 0.95 | | 0.92 (measure: ref. JS 2001) | | | | | | | 500 | |",
        "| MNIST(U) (paper) | | TARGET-VAE P4 / P8 / P16 | | | 0.80 / 0.86 / 0.93 | | | | | | | | |",
        "",
        "Arms: two conformation coordinates (values listed in order). Each row's `cryovae train` options are in "
        "quality.json (`command`).",
        *([note] if note else []),
        "",
        "## Pictures",
        "",
    ]
    for r in rows:
        lines.append(f"### {r['name']} on {r['case']}")
        lines.append("")
        for name, file in r["pictures"].items():
            lines.append(f"![{name}]({file})")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sets and models (minutes on a CPU)")
    p.add_argument("--out", type=Path, default=None, help="where the table and pictures go")
    p.add_argument("--work", type=Path, default=None, help="simulations and runs [runs/quality_work; reused]")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--box", type=int, default=None)
    p.add_argument("--case-epochs", nargs="+", default=[], metavar="CASE=N",
                   help="epochs for particular sets, e.g. hinge-1=40 (others: --epochs)")
    p.add_argument("--spatial-epochs", type=int, default=None, help="spatial-VAE's epochs [as --epochs]")
    p.add_argument("--note", default="", help="a sentence added under the table (e.g. the machine)")
    p.add_argument("--group", choices=["p4", "p8", "p16"], default=None, help="TARGET-VAE group [p8]")
    p.add_argument("--z-delay", type=int, default=None,
                   help="TARGET-VAE epochs with z = 0 [15; 2 with --quick]")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    s = settings(args.quick, args.n, args.epochs, args.box, args.group, args.z_delay)
    out = args.out or (ROOT / "tmp" / "quality_quick" if args.quick else ROOT / "docs" / "quality")
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or (out / "work" if args.quick else ROOT / "runs" / "quality_work")
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    case_epochs = {}
    for item in args.case_epochs:
        name, _, value = item.partition("=")
        if name not in CASES or not value.isdigit():
            p.error(f"--case-epochs wants CASE=N with CASE one of {', '.join(CASES)}, got {item!r}")
        case_epochs[name] = int(value)
    for case in args.cases:
        for model in args.models:
            epochs = case_epochs.get(case, args.epochs)
            if model == "spatial" and args.spatial_epochs is not None:
                epochs = args.spatial_epochs
            s = settings(args.quick, args.n, epochs, args.box, args.group, args.z_delay)
            print(f"== {model} on {case}", flush=True)
            row = run_case(case, model, s, work, out, args.device)
            rot = row["metrics"]["rotation"]
            conf = row["metrics"].get("conformation", {}).get("multiple_correlation", {})
            print(f"   R {', '.join(fmt(v) for v in conf.values())}; rotation circ corr "
                  f"{fmt(rot['circular_correlation'])}, median error {fmt(rot['median_error_deg'], 1)}°; "
                  f"{row['train_seconds']:.0f} s", flush=True)
            rows.append(row)
    given = list(sys.argv[1:] if argv is None else argv)
    if "--note" in given:  # an annotation, not a setting
        i = given.index("--note")
        del given[i:i + 2]
    command = shlex.join(["python", "benchmarks/quality.py", *given])
    (out / "README.md").write_text(table(rows, s, command.strip(), args.quick, args.note))
    (out / "quality.json").write_text(json.dumps([{**r, "model_config": {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in r["model_config"].items()}} for r in rows],
                                                 indent=1, default=str) + "\n")
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
