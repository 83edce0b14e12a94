"""Built-in targets for variational inference: unnormalized log densities ``log p̃(z)``.

A :class:`Target` is a batched, differentiable callable ``(*, D) -> (*)``, the ``log_target`` that
:class:`exactflow.objectives.ReverseKL` fits a flow to, with its ``log_normalizer`` where known so
a report can show the true ``KL(q‖p)``. Built in (:func:`names`, :func:`get`):

- ``u1`` ... ``u4``: Rezende & Mohamed's (2015) 2-D energies (:class:`Energy`);
- ``banana``: a twisted Gaussian (:class:`Banana`); ``funnel``: Neal's funnel, 10-D
  (:class:`Funnel`); ``mixture``: Gaussians on a circle (:class:`Mixture`); all three normalized;
- ``logistic``: a Bayesian logistic-regression posterior on scikit-learn's breast-cancer table,
  31-D (:class:`LogisticRegression`; needs scikit-learn).

Example:
    >>> import torch
    >>> from exactflow import targets
    >>> u2 = targets.get("u2")
    >>> u2(torch.zeros(5, 3, 2)).shape, round(u2.log_normalizer, 4)
    (torch.Size([5, 3]), 2.1571)

"""

from .base import Bounds, Target
from .catalog import get, names
from .densities import Banana, Funnel, Mixture
from .energies import Energy, log_integral_2d
from .logistic import LogisticRegression

__all__ = [
    "Banana",
    "Bounds",
    "Energy",
    "Funnel",
    "LogisticRegression",
    "Mixture",
    "Target",
    "get",
    "log_integral_2d",
    "names",
]
