"""Train TARGET-VAE or spatial-VAE on a particle file; write poses and latents into a star.

Example: cryovae train particles.star --group p8 --zdim 1        (writes ./cryovae_particles/)
         cryovae train particles.star --group p8 --zdim 1 -o run1
Resume a killed run: cryovae train --resume run1 [--epochs 50]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from cryovae.cli.options import particle_reading_options
from cryovae.errors import CryovaeError


def _command_line() -> str:
    """The command as typed when run from a shell, else rebuilt from the parsed options."""
    ctx = click.get_current_context()
    if sys.argv and sys.argv[0].endswith("cryovae") and "train" in sys.argv[1:]:
        return "cryovae " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    opts = {p.name: max(p.opts, key=len) for p in ctx.command.params if isinstance(p, click.Option)}
    parts = ["cryovae train"]
    for name, value in ctx.params.items():
        if value is None or value is False:
            continue
        if name == "particles":
            parts.insert(1, shlex.quote(str(value)))
        elif value is True:
            parts.append(opts[name])
        else:
            parts += [opts[name], shlex.quote(str(value))]
    return " ".join(parts)


def default_run_dir(particles: str) -> str:
    """``./cryovae_<stem>`` for ``particles`` (``path/particles.star`` -> ``cryovae_particles``)."""
    return f"cryovae_{Path(particles).stem}"


#: options ``train --resume`` takes from the command line; every other one is the run's (config.yaml)
RESUME_OPTIONS = ("resume", "outdir", "epochs", "device", "absolute_paths", "particles")


def _refuse_options_a_resume_ignores() -> None:
    """A one-line error for an option given with --resume that the run's config.yaml decides
    (--zdim, --apix, --skip-bad, ...): a resumed run reads and trains exactly as it started."""
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params
             if p.name not in RESUME_OPTIONS
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        names = ", ".join(max(p.opts, key=len) for p in given)
        raise CryovaeError(f"{names}: not with --resume (a resumed run keeps the options in its config.yaml; "
                           "only --epochs, --device and --absolute-paths may change)")


def _hidden(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise CryovaeError(f"--enc-hidden expects comma-separated integers, got {value!r}") from None


@click.command("train")
@click.argument("particles", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", default=None, type=click.Path(file_okay=False),
              help="Run directory [default: ./cryovae_<PARTICLES name>; required with --resume].")
@click.option("--model", "kind", type=click.Choice(["target", "spatial"]), default="target", show_default=True)
@click.option("--group", type=click.Choice(["c1", "p4", "p8", "p16"]), default=None,
              help="TARGET-VAE rotation group (c1: translation only) [p8].")
@click.option("--zdim", type=int, default=1, show_default=True, help="Content latent dimensions.")
@click.option("--box", type=int, default=None,
              help="Model box in pixels (Fourier crop) [default: the images' size when <= 40 px, else 40].")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [default: 20].")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--patience", type=int, default=8, show_default=True, help="Early-stopping patience (0: never).")
@click.option("--ctf/--no-ctf", default=False, show_default=True, help="Apply each particle's CTF.")
@click.option("--resume", default=None, is_flag=False, flag_value="", metavar="[RUNDIR]",
              help="Continue a run from its checkpoint: --resume RUNDIR, or --resume -o RUNDIR.")
@particle_reading_options
@click.option("--invert/--no-invert", default=False, show_default=True, help="Invert contrast when preprocessing.")
@click.option("--paper-size", is_flag=True, help="The papers' architecture sizes (slow).")
@click.option("--enc-fields", type=int, default=None, help="TARGET-VAE regular fields [16].")
@click.option("--enc-kernel", type=int, default=None, help="TARGET-VAE lifting kernel, odd [33].")
@click.option("--enc-layers", type=int, default=None, help="Extra group-conv layers [1].")
@click.option("--enc-hidden", default=None, help="spatial-VAE encoder widths, e.g. 500,500.")
@click.option("--gen-hidden", type=int, default=None, help="Generator width [128 target / 256 spatial].")
@click.option("--gen-layers", type=int, default=None, help="Generator hidden layers [2].")
@click.option("--fourier-features", type=int, default=None, help="Fourier features (0 = raw coords).")
@click.option("--fourier-scale", type=float, default=None, help="Fourier frequency std [2].")
@click.option("--activation", type=click.Choice(["relu", "leaky_relu", "tanh"]), default=None)
@click.option("--noise", type=click.Choice(["global", "pixel"]), default=None, help="Noise model [global].")
@click.option("--translation-prior", type=float, default=None, help="Centre prior std, model pixels [4].")
@click.option("--max-shift", type=int, default=None,
              help="TARGET-VAE translation grid half-width, model pixels [3 x translation prior].")
@click.option("--theta-prior", type=float, default=None, help="spatial-VAE theta prior std, rad [pi].")
@click.option("--no-translation", is_flag=True, help="spatial-VAE: no translation inference.")
@click.option("--gumbel-hard", is_flag=True, help="Straight-through one-hot (t, r) samples.")
@click.option("--z-delay", type=int, default=2, show_default=True, help="Epochs with z = 0.")
@click.option("--rotate-encoder/--no-rotate-encoder", default=None,
              help="spatial-VAE rotation augmentation [on for spatial].")
@click.option("--refine-steps", type=int, default=20, show_default=True,
              help="After training, steps of per-particle pose and z refinement (0: the encoder's).")
@click.option("--absolute-paths", is_flag=True, default=None,
              help="Write absolute stack paths in particles.star's rlnImageName.")
def command(particles, outdir, kind, group, zdim, box, epochs, batch_size, lr, device, seed, val_fraction,
            patience, ctf, resume, datadir, apix, skip_bad, invert, paper_size, enc_fields, enc_kernel, enc_layers,
            enc_hidden, gen_hidden, gen_layers, fourier_features, fourier_scale, activation, noise,
            translation_prior, max_shift, theta_prior, no_translation, gumbel_hard, z_delay, rotate_encoder,
            refine_steps, absolute_paths) -> None:
    """Train TARGET-VAE (--model target) or spatial-VAE (--model spatial) on PARTICLES.

    Writes config.yaml, checkpoint.pt, best.pt, metrics.csv, train.log, latents.npz and
    particles.star (RELION psi / origin in Å and cryovaeZ1..n) into OUTDIR.
    """
    from cryovae.models import ModelConfig, paper_config
    from cryovae.training import TrainConfig
    from cryovae.training.run import train_run

    command_line = _command_line()
    if resume:  # --resume RUNDIR
        if outdir is not None and outdir != resume:
            raise CryovaeError(f"--resume {resume} and -o {outdir} name different runs")
        outdir = resume
    resume = resume is not None
    if outdir is None and resume:
        raise CryovaeError("-o RUNDIR is required with --resume (the run to continue)")
    if particles is None and not resume:
        raise CryovaeError("PARTICLES is required (except with --resume)")
    if outdir is None:
        outdir = default_run_dir(particles)
    if resume:
        _refuse_options_a_resume_ignores()
        train_run(particles or "", outdir, None, None, device=device, resume=True, epochs=epochs,
                  command_line=command_line, absolute_paths=absolute_paths)
        click.echo(f"{outdir}/particles.star")
        return
    arch = dict(box=box, zdim=zdim, group=group, ctf=ctf, enc_fields=enc_fields, enc_kernel=enc_kernel,
                enc_layers=enc_layers, enc_hidden=_hidden(enc_hidden), gen_hidden=gen_hidden,
                gen_layers=gen_layers, fourier_features=fourier_features, fourier_scale=fourier_scale,
                gen_activation=activation, noise=noise, translation_prior_px=translation_prior, max_shift=max_shift,
                theta_prior_std=theta_prior, gumbel_hard=True if gumbel_hard else None,
                translation=False if no_translation else None)
    model_cfg = paper_config(kind, **{k: v for k, v in arch.items() if v is not None}) if paper_size \
        else ModelConfig.for_model(kind, **arch)
    train_cfg = TrainConfig(epochs=20 if epochs is None else epochs, batch_size=batch_size, lr=lr, seed=seed,
                            val_fraction=val_fraction, early_stop_patience=patience, z_delay_epochs=z_delay,
                            rotate_encoder=(kind == "spatial") if rotate_encoder is None else rotate_encoder,
                            refine_steps=refine_steps)
    train_run(particles, outdir, model_cfg, train_cfg, preprocess={"invert": invert}, device=device,
              datadir=datadir, apix=apix, skip_bad=skip_bad, command_line=command_line, auto_box=box is None,
              absolute_paths=bool(absolute_paths))
    click.echo(f"{outdir}/particles.star")
