"""The target of ``exactflow vi``: a built-in name, or a user's ``module:function``.

A built-in target (``exactflow list``) is rebuilt from the run record by name
(:func:`exactflow.targets.get`), so ``eval``, ``plot`` and ``vi --resume`` need nothing more. A
user's ``module:function`` runs the user's code, so it is imported only when the user names it on
the command line: the run record keeps its name as a note, and every later command that needs it
(``vi --resume``, ``eval``, ``plot``) asks for ``--target module:function`` again; nothing is
ever imported because a run record says so. The module is looked up on ``sys.path`` with the
current directory in front (as ``python -m`` would); the function takes ``z (*, D)`` and returns
``log p̃(z) (*)``, batched and differentiable; ``D`` comes from ``--dim``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import targets
from ..targets import Target
from .errors import CommandError, one_line

__all__ = ["UserTarget", "from_command_line", "is_user", "of_run", "record_of"]

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class UserTarget(Target):
    """A user's function ``log p̃(z)`` as a :class:`~exactflow.targets.Target` of width ``dim``.

    Example:
        >>> import torch
        >>> target = UserTarget("mine:logp", lambda z: -0.5 * (z**2).sum(-1), dim=3)
        >>> target(torch.zeros(4, 3)).shape
        torch.Size([4])

    """

    description = "a user's function"

    def __init__(self, name: str, function: Callable[[Tensor], Tensor], dim: int) -> None:
        self.name, self.function, self.dim = name, function, dim

    def log_density(self, z: Tensor) -> Tensor:
        return self.function(z)


def is_user(name: str) -> bool:
    """Whether ``name`` is a ``module:function`` (a user's code) rather than a built-in name."""
    return ":" in name


def _import(name: str) -> Any:
    module, _, attribute = name.partition(":")
    if not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(attribute):
        raise CommandError(
            f"--target {name}: expected a built-in name (see 'exactflow list') or"
            " module:function, e.g. mytargets:log_density"
        )
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        value: Any = importlib.import_module(module)
    except Exception as e:
        raise CommandError(f"--target {name}: cannot import {module}: {one_line(e)}") from None
    finally:
        if added:
            sys.path.remove(here)
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CommandError(f"--target {name}: {module} has no {attribute!r}") from None
    return value


def _check(target: Target, label: str, dtype: torch.dtype) -> None:
    """Call the target once on a batch of two points: it must return two finite-or-not values."""
    z = torch.zeros(2, target.dim, dtype=dtype)
    try:
        value = target(z)
    except Exception as e:
        raise CommandError(
            f"--target {label}: calling it on a batch of shape (2, {target.dim}) failed:"
            f" {one_line(e)}"
        ) from None
    if not isinstance(value, Tensor) or tuple(value.shape) != (2,):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CommandError(
            f"--target {label}: must map z of shape (N, {target.dim}) to log densities of shape"
            f" (N,), got {got} for N=2"
        )


def from_command_line(name: str, dim: int | None, dtype: torch.dtype) -> Target:
    """The target the user named (``--target``), of width ``--dim`` where it takes one."""
    if is_user(name):
        value = _import(name)
        if isinstance(value, Target):
            if dim is not None and dim != value.dim:
                raise CommandError(f"--dim {dim}: {name} is a {value.dim}-D target")
            target = value
        elif callable(value):
            if dim is None:
                raise CommandError(
                    f"--target {name}: a function's dimension must be given with --dim D"
                )
            target = UserTarget(name, value, dim)
        else:
            raise CommandError(
                f"--target {name}: expected a function z -> log p(z), got {type(value).__name__}"
            )
    else:
        target = _builtin(name, {} if dim is None else {"dim": dim}, f"--target {name}")
    _check(target, name, dtype)
    return target


def _builtin(name: str, options: dict[str, Any], label: str) -> Target:
    known = targets.names()
    if name not in known:
        raise CommandError(f"{label}: unknown target; expected one of {known} or module:function")
    try:
        return targets.get(name, **options)
    except (TypeError, ValueError) as e:
        where = " with --dim" if "dim" in options else ""
        raise CommandError(f"{label}{where}: {one_line(e)}") from None
    except ImportError as e:
        raise CommandError(f"{label}: {one_line(e)}") from None


def record_of(target: Target, name: str, dim: int | None) -> dict[str, Any]:
    """How ``run.json`` notes a target: its name, options and dimension (no code)."""
    options = {} if is_user(name) else dict(target.options)
    if not is_user(name) and dim is not None:
        options["dim"] = dim
    return {"name": name, "options": options, "dim": target.dim}


def of_run(
    recorded: dict[str, Any], given: str | None, dim: int | None, run: Path, dtype: torch.dtype
) -> Target:
    """The target of a (checked) run record; a user's function only if named again (``given``)."""
    name = recorded["name"]
    if given is not None and given != name:
        raise CommandError(f"--target {given}: the run in {run} was trained against {name}")
    if dim is not None and dim != recorded["dim"]:
        raise CommandError(f"--dim {dim}: the run in {run} has a {recorded['dim']}-D target")
    if is_user(name):
        if given is None:
            raise CommandError(
                f"the run in {run} was trained against the user function {name}, which is never"
                f" imported from a run record: name it again with --target {name}"
            )
        target = from_command_line(name, recorded["dim"], dtype)
    else:
        target = _builtin(name, dict(recorded["options"]), f"{run / 'run.json'}: target {name}")
        _check(target, name, dtype)
    if target.dim != recorded["dim"]:
        raise CommandError(
            f"{run / 'run.json'}: target.dim is {recorded['dim']} but {name} is {target.dim}-D"
        )
    return target
