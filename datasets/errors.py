"""The one exception type the data loaders raise for bad input."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file or argument is missing, malformed or inconsistent.

    The message is always a single line that names the file or argument at fault, so a command-line
    front end can print it as is and exit with a non-zero status. Any line breaks in the message
    given are folded into spaces.

    Parameters
    ----------
    message : str
        What went wrong and where.
    """

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))
