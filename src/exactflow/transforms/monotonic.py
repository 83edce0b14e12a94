"""Monotonic neural elementwise maps for neural autoregressive flows.

:class:`DeepSigmoid` is the deep sigmoidal flow map of NAF (Huang et al. 2018): a strictly
increasing scalar map whose parameters come from a conditioner, so that
:class:`~exactflow.transforms.MaskedAutoregressive` and :class:`~exactflow.transforms.Coupling`
take it like any other :class:`~exactflow.transforms.ElementwiseMap`. It has no closed-form
inverse: :meth:`DeepSigmoid.inverse` solves for it with :func:`exactflow.numerics.solve_increasing`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..numerics import solve_increasing
from .elementwise import ElementwiseMap

__all__ = ["DeepSigmoid"]

# Smallest slope a_j of a sigmoid; keeps the map strictly increasing (and its bracket finite)
# however negative the raw parameter gets.
_MIN_SLOPE = 1e-3
# Bisection steps that narrow the inverse's bracket before Newton (see DeepSigmoid._narrow).
_BISECTIONS = 20
# softplus(_SHIFT) + _MIN_SLOPE = 1: a raw slope parameter of 0 means a_j = 1.
_SHIFT = math.log(math.expm1(1 - _MIN_SLOPE))


class DeepSigmoid(ElementwiseMap):
    """Deep sigmoidal flow map (NAF; Huang et al. 2018), applied to every coordinate.

    With ``H = hidden`` sigmoids per coordinate::

        y = logit(m),   m = Σ_j w_j σ(a_j x + b_j),   a_j > 0,   w_j > 0,   Σ_j w_j = 1

    which is strictly increasing and maps the reals onto the reals. Its slope is::

        dy/dx = Σ_j w_j a_j σ(z_j) σ(-z_j) / (m (1 - m)),   z_j = a_j x + b_j

    Everything is computed in log space (``log m`` and ``log(1 - m)`` as log-sum-exps of
    ``log w_j + log σ(±z_j)``), so ``y`` and ``log dy/dx`` stay finite and accurate for
    ``|x|`` far beyond where ``m`` rounds to 0 or 1 (``|x| = 1e3`` included).

    Since ``min_j z_j(x) <= y(x) <= max_j z_j(x)`` (``m`` is a mean of the ``σ(z_j)``), the
    root ``x`` of ``y(x) = y`` lies in the closed-form bracket
    ``[min_j (y - b_j) / a_j, max_j (y - b_j) / a_j]``; :meth:`inverse` narrows it by 20
    bisection steps (Newton alone can crawl on the staircase a sum of steep sigmoids makes)
    and hands it to
    :func:`~exactflow.numerics.solve_increasing` (bracketed Newton, exact implicit gradients),
    which raises ``FloatingPointError`` naming this map and the residual when it does not
    converge. The inverse is exact to that solver's tolerance: residual
    ``|y(x) - y| <= tol·(1 + |y|)`` (``tol = 1e-12`` in float64).

    Raw parameters per coordinate, ``params[..., d, :]`` of length ``P = 3 · hidden``:

    * ``[0, H)``: raw slopes ``α``, ``a = 1e-3 + softplus(α + c)`` with ``c`` such that
      ``α = 0`` gives ``a = 1``;
    * ``[H, 2H)``: offsets ``b``;
    * ``[2H, 3H)``: weight logits, ``w = softmax(·)``.

    **Start** (:meth:`identity`): ``a_j = 1``, equal weights, offsets ``b_j`` evenly spread
    over ``[-1, 1]``, i.e. ``y = logit(mean_j σ(x + b_j))``. Equal offsets would make the map
    the identity exactly (``logit(σ(x)) = x``), but then every sigmoid gets the same gradient
    and they never separate, leaving an affine map; the spread breaks that symmetry. The start
    is finite and strictly increasing, with slope 1 as ``|x| -> ∞`` and its smallest slope at
    ``x = 0``; it is a shift by ``∓log mean_j e^{∓b_j}`` far out. For ``H = 8``: slope in
    ``[0.90, 1]`` and ``|y - x| <= 0.21`` everywhere (``H = 2``: ``[0.78, 1]``, ``0.44``).

    Args:
        hidden: Number of sigmoids ``H`` per coordinate.
        max_iter: Iteration budget of the numerical inverse.

    Shapes: ``x (*, D)``, ``params (*, D, P)`` (broadcasting against each other)
    ``-> y (*, D)``, ``log|dy/dx| (*, D)``.

    Example:
        >>> import torch, exactflow as ef
        >>> dsf = ef.transforms.DeepSigmoid(hidden=4)
        >>> params = torch.randn(10, 2, dsf.params, dtype=torch.float64)
        >>> x = torch.randn(10, 2, dtype=torch.float64)
        >>> y, ladj = dsf.forward(x, params)
        >>> x2, inv_ladj = dsf.inverse(y, params)
        >>> bool(torch.allclose(x2, x, atol=1e-9)), bool(torch.allclose(inv_ladj, -ladj))
        (True, True)

    """

    def __init__(self, hidden: int = 8, max_iter: int = 100) -> None:
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"DeepSigmoid: hidden must be an int >= 1, got {hidden!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"DeepSigmoid: max_iter must be an int >= 1, got {max_iter!r}")
        self.hidden = hidden
        self.max_iter = max_iter
        self.params = 3 * hidden

    def identity(self) -> Tensor:
        """Raw parameters ``(P,)`` of the start: ``a_j = 1``, equal weights, ``b_j`` on ``[-1, 1]``.

        See the class docstring: a near-identity start, not the exact identity.
        """
        start = torch.zeros(self.params)
        if self.hidden > 1:
            start[self.hidden : 2 * self.hidden] = torch.linspace(-1.0, 1.0, self.hidden)
        return start

    def config(self) -> dict:
        return {"hidden": self.hidden, "max_iter": self.max_iter}

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x (*, D)``; return ``(y, log|dy/dx|)``, both ``(*, D)``."""
        log_a, b, log_w = self._unpack(params)
        return self._evaluate(x, log_a, b, log_w)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward` numerically: return ``(x, log|dx/dy|)``, both ``(*, D)``."""
        log_a, b, log_w = self._unpack(params)
        shape = torch.broadcast_shapes(y.shape, log_a.shape[:-1])
        # The sandwich min_j z_j <= y(x) <= max_j z_j brackets the root in closed form.
        roots = (y.unsqueeze(-1) - b) * torch.exp(-log_a)  # (*, D, H)
        lower, upper = roots.amin(-1).expand(shape), roots.amax(-1).expand(shape)
        lower, upper = self._narrow(y.expand(shape), lower, upper, log_a, b, log_w)
        # Start at the root of the mean line Σ_j w_j z_j(x), clamped into the narrowed bracket.
        weights = (log_w + log_a).softmax(-1)
        start = torch.minimum(torch.maximum((weights * roots).sum(-1), lower), upper)

        def f(v: Tensor) -> Tensor:
            return self._evaluate(v, log_a, b, log_w)[0]

        def derivative(v: Tensor) -> Tensor:
            return self._evaluate(v, log_a, b, log_w)[1].exp()

        x = solve_increasing(
            f,
            derivative,
            y.expand(shape),
            lower,
            upper,
            start=start,
            name=f"DeepSigmoid(hidden={self.hidden}): inverse of "
            "y = logit(sum_j w_j sigmoid(a_j x + b_j))",
            max_iter=self.max_iter,
        )
        _, ladj = self._evaluate(x, log_a, b, log_w)
        return x, -ladj

    def _narrow(
        self, y: Tensor, lower: Tensor, upper: Tensor, log_a: Tensor, b: Tensor, log_w: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The bracket ``[lower, upper]`` of the root, shrunk ``2^{_BISECTIONS}``-fold by bisection.

        On the full bracket a sum of sigmoids is a staircase on which Newton steps can stay
        inside the bracket yet crawl; on the narrowed one the map is close to linear and the
        solver's Newton steps converge quadratically. A fixed number of steps, no host reads.
        """
        with torch.no_grad():
            y, lower, upper = y.detach(), lower.detach(), upper.detach()
            log_a, b, log_w = log_a.detach(), b.detach(), log_w.detach()
            for _ in range(_BISECTIONS):
                middle = 0.5 * (lower + upper)
                below = self._evaluate(middle, log_a, b, log_w)[0] <= y
                lower = torch.where(below, middle, lower)
                upper = torch.where(below, upper, middle)
        return lower, upper

    def _unpack(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log a``, ``b``, ``log w`` of raw ``params (*, D, P)``, each ``(*, D, H)``."""
        if params.dim() == 0 or params.shape[-1] != self.params:
            raise ValueError(
                f"DeepSigmoid(hidden={self.hidden}): params must have shape "
                f"(*, D, {self.params}), got {tuple(params.shape)}"
            )
        raw_a, b, logits = params.split(self.hidden, dim=-1)
        log_a = (F.softplus(raw_a + _SHIFT) + _MIN_SLOPE).log()
        return log_a, b, logits.log_softmax(-1)

    @staticmethod
    def _evaluate(x: Tensor, log_a: Tensor, b: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
        """``y`` and ``log dy/dx`` at ``x (*, D)``, in log space; both ``(*, D)``."""
        z = torch.addcmul(b, x.unsqueeze(-1), log_a.exp())  # (*, D, H)
        up, down = F.logsigmoid(z), F.logsigmoid(-z)  # log σ(z), log σ(-z)
        log_m = torch.logsumexp(log_w + up, -1)
        log_1m = torch.logsumexp(log_w + down, -1)
        log_slope = torch.logsumexp(log_w + log_a + up + down, -1) - log_m - log_1m
        return log_m - log_1m, log_slope
