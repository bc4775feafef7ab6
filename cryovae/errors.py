"""Errors that describe a user's mistake (bad file, bad option) rather than a bug.

The command line catches :class:`CryovaeError` and prints its message as one line with a
non-zero exit; anything else is a bug and keeps its traceback.
"""


class CryovaeError(Exception):
    """A problem with the user's input, stated in one line that names the file and the fault."""


class InputFileError(CryovaeError):
    """An input file is missing, unreadable, empty or malformed."""


class OutputFileError(CryovaeError):
    """An output file cannot be written (read-only or immutable folder, full disk, ...)."""

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")


class DamagedFileError(InputFileError):
    """A file cryovae wrote itself (checkpoint, latents, config, cache) is truncated or garbage."""


class RunInterrupted(CryovaeError):
    """A run stopped by Ctrl-C (SIGINT); the command line exits 130 (128 + SIGINT)."""

    exit_code = 130


class NonFiniteError(CryovaeError):
    """A loss, an input value or the weights became NaN or infinite."""
