"""Command line: one thin click command per module, registered in :mod:`cryovae.cli.main`."""
