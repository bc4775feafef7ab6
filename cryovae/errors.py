"""Errors that describe a user's mistake (bad file, bad option) rather than a bug.

The command line catches :class:`CryovaeError` and prints its message as one line with a
non-zero exit; anything else is a bug and keeps its traceback.
"""


class CryovaeError(Exception):
    """A problem with the user's input, stated in one line that names the file and the fault."""


class InputFileError(CryovaeError):
    """An input file is missing, unreadable, empty or malformed."""
