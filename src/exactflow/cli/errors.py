"""The one kind of failure the ``exactflow`` command reports: :class:`CommandError`."""

from __future__ import annotations

__all__ = ["CommandError", "one_line"]


class CommandError(Exception):
    """A user-facing problem: printed as one line on stderr, exit code 2.

    Example:
        >>> one_line(CommandError("no such run folder  (runs/x)"))
        'no such run folder (runs/x)'

    """


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (other libraries' messages may wrap)."""
    if isinstance(error, OSError) and error.filename:
        message = f"{error.filename}: {error.strerror or error}"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())
