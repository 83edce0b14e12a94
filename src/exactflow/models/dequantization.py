"""Dequantization: a flow's density on ``[0, 1)^D`` as a likelihood of quantized pixels.

Pixels are integers ``k ∈ 0..L-1``; a flow has a density on continuous ``x ∈ [0, 1)^D``. The
probability the flow gives to the bin of ``k`` is

    P(k) = ∫_{[0,1)^D} p((k + u)/L) L^{-D} du,

and for any dequantization density ``q(u | k)`` on ``[0, 1)^D`` Jensen's inequality gives the
**dequantization bound** (Theis et al. 2016; Ho et al. 2019, Flow++)

    log P(k) ≥ E_{u~q}[log p((k + u)/L) - D log L - log q(u | k)].

:class:`Dequantized` is a :class:`~exactflow.models.LatentVariableModel` whose latent variable
is the noise ``u``: its importance log-weights are the term in brackets, so its ELBO is the
bound and its importance-weighted estimate ``log (1/n) Σ_j w_j`` approaches ``log P(k)``.
Uniform dequantization takes ``q = U[0, 1)^D`` (``log q = 0``); variational dequantization
learns ``q`` as a conditional flow, trained jointly with ``p``, which tightens the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data import integer_pixels
from ..data.checks import count
from ..distributions import StandardNormal
from ..flow import Flow, placement
from ..nn import MLP, ConvNet, zero_output
from ..transforms import AffineMap, Compose, Coupling, Logit
from ..transforms.coupling import coupling_mask
from .base import LatentVariableModel

__all__ = ["DEQUANTIZERS", "Dequantized", "UniformDequantizer", "VariationalDequantizer"]

DEQUANTIZERS = ("uniform", "variational")
"""The names of the dequantization densities :class:`Dequantized` takes."""

_PREFIX = "flow_"


class UniformDequantizer(nn.Module):
    """Uniform dequantization noise ``u ~ U[0, 1)^D``, ``log q(u) = 0``, drawn afresh each call.

    Args:
        shape: The event shape (``(D,)`` or ``(C, H, W)``).

    Shapes: ``x (B, *event)`` ``-> u (k, B, *event), log q (k, B)``.

    Example:
        >>> import torch
        >>> from exactflow.models.dequantization import UniformDequantizer
        >>> u, log_q = UniformDequantizer((1, 2, 2))(torch.zeros(3, 1, 2, 2), k=5)
        >>> u.shape, log_q.abs().sum().item()
        (torch.Size([5, 3, 1, 2, 2]), 0.0)

    """

    context = 0  # reads no context

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = torch.Size(shape)

    def forward(
        self, x: Tensor, k: int = 1, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``k`` draws of ``u`` per row of ``x`` and their log density (zero)."""
        batch = x.shape[: x.dim() - len(self.event_shape)]
        u = torch.rand((k, *x.shape), dtype=x.dtype, device=x.device)
        return u, x.new_zeros((k, *batch))


class _FeatureConditioner(nn.Module):
    """Coupling conditioner that reads the kept part and a feature map of ``x``, as channels.

    ``(kept (*, C_in, H, W), features (B, F, H, W)) -> (*, C_out, H, W)``: the two are stacked
    along the channels (the batch dimensions broadcast) and passed through a
    :class:`~exactflow.nn.ConvNet` whose output layer starts at zero (the identity map).
    """

    def __init__(self, in_channels: int, out_channels: int, features: int, hidden: int) -> None:
        super().__init__()
        self.net = ConvNet(in_channels + features, out_channels, hidden, blocks=1)
        zero_output(self.net.output, AffineMap().identity())

    def forward(self, kept: Tensor, features: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(kept.shape[:-3], features.shape[:-3])
        kept = kept.expand(*batch, *kept.shape[-3:])
        features = features.expand(*batch, *features.shape[-3:])
        return self.net(torch.cat((kept, features), dim=-3))


def _image_masks(shape: torch.Size, steps: int) -> list[Tensor]:
    """Transformed entries of each step: checkerboard, channel and their complements in turn."""
    board = coupling_mask(shape, "checkerboard")
    cycle = [board, ~board]
    if shape[0] > 1:
        channel = coupling_mask(shape, "channel")
        cycle = [board, channel, ~board, ~channel]
    return [cycle[i % len(cycle)] for i in range(steps)]


def _channels(mask: Tensor, params: int) -> tuple[int, int]:
    """Input and output channels of a conditioner for ``mask`` (the split rule of ``Coupling``)."""
    rows = mask[:, 0, 0]
    if bool((mask == rows[:, None, None]).all()):  # whole channels: only the kept ones are read
        return int((~rows).sum()), int(rows.sum()) * params
    return mask.shape[0], mask.shape[0] * params


class VariationalDequantizer(nn.Module):
    """A learned dequantization density ``q(u | x)``: a conditional flow onto ``(0, 1)^D``.

    ``ε ~ N(0, I)`` of the event's shape, ``u = σ(T⁻¹(ε; h))`` with ``T`` ``steps`` affine
    couplings and ``h`` features of the quantized ``x`` computed once per batch, so

        log q(u | x) = log N(ε) - log|det ∂u/∂ε|
                     = log N(ε) - log|det ∂T⁻¹/∂ε| - Σ_i [log σ(v_i) + log σ(-v_i)],  v = T⁻¹(ε)

    (Flow++, Ho et al. 2019). Images ``(C, H, W)``: ``h`` is a :class:`~exactflow.nn.ConvNet`
    feature map ``(hidden, H, W)`` of ``2x - 1`` stacked onto each conditioner's input
    channels; the masks alternate checkerboard, channel and their complements (checkerboard
    only for ``C = 1``). Vectors ``(D,)``: ``h`` is an :class:`~exactflow.nn.MLP` feature vector
    ``(hidden,)``, read by MLP conditioners with alternating masks. Every conditioner starts at
    zero output, so ``T`` starts as the identity and ``q`` as ``u = σ(ε)`` per entry, a
    logit-normal that is not uniform: at the start ``E_q[log q] ≈ 0.193`` nats per entry (its KL
    from the uniform), which training soon recovers.

    Args:
        shape: The event shape, ``(D,)`` with ``D >= 2`` or ``(C, H, W)`` with ``H·W >= 2``.
        steps: Number of coupling steps.
        hidden: Width of the feature map and of the conditioners.
        context: Width of a context vector (a one-hot label) the features also read (0: none).

    Shapes: ``x (B, *event)``, ``context (B, K)`` ``-> u (k, B, *event), log q (k, B)``.

    Example:
        >>> import torch
        >>> from exactflow.models.dequantization import VariationalDequantizer
        >>> q = VariationalDequantizer((1, 4, 4), steps=2, hidden=8)
        >>> u, log_q = q(torch.zeros(3, 1, 4, 4), k=2)
        >>> u.shape, log_q.shape, bool(((u > 0) & (u < 1)).all())
        (torch.Size([2, 3, 1, 4, 4]), torch.Size([2, 3]), True)

    """

    def __init__(
        self, shape: Sequence[int], steps: int = 4, hidden: int = 32, context: int = 0
    ) -> None:
        super().__init__()
        shape = torch.Size(shape)
        if (
            len(shape) not in (1, 3)
            or shape.numel() < 2
            or (len(shape) == 3 and shape[1:].numel() < 2)
        ):
            raise ValueError(
                "variational dequantization needs events (D,) with D >= 2 or (C, H, W) with"
                f" H·W >= 2, got {tuple(shape)}"
            )
        count("VariationalDequantizer: steps", steps, 1)
        count("VariationalDequantizer: hidden", hidden, 1)
        self.context = count("VariationalDequantizer: context", context, 0)
        self.event_shape = shape
        n = len(shape)
        if n == 3:
            self.features = ConvNet(shape[0], hidden, hidden, blocks=1, context=context)
            layers = [
                Coupling(
                    AffineMap(),
                    mask,
                    conditioner=_FeatureConditioner(
                        *_channels(mask, AffineMap.params), hidden, hidden
                    ),
                    context=hidden,
                    shape=shape,
                )
                for mask in _image_masks(shape, steps)
            ]
        else:
            self.features = MLP(shape[0], hidden, (hidden,), context=context)
            index = torch.arange(shape[0])
            layers = [
                Coupling(AffineMap(), index % 2 == i % 2, hidden=(hidden,), context=hidden)
                for i in range(steps)
            ]
        # Normalizing direction u -> v = logit(u) -> ε; q draws through the inverse.
        self.transform = Compose([Logit(0.0, event_ndim=n), *layers])
        self.noise = StandardNormal(shape)

    def forward(
        self, x: Tensor, k: int = 1, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``k`` reparameterized draws ``u ~ q(u | x)`` per row and their log density."""
        batch = x.shape[: x.dim() - len(self.event_shape)]
        h = self.features(2 * x - 1, context if self.context else None)  # (B, hidden[, H, W])
        eps = self.noise.rsample((k, *batch))  # (k, B, *event)
        u, ladj = self.transform.inverse(eps, h)
        return u, self.noise.log_prob(eps) - ladj


class Dequantized(LatentVariableModel):
    """A flow over ``[0, 1)^D`` as a model of quantized data ``x = k/L``, ``k ∈ 0..L-1``.

    The importance log-weights of ``n`` draws ``u_j ~ q(u | x)`` per row are

        log w_j = log p_flow((k + u_j)/L) - D log L - log q(u_j | x),

    so :meth:`elbo` is the dequantization bound on ``log P(k)`` and :meth:`log_marginal` the
    importance-weighted estimate of it (Theis et al. 2016; Ho et al. 2019). Both are already on
    the integer scale of the pixels: their bits per dimension are ``-value / (D log 2)``, the
    same as :func:`exactflow.data.bits_per_dim` of the flow's NLL of ``(k + u)/L``; report the
    ELBO's as a bound and the estimate's as an estimate. Train with ``ef.objectives.ELBO()`` or
    ``IWAE(n)`` on the quantized data; the noise is drawn afresh in every batch.

    ``q`` is ``"uniform"`` (``U[0, 1)^D``, ``log q = 0``) or ``"variational"`` (a
    :class:`VariationalDequantizer`, a conditional flow trained jointly with the model). With
    the variational ``q`` the importance weights ``p/q`` can be heavy-tailed near the edges of
    a bin (``q`` vanishes there, ``p`` need not), so the estimate's standard error may
    understate its error; the ELBO is a bound whatever ``q`` is.

    The flow is a :class:`~exactflow.Flow` instance or a registered preset's name with its
    keywords prefixed ``flow_`` (``Dequantized("Glow", flow_shape=[1, 8, 8], flow_levels=1)``):
    :attr:`config` records it that way, so a checkpoint rebuilds the model by name. A
    hand-built flow has no name: :attr:`config` is then ``None``, and checkpoints load only into
    a model passed to :func:`exactflow.checkpoint.load`.

    Args:
        flow: The flow over ``[0, 1)^D``, events ``(C, H, W)`` or ``(D,)``, or a preset's name.
        levels: Number of quantization levels ``L`` (256 for 8-bit pixels).
        dequantizer: ``"uniform"`` or ``"variational"``.
        steps: Coupling steps of the variational ``q``.
        hidden: Width of the variational ``q``'s networks.
        context: ``0``, or the flow's context width ``K``: then ``q`` reads the context too.
        **flow_kwargs: With a preset's name: its keywords, each prefixed ``flow_``.

    Example:
        >>> import torch, exactflow as ef
        >>> model = ef.models.Dequantized("RealNVP", levels=4, dequantizer="variational",
        ...                               steps=2, hidden=8, flow_features=3,
        ...                               flow_transforms=2, flow_hidden=[8])
        >>> x = torch.randint(0, 4, (5, 3)) / 4
        >>> model.log_weights(x, k=2).shape
        torch.Size([2, 5])
        >>> model.sample(4).mul(4).frac().abs().sum().item()
        0.0
        >>> ef.registry.spec_of(model)["kwargs"]["flow"]
        'RealNVP'

    """

    def __init__(
        self,
        flow: Flow | str,
        levels: int = 256,
        dequantizer: str = "uniform",
        steps: int = 4,
        hidden: int = 32,
        context: int = 0,
        **flow_kwargs: object,
    ) -> None:
        super().__init__()
        from .. import registry  # the registry imports this package: look it up at call time

        flow = self._flow(registry, flow, flow_kwargs)
        self.levels = count("Dequantized: levels", levels, 2)
        if dequantizer not in DEQUANTIZERS:
            raise ValueError(
                f"Dequantized: dequantizer must be one of {DEQUANTIZERS}, got {dequantizer!r}"
            )
        count("Dequantized: context", context, 0)
        if context not in (0, flow.context):
            raise ValueError(
                f"Dequantized: context must be 0 or the flow's context width {flow.context},"
                f" got {context!r}"
            )
        self.flow = flow
        if dequantizer == "uniform":
            self.dequantizer = UniformDequantizer(flow.event_shape)
        else:
            q = VariationalDequantizer(flow.event_shape, steps, hidden, context)
            dtype, device = placement(flow)
            self.dequantizer = q.to(dtype=dtype, device=device)  # where the flow is
        spec = registry.spec_of(flow)
        # A hand-built flow has no name: None tells the registry this model cannot be rebuilt.
        self.config: dict | None = None
        if spec is not None:
            self.config = {
                "flow": spec["name"],
                **{_PREFIX + key: value for key, value in spec["kwargs"].items()},
                "levels": levels,
                "dequantizer": dequantizer,
                "steps": steps,
                "hidden": hidden,
                "context": context,
            }

    @staticmethod
    def _flow(registry: object, flow: Flow | str, kwargs: dict[str, object]) -> Flow:
        """The flow itself, or the preset ``flow`` built from the ``flow_`` keywords."""
        unknown = sorted(key for key in kwargs if not key.startswith(_PREFIX))
        if unknown:
            raise TypeError(
                f"Dequantized: unexpected keyword(s) {unknown}; a flow preset's keywords take"
                f" the prefix {_PREFIX!r}"
            )
        if isinstance(flow, Flow):
            if kwargs:
                raise TypeError(
                    f"Dequantized: flow_ keywords {sorted(kwargs)} apply to a preset's name, not"
                    " to a Flow instance"
                )
            return flow
        if not isinstance(flow, str):
            raise TypeError(
                f"Dequantized: flow must be an exactflow.Flow or a preset's name, got"
                f" {type(flow).__name__}"
            )
        built = registry.build(
            {"name": flow, "kwargs": {key[len(_PREFIX) :]: v for key, v in kwargs.items()}}
        )
        if not isinstance(built, Flow):
            raise TypeError(f"Dequantized: {flow!r} builds a {type(built).__name__}, not a Flow")
        return built

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one data point: the flow's."""
        return self.flow.event_shape

    @property
    def context(self) -> int:
        """Context width the flow is conditioned on (0: unconditional)."""
        return self.flow.context

    def log_weights(self, x: Tensor, k: int = 1, context: Tensor | None = None) -> Tensor:
        """``log p((k + u_j)/L) - D log L - log q(u_j | x)`` for ``k`` draws per row: ``(k, B)``.

        Example:
            >>> import torch, exactflow as ef
            >>> model = ef.models.Dequantized(ef.flows.MAF(features=2, transforms=1), levels=2)
            >>> model.log_weights(torch.tensor([[0.0, 0.5]]), k=3).shape
            torch.Size([3, 1])

        """
        levels = self.levels
        pixels = torch.round(x * levels)  # the integers k, (B, *event)
        u, log_q = self.dequantizer(x, k, context if self.dequantizer.context else None)
        y = (pixels + u) / levels  # (k, B, *event)
        # k + u may round up to k + 1 in floating point: keep the top bin below 1.
        below_one = torch.nextafter(y.new_ones(()), y.new_zeros(()))
        y = torch.minimum(y, below_one)
        log_p = self.flow.log_prob(y, context)
        return log_p - self.event_shape.numel() * math.log(levels) - log_q

    def check_data(self, x: Tensor, context: Tensor | None, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``x (N, *event)`` holds quantized values ``k/L``.

        ``k`` must be an integer in ``0..L-1`` (:func:`exactflow.data.integer_pixels`); the
        first other value is named with its index. A conditional flow needs a context ``(N, K)``.
        """
        self.check_rows(x, name)
        if self.context == 0 and context is not None:
            raise ValueError(f"the flow is unconditional but {name} comes with a context")
        if self.context and (context is None or tuple(context.shape) != (len(x), self.context)):
            got = None if context is None else tuple(context.shape)
            raise ValueError(
                f"the flow is conditional: {name} needs a context of shape ({len(x)},"
                f" {self.context}), got {got}"
            )
        try:
            integer_pixels(x, self.levels)
        except ValueError as error:
            raise ValueError(f"{name}: {str(error).removeprefix('integer_pixels: ')}") from None

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """The flow's samples quantized: ``floor(x L)/L`` clipped to ``0..L-1``.

        Args:
            n: Number of draws.
            context: A context ``(*B, K)`` for a conditional flow (e.g. one-hot labels).
            temperature: Scale of the base noise (see :meth:`exactflow.Flow.sample`).

        Returns:
            ``(n, *B, *event)`` values ``k/L``.

        """
        count("sample: n", n, 1)
        x = self.flow.sample((n,), context, temperature)
        return torch.floor(x * self.levels).clamp(0, self.levels - 1) / self.levels
