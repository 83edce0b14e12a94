"""Presets: ready-made flows assembled from the transforms, one file per family.

Every preset takes the same keywords: ``features`` (data width; image presets take
``shape=(C, H, W)`` and ``levels``/``steps`` instead), ``context`` (context width,
0 for none), ``transforms`` (number of steps), ``hidden`` (conditioner hidden widths) and
``validate`` (check inputs of direct calls), the keyword-only ``bounds`` (bounded columns) and
``embedding`` (a module from the raw context to the context vector), plus its own (``bins`` for
splines, ...). Each returns an :class:`exactflow.Flow`.
"""

from . import (
    autoregressive,
    continuous,
    coupling,
    image,
    neural,
    residual,
    splines,
    variational,
)
from .autoregressive import *  # noqa: F403
from .continuous import *  # noqa: F403
from .coupling import *  # noqa: F403
from .image import *  # noqa: F403
from .neural import *  # noqa: F403
from .residual import *  # noqa: F403
from .splines import *  # noqa: F403
from .variational import *  # noqa: F403

__all__ = [
    *coupling.__all__,
    *autoregressive.__all__,
    *splines.__all__,
    *variational.__all__,
    *image.__all__,
    *residual.__all__,
    *neural.__all__,
    *continuous.__all__,
]
