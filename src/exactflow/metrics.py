"""Figures of merit for trained flows: NLL, bits/dim, KL gap, and the exactness certificate.

Every figure is computed in eval mode, where every transform's log-determinant is exact.

* :func:`nll` — mean negative log-likelihood in nats per point, with its standard error.
* :func:`bits_per_dim` — bits per dimension of quantized data (one implementation, shared with
  :mod:`exactflow.data`).
* :func:`kl_gap` — ``NLL - H`` for data whose entropy ``H`` is known: an estimate of
  ``KL(p ‖ q)``.
* :func:`certificate` — evidence that the NLL is the exact likelihood it claims: on a few test
  points, the largest inverse round-trip error and the largest difference between the flow's
  log-determinant and ``log|det J|`` of its autograd Jacobian, both in float64.
* :func:`log_normalizer` — for a flow ``q`` fitted to an unnormalized target ``p̃ = Z p``: the
  importance-sampling estimate of ``log Z`` with its standard error and effective sample size,
  the ELBO, and their difference, an estimate of ``KL(q ‖ p)``.
* :func:`evaluate` — all of the above for a :class:`~exactflow.data.Dataset` split, as the dict
  ``exactflow eval`` prints and writes to ``eval.json`` (strict JSON: no NaN).

Example:
    >>> import torch, exactflow as ef
    >>> flow = ef.flows.MAF(features=2, transforms=2, hidden=[8])
    >>> mean, stderr = ef.metrics.nll(flow, torch.randn(100, 2))
    >>> ef.metrics.certificate(flow, torch.randn(20, 2))["passed"]
    True

"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data import Dataset
from .data.images import bits_per_dim
from .flow import Flow, placement
from .numerics import importance_stats, importance_sums

__all__ = [
    "LADJ_TOLERANCE",
    "MAX_CERTIFIED_FEATURES",
    "ROUND_TRIP_TOLERANCE",
    "LogNormalizer",
    "bits_per_dim",
    "certificate",
    "evaluate",
    "kl_gap",
    "log_density",
    "log_normalizer",
    "nll",
]

ROUND_TRIP_TOLERANCE = 1e-6
"""Largest accepted ``|T⁻¹(T(x)) - x| / (1 + |x|)`` in float64."""

LADJ_TOLERANCE = 1e-6
"""Largest accepted ``|ladj - log|det J|| / (1 + |log|det J||)`` in float64."""

MAX_CERTIFIED_FEATURES = 1024
"""Above this many values per point the Jacobian check is skipped (its cost grows as ``D³``)."""


def _check_flow(flow: object, name: str) -> None:
    if not isinstance(flow, Flow):
        raise TypeError(f"{name}: flow must be an exactflow Flow, got {type(flow).__name__}")


def log_density(
    flow: Flow,
    x: Tensor,
    context: Tensor | None = None,
    batch_size: int = 4096,
    *,
    name: str = "log_density",
) -> Tensor:
    """Exact ``log p(x_i | c_i)`` per point, ``(N,)`` in float64, in eval mode.

    Evaluated without gradient in chunks of ``batch_size`` rows, converted to the flow's dtype
    and device; the flow's mode is restored afterwards. Every figure of this module comes from it.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.Flow(ef.transforms.Compose([ef.transforms.Affine(1)]),
        ...                ef.distributions.StandardNormal(1))
        >>> ef.metrics.log_density(flow, torch.zeros(2, 1))
        tensor([-0.9189, -0.9189], dtype=torch.float64)

    """
    _check_flow(flow, name)
    if not isinstance(x, Tensor) or x.dim() < 1 or len(x) == 0:
        raise ValueError(f"{name}: need at least one point, got {getattr(x, 'shape', x)}")
    dtype, device = placement(flow)
    was_training = flow.training
    flow.eval()
    try:
        with torch.no_grad():
            values = []
            for i in range(0, len(x), batch_size):
                chunk = x[i : i + batch_size].to(device=device, dtype=dtype)
                c = None if context is None else context[i : i + batch_size].to(device, dtype)
                values.append(flow.log_prob(chunk, c).double())
    finally:
        flow.train(was_training)
    return torch.cat(values)


def nll(
    flow: Flow, x: Tensor, context: Tensor | None = None, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean negative log-likelihood ``-(1/N) Σ_i log p(x_i | c_i)`` and its standard error.

    Computed in eval mode (the flow's mode is restored), in chunks of ``batch_size`` rows,
    summed in float64.

    Args:
        flow: The flow.
        x: Points ``(N, *event)``, at least one.
        context: Contexts ``(N, C)`` for a conditional flow.
        batch_size: Rows per chunk.

    Returns:
        ``(mean, stderr)`` in nats per point; ``stderr = std / √N`` is NaN for a single point.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.Flow(ef.transforms.Compose([ef.transforms.Affine(1)]),
        ...                ef.distributions.StandardNormal(1))
        >>> round(ef.metrics.nll(flow, torch.zeros(4, 1))[0], 4)  # log √(2π)
        0.9189

    """
    losses = -log_density(flow, x, context, batch_size, name="nll")
    stderr = float(losses.std() / math.sqrt(len(losses))) if len(losses) > 1 else math.nan
    return float(losses.mean()), stderr


def kl_gap(
    flow: Flow, dataset: Dataset, split: str = "test", batch_size: int = 4096
) -> tuple[float, float]:
    """``NLL - H``: the test NLL minus the data's known entropy, an estimate of ``KL(p ‖ q)``.

    Returns:
        ``(gap, stderr)`` in nats; the standard error combines the NLL's and the entropy's.

    Raises:
        ValueError: The data's density (hence its entropy) is unknown.

    """
    if dataset.density is None:
        raise ValueError(f"kl_gap: the entropy of {dataset.name} is unknown (no known density)")
    mean, stderr = nll(flow, _split(dataset, split), batch_size=batch_size)
    entropy = dataset.entropy
    return mean - entropy.value, math.hypot(stderr, entropy.error)


def _split(dataset: Dataset, split: str) -> Tensor:
    splits = dataset.splits()
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    x = splits[split]
    if len(x) == 0:
        raise ValueError(
            f"the {split} split of {dataset.name} has no points: there is nothing to evaluate"
        )
    return x


def certificate(
    flow: Flow,
    x: Tensor,
    context: Tensor | None = None,
    points: int = 8,
    max_features: int = MAX_CERTIFIED_FEATURES,
) -> dict[str, Any]:
    """Evidence that ``flow.log_prob`` is exact, on the first ``points`` rows of ``x``.

    On a float64 copy of the flow in eval mode: the largest relative round-trip error
    ``|T⁻¹(T(x)) - x| / (1 + |x|)`` and the largest relative difference between the flow's
    log-determinant and ``log|det ∂T/∂x|`` of the autograd Jacobian
    (``torch.autograd.functional.jacobian``, ``slogdet``). It passes when both are within
    :data:`ROUND_TRIP_TOLERANCE` and :data:`LADJ_TOLERANCE`. Above ``max_features`` values per
    point the Jacobian check is skipped and a note says so; a transform without an inverse
    skips the round trip.

    Returns:
        ``{"points", "round_trip_error", "ladj_error", "round_trip_tolerance",
        "ladj_tolerance", "passed", "note"}``; an error is ``None`` when its check was skipped,
        ``passed`` is ``None`` when both were.

    Example:
        >>> import torch, exactflow as ef
        >>> flow = ef.flows.NSF(features=3, transforms=2)
        >>> report = ef.metrics.certificate(flow, torch.randn(5, 3))
        >>> report["passed"], report["ladj_error"] < 1e-9
        (True, True)

    """
    _check_flow(flow, "certificate")
    n = min(points, len(x))
    if n < 1:
        raise ValueError("certificate: need at least one point")
    model = copy.deepcopy(flow).double().eval().requires_grad_(False)
    device = placement(model)[1]
    x = x[:n].detach().to(device=device, dtype=torch.float64)
    context = None if context is None else context[:n].detach().to(device, torch.float64)
    transform = model.transform
    notes = []
    with torch.no_grad():
        context = model._prepare_context(context)  # through the flow's embedding, if any
        z, ladj = transform(x, context)
        ladj = ladj.reshape(n, -1).sum(-1)
        try:
            back = transform.inverse(z, context)[0]
            scale = 1 + x.abs()
            round_trip: float | None = float(((back - x).abs() / scale).max())
        except NotImplementedError as error:
            round_trip = None
            notes.append(f"round trip skipped: {error}")
    features = math.prod(x.shape[1:])
    ladj_error: float | None = None
    if features > max_features:
        notes.append(
            f"Jacobian check skipped: {features} values per point, above the limit of"
            f" {max_features} (max_features=)"
        )
    else:
        try:
            ladj_error = _ladj_error(transform, x, context, ladj)
        except (RuntimeError, NotImplementedError) as error:  # a step autograd cannot trace
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            notes.append(f"Jacobian check could not run: {first}")
    checks = [
        (round_trip, ROUND_TRIP_TOLERANCE),
        (ladj_error, LADJ_TOLERANCE),
    ]
    done = [(value, tol) for value, tol in checks if value is not None]
    passed = all(math.isfinite(v) and v <= tol for v, tol in done) if done else None
    return {
        "points": n,
        "round_trip_error": round_trip,
        "ladj_error": ladj_error,
        "round_trip_tolerance": ROUND_TRIP_TOLERANCE,
        "ladj_tolerance": LADJ_TOLERANCE,
        "passed": passed,
        "note": "; ".join(notes) or None,
    }


def _ladj_error(
    transform: torch.nn.Module, x: Tensor, context: Tensor | None, ladj: Tensor
) -> float:
    """Largest ``|ladj - log|det J|| / (1 + |log|det J||)`` over the rows of ``x``."""
    features = math.prod(x.shape[1:])
    errors = []
    for i in range(len(x)):
        c = None if context is None else context[i : i + 1]

        def forward(v: Tensor, c: Tensor | None = c) -> Tensor:
            return transform(v[None], c)[0].reshape(-1)

        # Plain autograd, one backward pass per output: unlike torch.func's transforms it
        # differentiates the very computation log_prob runs (an adaptive ODE solve included;
        # under a functorch transform a continuous-time step falls back to a fixed-step solver).
        jacobian = torch.autograd.functional.jacobian(forward, x[i]).reshape(features, features)
        exact = torch.linalg.slogdet(jacobian).logabsdet
        errors.append(float((ladj[i] - exact).abs() / (1 + exact.abs())))
    return max(errors)


def _finite(value: float) -> float | None:
    """``value``, or ``None`` where JSON has no number for it (NaN, ±inf)."""
    return value if math.isfinite(value) else None


def evaluate(
    flow: Flow,
    dataset: Dataset,
    split: str = "test",
    batch_size: int = 4096,
    points: int = 8,
    *,
    context: Tensor | None = None,
) -> dict[str, Any]:
    """The figures of a flow on a data set split, as strict-JSON values.

    ``context`` ``(N, C)``: the contexts of the split's rows, for a conditional flow (e.g. the
    one-hot labels, :meth:`exactflow.data.Dataset.contexts`).

    Returns:
        ``split``, ``points``, ``nll``, ``nll_stderr``; ``bits_per_dim`` for quantized data
        (``dataset.levels``); ``entropy``, ``entropy_error``, ``entropy_method`` and ``kl_gap``
        when the density is known; ``nfe`` for a flow with continuous-time steps (the
        evaluations of their dynamics in the solve of the last batch, summed over the steps);
        and ``certificate`` (:func:`certificate` on the first ``points`` rows). Values JSON
        cannot hold (a NaN standard error of one point, an infinite NLL) are ``None``.

    Raises:
        ValueError: The split is unknown or empty.

    Example:
        >>> import exactflow as ef
        >>> ds = ef.data.load("moons", n_train=100, n_val=50, n_test=50)
        >>> report = ef.metrics.evaluate(ef.flows.MAF(features=2, transforms=1), ds)
        >>> report["points"], report["certificate"]["passed"]
        (50, True)

    """
    _check_flow(flow, "evaluate")
    x = _split(dataset, split)
    mean, stderr = nll(flow, x, context, batch_size=batch_size)
    report: dict[str, Any] = {
        "split": split,
        "points": len(x),
        "nll": _finite(mean),
        "nll_stderr": _finite(stderr),
    }
    counts = [m.nfe for m in flow.modules() if isinstance(getattr(m, "nfe", None), int)]
    if counts:  # continuous-time steps: evaluations of their dynamics in the last batch's solve
        report["nfe"] = sum(counts)
    if dataset.levels is not None:
        report["bits_per_dim"] = _finite(
            float(bits_per_dim(mean, dataset.features, dataset.levels))
        )
    if dataset.density is not None:
        entropy = dataset.entropy
        report["entropy"] = entropy.value
        report["entropy_error"] = entropy.error
        report["entropy_method"] = entropy.method
        report["kl_gap"] = _finite(mean - entropy.value)
    report["certificate"] = certificate(flow, x, context, points=points)
    return report


@dataclass(frozen=True)
class LogNormalizer:
    """What :func:`log_normalizer` measured; every field is an estimate from ``n`` draws of q.

    Attributes:
        log_z: ``log Ẑ = log (1/n) Σ w_i``, ``w_i = p̃(z_i)/q(z_i)``: ``Ẑ`` is unbiased for ``Z``.
        stderr: Standard error of ``log_z`` (delta method).
        ess: Kish's effective sample size ``(Σw)²/Σw²`` (``n`` when ``q = p``).
        elbo: ``(1/n) Σ log w_i``, the ELBO ``E_q[log p̃ - log q] = log Z - KL(q ‖ p)``.
        elbo_stderr: Standard error of :attr:`elbo`.
        kl: ``log_z - elbo``, an estimate of ``KL(q ‖ p)``.
        n: Number of draws.

    """

    log_z: float
    stderr: float
    ess: float
    elbo: float
    elbo_stderr: float
    kl: float
    n: int

    def kl_to(self, log_z: float) -> float:
        """``log Z - ELBO`` with the true ``log Z``: ``KL(q ‖ p)`` up to the ELBO's error."""
        return log_z - self.elbo


def log_normalizer(
    flow: Flow,
    log_target: Callable[[Tensor], Tensor],
    n: int = 100_000,
    batch_size: int = 8192,
) -> LogNormalizer:
    """Estimate ``log Z`` of an unnormalized target by importance sampling from a flow.

    Draws ``n`` points ``z_i ~ q`` from the flow (eval mode, no gradient, ``batch_size`` at a
    time) and weighs them by ``w_i = p̃(z_i)/q(z_i)``. ``Ẑ = (1/n) Σ w_i`` is unbiased for
    ``Z = ∫ p̃``; ``log Ẑ`` carries the delta-method standard error and is biased low by about
    ``stderr²/2``. The ELBO ``(1/n) Σ log w_i`` is a lower bound on ``log Z`` and the gap
    ``log Ẑ - ELBO`` estimates ``KL(q ‖ p)``. A low ESS (a small fraction of ``n``) means ``q``
    misses mass of ``p`` and the standard error itself is then unreliable. A flow fitted by
    reverse KL is lighter-tailed than ``p`` (the divergence is mode seeking), so ``log Ẑ`` can
    fall short of ``log Z`` by more than its standard error even at a high ESS; when ``log Z``
    is known, :meth:`LogNormalizer.kl_to` gives the KL without that bias.

    Args:
        flow: An unconditional flow ``q`` (any flow: sampling is what is used).
        log_target: ``z (..., D) -> log p̃(z) (...)``.
        n: Number of draws (at least 2).
        batch_size: Draws per pass.

    Returns:
        A :class:`LogNormalizer`.

    Example:
        >>> import math, torch, exactflow as ef
        >>> flow = ef.flows.MAF(features=2, transforms=1, hidden=(8,))
        >>> def log_target(z):  # 3 · N(0, I): log Z = log 3
        ...     return math.log(3) - 0.5 * (z**2).sum(-1) - math.log(2 * math.pi)
        >>> result = ef.metrics.log_normalizer(flow, log_target, n=20_000)
        >>> abs(result.log_z - math.log(3)) < 5 * result.stderr + 1e-3
        True

    """
    _check_flow(flow, "log_normalizer")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"log_normalizer: n must be an integer >= 2, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"log_normalizer: batch_size must be a positive integer, got {batch_size!r}"
        )
    was_training = flow.training
    flow.eval()
    s1 = s2 = None
    total = squares = 0.0
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                z, log_q = flow.sample_and_log_prob((min(batch_size, n - start),))
                log_w = (log_target(z).double() - log_q.double()).reshape(-1)
                c1, c2 = importance_sums(log_w)
                s1 = c1 if s1 is None else torch.logaddexp(s1, c1)
                s2 = c2 if s2 is None else torch.logaddexp(s2, c2)
                total += float(log_w.sum())
                squares += float((log_w**2).sum())
    finally:
        flow.train(was_training)
    log_z, stderr, ess = (float(v) for v in importance_stats(s1, s2, n))
    elbo = total / n
    variance = max(squares / n - elbo**2, 0.0) * n / (n - 1)
    return LogNormalizer(
        log_z=log_z,
        stderr=stderr,
        ess=ess,
        elbo=elbo,
        elbo_stderr=math.sqrt(variance / n),
        kl=log_z - elbo,
        n=n,
    )
