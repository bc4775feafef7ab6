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


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a batch scheduler sends at its time limit), raised where Ctrl-C would be, so
    that a terminated command cleans up exactly as an interrupted one does."""


class RunInterrupted(CryovaeError):
    """A run stopped by Ctrl-C (SIGINT; the command line exits 130 = 128 + SIGINT) or by SIGTERM
    (exit 143 = 128 + SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteError(CryovaeError):
    """A loss, an input value or the weights became NaN or infinite."""
