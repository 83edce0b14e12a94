"""Amortized variational posteriors ``q(z | x)``: a conditional flow over the latent.

Every posterior starts, as in the VAE literature (Rezende & Mohamed 2015; Kingma et al. 2016;
van den Berg et al. 2018), from an amortized diagonal Gaussian ``q₀(z₀ | h) = N(μ(h),
diag σ(h)²)`` whose mean and scale come from the encoder's features ``h``, and pushes it through
``transforms`` steps of a flow family that read the same ``h``:

    log q(z_K | h) = log q₀(z₀ | h) - Σ_k log|det ∂z_k/∂z_{k-1}|.

What one training step costs (it draws ``z`` and scores it,
:meth:`~exactflow.Flow.rsample_and_log_prob`):

============  ============================================  ===================================
family        draw + score own draws                        score other points (``log_prob``)
============  ============================================  ===================================
gaussian      closed form                                   closed form
planar        one pass (closed form per step)               a scalar Newton solve per step
radial        one pass                                      closed form (a quadratic per step)
sylvester     one pass                                      triangular Newton solves per step
iaf           one MADE pass per step                        ``L`` MADE passes per step
maf           ``L`` MADE passes per step (slow to sample)   one MADE pass per step
nsf           one MADE pass per step                        ``L`` MADE passes per step
============  ============================================  ===================================

(``L`` = latent width.) A VAE only ever draws and scores its own draws, so IAF, planar, radial,
Sylvester and NSF posteriors are the cheap ones; a MAF posterior pays ``L`` sequential passes
per step. The ``nsf`` posterior arranges the spline layers of :class:`~exactflow.flows.NSF` the
way IAF arranges MAF's (inverse autoregressive: the sampling direction is the one-pass one).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..distributions import ConditionalDiagNormal
from ..flow import Flow
from ..flows import IAF, MAF, NSF, Planar, Radial, Sylvester
from ..transforms import Compose, Inverse, Reshape

__all__ = ["FAMILIES", "posterior"]

FAMILIES = ("gaussian", "planar", "radial", "sylvester", "iaf", "maf", "nsf")
"""The posterior families :func:`posterior` builds."""


def posterior(
    family: str,
    latent: int,
    context: int,
    transforms: int = 4,
    hidden: Sequence[int] = (64,),
    base_hidden: Sequence[int] = (),
    **options: object,
) -> Flow:
    """An amortized posterior ``q(z | h)``: a conditional flow over ``z (L,)`` given ``h (C,)``.

    The base is :class:`~exactflow.distributions.ConditionalDiagNormal` ``q₀(z₀ | h)`` (with
    ``base_hidden=()`` its mean and log-scale are linear in ``h``, as in the VAE papers); the
    steps are those of the named preset of :mod:`exactflow.flows`, built with
    ``context=C`` so each step reads ``h`` too. Input checks are off (``validate=False``): the
    model that owns the posterior checks its data once, and the context comes from its encoder.

    Args:
        family: ``"gaussian"`` (no steps: the diagonal Gaussian alone), ``"planar"``,
            ``"radial"``, ``"sylvester"``, ``"iaf"``, ``"maf"`` or ``"nsf"`` (see the module
            docstring for what each costs).
        latent: Latent width ``L``.
        context: Width ``C`` of the encoder's features.
        transforms: Number of flow steps (ignored for ``"gaussian"``).
        hidden: Hidden widths of each step's network: the MADEs of IAF/MAF/NSF, the context
            networks of planar/radial/Sylvester (the latter's ``context_hidden``).
        base_hidden: Hidden widths of the base's network ``h -> (μ, log σ)``.
        **options: Passed on to the preset, e.g. ``kind="householder"`` and ``units=M`` (the
            preset's ``hidden``: columns of ``Q``) for Sylvester, ``bins`` for NSF,
            ``activation`` for planar, ``permutation`` for IAF/MAF/NSF.

    Returns:
        A :class:`~exactflow.Flow` with ``context == C`` and events ``(L,)``.

    Example:
        >>> import torch, exactflow as ef
        >>> q = ef.models.posterior("iaf", latent=4, context=8, transforms=2, hidden=(16,))
        >>> z, log_q = q.rsample_and_log_prob((5,), context=torch.randn(3, 8))
        >>> z.shape, log_q.shape
        (torch.Size([5, 3, 4]), torch.Size([5, 3]))

    """
    if family not in FAMILIES:
        raise ValueError(f"posterior: family must be one of {FAMILIES}, got {family!r}")
    for what, value in (("latent", latent), ("context", context), ("transforms", transforms)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"posterior: {what} must be an int >= 1, got {value!r}")
    if family == "gaussian" and options:
        raise ValueError(f"posterior: 'gaussian' takes no options, got {sorted(options)}")
    base = ConditionalDiagNormal(latent, context, hidden=tuple(base_hidden))
    if family == "gaussian":
        # One step that changes nothing (ladj 0): q is the base itself.
        return Flow(Compose([Reshape((latent,), (latent,))]), base, validate=False)
    widths = tuple(hidden)
    shared = {"features": latent, "context": context, "transforms": transforms}
    if family == "sylvester":
        units = options.pop("units", None)
        preset = Sylvester(**shared, hidden=units, context_hidden=widths, **options)
    else:
        preset = {"planar": Planar, "radial": Radial, "iaf": IAF, "maf": MAF, "nsf": NSF}[family]
        preset = preset(**shared, hidden=widths, **options)
    if family == "nsf":  # inverse autoregressive splines: drawing is the one-pass direction
        return Flow(Inverse(preset.transform), base, validate=False)
    return Flow(preset.transform, base, validate=False)
