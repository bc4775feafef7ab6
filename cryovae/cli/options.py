"""The reading options every command that opens a particle file takes, as one click decorator.

``info``, ``preprocess``, ``train`` and ``encode`` read particles the same way: ``--datadir``
(where the stacks are when they are not where the file says), ``--apix`` (the images' pixel
size, overriding the file) and ``--skip-bad`` (leave out particles with NaN/infinite pixels or
constant images, and list them). Messages about reading ("pass --apix", "--datadir",
"--skip-bad") may name these options because every such command has them.
"""

from __future__ import annotations

from pathlib import Path

import click

READING_OPTIONS = ("datadir", "apix", "skip_bad")


def particle_reading_options(func):
    """Add ``--datadir``, ``--apix`` and ``--skip-bad`` (parameters ``datadir``: Path or None,
    ``apix``: float or None, ``skip_bad``: bool) to a click command."""
    options = [
        click.option("--datadir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder to look for the image stacks in when they are not where the file says."),
        click.option("--apix", type=float, default=None,
                     help="Pixel size of the input images in Å (overrides the file and the stack headers)."),
        click.option("--skip-bad", is_flag=True,
                     help="Leave out particles with NaN/infinite pixels or constant images and list "
                          "them in *bad_particles.txt beside the output (reads every image once "
                          "first); without it NaN/infinite pixels are an error."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
