"""``python -m cryovae ...`` (and ``torchrun -m cryovae ...``) runs the ``cryovae`` command."""

from cryovae.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="cryovae")
