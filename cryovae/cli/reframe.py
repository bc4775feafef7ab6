"""Move a trained run's rotations onto the molecule's rigid part and refit z there.

On a molecule whose parts move (arms on a core, a hinge), the rotation cryovae train finds can
turn with the parts' common motion, which z then misses. reframe finds the part of the decoded
templates that does not change (the rigid part), turns each particle so that this part lines up,
and trains the encoder and generator further with every rotation held there (--rounds times:
realign, then --epochs epochs). It needs a TARGET-VAE run. If the data do not determine the
turns (the search on two halves of the pixels disagrees: --min-agreement), nothing is written.
--max-turn 0 searches no turn: every particle keeps the run's rotation and the rounds only train
with it held (the control of the realignment; no gate).

Writes a new run folder OUT (RUNDIR is only read): particles.star with the new psi and z,
latents.npz, best.pt, reframe.json (the agreement and each round's median turn and -ELBO);
traverse, analyze, select and napari read it like any run.

Example: cryovae reframe run1 -o run1_core
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("reframe", help=__doc__)
@click.argument("rundir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "outdir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="The new run folder [default: RUNDIR_core].")
@click.option("--rounds", default=4, show_default=True, type=int, help="Rounds of realignment and training.")
@click.option("--epochs", default=6, show_default=True, type=int, help="Training epochs per round.")
@click.option("--max-turn", default=24.0, show_default=True, type=float,
              help="Largest turn searched, degrees (0: keep the run's rotations and only train with them held).")
@click.option("--min-agreement", default=0.1, show_default=True, type=float,
              help="Least split-half correlation of the turns to go on (-1: always).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the training's batches and samples.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(rundir, outdir, rounds, epochs, max_turn, min_agreement, seed, device, quiet) -> None:
    import shlex
    import sys

    from cryovae.training import FixedPoseConfig
    from cryovae.workflows.reframe import ReframeConfig, reframe_run

    cfg = ReframeConfig(rounds=rounds, max_turn_deg=max_turn, min_agreement=min_agreement,
                        train=FixedPoseConfig(epochs=epochs, seed=seed))
    out = outdir if outdir is not None else rundir.with_name(rundir.name + "_core")
    result = reframe_run(rundir, out, cfg, device=device, progress=not quiet,
                         command_line=shlex.join(["cryovae", *sys.argv[1:]]))
    last = result.rounds[-1]
    gate = "rotations held" if cfg.holds else f"split-half agreement {result.agreement:.2f}"
    click.echo(f"{gate}; last round: median turn {last['median_turn_deg']:.2f} deg, "
               f"-ELBO {last['neg_elbo']:.1f} nats per particle; wrote {result.out}")
