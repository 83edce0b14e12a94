"""Conditioner networks: the neural networks that predict a transform's parameters.

Every conditioner takes ``(x, context=None)``; a network built with ``context=C > 0`` needs a
context of shape ``(*, C)``, which broadcasts against ``x``'s leading dimensions.
"""

from . import made, mlp
from .made import *  # noqa: F403
from .mlp import *  # noqa: F403

__all__ = [*mlp.__all__, *made.__all__]
