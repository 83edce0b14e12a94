"""exactflow: normalizing flows with exact densities.

Example:
    >>> import torch, exactflow as ef
    >>> T = ef.transforms
    >>> flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
    >>> flow.log_prob(torch.zeros(1, 2)).shape
    torch.Size([1])

"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import (
        checkpoint,
        data,
        distributions,
        flow,
        flows,
        metrics,
        models,
        nn,
        objectives,
        plot,
        registry,
        targets,
        train,
        transforms,
    )
    from .flow import Flow

__all__ = [
    "Flow",
    "checkpoint",
    "data",
    "distributions",
    "flow",
    "flows",
    "metrics",
    "models",
    "nn",
    "objectives",
    "plot",
    "registry",
    "targets",
    "train",
    "transforms",
]
__version__ = "0.2.0"  # the package version (pyproject.toml reads it from here)


def __getattr__(name: str) -> Any:
    """Import a submodule on first use: ``import exactflow`` stays fast and imports no torch.

    The command line relies on it: a Ctrl-C while torch loads reaches its own handler (one line,
    exit code 130) instead of interrupting the package's import with a traceback.
    """
    if name == "Flow":
        return importlib.import_module(".flow", __name__).Flow
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
