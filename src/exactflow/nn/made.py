"""Masked networks whose outputs are autoregressive in their inputs (Germain et al. 2015).

* :class:`MaskedLinear` — a linear layer with a fixed connectivity mask;
* :class:`MADE` — the conditioner of masked autoregressive flows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..numerics import under_functorch
from .mlp import check_context, zero_output

__all__ = ["MADE", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask: ``y = (W ⊙ M) x + b``.

    Args:
        mask: Connectivity ``(out_features, in_features)``; ``True`` keeps a connection.
        bias: Whether to add a bias.

    Shapes: ``(*, in_features) -> (*, out_features)``.

    """

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        if mask.dim() != 2:
            raise ValueError(f"MaskedLinear: mask must be 2-d (out, in), got {tuple(mask.shape)}")
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        # A floating buffer follows the module's dtype, so W ⊙ M needs no conversion.
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def masked_weight(self) -> Tensor:
        """``W ⊙ M``, shape ``(out_features, in_features)``."""
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class _MaskedResidualBlock(nn.Module):
    """``h -> h + W₂ σ(W₁ σ(h))`` with masked ``W₁, W₂`` (the skip respects any degrees)."""

    def __init__(self, mask: Tensor, activation: type[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(activation(), MaskedLinear(mask), activation(), MaskedLinear(mask))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


def _input_degrees(features: int, order: Sequence[int] | Tensor | None) -> Tensor:
    if order is None:
        return torch.arange(1, features + 1)
    degrees = torch.as_tensor(order).long().flatten()
    if degrees.numel() != features or not torch.equal(
        degrees.sort().values, torch.arange(1, features + 1)
    ):
        raise ValueError(
            f"MADE: order must be a permutation of 1..{features} (the input degrees),"
            f" got {degrees.tolist()}"
        )
    return degrees


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Every input ``x_j`` has a degree ``d_j`` (a permutation of ``1..D``); the output block
    ``(i, :)`` depends only on the inputs with ``d_j < d_i``, so a map that reads its parameters
    from block ``i`` is autoregressive in the order of the degrees. Hidden unit ``k`` gets a
    degree ``m_k ∈ [1, D-1]`` and sees the inputs with ``d_j <= m_k``; output ``i`` sees the
    hidden units with ``m_k < d_i``. The context (when ``context > 0``) enters the first hidden
    layer unmasked, and hidden degrees then start at 0 (units that see the context alone), so
    every output, the first coordinate's included, depends on all of it.

    Args:
        features: Number of inputs ``D``.
        out_per_feature: Outputs per input ``P`` (the parameters of one coordinate's map).
        hidden: Hidden widths (at least one layer). With ``residual=True`` all widths must be
            equal: the network has one input layer and ``len(hidden)`` masked residual blocks.
        context: Width ``C`` of the context vector (0: none).
        order: Input degrees, a permutation of ``1..D``; ``None`` for ``1..D``.
        hidden_degrees: ``"sequential"`` (cycle through the allowed degrees) or ``"random"``
            (uniform draws, as in the paper, from a generator seeded by ``seed``).
        seed: Seed of the random hidden degrees.
        residual: Use masked residual blocks between the hidden layers.
        activation: Activation class.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> (*, D, P)``.

    Example:
        >>> import torch, exactflow as ef
        >>> made = ef.nn.MADE(4, 2, hidden=(32, 32), order=[2, 4, 1, 3])
        >>> made(torch.randn(5, 4)).shape
        torch.Size([5, 4, 2])

    """

    def __init__(
        self,
        features: int,
        out_per_feature: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        order: Sequence[int] | Tensor | None = None,
        hidden_degrees: str = "sequential",
        seed: int = 0,
        residual: bool = False,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if features < 1 or out_per_feature < 1:
            raise ValueError(
                f"MADE: features and out_per_feature must be >= 1,"
                f" got {features} and {out_per_feature}"
            )
        if len(hidden) == 0:
            raise ValueError("MADE: needs at least one hidden layer, got hidden=()")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"MADE: residual=True needs equal hidden widths, got {hidden}")
        if hidden_degrees not in ("sequential", "random"):
            raise ValueError(
                f"MADE: hidden_degrees must be 'sequential' or 'random', got {hidden_degrees!r}"
            )
        self.features = features
        self.out_per_feature = out_per_feature
        self.context = context

        degrees = _input_degrees(features, order)
        generator = torch.Generator().manual_seed(seed)
        # Hidden degrees span [bottom, D - 1]. Degree-0 units see no input, only the context:
        # with a context they let the first coordinate's parameters depend on it too.
        bottom = 0 if context or features == 1 else 1
        top = features - 1

        def layer_degrees(width: int, low: int) -> Tensor:
            if hidden_degrees == "sequential":
                return torch.arange(width) % (top - bottom + 1) + bottom
            return torch.randint(low, top + 1, (width,), generator=generator)

        previous = degrees
        m = layer_degrees(hidden[0], bottom)
        hidden_degrees_per_layer = [m]
        self.input = MaskedLinear(m[:, None] >= previous[None, :])
        self.context_in = nn.Linear(context, hidden[0], bias=False) if context else None
        layers: list[nn.Module] = [activation()]
        if residual:
            same = m[:, None] >= m[None, :]
            layers = [_MaskedResidualBlock(same, activation) for _ in hidden] + layers
        else:
            for width in hidden[1:]:
                previous, m = m, layer_degrees(width, int(m.min()))
                hidden_degrees_per_layer.append(m)
                layers += [MaskedLinear(m[:, None] >= previous[None, :]), activation()]
        self.trunk = nn.Sequential(*layers)
        out_degrees = degrees.repeat_interleave(out_per_feature)  # (D * P,), coordinate-major
        self.output = MaskedLinear(out_degrees[:, None] > m[None, :])
        self.register_buffer("degrees", degrees)
        self.residual = residual
        # The coordinates in the order they are recovered, and for each hidden layer its units
        # sorted by degree with ends[g] = number of units of degree <= g (see `autoregress`).
        self._steps: list[int] = torch.argsort(degrees).tolist()
        self._ends: list[list[int]] = []
        for k, m in enumerate(hidden_degrees_per_layer):
            self.register_buffer(f"_units{k}", torch.argsort(m, stable=True), persistent=False)
            self._ends.append(torch.bincount(m, minlength=features).cumsum(0).tolist())

    def initialize(self, params: Tensor) -> None:
        """Make the output constant, every block ``(i, :)`` equal to ``params (P,)``.

        Used to start a flow at the identity of its elementwise map; the hidden layers keep
        their random initialization, so gradients still reach them once the output moves.
        """
        zero_output(self.output, params)

    def embed(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Pre-activation of the first hidden layer, ``(*, hidden[0])``."""
        h = self.input(x)
        if self.context_in is not None:
            h = h + self.context_in(check_context("MADE", self.context, context))
        return h

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        out = self.output(self.trunk(self.embed(x, context)))
        return out.unflatten(-1, (self.features, self.out_per_feature))  # (*, D, P)

    def autoregress(
        self,
        solve: Callable[[int, Tensor], Tensor],
        batch: torch.Size,
        context: Tensor | None = None,
    ) -> Tensor:
        """Build ``x`` one coordinate at a time, feeding each back: ``D`` sequential steps.

        For each coordinate ``i`` in increasing degree, the output block ``θ_i`` (shape
        ``(*batch, P)``) is evaluated from the coordinates already built and ``x_i = solve(i,
        θ_i)`` (shape ``(*batch, 1)``) is fed back. This is the inverse of an autoregressive
        layer; the result ``x (*batch, D)`` satisfies ``MADE(x, c)[..., i, :] = θ_i``.

        Without autograd (sampling under ``torch.no_grad``), a plain MADE computes each hidden
        unit exactly once: a unit of degree ``m`` depends only on inputs of degree ``<= m``, so
        it is final from the step of degree ``m + 1`` on, and that step evaluates just the units
        of degree ``m`` in every layer and the ``P`` output rows of ``θ_i``. All ``D`` steps
        together cost about one network pass. With autograd, with residual blocks, or under a
        tracer (``vmap``, ``torch.compile``, ``torch.export``: no in-place writes), each step
        re-evaluates the trunk, reusing the first layer's pre-activation.

        Args:
            solve: ``(i, θ_i) -> x_i``.
            batch: Batch shape of ``x`` (the context broadcasts against it).
            context: Context ``(*, C)`` when the MADE has one.

        """
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
        if self.residual or torch.is_grad_enabled() or under_functorch():
            return self._autoregress_trunk(solve, batch, context)
        return self._autoregress_units(solve, batch, context)

    def _autoregress_trunk(
        self, solve: Callable[[int, Tensor], Tensor], batch: torch.Size, context: Tensor | None
    ) -> Tensor:
        """``autoregress`` with one trunk pass per step (differentiable, any trunk)."""
        weight = self.input.weight
        x = weight.new_zeros((*batch, self.features))
        # The first hidden layer is linear in x: start from x = 0 and add x_i · W[:, i] as each
        # coordinate is built, instead of redoing the (H, D) product every step.
        h = self.embed(x, context)  # (*, H0)
        w_in = self.input.masked_weight().t()  # (D, H0)
        w_out = self.output.masked_weight().unflatten(0, (self.features, -1))  # (D, P, H)
        b_out = self.output.bias.unflatten(0, (self.features, -1))  # (D, P)
        xs: list[Tensor] = [x[..., :1]] * self.features
        for n, i in enumerate(self._steps):
            x_i = solve(i, F.linear(self.trunk(h), w_out[i], b_out[i]))
            xs[i] = x_i.expand(*batch, 1)
            if n + 1 < self.features:
                h = torch.addcmul(h, x_i, w_in[i])
        return torch.cat(xs, dim=-1)

    def _autoregress_units(
        self, solve: Callable[[int, Tensor], Tensor], batch: torch.Size, context: Tensor | None
    ) -> Tensor:
        """``autoregress`` computing every hidden unit once (no autograd, plain trunk)."""
        linears = [self.input, *(m for m in self.trunk if isinstance(m, MaskedLinear))]
        activations = [m for m in self.trunk if not isinstance(m, MaskedLinear)]
        # Weights with each layer's units sorted by degree: the units of degree g are the rows
        # ends[g - 1]:ends[g], and the units of degree <= g the columns :ends[g] of the next.
        weights, biases, previous = [], [], None
        for k, linear in enumerate(linears):
            units = getattr(self, f"_units{k}")
            w = linear.masked_weight()[units]
            weights.append(w if previous is None else w[:, previous])
            biases.append(linear.bias[units])
            previous = units
        w_out = self.output.masked_weight()[:, previous].unflatten(0, (self.features, -1))
        b_out = self.output.bias.unflatten(0, (self.features, -1))  # (D, P)
        n = batch.numel()
        x = w_out.new_zeros(n, self.features)
        h = [w_out.new_zeros(n, w.shape[0]) for w in weights]  # post-activations, sorted units
        from_context = None
        if self.context_in is not None:
            c = check_context("MADE", self.context, context)
            from_context = self.context_in(c)[..., self._units0].expand(*batch, -1)
            from_context = from_context.reshape(n, from_context.shape[-1])
        for g, i in enumerate(self._steps):  # x_i has degree g + 1: units of degree g are due
            for k, ends in enumerate(self._ends):
                start, end = ends[g - 1] if g else 0, ends[g]
                if start == end:
                    continue
                if k == 0:
                    pre = torch.addmm(biases[0][start:end], x, weights[0][start:end].t())
                    if from_context is not None:
                        pre = pre + from_context[:, start:end]
                else:
                    seen = self._ends[k - 1][g]
                    w = weights[k][start:end, :seen]
                    pre = torch.addmm(biases[k][start:end], h[k - 1][:, :seen], w.t())
                h[k][:, start:end] = activations[k](pre)
            seen = self._ends[-1][g]
            theta = torch.addmm(b_out[i], h[-1][:, :seen], w_out[i, :, :seen].t())  # (n, P)
            x[:, i] = solve(i, theta.view(*batch, theta.shape[-1])).reshape(n)
        return x.view(*batch, self.features)
