"""Conditioner networks: the neural networks that predict a transform's parameters.

Every conditioner takes ``(x, context=None)``; a network built with ``context=C > 0`` needs a
context of shape ``(*, C)``, which broadcasts against ``x``'s leading dimensions. Vectors
``(*, D)`` go to :class:`MLP`/:class:`ResidualMLP`/:class:`MADE`, images ``(*, C, H, W)`` to
:class:`ConvNet`. Context embeddings (:class:`MLPEmbedding`, :class:`ConvEmbedding`,
:class:`SetEmbedding`) map a raw context to the vector a conditional flow reads.
"""

from . import conv, embeddings, lipschitz, made, mlp
from .conv import *  # noqa: F403
from .embeddings import *  # noqa: F403
from .lipschitz import *  # noqa: F403
from .made import *  # noqa: F403
from .mlp import *  # noqa: F403

__all__ = [*mlp.__all__, *made.__all__, *conv.__all__, *lipschitz.__all__, *embeddings.__all__]
