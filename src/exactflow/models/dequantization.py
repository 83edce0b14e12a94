"""Dequantization: a flow's density as a likelihood of quantized pixels or discrete columns.

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

**Discrete columns of a table** (``discrete=[j, ...]``): a row holds integers ``k`` in the
columns ``J`` and continuous values ``x_R`` in the others; on the integer scale (bins of width
one, no ``L``) the same argument bounds the mixed probability-density

    log P(k, x_R) ≥ E_{u~q(u | k, x_R)}[log p(k + u, x_R) - log q(u | k, x_R)],

a probability in ``k`` and a density in ``x_R``. A standardization inside the model is a step
of the flow with its log-determinant, so the bound is of ``P(k, x_R)`` whatever the scaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..data import Standardize, integer_pixels
from ..data.checks import count
from ..flow import Flow, placement
from .base import LatentVariableModel
from .columns import DiscreteColumns
from .dequantizers import DEQUANTIZERS, UniformDequantizer, VariationalDequantizer

__all__ = ["DEQUANTIZERS", "Dequantized", "UniformDequantizer", "VariationalDequantizer"]

_PREFIX = "flow_"


class Dequantized(LatentVariableModel):
    """A flow as a model of quantized data: pixels ``x = k/L``, or a table's discrete columns.

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

    **Discrete columns** (``discrete=[j, ...]``, a flow over rows ``(D,)``): the listed columns
    hold integers ``k`` (categories coded ``0..C-1``; any coding gives a valid bound, the order
    of the codes only changes how tight it is) on their own scale, the others continuous values
    ``x_R``; ``u`` has one entry per discrete column and

        log w_j = log p_flow(k + u_j, x_R) - log q(u_j | k, x_R),

    so :meth:`elbo` bounds ``log P(k, x_R)`` in nats per row (a probability in ``k``, a density
    in ``x_R``) and :meth:`log_marginal` estimates it; the variational ``q`` reads the whole
    row. ``standardize=True`` puts a frozen standardization in front of the flow, a flow step
    with its log-determinant, set by :meth:`fit_standardization` from the training rows (the
    exact moments of ``k + u``); the bound stays one of ``P(k, x_R)``. :meth:`sample` floors
    the discrete columns.

    Args:
        flow: The flow (over ``[0, 1)^D``, events ``(C, H, W)`` or ``(D,)``, for pixels; over
            rows ``(D,)`` for columns), or a preset's name.
        levels: Number of quantization levels ``L`` of pixels (``None``: 256); not with
            ``discrete``.
        dequantizer: ``"uniform"`` or ``"variational"``.
        steps: Coupling steps of the variational ``q``.
        hidden: Width of the variational ``q``'s networks.
        context: ``0``, or the flow's context width ``K``: then ``q`` reads the context too.
        discrete: 0-based indices of a table's discrete columns (``None``: pixels).
        standardize: With ``discrete``: a standardization step in front of the flow.
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
        >>> table = ef.models.Dequantized(ef.flows.MAF(features=3), discrete=[0, 2])
        >>> rows = torch.tensor([[2.0, 0.3, 0.0], [5.0, -1.2, 1.0]])
        >>> table.elbo(rows).shape, table.sample(2)[:, [0, 2]].frac().abs().sum().item()
        (torch.Size([2]), 0.0)

    """

    def __init__(
        self,
        flow: Flow | str,
        levels: int | None = None,
        dequantizer: str = "uniform",
        steps: int = 4,
        hidden: int = 32,
        context: int = 0,
        discrete: Sequence[int] | None = None,
        standardize: bool = False,
        **flow_kwargs: object,
    ) -> None:
        super().__init__()
        from .. import registry  # the registry imports this package: look it up at call time

        flow = self._flow(registry, flow, flow_kwargs)
        self.columns = self._columns(flow, levels, discrete, standardize)
        self.levels = 256 if levels is None else count("Dequantized: levels", levels, 2)
        self.standardize = standardize
        self.dequantization = dequantizer
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
        spec = registry.spec_of(flow)
        self._preset = (flow,)  # unwrapped (a tuple: not a second copy of its weights)
        if standardize:  # placeholder statistics: fit_standardization or a checkpoint sets them
            width = flow.event_shape
            flow = Standardize(torch.zeros(width), torch.ones(width)).prepend(flow)
        self.flow = flow
        noise = flow.event_shape if self.columns is None else (len(self.columns.indices),)
        if dequantizer == "uniform":
            self.dequantizer = UniformDequantizer(noise)
        else:
            inputs = None if self.columns is None else flow.event_shape[0]
            q = VariationalDequantizer(noise, steps, hidden, context, inputs)
            dtype, device = placement(flow)
            self.dequantizer = q.to(dtype=dtype, device=device)  # where the flow is
        # A hand-built flow has no name: None tells the registry this model cannot be rebuilt.
        self.config: dict | None = None
        if spec is not None:
            self.config = {
                "flow": spec["name"],
                **{_PREFIX + key: value for key, value in spec["kwargs"].items()},
                "dequantizer": dequantizer,
                "steps": steps,
                "hidden": hidden,
                "context": context,
            }
            if self.columns is None:
                self.config["levels"] = self.levels
            else:
                self.config.update(discrete=self.columns.indices, standardize=standardize)

    @staticmethod
    def _columns(
        flow: Flow, levels: int | None, discrete: Sequence[int] | None, standardize: bool
    ) -> DiscreteColumns | None:
        """The discrete columns of a table model (``None`` for pixels), options checked."""
        if not isinstance(standardize, bool):
            raise TypeError(f"Dequantized: standardize must be True or False, got {standardize!r}")
        if discrete is None:
            if standardize:
                raise ValueError(
                    "Dequantized: standardize applies to discrete columns (discrete=[...]);"
                    " pixels stay in [0, 1)"
                )
            return None
        if levels is not None:
            raise ValueError(
                f"Dequantized: levels applies to pixels; discrete columns hold integers on their"
                f" own scale, got levels={levels!r} with discrete={discrete!r}"
            )
        if len(flow.event_shape) != 1:
            raise ValueError(
                "Dequantized: discrete columns need a flow over rows (D,), got events of shape"
                f" {tuple(flow.event_shape)}"
            )
        return DiscreteColumns(flow.event_shape[0], discrete)

    def fit_standardization(self, x: Tensor) -> Dequantized:
        """Set the standardization step from training rows ``x (N, D)``; returns the model.

        The step is ``z = (x - mean)/std`` with the exact moments of the dequantized rows
        (:meth:`~exactflow.models.columns.DiscreteColumns.moments`); a checkpoint saves it.

        Example:
            >>> import torch, exactflow as ef
            >>> model = ef.models.Dequantized("MAF", discrete=[1], standardize=True,
            ...                               flow_features=2, flow_transforms=1)
            >>> x = torch.stack([100 + 10 * torch.randn(50), torch.randint(0, 3, (50,))], 1)
            >>> model.fit_standardization(x).elbo(x).shape
            torch.Size([50])

        """
        if not self.standardize:
            raise ValueError("fit_standardization: the model was built with standardize=False")
        self.check_data(x, None, "fit_standardization")
        self.flow = self.columns.moments(x).prepend(self._preset[0])
        return self

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
    def features(self) -> int:
        """Number of scalars in one data point."""
        return self.event_shape.numel()

    @property
    def context(self) -> int:
        """Context width the flow is conditioned on (0: unconditional)."""
        return self.flow.context

    def log_weights(self, x: Tensor, k: int = 1, context: Tensor | None = None) -> Tensor:
        """``log p((k + u_j)/L) - D log L - log q(u_j | x)`` for ``k`` draws per row: ``(k, B)``.

        With discrete columns: ``log p(k + u_j, x_R) - log q(u_j | k, x_R)``.

        Example:
            >>> import torch, exactflow as ef
            >>> model = ef.models.Dequantized(ef.flows.MAF(features=2, transforms=1), levels=2)
            >>> model.log_weights(torch.tensor([[0.0, 0.5]]), k=3).shape
            torch.Size([3, 1])

        """
        if self.columns is not None:
            integers, rest = self.columns.split(x)
            row = self.flow.transform[0](x)[0] if self.standardize else x  # what q reads
            u, log_q = self.dequantizer(row, k, context if self.dequantizer.context else None)
            y = self.columns.merge(integers + u, rest)  # (k, B, D)
            return self.flow.log_prob(y, context) - log_q
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
        first other value is named with its index. With discrete columns, those must hold
        integers. A conditional flow needs a context ``(N, K)``.
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
        if self.columns is not None:
            self.columns.check(x, name)
            return
        try:
            integer_pixels(x, self.levels)
        except ValueError as error:
            raise ValueError(f"{name}: {str(error).removeprefix('integer_pixels: ')}") from None

    @torch.no_grad()
    def sample(self, n: int, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """The flow's samples quantized: ``floor(x L)/L`` clipped to ``0..L-1``.

        With discrete columns: those columns floored to integers, the others as drawn.

        Args:
            n: Number of draws.
            context: A context ``(*B, K)`` for a conditional flow (e.g. one-hot labels).
            temperature: Scale of the base noise (see :meth:`exactflow.Flow.sample`).

        Returns:
            ``(n, *B, *event)`` values ``k/L`` (rows, with discrete columns).

        """
        count("sample: n", n, 1)
        x = self.flow.sample((n,), context, temperature)
        if self.columns is not None:
            return self.columns.quantize(x)
        return torch.floor(x * self.levels).clamp(0, self.levels - 1) / self.levels
