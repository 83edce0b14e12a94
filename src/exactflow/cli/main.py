"""The ``exactflow`` command: parse the command line and run one command.

Each command lives in its own module (:mod:`~exactflow.cli.fit`, :mod:`~exactflow.cli.vi`,
:mod:`~exactflow.cli.eval`, :mod:`~exactflow.cli.sample`, :mod:`~exactflow.cli.plot`,
:mod:`~exactflow.cli.compare`, :mod:`~exactflow.cli.listing`); this
module only builds the parser, dispatches, and turns every failure into one line on stderr with
exit code 2 (130 for Ctrl-C). Set ``EXACTFLOW_TRACEBACK=1`` to see the traceback of an
unexpected error instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import NoReturn

from .. import __version__
from .errors import CommandError, one_line

__all__ = ["build_parser", "entry", "main"]

# Command name -> its module. The modules (and torch with them) are imported inside main(), so
# a Ctrl-C while they load is reported like any other.
COMMANDS = {"fit": "fit", "vi": "vi", "eval": "eval", "sample": "sample", "plot": "plot",
            "compare": "compare", "list": "listing"}  # fmt: skip


def _commands() -> dict[str, ModuleType]:
    return {
        name: importlib.import_module(f".{module}", __package__)
        for name, module in COMMANDS.items()
    }


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    """While the commands (and torch) are imported, Ctrl-C ends the process at once, in one line.

    A ``KeyboardInterrupt`` raised inside a library's import may be caught there and leave it
    half-imported, to fail later with an unrelated message; exiting from the handler cannot.
    """

    def interrupted(signum: int, frame: object) -> None:
        sys.stderr.write("exactflow: interrupted\n")
        sys.stderr.flush()
        os._exit(130)

    try:
        previous = signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread: leave the handler alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = _Parser(
        prog="exactflow",
        description="Normalizing flows with exact densities: fit them to data (fit), to an"
        " unnormalized density (vi), or as a VAE's posterior (fit --model vae); then eval,"
        " sample, plot and compare the runs.",
    )
    parser.add_argument("--version", action="version", version=f"exactflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in _commands().values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Example:
        >>> main(["fly"])
        2

    """
    command = "exactflow"
    try:
        try:
            with _quiet_interrupt():
                parser = build_parser()
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, or a bad option (already reported in one line)
            return e.code if isinstance(e.code, int) else 2
        command = f"exactflow {args.command}"
        _commands()[args.command].run(args)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`exactflow list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a program killed by the signal would end
    except Exception as e:
        if os.environ.get("EXACTFLOW_TRACEBACK"):
            raise
        print(f"{command}: error: {_describe(e)}", file=sys.stderr)
        return 2
    return 0


def entry() -> NoReturn:
    """The ``exactflow`` program: :func:`main`, then exit with its code.

    After Ctrl-C the process ends with ``os._exit(130)`` once its output is flushed: CPython
    kills itself with SIGINT at exit if a ``KeyboardInterrupt`` ever passed through code that
    C++ extensions run (torch's), even one caught later, which would turn exit code 130 into a
    death by signal.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


# Failures whose message says it all; anything else is named by its type too.
_EXPECTED = (ValueError, TypeError, OSError, EOFError, ImportError, FloatingPointError)


def _describe(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "input nested too deeply"
    if isinstance(error, MemoryError):
        return "out of memory (use smaller settings)"
    if isinstance(error, (CommandError, *_EXPECTED)):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"
