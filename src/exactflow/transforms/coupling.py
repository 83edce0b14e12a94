"""Coupling transforms: part of the event parametrizes an elementwise map of the rest.

A coupling layer splits ``x`` by a mask into an identity part ``x_A`` and a transformed part
``x_B``:

    y_A = x_A,    y_B = f(x_B; θ(x_A, c)),    log|det ∂y/∂x| = Σ_{i∈B} log|f'(x_i; θ_i)|

The Jacobian is triangular, and the inverse needs one conditioner pass too, because ``θ``
depends only on the part that passes through unchanged (NICE, Dinh et al. 2014; RealNVP,
Dinh et al. 2017; neural spline flows, Durkan et al. 2019). Any
:class:`~exactflow.transforms.ElementwiseMap` can be ``f`` and any network the conditioner;
events may be vectors ``(D,)`` or images ``(C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import MLP, ConvNet, ResidualMLP, zero_output
from .base import Transform
from .elementwise import ElementwiseMap

__all__ = ["Coupling"]

VECTOR_MASKS = ("half", "alternating", "random")
IMAGE_MASKS = ("channel", "checkerboard")


def coupling_mask(shape: int | Sequence[int], kind: str | Tensor = "half", seed: int = 0) -> Tensor:
    """Boolean mask (the event's shape) of the entries a coupling layer transforms.

    Args:
        shape: The event shape, ``D`` or ``(D,)`` for vectors, ``(C, H, W)`` for images.
        kind: For vectors: ``"half"`` (the last ``⌈D/2⌉``), ``"alternating"`` (the odd
            indices), ``"random"`` (a random ``⌊D/2⌋`` of them, from ``seed``). For images:
            ``"channel"`` (the last ``⌈C/2⌉`` channels), ``"checkerboard"`` (the pixels with
            ``h + w`` odd, in every channel). Or a boolean tensor of the event's shape
            (returned as is).
        seed: Seed of the random mask.

    Example:
        >>> import exactflow as ef
        >>> ef.transforms.coupling.coupling_mask((1, 2, 3), "checkerboard")
        tensor([[[False,  True, False],
                 [ True, False,  True]]])

    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if isinstance(kind, Tensor):
        return kind.bool()
    if kind in VECTOR_MASKS and len(shape) != 1:
        raise ValueError(f"mask {kind!r} needs vector events (D,), got event shape {shape}")
    if kind in IMAGE_MASKS and len(shape) != 3:
        raise ValueError(f"mask {kind!r} needs image events (C, H, W), got event shape {shape}")
    index = torch.arange(shape[0])
    if kind == "half":
        return index >= shape[0] // 2
    if kind == "alternating":
        return index % 2 == 1
    if kind == "random":
        chosen = torch.randperm(shape[0], generator=torch.Generator().manual_seed(seed))
        return torch.isin(index, chosen[: shape[0] // 2])
    if kind == "channel":
        return (index >= shape[0] // 2)[:, None, None].expand(shape).clone()
    if kind == "checkerboard":
        h, w = torch.arange(shape[1])[:, None], torch.arange(shape[2])
        return ((h + w) % 2 == 1).expand(shape).clone()
    raise ValueError(
        f"mask must be one of {VECTOR_MASKS + IMAGE_MASKS} or a boolean tensor, got {kind!r}"
    )


def _event_shape(
    features: int | None, shape: Sequence[int] | None, mask: str | Tensor
) -> tuple[int, ...]:
    """The event shape from ``features=``, ``shape=`` or a mask tensor (which must agree)."""
    if features is not None and shape is not None:
        raise ValueError(
            f"Coupling: give features= (vectors) or shape= (images), not both; got {features}"
            f" and {tuple(shape)}"
        )
    event = (features,) if features is not None else None if shape is None else tuple(shape)
    if isinstance(mask, Tensor):
        if event is not None and tuple(mask.shape) != event:
            raise ValueError(f"Coupling: mask must have shape {event}, got {tuple(mask.shape)}")
        event = tuple(mask.shape)
    if event is None:
        raise ValueError(
            "Coupling: the event shape is unknown; give features= (vectors), shape= (images)"
            " or a boolean mask tensor"
        )
    return event


def _span(index: Tensor) -> tuple[int, int] | None:
    """``(start, stop)`` when ``index`` is the range ``start, start + 1, ..., stop - 1``."""
    if len(index) == 0:
        return None
    start, stop = int(index[0]), int(index[-1]) + 1
    return (start, stop) if stop - start == len(index) and bool((index.diff() == 1).all()) else None


class Coupling(Transform):
    """Coupling layer with any elementwise map, any mask and any conditioner network.

    ``y_B = f(x_B; θ)``, ``θ = conditioner(kept, c)``, ``y_A = x_A``, and
    ``log|det J| = Σ_{i∈B} log|f'(x_i; θ_i)|``. One conditioner pass in each direction.

    **The conditioner's contract.** ``conditioner(kept, context)`` (``context`` is ``None``
    for ``context=0``) returns the map's ``P = map.params`` parameters of the transformed
    entries, stacked along the event's first axis:

    * when the mask splits the event's first axis (every vector mask; ``"channel"``),
      ``kept`` is the identity rows ``(*, D_A)`` / channels ``(*, C_A, H, W)``, and the output
      is ``(*, D_B · P)`` / ``(*, C_B · P, H, W)`` (transformed row-major, ``P`` fastest);
    * otherwise (``"checkerboard"``, any elementwise mask), ``kept`` is ``x`` with its
      transformed entries zeroed, ``(*, C, H, W)``, and the output is ``(*, C · P, H, W)``;
      the entries the mask keeps ignore their parameters.

    The default conditioner is an :class:`~exactflow.nn.MLP` (or
    :class:`~exactflow.nn.ResidualMLP`) from ``hidden`` for vectors and an
    :class:`~exactflow.nn.ConvNet` for images; its output layer starts at zero weights with the
    bias at ``map.identity()`` (:func:`~exactflow.nn.zero_output`), so the layer starts as the
    identity map. A conditioner you pass is used as is: call ``zero_output`` on its last layer
    for the same start.

    Args:
        map: The elementwise map ``f`` (``Additive``, ``AffineMap``, a spline, ...).
        mask: Which entries are transformed: ``"half"``, ``"alternating"``, ``"random"`` for
            vectors, ``"channel"``, ``"checkerboard"`` for images (see
            :func:`coupling_mask`), or a boolean tensor of the event's shape (``True``:
            transformed). Both parts must be non-empty.
        conditioner: The network ``(kept, context) -> θ`` (``None``: the default).
        hidden: Hidden widths of the default conditioner. Vectors: the MLP's widths, or with
            ``residual=True`` ``len(hidden)`` residual blocks of width ``hidden[0]``. Images:
            ``len(hidden)`` residual blocks of ``hidden[0]`` channels (an int: one block).
        context: Width ``C`` of the context the conditioner also reads (0: none).
        features: Vector events ``(D,)``: their width ``D`` (at least 2).
        shape: Image events (or any other shape): ``(C, H, W)``.
        residual: Vectors: a :class:`~exactflow.nn.ResidualMLP` conditioner instead of an MLP
            (image conditioners are residual networks already).
        seed: Seed of the ``"random"`` mask.

    Shapes: ``x (*, *event)``, ``context (*, C)`` ``-> y (*, *event)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> layer = T.Coupling(T.AffineMap(), features=4, mask="alternating", hidden=(32,))
        >>> y, ladj = layer(torch.randn(10, 4))
        >>> image = T.Coupling(T.AffineMap(), "checkerboard", shape=(2, 4, 4), hidden=16)
        >>> y, ladj = image(torch.randn(10, 2, 4, 4))
        >>> y.shape, ladj.shape
        (torch.Size([10, 2, 4, 4]), torch.Size([10]))

    """

    def __init__(
        self,
        map: ElementwiseMap,
        mask: str | Tensor = "half",
        conditioner: nn.Module | None = None,
        hidden: Sequence[int] | int = (64, 64),
        context: int = 0,
        *,
        features: int | None = None,
        shape: Sequence[int] | None = None,
        residual: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(map, ElementwiseMap):
            raise TypeError(f"Coupling: map must be an ElementwiseMap, got {type(map).__name__}")
        if conditioner is not None and not isinstance(conditioner, nn.Module):
            raise TypeError(
                f"Coupling: conditioner must be an nn.Module, got {type(conditioner).__name__}"
            )
        if not isinstance(mask, str | Tensor):
            hint = f"features={mask}" if isinstance(mask, int) else "features= or shape="
            raise TypeError(
                f"Coupling: mask must be a string or a boolean tensor, got {mask!r}; give the"
                f" event's width or shape by keyword ({hint})"
            )
        event = _event_shape(features, shape, mask)
        transformed = coupling_mask(event, mask, seed)
        n_transformed, size = int(transformed.sum()), transformed.numel()
        if not 0 < n_transformed < size:
            raise ValueError(
                f"Coupling: the mask must transform some but not all of the {size} entries,"
                f" got {n_transformed} transformed"
            )
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        if (residual or len(event) > 1) and conditioner is None and len(set(hidden)) != 1:
            raise ValueError(
                f"Coupling: residual conditioners need equal hidden widths, got {hidden}"
            )
        self.map = map
        self.event_shape = torch.Size(event)
        self.event_ndim = len(event)
        self.features = size
        self.context = context
        # Split along the first axis when the mask is constant over the other ones.
        rows = transformed.flatten(1)[:, 0] if len(event) > 1 else transformed
        self.split = bool((transformed == rows.view(-1, *[1] * (len(event) - 1))).all())
        # Rows of the first axis the conditioner outputs parameters for.
        self._rows = int(rows.sum()) if self.split else event[0]
        n_in = int((~rows).sum()) if self.split else event[0]
        n_out = self._rows * map.params
        if conditioner is None:
            conditioner = self._default(n_in, n_out, hidden, residual)
            zero_output(conditioner.output, map.identity())
        self.net = conditioner
        self.register_buffer("identity_index", (~transformed).flatten().nonzero().flatten())
        self.register_buffer("transformed_index", transformed.flatten().nonzero().flatten())
        # Derived from the mask like the two above, but not saved: v1 files hold only those.
        self.register_buffer("identity_rows", (~rows).nonzero().flatten(), persistent=False)
        self.register_buffer("keep", (~transformed).float(), persistent=False)
        # Contiguous parts (the "half" and "channel" masks) are sliced instead of gathered.
        self._span = _span(self.transformed_index)
        self._kept_rows = _span(self.identity_rows) if self.split else None

    def _default(self, n_in: int, n_out: int, hidden: tuple[int, ...], residual: bool) -> nn.Module:
        event = tuple(self.event_shape)
        if len(event) == 1:
            if residual:
                return ResidualMLP(n_in, n_out, hidden[0], len(hidden), context=self.context)
            return MLP(n_in, n_out, hidden, context=self.context)
        if len(event) == 3:
            return ConvNet(n_in, n_out, hidden[0], len(hidden), context=self.context)
        raise ValueError(
            f"Coupling: no default conditioner for events of shape {event}; pass conditioner="
        )

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        """The map's parameters ``(*, |B|, P)`` from the kept part of ``x``."""
        n, p = self.event_ndim, self.map.params
        context = context if self.context else None
        if n == 1:  # vectors: the common case, with no reshaping beyond the parameter split
            out = self.net(x.index_select(-1, self.identity_index), context)
            if out.dim() < 1 or out.shape[-1] != self._rows * p:
                self._wrong_output(out, (self._rows * p,))
            return out.unflatten(-1, (self._rows, p))
        if self._kept_rows is not None:
            kept = x.narrow(-n, self._kept_rows[0], self._kept_rows[1] - self._kept_rows[0])
        else:
            kept = x.index_select(-n, self.identity_rows) if self.split else x * self.keep
        out = self.net(kept, context)
        expected = (self._rows * p, *self.event_shape[1:])
        if out.dim() < n or tuple(out.shape[out.dim() - n :]) != expected:
            self._wrong_output(out, expected)
        theta = out.unflatten(-n, (self._rows, p)).movedim(-n, -1)  # (*, rows, *rest, P)
        theta = theta.flatten(-n - 1, -2)  # (*, rows · ∏rest, P)
        return theta if self.split else theta.index_select(-2, self.transformed_index)

    @staticmethod
    def _wrong_output(out: Tensor, expected: tuple[int, ...]) -> None:
        raise ValueError(
            f"Coupling: the conditioner must return (*, {', '.join(str(k) for k in expected)}),"
            f" got {tuple(out.shape)}"
        )

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self._params(x, context)
        flat = x if self.event_ndim == 1 else x.flatten(x.dim() - self.event_ndim)  # (*, N)
        span = self._span
        if span is not None:
            part = flat[..., span[0] : span[1]]
        else:
            part = flat.index_select(-1, self.transformed_index)
        step = self.map.inverse if inverse else self.map.forward
        new, log_slope = step(part, params)
        if new.shape[:-1] != flat.shape[:-1]:  # a context with more batch dimensions than x
            flat = flat.expand(*new.shape[:-1], flat.shape[-1])
        if span is not None:
            out = torch.cat((flat[..., : span[0]], new, flat[..., span[1] :]), dim=-1)
        else:
            out = flat.index_copy(-1, self.transformed_index, new)
        if self.event_ndim > 1:
            out = out.unflatten(-1, self.event_shape)
        return out, log_slope.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)
