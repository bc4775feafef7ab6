"""Train a registered model (TARGET-VAE, spatial-VAE, ...) on a particle file; write poses and
latents into a star.

Example: cryovae train particles.star --group p8 --zdim 1        (writes ./cryovae_particles/)
         cryovae train particles.star --group p8 --zdim 1 -o run1
Resume a killed run: cryovae train --resume run1 [--epochs 50]

The model options and their defaults come from the registered models' configs
(:mod:`cryovae.models.registry`), the training defaults from :class:`cryovae.runs.TrainConfig`;
``--help`` prints them grouped per model.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import click

from cryovae.cli.config_options import GroupedCommand, config_overrides, field_option
from cryovae.cli.options import particle_reading_options
from cryovae.errors import CryovaeError

IO = "Input and output"
TRAINING = "Training"
MODEL = "Model (every model)"

#: options ``train --resume`` takes from the command line; every other one is the run's (config.yaml)
RESUME_OPTIONS = ("resume", "outdir", "epochs", "device", "absolute_paths", "particles", "workers", "lazy")
#: --flag -> TrainConfig field, with help; the defaults are TrainConfig's
TRAIN_OPTIONS = (
    ("--epochs", "epochs", int, "Maximum epochs."),
    ("--batch-size", "batch_size", int, "Particles per step."),
    ("--lr", "lr", float, "Adam learning rate."),
    ("--seed", "seed", int, "Seeds the weights, the split, the data order and every sample."),
    ("--val-fraction", "val_fraction", float, "Fraction of particles held out for validation."),
    ("--patience", "early_stop_patience", int, "Early-stopping patience (0: never)."),
    ("--z-delay", "z_delay_epochs", int,
     "Epochs with z = 0  [default: until the rotations settle (median change <= 2 degrees) and, for "
     "MCE-VAE, the classes (<= 2% change), at most 10]."),
    ("--free-nats", "free_nats", float,
     "Free bits of z, nats per dimension (0: the plain ELBO)  [default: target 1, others 0]."),
    ("--refine-steps", "refine_steps", int,
     "After training, steps of per-particle pose and z refinement (0: the encoder's)."),
    ("--align-rotations", "align_rotations", int,
     "Before training, align the particles to one template by EM on this many rotations; their "
     "rotations there guide the encoder's (TARGET-VAE; 0: none)."),
    ("--guide-epochs", "guide_epochs", int, "Epochs the alignment guides  [default: all]."),
    ("--guide-weight", "guide_weight", float, "Weight of the alignment's guide against the ELBO."),
)


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


def _given(ctx: click.Context) -> list[click.Parameter]:
    return [p for p in ctx.command.params
            if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]


def _refuse_options_a_resume_ignores(ctx: click.Context) -> None:
    """A one-line error for an option given with --resume that the run's config.yaml decides
    (--zdim, --apix, --skip-bad, ...): a resumed run reads and trains exactly as it started."""
    given = [p for p in _given(ctx) if p.name not in RESUME_OPTIONS]
    if given:
        names = ", ".join(max(p.opts, key=len) for p in given)
        raise CryovaeError(f"{names}: not with --resume (a resumed run keeps the options in its config.yaml; "
                           "only --epochs, --device and --absolute-paths may change)")


def _refuse_options_of_other_models(ctx: click.Context, model_cls) -> None:
    """A one-line error for a model option the chosen model does not have (``--enc-hidden``
    with ``--model target``): it would otherwise be silently ignored."""
    own = model_cls.config_class.field_names()
    foreign = [p for p in _given(ctx) if getattr(p, "model_field", False) and p.name not in own]
    if foreign:
        names = ", ".join(max(p.opts, key=len) for p in foreign)
        raise CryovaeError(f"{names}: not an option of {model_cls.title} (--model {model_cls.name}); "
                           "see cryovae train --help")


def _model_options() -> list[click.Option]:
    """One option per config field with ``option`` metadata over every registered model: fields
    of the shared :class:`cryovae.models.ModelConfig` under "Model", the rest under their model."""
    from cryovae.models import ModelConfig, model_classes

    classes = model_classes()
    common = [f for f in dataclasses.fields(ModelConfig) if "cli" in f.metadata]
    seen = {f.name for f in common}
    options = []

    def defaults(name: str) -> dict:
        return {c.name: getattr(c.config_class(), name) for c in classes if name in c.config_class.field_names()}

    for f in common:
        options.append(field_option(f, defaults(f.name), MODEL))
    for cls in classes:
        group = f"{cls.title} (--model {cls.name})"
        for f in dataclasses.fields(cls.config_class):
            if "cli" in f.metadata and f.name not in seen:
                seen.add(f.name)
                options.append(field_option(f, defaults(f.name), group))
    for opt in options:
        opt.model_field = True  # type: ignore[attr-defined]
    return options


def _grouped(group: str, *decorators):
    """Apply click option decorators and tag the options they add with ``help_group``."""
    def apply(func):
        before = len(getattr(func, "__click_params__", []))
        for dec in reversed(decorators):
            func = dec(func)
        for p in func.__click_params__[before:]:  # click appends each new option
            p.help_group = group
        return func
    return apply


def build_command() -> click.Command:
    """The ``train`` command for the models registered now (called once at import; a test that
    registers a model builds it again)."""
    from cryovae.models import model_names
    from cryovae.runs import TrainConfig

    train_defaults = TrainConfig()

    def callback(**params):
        _train(click.get_current_context(), params)

    def train_option(flag, name, type_, help_text):
        default = getattr(train_defaults, name)
        shown = "" if default is None else f"  [default: {default:g}]"
        return click.option(flag, name, type=type_, default=None, help=f"{help_text}{shown}")

    func = callback
    func = _grouped(
        TRAINING, *(train_option(*spec) for spec in TRAIN_OPTIONS),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--posterior-grid/--no-posterior-grid", default=None,
                     help="After refinement, z, psi and origins as posterior means over a grid of z x "
                          "rotation x shift  [on; TARGET-VAE and spatial-VAE with zdim 1 or 2]."),
        click.option("--rotate-encoder/--no-rotate-encoder", default=None,
                     help="Random rotation augmentation of the encoder input  [on for spatial]."),
        click.option("--workers", type=int, default=0, show_default=True,
                     help="Reader processes that prefetch batches (per training process)."),
        click.option("--lazy/--in-memory", default=None,
                     help="Read the preprocessed particles from disk batch by batch, or hold them in memory  "
                          "[default: from disk when larger than 1 GiB]."),
    )(func)
    func = _grouped(
        MODEL,
        click.option("--model", "kind", type=click.Choice(list(model_names())), default=model_names()[0],
                     show_default=True, help="The model to train."),
        click.option("--box", type=int, default=None,
                     help="Model box in pixels (Fourier crop)  [default: the images' size when <= 40 px, else 40]."),
        click.option("--paper-size", is_flag=True, help="The papers' architecture sizes (slow)."),
    )(func)
    func = _grouped(
        IO,
        click.argument("particles", required=False, type=click.Path(dir_okay=False)),
        click.option("-o", "--outdir", default=None, type=click.Path(file_okay=False),
                     help="Run directory  [default: ./cryovae_<PARTICLES name>; required with --resume]."),
        click.option("--resume", default=None, is_flag=False, flag_value="", metavar="[RUNDIR]",
                     help="Continue a run from its checkpoint: --resume RUNDIR, or --resume -o RUNDIR."),
        particle_reading_options,
        click.option("--invert/--no-invert", default=False, show_default=True,
                     help="Invert contrast when preprocessing."),
        click.option("--absolute-paths", is_flag=True, default=None,
                     help="Write absolute stack paths in particles.star's rlnImageName."),
    )(func)
    command = click.command("train", cls=GroupedCommand, help=_HELP)(func)
    # the model options follow the others in --help
    command.params.extend(_model_options())
    return command


_HELP = """Train a model on PARTICLES (--model target: TARGET-VAE, spatial: spatial-VAE, mce: MCE-VAE
2D classes).

Writes config.yaml, checkpoint.pt, best.pt, metrics.csv, train.log, latents.npz and
particles.star (RELION psi / origin in Å and cryovaeZ1..n; rlnClassNumber for mce, with the
class averages classes.mrcs / .star / .png) into OUTDIR.
"""


def _train(ctx: click.Context, p: dict) -> None:
    from cryovae.data import LoaderConfig
    from cryovae.models import model_class, model_config, paper_config
    from cryovae.runs import TrainConfig
    from cryovae.workflows import train_run

    command_line = _command_line()
    particles, outdir, resume = p["particles"], p["outdir"], p["resume"]
    if resume:  # --resume RUNDIR
        if outdir is not None and outdir != resume:
            raise CryovaeError(f"--resume {resume} and -o {outdir} name different runs")
        outdir = resume
    resume = resume is not None
    loader = LoaderConfig(workers=p["workers"], lazy=p["lazy"])
    loader.validate()
    if outdir is None and resume:
        raise CryovaeError("-o RUNDIR is required with --resume (the run to continue)")
    if particles is None and not resume:
        raise CryovaeError("PARTICLES is required (except with --resume)")
    if outdir is None:
        outdir = default_run_dir(particles)
    if resume:
        _refuse_options_a_resume_ignores(ctx)
        train_run(particles or "", outdir, None, None, device=p["device"], resume=True, epochs=p["epochs"],
                  command_line=command_line, absolute_paths=p["absolute_paths"], loader=loader)
        _done(outdir)
        return
    cls = model_class(p["kind"])
    _refuse_options_of_other_models(ctx, cls)
    arch = {"box": p["box"], **config_overrides(cls.config_class, p)}
    make = paper_config if p["paper_size"] else model_config
    model_cfg = make(cls.name, **arch)
    train = {name: p[name] for _flag, name, _t, _h in TRAIN_OPTIONS if p[name] is not None}
    if p["refine_steps"] is None and cls.refine_steps_default is not None:
        train["refine_steps"] = cls.refine_steps_default
    rotate = cls.rotate_encoder_default if p["rotate_encoder"] is None else p["rotate_encoder"]
    if p["posterior_grid"] is not None:
        train["posterior_grid"] = p["posterior_grid"]
    train_cfg = TrainConfig(**train, rotate_encoder=rotate)
    train_run(particles, outdir, model_cfg, train_cfg, preprocess={"invert": p["invert"]}, device=p["device"],
              datadir=p["datadir"], apix=p["apix"], skip_bad=p["skip_bad"], command_line=command_line,
              auto_box=p["box"] is None, absolute_paths=bool(p["absolute_paths"]), loader=loader)
    _done(outdir)


def _done(outdir: str) -> None:
    """Print the star written (once: by rank 0 of a torchrun run)."""
    from cryovae.distributed import leave_world, world_from_env

    if world_from_env().is_main:
        click.echo(f"{outdir}/particles.star")
    leave_world()


command = build_command()
