"""The ``cryovae`` command group.

Every subcommand lives in its own module ``cryovae/cli/<name>.py`` exposing a click command
called ``command``; it is imported only when used, so ``cryovae --help`` stays fast.
A :class:`cryovae.errors.CryovaeError` raised anywhere below becomes one line on stderr and
exit status 2 (130 for :class:`cryovae.errors.RunInterrupted` and any Ctrl-C, 143 for SIGTERM); an
:class:`OSError` about a named file (permission, full disk) is one line and exit 2 too; other
exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading

import click

from cryovae import __version__
from cryovae.errors import CryovaeError, Terminated

#: subcommand name -> (module under cryovae.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "Summarise a particle file: count, box, pixel size, optics, stacks."),
    "preprocess": ("preprocess", "Fourier-crop, invert and normalise a stack once, write a new star."),
    "train": ("train", "Train TARGET-VAE or spatial-VAE; write poses and latents into a star."),
    "encode": ("encode", "Apply a trained run to a particle file; write a star with poses and latents."),
    "simulate": ("simulate", "Simulate particle stacks with known conformation and pose."),
    "evaluate": ("evaluate", "Score a cryovae star against simulated ground truth."),
    "demo": ("demo", "Simulate, train, traverse and evaluate on a built-in example."),
    "traverse": ("traverse", "Decode images along the latent space of a trained run."),
    "analyze": ("analyze", "Plots, clusters and an HTML report for a trained run."),
    "select": ("select", "Write a subset of a run's particles chosen in its latent space."),
    "reframe": ("reframe", "Realign a TARGET-VAE run on the molecule's rigid part; refit z there."),
    "pick": ("pick", "Find particles in micrographs with a TARGET-VAE run's attention map."),
    "extract": ("extract", "Cut particle boxes at picked coordinates: a stack and a RELION star."),
    "evaluate-picks": ("evaluate_picks", "Score particle picks against true positions: P, R, F1, AP."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (mod, _) in COMMANDS.items() if _available(mod))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(f"cryovae.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cryovae.cli.{module_name}":
                return None
            raise
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        previous = _terminate_as_interrupt()
        try:
            return super().invoke(ctx)
        except CryovaeError as exc:
            _fail(ctx, str(exc), getattr(exc, "exit_code", 2))
        except Terminated:
            _fail(ctx, "terminated (SIGTERM)", 143)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)
        except OSError as exc:
            if exc.filename is None or exc.strerror is None:
                raise  # not about a named file: a bug, keep the traceback
            _fail(ctx, f"{exc.filename}: {exc.strerror}", 2)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _terminate_as_interrupt():
    """Make SIGTERM (a batch scheduler's time limit, ``kill``) raise :class:`Terminated` where
    Ctrl-C raises KeyboardInterrupt, so a terminated run keeps its checkpoint and leaves no
    partial output, as an interrupted one does. Only possible in the main thread; returns the
    previous handler (None when not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    """``cryovae <cmd>: error: <message>`` on stderr, exit ``code`` (2: bad input, 130: Ctrl-C)."""
    sub = ctx.invoked_subcommand or "cryovae"
    rank = _rank()
    where = f" (process {rank} of torchrun's {os.environ.get('WORLD_SIZE')})" if rank else ""
    click.echo(f"cryovae {sub}: error{where}: {message}", err=True)
    sys.exit(code)


def _rank() -> int:
    """This process's rank when started by torchrun (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _available(module_name: str) -> bool:
    return importlib.util.find_spec(f"cryovae.cli.{module_name}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cryovae")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """cryovae: learn in-plane pose and conformation of cryo-EM particles.

    Example: cryovae train particles.star --group p8 --zdim 1 -o run1
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if _rank():  # the other processes of a torchrun run: rank 0 speaks for all
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("cryovae").setLevel(min(level, logging.INFO))


if __name__ == "__main__":  # pragma: no cover
    cli()
