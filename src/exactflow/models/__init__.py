"""Models beyond a single flow: latent-variable models whose posterior is a flow.

* :class:`LatentVariableModel` — the protocol the ELBO and IWAE objectives train.
* :class:`VAE` / :class:`DenseVAE` — the variational autoencoder whose posterior is a flow.
* :func:`posterior` — amortized flow posteriors; :class:`Likelihood` (:class:`Bernoulli`,
  :class:`Gaussian`, :func:`likelihood`) — what a decoder's outputs mean.
* :class:`Dequantized` — a flow over ``[0, 1)^D`` as a model of quantized pixels, with uniform
  or variational dequantization (the dequantization bound).
"""

from .base import LatentVariableModel
from .dequantization import Dequantized
from .likelihoods import Bernoulli, Gaussian, Likelihood, likelihood
from .posteriors import FAMILIES, posterior
from .vae import VAE, DenseVAE

__all__ = [
    "FAMILIES",
    "VAE",
    "Bernoulli",
    "DenseVAE",
    "Dequantized",
    "Gaussian",
    "LatentVariableModel",
    "Likelihood",
    "likelihood",
    "posterior",
]
