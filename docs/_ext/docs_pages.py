"""Helpers of the executed tutorials: pictures on the page, command lines run in the build.

A tutorial's code writes its figures as PNG files (through :mod:`exactflow.plot` or
matplotlib), to a temporary folder of its own; :func:`image` makes one an ``<img>`` with the
image inlined, which the page's hidden block prints (markdown-exec captures the ``print`` of the
block itself), so the built page carries its pictures and the build writes nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import shlex


def image(path: str | os.PathLike, alt: str) -> str:
    """The PNG at ``path`` as an inline HTML image described by ``alt``."""
    with open(path, "rb") as file:
        data = base64.b64encode(file.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def console(*commands: str, folder: str | os.PathLike, expect: int = 0) -> str:
    """Run ``exactflow`` command lines in ``folder`` and return them with their output.

    Each command runs through :func:`exactflow.cli.main.main`, the function behind the
    ``exactflow`` program, in this process (no second start of torch), with the working
    directory set to ``folder`` and its standard output and error captured. The result reads
    like a terminal session: ``$ command`` and what it printed, and the exit code when it is
    not 0. A command whose exit code is not ``expect`` raises ``RuntimeError``, which fails
    the build.
    """
    from exactflow.cli.main import main

    lines = []
    here = os.getcwd()
    for command in commands:
        words = shlex.split(command)
        if words[0] != "exactflow":
            raise ValueError(f"not an exactflow command: {command!r}")
        out = io.StringIO()
        try:
            os.chdir(folder)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = main(words[1:])
        finally:
            os.chdir(here)
        if code != expect:
            raise RuntimeError(f"{command!r} exited with {code}: {out.getvalue()}")
        lines.append(f"$ {command}\n{out.getvalue().rstrip()}")
        if code != 0:
            lines.append(f"$ echo $?\n{code}")
    return "\n".join(lines)
