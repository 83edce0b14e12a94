"""Invertible residual blocks ``y = x + g(x)`` with ``g`` contractive (residual flows).

With ``Lip(g) < 1`` the map is invertible (Behrmann et al. 2019): the inverse is the fixed point of
``x = y - g(x)``, and ``log|det(I + J_g)| = Σ_{k>=1} (-1)^{k+1} tr(J_g^k) / k``. Training uses an
unbiased Russian-roulette estimate of that series with Hutchinson traces (Chen et al. 2019);
evaluation uses the exact log-determinant.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import LipSwish, SpectralLinear
from ..numerics import fixed_point, rademacher
from .base import Transform

__all__ = ["ResidualBlock"]

# How a training pass differentiates the log-determinant estimate (see ResidualBlock).
GRADIENTS = ("neumann", "backprop")


class ResidualBlock(Transform):
    """``y = x + g(x, c)``, ``g`` a network of spectrally normalized layers and LipSwish.

    Every linear layer of ``g`` is capped at spectral norm ``coeff`` (power-iteration estimate,
    :class:`~exactflow.nn.SpectralLinear`) and LipSwish is 1-Lipschitz, so ``Lip_x(g) <= coeff
    < 1`` and the block is invertible. A context enters ``g``'s first layer beside ``x``.

    **Log-determinant.** In eval mode it is exact: ``slogdet(I + J_g)`` of the autograd
    Jacobian of every row, multiplied out layer by layer, and a ``D × D`` determinant (exact to
    floating-point rounding; ``O(D³)`` a row, fine for the widths of tabular data).
    In training mode (``exact_ladj = False``) it is the unbiased estimate

        Σ_{k=1}^{m + G} (-1)^{k+1} vᵀ J^k v / (k · P(m + G >= k)),   G ~ Geometric(p), v ~ ±1,

    with ``m = exact_terms`` terms always kept, drawn independently for every row (Russian
    roulette, Chen et al. 2019). Its gradient is taken one of two ways (``gradient``):

    * ``"neumann"`` (default): the series' terms are computed without a graph and the gradient
      comes from the unbiased Neumann-series estimate of ``∂ log det(I + J) = tr((I + J)⁻¹ ∂J)``,

          Σ_{k=0}^{m + G - 1} (-1)^k vᵀ J^k (∂J) v / P(m + G >= k + 1),

      a single vector-Jacobian product with a graph: memory does not grow with the number of
      terms (Chen et al. 2019, section 3.2). The value returned is the estimate above.
    * ``"backprop"``: autograd through every term (memory grows with the number of terms).

    Both gradients are unbiased for the gradient of the exact log-determinant.

    **Inverse.** :func:`exactflow.numerics.fixed_point` on ``x = y - g(x, c)``, to the dtype's
    tolerance, raising ``FloatingPointError`` if it does not converge.

    Args:
        features: Width ``D``.
        hidden: Hidden widths of ``g``.
        context: Context width (0: none).
        coeff: Lipschitz bound of every layer, in ``(0, 1)``.
        iterations: Power-iteration steps per training pass.
        exact_terms: Series terms always computed in training (``m``).
        continue_probability: ``1 - p``, the chance of computing one more term.
        gradient: ``"neumann"`` (memory-saving) or ``"backprop"``, see above.

    Shapes: ``x (*, D)``, ``context (*, C)`` ``-> y (*, D)``, ``ladj (*)``.

    Example:
        >>> import torch, exactflow as ef
        >>> block = ef.transforms.ResidualBlock(3, hidden=(16,)).eval()
        >>> y, ladj = block(torch.randn(5, 3))
        >>> x, back = block.inverse(y)
        >>> bool(torch.allclose(ladj, -back, atol=1e-5))
        True

    """

    exact_ladj = False

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        context: int = 0,
        coeff: float = 0.97,
        iterations: int = 1,
        exact_terms: int = 2,
        continue_probability: float = 0.5,
        gradient: str = "neumann",
    ) -> None:
        super().__init__()
        if features < 1 or context < 0 or any(h < 1 for h in hidden):
            raise ValueError(
                f"ResidualBlock: features and hidden widths must be >= 1 and context >= 0, got"
                f" {features}, {tuple(hidden)} and {context}"
            )
        if not 0.0 < coeff < 1.0:
            raise ValueError(
                f"ResidualBlock: coeff must be in (0, 1) for invertibility, got {coeff}"
            )
        if exact_terms < 1 or not 0.0 < continue_probability < 1.0:
            raise ValueError(
                "ResidualBlock: exact_terms must be >= 1 and continue_probability in (0, 1), got"
                f" {exact_terms} and {continue_probability}"
            )
        if gradient not in GRADIENTS:
            raise ValueError(
                f"ResidualBlock: gradient must be one of {GRADIENTS}, got {gradient!r}"
            )
        widths = [features + context, *hidden, features]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(itertools.pairwise(widths)):
            if k:
                layers.append(LipSwish())
            layers.append(SpectralLinear(a, b, coeff, iterations))
        self.net = nn.Sequential(*layers)
        self.features = features
        self.context = context
        self.exact_terms = exact_terms
        self.continue_probability = continue_probability
        self.gradient = gradient

    def _g(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.context:
            if context is None:
                raise ValueError(
                    f"ResidualBlock: needs a context of shape (..., {self.context}), got None"
                )
            batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
            x = torch.cat((x.expand(*batch, x.shape[-1]), context.expand(*batch, self.context)), -1)
        return self.net(x)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 1 or x.shape[-1] != self.features:
            raise ValueError(
                f"ResidualBlock: expected (..., {self.features}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        if not self.training:
            y = x + self._g(x, context)
            return y, self._exact(x, context, y.shape)
        if torch.is_grad_enabled():  # a training step: one power-iteration update
            for layer in self.net.modules():
                if isinstance(layer, SpectralLinear):
                    layer.update()
        return self._estimate(x, context)

    def _rows(self, x: Tensor, context: Tensor | None, shape: torch.Size) -> tuple:
        x = x.expand(shape).reshape(-1, self.features)
        c = None if context is None or not self.context else context.expand(
            *shape[:-1], self.context).reshape(-1, self.context)  # fmt: skip
        return x, c

    def _exact(self, x: Tensor, context: Tensor | None, shape: torch.Size) -> Tensor:
        """``log|det(I + J_g)|`` per row, ``J_g`` multiplied out layer by layer.

        ``J_g = W_L diag(σ'(h_{L-1})) ⋯ diag(σ'(h_1)) W_1[:, :D]`` (the context's columns of
        the first layer do not act on ``x``): plain tensor algebra, so it also runs under
        ``torch.compile``, ``torch.export`` and ``torch.func``.
        """
        rows, c = self._rows(x, context, shape)
        h = rows if c is None else torch.cat((rows, c), -1)
        jac = None
        for layer in self.net:
            if isinstance(layer, LipSwish):
                jac = layer.derivative(h)[..., None] * jac
                h = layer(h)
                continue
            weight = layer.scaled_weight()
            jac = weight[:, : self.features].expand(len(h), -1, -1) if jac is None else weight @ jac
            h = layer(h)
        eye = torch.eye(self.features, dtype=x.dtype, device=x.device)
        return torch.linalg.slogdet(eye + jac)[1].reshape(shape[:-1])

    def _estimate(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``y`` and the Russian-roulette power-series estimate, independent per row."""
        shape = x.shape if context is None or not self.context else torch.Size(
            (*torch.broadcast_shapes(x.shape[:-1], context.shape[:-1]), self.features))  # fmt: skip
        rows, c = self._rows(x, context, shape)
        n = rows.shape[0]
        q = self.continue_probability
        # Extra terms per row: G ~ Geometric, P(G >= j) = q^j. Drawn on the CPU, so that the
        # number of terms is known without waiting for an accelerator.
        drawn = torch.floor(torch.log(torch.rand(n, dtype=torch.float64)) / math.log(q))
        terms = self.exact_terms + int(drawn.max()) if n else self.exact_terms
        extra = drawn.to(device=rows.device, dtype=rows.dtype, non_blocking=True)
        g, vjp = torch.func.vjp(lambda v: self._g(v, c), rows)
        probe = rademacher(rows)

        def weight(k: int, dims: int = 0) -> Tensor | float:
            """Roulette weight of term ``k`` per row: kept or not, over the chance of being kept."""
            beyond = k - self.exact_terms
            if beyond <= 0:
                return 1.0
            return ((extra >= beyond) / q**beyond).reshape(n, *[1] * dims)

        neumann = self.gradient == "neumann" and torch.is_grad_enabled()
        w, total, series = probe, rows.new_zeros(n), probe
        with torch.no_grad() if neumann else contextlib.nullcontext():
            for k in range(1, terms + 1):
                (w,) = vjp(w)  # vᵀ J^k
                sign = 1.0 if k % 2 else -1.0
                total = total + sign / k * weight(k) * (w * probe).sum(-1)
                if neumann and k < terms:  # Σ_{k<terms} (-1)^k vᵀ J^k / P(kept k + 1)
                    series = series - sign * weight(k + 1, 1) * w
        if neumann:
            (jv,) = vjp(series)  # the one product with a graph: (Σ ...)ᵀ J
            surrogate = (jv * probe).sum(-1)
            total = total + (surrogate - surrogate.detach())
        return rows.reshape(shape) + g.reshape(shape), total.reshape(shape[:-1])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        names = [name for name, _ in self.net.named_parameters()]
        params = [p for _, p in self.net.named_parameters()]
        has_context = bool(self.context) and context is not None

        def phi(x: Tensor, target: Tensor, *rest: Tensor) -> Tensor:
            c = rest[0] if has_context else None
            weights = dict(zip(names, rest[1:] if has_context else rest, strict=True))
            inp = x if c is None else torch.cat((x, c.expand(*x.shape[:-1], self.context)), -1)
            return target - torch.func.functional_call(self.net, weights, (inp,))

        training = self.net.training
        self.net.eval()  # the map must not change while it is solved
        try:
            args = (context, *params) if has_context else tuple(params)
            if has_context:
                shape = torch.broadcast_shapes(y.shape[:-1], context.shape[:-1])
                y = y.expand(*shape, self.features)
            x = fixed_point(phi, y, y, *args, name="ResidualBlock", max_iter=2000)
            ladj = -self._exact(x, context, x.shape)
        finally:
            self.net.train(training)
        return x, ladj
