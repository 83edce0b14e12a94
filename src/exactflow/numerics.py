"""Numerics shared by the transforms: trace detection, root finding, log-det estimators.

Everything here sits below the transforms: it imports nothing else from exactflow.
"""

from __future__ import annotations

import torch

__all__ = ["tracing"]


def tracing() -> bool:
    """Whether the code runs under a tracer: ``torch.compile``, ``torch.export``, ``vmap``/``grad``.

    Host-side checks (``bool(tensor)``, ``.item()``, data-dependent Python branches) break these
    tracers, so validation and convergence checks are skipped while this is true; code that
    iterates to a tolerance runs its full iteration budget instead of stopping early.

    Example:
        >>> import torch, exactflow as ef
        >>> ef.numerics.tracing()
        False
        >>> torch.func.vmap(lambda x: torch.tensor(ef.numerics.tracing()) + 0 * x)(torch.zeros(2))
        tensor([1., 1.])

    """
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch._C._functorch.peek_interpreter_stack() is not None
    )
