"""exactflow flows as sbi density estimators (neural posterior and likelihood estimation).

sbi (Tejero-Cantero et al. 2020) trains a conditional density estimator ``q(input | condition)``
on simulations ``(θ, x)``: the posterior ``q(θ | x)`` for NPE, the likelihood ``q(x | θ)`` for
NLE. :func:`posterior_nn` and :func:`likelihood_nn` return the builders that sbi's ``NPE`` and
``NLE`` take as ``density_estimator=``: sbi calls them with its first batch ``(θ, x)`` and
receives a :class:`FlowEstimator`, a ``ConditionalDensityEstimator`` wrapping a conditional
exactflow preset (any registered preset that takes ``features`` and ``context``, named as in
:func:`exactflow.registry.names`).

Z-scoring follows sbi's own builders (``"independent"``: per dimension, ``"structured"``: one
mean and scale for all dimensions, ``"none"``), with the statistics of that first batch:

- the **input** side is a frozen affine step at the front of the flow
  (:meth:`exactflow.data.Standardize.prepend`), whose log-determinant ``-Σ_i log σ_i`` keeps
  ``log_prob`` the density of the input in its own units; with the preset's ``bounds=`` (a box
  prior) it comes right after the bound map and standardizes the unbounded values it gives, so
  draws stay inside the box without sbi's rejection sampling;
- the **condition** side is standardized in front of the embedding network (the condition is
  only read, so no Jacobian enters).

Ratio estimation (NRE) trains a classifier between joint and marginal pairs: its network is not
a density, so a flow has no role there and no builder is offered for it.

In use: ``NPE(prior, density_estimator=posterior_nn("NSF", transforms=5, hidden=(50, 50)))``,
then sbi's ``append_simulations(θ, x).train()`` and ``build_posterior()`` as with its own
estimators.

Example:
    >>> import torch
    >>> from exactflow.integrations.sbi import posterior_nn
    >>> theta, x = torch.randn(500, 2), torch.randn(500, 3)
    >>> estimator = posterior_nn("NSF", transforms=2, hidden=(16,))(theta, x)  # as NPE does
    >>> estimator.log_prob(theta[:4], x[:4]).shape  # sbi's (sample, batch)
    torch.Size([1, 4])
    >>> estimator.sample((5,), x[:4]).shape
    torch.Size([5, 4, 2])

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.utils.sbiutils import standardizing_net, z_standardization
from torch import Tensor, nn

from .. import registry
from ..data import Standardize
from ..flow import Flow, placement

__all__ = ["EstimatorBuilder", "FlowEstimator", "build_estimator", "likelihood_nn", "posterior_nn"]

_Z_SCORES = ("independent", "structured", "none")
_OWN_KEYWORDS = ("features", "context", "validate")


class FlowEstimator(ConditionalDensityEstimator):
    """A conditional exactflow flow as sbi's ``ConditionalDensityEstimator``.

    ``log q(input | condition) = flow.log_prob(input, context=embedding_net(condition))``, the
    flow's exact density (with the input z-scoring, when any, as its first step). The shapes are
    sbi's: inputs ``(S, B, D)`` or ``(B, D)``, conditions ``(B, *condition_shape)`` (or with a
    leading sample dimension), log densities ``(S, B)``; ``sample(S, condition)`` returns
    ``(*S, B, D)``.

    Args:
        flow: A conditional flow over vectors ``(*, D)`` whose context width is the embedding's.
        embedding_net: Maps conditions ``(N, *condition_shape)`` to ``(N, C)``.
        input_shape: ``(D,)``.
        condition_shape: Shape of one condition.

    Example:
        >>> import torch, exactflow as ef
        >>> from exactflow.integrations.sbi import FlowEstimator
        >>> flow = ef.flows.MAF(features=2, context=3, transforms=1, hidden=(8,))
        >>> estimator = FlowEstimator(flow, torch.nn.Identity(), (2,), (3,))
        >>> estimator.loss(torch.randn(4, 2), torch.randn(4, 3)).shape
        torch.Size([4])

    """

    def __init__(
        self,
        flow: Flow,
        embedding_net: nn.Module,
        input_shape: torch.Size,
        condition_shape: torch.Size,
    ) -> None:
        if not isinstance(flow, Flow):
            raise TypeError(
                f"FlowEstimator: flow must be an exactflow Flow, got {type(flow).__name__}"
            )
        super().__init__(flow, input_shape=input_shape, condition_shape=condition_shape)
        self._embedding_net = embedding_net

    @property
    def flow(self) -> Flow:
        """The wrapped flow (sbi's ``net``)."""
        return self.net

    @property
    def embedding_net(self) -> nn.Module:
        """The condition's embedding, z-scoring included."""
        return self._embedding_net

    def _embed(self, condition: Tensor) -> Tensor:
        """``embedding_net`` over any leading dimensions: ``(*N, *condition_shape) -> (*N, C)``."""
        lead = condition.shape[: condition.dim() - len(self.condition_shape)]
        flat = condition.reshape(-1, *self.condition_shape)
        return self._embedding_net(flat).reshape(*lead, -1)

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """``log q(input | condition)``, shape ``(S, B)`` (sbi's broadcasting rules)."""
        self._check_condition_shape(condition)
        input, condition, batch = self._broadcast_and_align(input, condition)
        if condition.stride(0) == 0:  # the same conditions for every sample: embed them once
            context = self._embed(condition[0]).expand(input.shape[0], batch, -1)
        else:
            context = self._embed(condition)
        return self.flow.log_prob(input, context)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Negative log density of each pair, ``(B,)``: the maximum-likelihood loss."""
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        """Draws ``(*sample_shape, B, D)`` for conditions ``(B, *condition_shape)``."""
        self._check_condition_shape(condition)
        return self.flow.sample(sample_shape, self._embed(condition))

    def sample_and_log_prob(
        self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized draws ``(*sample_shape, B, D)`` and their log density, in one pass."""
        self._check_condition_shape(condition)
        return self.flow.rsample_and_log_prob(sample_shape, self._embed(condition))

    def inverse_transform(self, input: Tensor, condition: Tensor) -> Tensor:
        """The base-space point ``z = T(input; condition)`` of each input (data -> noise).

        ``input (*B1, D)`` and ``condition (*B2, *condition_shape)`` broadcast to ``(*B, D)``;
        sbi's ``LC2ST_NF`` tests these against the standard normal base.
        """
        self._check_condition_shape(condition)
        context = self._embed(condition)
        batch = torch.broadcast_shapes(input.shape[:-1], context.shape[:-1])
        input = input.expand(*batch, input.shape[-1])
        z, _ = self.flow.transform(input, context.expand(*batch, context.shape[-1]))
        return z


def _standardization(batch: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Per-dimension ``(mean, std)`` of ``batch (N, *event)``, computed as sbi z-scores."""
    mean, std = z_standardization(batch, mode == "structured")
    return mean.expand(batch.shape[1:]), std.expand(batch.shape[1:])


def _check_z_score(name: str, mode: object) -> str:
    if mode is None:
        return "none"
    if mode not in _Z_SCORES:
        raise ValueError(f"{name} must be one of {_Z_SCORES} or None, got {mode!r}")
    return mode


def build_estimator(
    batch_input: Tensor,
    batch_condition: Tensor,
    model: str = "NSF",
    z_score_input: str | None = "independent",
    z_score_condition: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **kwargs: Any,
) -> FlowEstimator:
    """A :class:`FlowEstimator` of ``input | condition`` sized and z-scored from a first batch.

    Args:
        batch_input: Inputs ``(N, D)`` (``θ`` for NPE, ``x`` for NLE).
        batch_condition: Conditions ``(N, *condition_shape)``.
        model: A registered preset that takes ``features`` and ``context`` (case-insensitive).
        z_score_input: ``"independent"``, ``"structured"`` or ``"none"``/``None``.
        z_score_condition: Likewise for the condition, in front of the embedding.
        embedding_net: Maps conditions ``(N, *condition_shape)`` to ``(N, C)``; default: none
            (conditions must then be vectors).
        **kwargs: The preset's own keywords (``transforms``, ``hidden``, ``bins``, ...).

    Raises:
        ValueError: An unknown preset or z-score mode, inputs that are not vectors, or an
            embedding whose output is not a vector.
        TypeError: ``features``, ``context`` or ``validate`` among ``kwargs`` (the builder sets
            them).

    Example:
        >>> import torch
        >>> from exactflow.integrations.sbi import build_estimator
        >>> theta = 10 + 3 * torch.randn(100, 2)
        >>> estimator = build_estimator(theta, torch.randn(100, 4), "MAF", transforms=1)
        >>> affine = estimator.flow.transform.transforms[0]  # the frozen z-scoring step
        >>> torch.allclose(affine.log_scale, -theta.std(0).log())
        True

    """
    names = {name.lower(): name for name in registry.names()}
    if not isinstance(model, str) or model.lower() not in names:
        raise ValueError(f"model must be a registered preset {registry.names()}, got {model!r}")
    given = sorted(set(kwargs) & set(_OWN_KEYWORDS))
    if given:
        raise TypeError(f"{given} are set by the builder from the data, got them in kwargs")
    if "embedding" in kwargs:  # sbi z-scores the condition in front of embedding_net
        raise TypeError("pass the condition's embedding as embedding_net=, not embedding=")
    z_score_input = _check_z_score("z_score_input", z_score_input)
    z_score_condition = _check_z_score("z_score_condition", z_score_condition)
    if batch_input.dim() != 2:
        raise ValueError(
            f"exactflow presets model vectors: inputs must have shape (N, D), got"
            f" {tuple(batch_input.shape)}"
        )
    embedding = nn.Identity() if embedding_net is None else embedding_net
    if z_score_condition != "none":
        structured = z_score_condition == "structured"
        embedding = nn.Sequential(standardizing_net(batch_condition, structured), embedding)
    with torch.no_grad():
        embedded = embedding(batch_condition[:2])
    if embedded.dim() != 2:
        raise ValueError(
            "the embedded condition must be a vector per simulation, (N, C); got"
            f" {tuple(embedded.shape)} (pass an embedding_net that flattens it)"
        )
    spec = {
        "name": names[model.lower()],
        "kwargs": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
            "features": batch_input.shape[1],
            "context": embedded.shape[1],
        },
    }
    flow = registry.build(spec)
    if not isinstance(flow, Flow):
        raise ValueError(f"model must be a flow preset, {model!r} builds {type(flow).__name__}")
    flow.validate = False  # sbi checks its simulations; the training step stays free of syncs
    if z_score_input != "none" and kwargs.get("bounds") is None:
        flow = Standardize(*_standardization(batch_input, z_score_input)).prepend(flow)
    elif z_score_input != "none":  # z-score what the bound map gives: Bounds, affine, preset
        bound_map, inner = flow.transform.transforms
        with torch.no_grad():
            mapped = bound_map(batch_input.to(placement(flow)[0]))[0]
        stats = Standardize(*_standardization(mapped, z_score_input))
        inner = stats.prepend(Flow(inner, flow.base, validate=False))
        flow = Flow(inner.transform, flow.base, validate=False, bounds=kwargs["bounds"])
    return FlowEstimator(flow, embedding, batch_input.shape[1:], batch_condition.shape[1:])


@dataclass(frozen=True)
class EstimatorBuilder:
    """sbi's ``ConditionalEstimatorBuilder``: ``builder(theta, x) -> FlowEstimator``.

    Made by :func:`posterior_nn` (``q(θ | x)``) and :func:`likelihood_nn` (``q(x | θ)``); a
    plain object rather than a closure, so that sbi's trainers, which keep it, can be pickled.
    """

    target: str  # "posterior" or "likelihood": which of (θ, x) the flow models
    model: str
    z_score_theta: str | None
    z_score_x: str | None
    embedding_net: nn.Module | None
    kwargs: dict[str, Any]

    def __call__(self, theta: Tensor, x: Tensor) -> FlowEstimator:
        """The estimator, sized and z-scored from sbi's first batch ``(θ, x)``."""
        if self.target == "likelihood":
            inputs, z_inputs, conditions, z_conditions = (
                x,
                self.z_score_x,
                theta,
                self.z_score_theta,
            )
        else:
            inputs, z_inputs, conditions, z_conditions = (
                theta,
                self.z_score_theta,
                x,
                self.z_score_x,
            )
        return build_estimator(
            inputs,
            conditions,
            self.model,
            z_inputs,
            z_conditions,
            self.embedding_net,
            **self.kwargs,
        )


def posterior_nn(
    model: str = "NSF",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **kwargs: Any,
) -> EstimatorBuilder:
    """A builder of posterior estimators ``q(θ | x)`` for sbi's ``NPE``.

    ``NPE(prior, density_estimator=posterior_nn("NSF", transforms=5, hidden=(50, 50)))``.

    Args:
        model: A registered preset that takes ``features`` and ``context``
            (``"NSF"``, ``"MAF"``, ``"RealNVP"``, ...; case-insensitive).
        z_score_theta: Z-scoring of the parameters (an exact affine step in the flow):
            ``"independent"``, ``"structured"`` or ``"none"``.
        z_score_x: Z-scoring of the data, in front of the embedding.
        embedding_net: Maps data ``(N, *x_shape)`` to features ``(N, C)`` (trained with
            the flow, saved in the estimator's ``state_dict``), e.g. an
            :class:`~exactflow.nn.ConvEmbedding` for images or a
            :class:`~exactflow.nn.SetEmbedding` for sets of i.i.d. observations.
        **kwargs: The preset's own keywords.

    Returns:
        An :class:`EstimatorBuilder`: ``build(theta, x) -> FlowEstimator``.

    Example:
        >>> import torch
        >>> from exactflow.integrations.sbi import posterior_nn
        >>> build = posterior_nn("NSF", transforms=2, hidden=(16,))
        >>> build(torch.randn(50, 3), torch.randn(50, 5)).flow.context  # q(θ | x): x is read
        5

    """
    _check_z_score("z_score_theta", z_score_theta)
    _check_z_score("z_score_x", z_score_x)
    return EstimatorBuilder("posterior", model, z_score_theta, z_score_x, embedding_net, kwargs)


def likelihood_nn(
    model: str = "NSF",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **kwargs: Any,
) -> EstimatorBuilder:
    """A builder of likelihood estimators ``q(x | θ)`` for sbi's ``NLE``.

    ``NLE(prior, density_estimator=likelihood_nn("NSF", transforms=5))``. The data ``x`` must
    be vectors; ``embedding_net`` embeds the parameters.

    Args:
        model: A registered preset that takes ``features`` and ``context``.
        z_score_theta: Z-scoring of the parameters, in front of the embedding.
        z_score_x: Z-scoring of the data (an exact affine step in the flow).
        embedding_net: Maps parameters ``(N, *θ_shape)`` to ``(N, C)``.
        **kwargs: The preset's own keywords.

    Returns:
        An :class:`EstimatorBuilder`: ``build(theta, x) -> FlowEstimator``.

    Example:
        >>> import torch
        >>> from exactflow.integrations.sbi import likelihood_nn
        >>> build = likelihood_nn("MAF", transforms=2, hidden=(16,))
        >>> build(torch.randn(50, 3), torch.randn(50, 5)).flow.features  # q(x | θ): x is modeled
        5

    """
    _check_z_score("z_score_theta", z_score_theta)
    _check_z_score("z_score_x", z_score_x)
    return EstimatorBuilder("likelihood", model, z_score_theta, z_score_x, embedding_net, kwargs)
