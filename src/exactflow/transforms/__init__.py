"""Invertible transforms, one file per family; all share the protocol in :mod:`.base`."""

from . import (
    autoregressive,
    base,
    bnaf,
    bounds,
    circular,
    continuous,
    conv_residual,
    coupling,
    elementwise,
    image,
    linear,
    monotonic,
    normalization,
    recompute,
    residual,
    shape,
    splines,
    sylvester,
    torus,
    umnn,
    variational,
)
from .autoregressive import *  # noqa: F403
from .base import *  # noqa: F403
from .bnaf import *  # noqa: F403
from .bounds import *  # noqa: F403
from .circular import *  # noqa: F403
from .continuous import *  # noqa: F403
from .conv_residual import *  # noqa: F403
from .coupling import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .image import *  # noqa: F403
from .linear import *  # noqa: F403
from .monotonic import *  # noqa: F403
from .normalization import *  # noqa: F403
from .recompute import *  # noqa: F403
from .residual import *  # noqa: F403
from .shape import *  # noqa: F403
from .splines import *  # noqa: F403
from .sylvester import *  # noqa: F403
from .torus import *  # noqa: F403
from .umnn import *  # noqa: F403
from .variational import *  # noqa: F403

__all__ = [
    *base.__all__,
    *shape.__all__,
    *image.__all__,
    *elementwise.__all__,
    *bounds.__all__,
    *linear.__all__,
    *normalization.__all__,
    *recompute.__all__,
    *residual.__all__,
    *conv_residual.__all__,
    *continuous.__all__,
    *variational.__all__,
    *sylvester.__all__,
    *splines.__all__,
    *circular.__all__,
    *monotonic.__all__,
    *umnn.__all__,
    *bnaf.__all__,
    *coupling.__all__,
    *autoregressive.__all__,
    *torus.__all__,
]
