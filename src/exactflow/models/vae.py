"""The variational autoencoder whose posterior is a flow (Kingma & Welling 2014).

:class:`VAE` is built from any encoder, decoder and conditional flow (Rezende & Mohamed 2015);
:class:`DenseVAE` is the fully connected one a checkpoint or the command line rebuilds by name.

The model is ``p(x, z) = p(x | z) p(z)`` with a latent ``z (L,)``, the prior ``p(z)`` a standard
normal (or an unconditional flow) and ``p(x | z)`` a :class:`~exactflow.models.Likelihood`
of the decoder's outputs. The posterior ``q(z | x)`` is a flow conditioned on the encoder's
features ``h = encoder(x)``. The importance log-weights

    log w = log p(x | z) + log p(z) - log q(z | h),   z ~ q(· | h),

give the ELBO ``E[log w]`` and the importance-weighted bounds and estimates of ``log p(x)``
(:class:`~exactflow.models.LatentVariableModel`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributions import StandardNormal
from ..flow import Flow
from ..flows.chains import config_of
from ..nn import MLP
from . import likelihoods, posteriors
from .base import LatentVariableModel
from .likelihoods import Likelihood

__all__ = ["VAE", "DenseVAE"]


def _shape(name: str, value: Sequence[int], empty: bool = False) -> torch.Size:
    """``value`` as a shape of positive ints (``empty``: may have no entries)."""
    if isinstance(value, int | str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}")
    if not (value or empty) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        what = "sequence" if empty else "non-empty sequence"
        raise ValueError(f"{name} must be a {what} of positive ints, got {value!r}")
    return torch.Size(value)


class VAE(LatentVariableModel):
    """A variational autoencoder with a flow posterior ``q(z | x)``.

    ``log w = log p(x | decoder(z)) + log p(z) - log q(z | encoder(x))`` for ``z ~ q``, drawn
    and scored in one pass (:meth:`~exactflow.Flow.rsample_and_log_prob`). The encoder reads
    data flattened to ``(B, D)``, whatever :attr:`event_shape` is, and the decoder's outputs
    ``(*, P·D)`` are reshaped back.

    Args:
        encoder: ``x (B, D) -> h (B, C)``.
        decoder: ``z (*, L) -> (*, P·D)``, the likelihood's parameters (``P =
            likelihood.params``).
        posterior: A conditional :class:`~exactflow.Flow` over ``(L,)`` with ``context == C``
            (e.g. :func:`~exactflow.models.posterior`, or ``ef.flows.IAF(features=L,
            context=C)``).
        likelihood: ``"bernoulli"`` (binary data), ``"gaussian"`` (learned per-pixel scale) or
            a :class:`~exactflow.models.Likelihood`.
        prior: An unconditional :class:`~exactflow.Flow` over ``(L,)``, or ``None`` for the
            standard normal.
        event_shape: Shape of one data point; ``None``: ``(encoder.in_features,)`` (an
            :class:`~exactflow.nn.MLP` encoder has it).

    Example:
        >>> import torch, exactflow as ef
        >>> vae = ef.models.VAE(
        ...     encoder=ef.nn.MLP(6, 8, hidden=(16,)),
        ...     decoder=ef.nn.MLP(2, 6, hidden=(16,)),
        ...     posterior=ef.models.posterior("planar", latent=2, context=8, transforms=2),
        ... )
        >>> x = torch.randint(0, 2, (5, 6)).float()
        >>> vae.log_weights(x, k=3).shape
        torch.Size([3, 5])
        >>> vae.sample(4).shape
        torch.Size([4, 6])

    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        posterior: Flow,
        likelihood: str | Likelihood = "bernoulli",
        prior: Flow | None = None,
        event_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(posterior, Flow) or len(posterior.event_shape) != 1:
            raise TypeError(
                "VAE: posterior must be a conditional exactflow.Flow over latent vectors (L,),"
                f" got {type(posterior).__name__}"
            )
        if posterior.context < 1:
            raise ValueError(
                "VAE: the posterior must be conditional (context = the encoder's output width),"
                " got an unconditional flow"
            )
        latent = posterior.event_shape
        if prior is None:
            prior = StandardNormal(latent)
        elif not isinstance(prior, Flow) or prior.context or prior.event_shape != latent:
            raise TypeError(
                f"VAE: prior must be an unconditional exactflow.Flow over {tuple(latent)} or"
                f" None, got {type(prior).__name__}"
            )
        if event_shape is None:
            features = getattr(encoder, "in_features", None)
            if not isinstance(features, int):
                raise TypeError(
                    "VAE: pass event_shape= (the shape of one data point); the encoder has no"
                    " int attribute in_features to take it from"
                )
            event_shape = (features,)
        self._event_shape = _shape("VAE: event_shape", event_shape)
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.prior = prior
        self.likelihood = likelihoods.likelihood(likelihood)

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one data point."""
        return self._event_shape

    @property
    def latent(self) -> int:
        """Latent width ``L``."""
        return self.posterior.event_shape[0]

    def _flat(self, x: Tensor) -> Tensor:
        """``x (B, *event) -> (B, D)``."""
        return x.reshape(*x.shape[: x.dim() - len(self._event_shape)], self._event_shape.numel())

    def _no_context(self, context: Tensor | None) -> None:
        if context is not None:
            raise ValueError(
                f"this VAE is unconditional but a context of shape {tuple(context.shape)} was given"
            )

    def log_weights(self, x: Tensor, k: int = 1, context: Tensor | None = None) -> Tensor:
        """``log p(x | z_j) + log p(z_j) - log q(z_j | x)`` for ``k`` draws per row: ``(k, B)``.

        Example:
            >>> import torch, exactflow as ef
            >>> vae = ef.models.DenseVAE(features=4, latent=2, hidden=[8], context=8)
            >>> vae.log_weights(torch.ones(3, 4), k=2).shape
            torch.Size([2, 3])

        """
        self._no_context(context)
        flat = self._flat(x)  # (B, D)
        h = self.encoder(flat)  # (B, C)
        z, log_q = self.posterior.rsample_and_log_prob((k,), context=h)  # (k, B, L), (k, B)
        log_pz = self.prior.log_prob(z)  # (k, B)
        log_px = self.likelihood.log_prob(flat, self.decoder(z))  # (k, B)
        return log_px + log_pz - log_q

    def check_data(self, x: Tensor, context: Tensor | None, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``x`` is ``(N, *event_shape)``, finite, in the domain.

        The domain is the likelihood's: 0/1 values for a Bernoulli likelihood (the first other
        value is named with its index).
        """
        self._no_context(context)
        self.check_rows(x, name)
        if self.likelihood.binary:
            bad = (x != 0) & (x != 1)
            if bool(bad.any()):
                where = tuple(bad.nonzero()[0].tolist())
                raise ValueError(
                    f"{name} must be binary (0 or 1) for the {self.likelihood.name} likelihood,"
                    f" got {float(x[where]):.6g} at index {where}"
                )

    @torch.no_grad()
    def sample(self, n: int, mean: bool = False) -> Tensor:
        """``n`` draws ``x ~ p(x | z)``, ``z ~ p(z)``: shape ``(n, *event_shape)``.

        Args:
            n: Number of draws.
            mean: Return ``E[x | z]`` (e.g. Bernoulli probabilities, the usual pictures)
                instead of draws of ``x``.

        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sample: n must be a positive int, got {n!r}")
        params = self.decoder(self.prior.sample((n,)))
        x = self.likelihood.mean(params) if mean else self.likelihood.sample(params)
        return x.reshape(n, *self._event_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder's mean ``E[x | z]`` at one draw ``z ~ q(z | x)``: shape of ``x``."""
        flat = self._flat(x)
        z = self.posterior.sample((), context=self.encoder(flat))
        return self.likelihood.mean(self.decoder(z)).reshape(x.shape)


class DenseVAE(VAE):
    """A fully connected :class:`VAE`, rebuildable by name (``ef.registry``: ``"DenseVAE"``).

    Encoder: an :class:`~exactflow.nn.MLP` ``D -> hidden... -> C`` followed by an ELU, giving
    the features ``h``; decoder: an MLP ``L -> reversed(hidden)... -> P·D``; posterior:
    :func:`~exactflow.models.posterior` of the named family over ``L`` given ``h``, its steps'
    networks one hidden layer of ``hidden[-1]`` units; prior: standard normal. The weights are
    drawn from ``seed`` (the global random state is left as it was).

    Args:
        features: Data width ``D`` (the product of ``event_shape`` when given).
        latent: Latent width ``L``.
        hidden: Hidden widths of the encoder (the decoder's, reversed).
        posterior: ``"gaussian"``, ``"planar"``, ``"radial"``, ``"sylvester"``, ``"iaf"``,
            ``"maf"`` or ``"nsf"``.
        transforms: Number of posterior flow steps.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        context: Width ``C`` of the encoder's features.
        kind: Sylvester's ``Q``: ``"orthogonal"``, ``"householder"`` or ``"triangular"``
            (other families ignore it).
        event_shape: Shape of one data point (e.g. ``[1, 28, 28]``); ``None``: ``[features]``.
        seed: Seed of the initial weights.

    Example:
        >>> import exactflow as ef
        >>> vae = ef.models.DenseVAE(features=64, latent=4, hidden=[32], posterior="iaf",
        ...                          transforms=2, context=16, event_shape=[1, 8, 8])
        >>> vae.sample(2).shape
        torch.Size([2, 1, 8, 8])
        >>> ef.registry.spec_of(vae)["name"]
        'DenseVAE'

    """

    def __init__(
        self,
        features: int,
        latent: int = 16,
        hidden: Sequence[int] = (256, 256),
        posterior: str = "gaussian",
        transforms: int = 4,
        likelihood: str = "bernoulli",
        context: int = 64,
        kind: str = "orthogonal",
        event_shape: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        config = config_of(locals())
        family = posterior
        for what, value in (("features", features), ("latent", latent), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenseVAE: {what} must be an int >= 1, got {value!r}")
        widths = tuple(_shape("DenseVAE: hidden", hidden, empty=True))
        if family not in posteriors.FAMILIES:
            raise ValueError(
                f"DenseVAE: posterior must be one of {posteriors.FAMILIES}, got {family!r}"
            )
        shape = _shape("DenseVAE: event_shape", [features] if event_shape is None else event_shape)
        if math.prod(shape) != features:
            raise ValueError(
                f"DenseVAE: event_shape {list(shape)} has {math.prod(shape)} entries, not"
                f" features={features}"
            )
        model = likelihoods.likelihood(likelihood)
        options = {"kind": kind} if family == "sylvester" else {}
        step_hidden = (widths[-1],) if widths else (64,)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().__init__(
                encoder=nn.Sequential(MLP(features, context, widths), nn.ELU()),
                decoder=MLP(latent, features * model.params, widths[::-1]),
                posterior=posteriors.posterior(
                    family, latent, context, transforms, step_hidden, **options
                ),
                likelihood=model,
                event_shape=shape,
            )
        self.config = config
