"""The protocol of latent-variable models: what the ELBO and IWAE objectives train.

A latent-variable model ``p(x) = ∫ p(x | z) p(z) dz`` with an amortized posterior ``q(z | x)``
exposes its **importance log-weights** ``log w = log p(x, z) - log q(z | x)`` for
``z ~ q(· | x)``. Everything else follows from them:

* the ELBO ``E_q[log w] ≤ log p(x)`` (Kingma & Welling 2014),
* the importance-weighted bound ``E[log (1/k) Σ_j w_j]``, tighter as ``k`` grows
  (Burda et al. 2016),
* the test-time estimate ``log p̂(x) = log (1/k) Σ_j w_j`` with its standard error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from ..flow import placement
from ..numerics import importance_stats, importance_sums

__all__ = ["LatentVariableModel"]


class LatentVariableModel(nn.Module, ABC):
    """A model with an intractable ``log p(x)`` and an amortized posterior ``q(z | x)``.

    Subclasses implement :meth:`log_weights`, :meth:`check_data` and :attr:`event_shape`;
    :meth:`elbo`, :meth:`log_marginal` and :meth:`bounds` are derived from the weights.
    """

    @property
    @abstractmethod
    def event_shape(self) -> torch.Size:
        """Shape of one data point."""

    @abstractmethod
    def log_weights(self, x: Tensor, k: int = 1, context: Tensor | None = None) -> Tensor:
        """Importance log-weights ``log p(x, z_j) - log q(z_j | x)``, shape ``(k, B)``.

        ``z_j ~ q(· | x)`` are drawn by reparameterization, so the weights are differentiable in
        every parameter.

        Args:
            x: A batch ``(B, *event)``.
            k: Posterior draws per row.
            context: Conditioning ``(B, C)`` for a conditional model (``None`` otherwise).

        """

    @abstractmethod
    def check_data(self, x: Tensor, context: Tensor | None, name: str = "data") -> None:
        """Raise ``ValueError`` naming the problem unless ``x (N, *event)`` fits the model."""

    def check_rows(self, x: object, name: str = "data") -> Tensor:
        """``x`` after checking it is a finite floating-point ``(N, *event_shape)`` tensor.

        Raises ``TypeError`` (not a floating-point tensor) or ``ValueError`` (the shape, or the
        first non-finite value with its index); the part of :meth:`check_data` every model shares.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {what}")
        event = tuple(self.event_shape)
        if x.dim() < 1 or tuple(x.shape[1:]) != event:
            expected = ", ".join(["N", *map(str, event)])
            raise ValueError(f"{name} must have shape ({expected}), got {tuple(x.shape)}")
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            where = tuple(bad.nonzero()[0].tolist())
            raise ValueError(f"{name} has a non-finite value at index {where}")
        return x

    def elbo(self, x: Tensor, k: int = 1, context: Tensor | None = None) -> Tensor:
        """The evidence lower bound per row ``(B,)``, averaged over ``k`` draws (an estimate)."""
        return self.log_weights(x, k, context).mean(0)

    @torch.no_grad()
    def log_marginal(
        self,
        x: Tensor,
        k: int = 1000,
        context: Tensor | None = None,
        chunk: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Importance-sampling estimate of ``log p(x)`` per row, and its standard error.

        ``log p̂(x) = log (1/k) Σ_j w_j`` with ``k`` posterior draws: consistent, and biased low
        by about ``Var(w)/(2 k p(x)²)``, i.e. it is also a lower bound in expectation (the
        IWAE-k bound). The standard error is the delta method's (see
        :func:`exactflow.numerics.importance_stats`). Draws are taken ``chunk`` at a time, so
        memory holds ``chunk × B`` weights, never ``k × B``.

        Args:
            x: A batch ``(B, *event)``.
            k: Number of posterior draws per row (``>= 2`` for a standard error).
            context: Conditioning ``(B, C)`` for a conditional model.
            chunk: Draws per pass (``None``: ``min(k, 128)``).

        Returns:
            ``(estimate (B,), stderr (B,))`` in nats.

        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"log_marginal: k must be a positive integer, got {k!r}")
        chunk = min(k, 128) if chunk is None else chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"log_marginal: chunk must be a positive integer, got {chunk!r}")
        was_training = self.training
        self.eval()
        try:
            s1 = s2 = None
            for start in range(0, k, chunk):
                c1, c2 = importance_sums(self.log_weights(x, min(chunk, k - start), context))
                c1, c2 = c1.double(), c2.double()
                s1 = c1 if s1 is None else torch.logaddexp(s1, c1)
                s2 = c2 if s2 is None else torch.logaddexp(s2, c2)
        finally:
            self.train(was_training)
        estimate, stderr, _ = importance_stats(s1, s2, k)
        return estimate, stderr

    @torch.no_grad()
    def bounds(
        self, x: Tensor, k: int = 1000, batch_size: int = 256, chunk: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row ELBO and importance-sampling estimate of ``log p(x)`` over a data set.

        Rows are taken ``batch_size`` at a time, moved to the model's dtype and device, in eval
        mode (the mode is restored).

        Args:
            x: Rows ``(N, *event)``.
            k: Posterior draws per row for the estimate (:meth:`log_marginal`).
            batch_size: Rows per pass.
            chunk: Draws per pass of :meth:`log_marginal`.

        Returns:
            ``(elbo, estimate, stderr)``, each ``(N,)`` in float64: a single-draw ELBO, the
            estimate ``log (1/k) Σ_j w_j`` and its importance-sampling standard error.

        """
        dtype, device = placement(self)
        was_training = self.training
        self.eval()
        elbo, estimate, stderr = [], [], []
        try:
            for rows in x.split(batch_size):
                rows = rows.to(device=device, dtype=dtype)
                elbo.append(self.elbo(rows).double())
                value, error = self.log_marginal(rows, k, chunk=chunk)
                estimate.append(value)
                stderr.append(error)
        finally:
            self.train(was_training)
        return torch.cat(elbo), torch.cat(estimate), torch.cat(stderr)
