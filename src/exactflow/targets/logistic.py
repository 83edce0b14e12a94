"""A real posterior: Bayesian logistic regression on scikit-learn's breast-cancer table."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.standardize import Standardize
from .base import Target, positive

__all__ = ["LogisticRegression"]


class LogisticRegression(Target):
    """The posterior of a Bayesian logistic regression, 31-D, unnormalized.

    Data: the Wisconsin diagnostic breast-cancer table that scikit-learn ships
    (``sklearn.datasets.load_breast_cancer``; Street, Wolberg & Mangasarian 1993): ``N = 569``
    tumours, 30 features, label ``y = 1`` for benign. Each feature is standardized over all rows
    (exactflow's :class:`~exactflow.data.Standardize`) and a column of ones is put first for the
    intercept, giving the design matrix ``X`` of shape ``(569, 31)`` (:attr:`design`).

    With weights ``w ∈ R^31``, the prior ``w ~ N(0, σ² I)`` and ``y_n ~ Bernoulli(sigmoid(x_nᵀw))``:

        log p̃(w) = log N(w; 0, σ² I) + Σ_n log sigmoid(s_n x_nᵀw),    s_n = 2 y_n - 1,

    computed with ``logsigmoid`` (stable for any logit). Its normalizer is the evidence
    ``log p(y | X)``, which has no closed form: ``log_normalizer`` is ``None``. The prior's scale
    is ``σ = 1`` by default: on standardized features it keeps every weight's log-odds effect per
    standard deviation of its feature within a few units, and 569 rows outweigh it.

    Args:
        prior_scale: ``σ``, the prior's standard deviation (> 0).

    Raises:
        ImportError: scikit-learn is not installed.

    Example:
        >>> import torch
        >>> from exactflow.targets import LogisticRegression
        >>> posterior = LogisticRegression()
        >>> posterior.design.shape, posterior.labels.shape
        (torch.Size([569, 31]), torch.Size([569]))
        >>> posterior(torch.zeros(2, 31)).shape
        torch.Size([2])

    """

    name = "logistic"
    dim = 31
    log_normalizer = None
    description = "Bayesian logistic regression on scikit-learn's breast-cancer table"

    def __init__(self, prior_scale: float = 1.0) -> None:
        self.prior_scale = positive(self.name, "prior_scale", prior_scale)
        try:
            from sklearn.datasets import load_breast_cancer
        except ImportError as error:
            raise ImportError(
                "target 'logistic' needs scikit-learn: pip install scikit-learn"
            ) from error
        table = load_breast_cancer()
        x = torch.as_tensor(table.data, dtype=torch.float64)
        x = Standardize.fit(x)(x)
        self.design = torch.cat([x.new_ones(len(x), 1), x], 1)  # (N, 31)
        self.labels = torch.as_tensor(table.target, dtype=torch.float64)  # (N,)
        self._copies: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    @property
    def options(self) -> dict[str, Any]:
        return {"prior_scale": self.prior_scale}

    def _data(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(Xᵀ, s)`` in ``like``'s dtype and device, copied there once and kept."""
        key = (like.dtype, like.device)
        if key not in self._copies:
            self._copies[key] = (self.design.T.to(like), (2 * self.labels - 1).to(like))
        return self._copies[key]

    def log_density(self, z: Tensor) -> Tensor:
        xt, signs = self._data(z)
        log_likelihood = F.logsigmoid(signs * (z @ xt)).sum(-1)  # (*, N) -> (*)
        var = self.prior_scale**2
        log_prior = -0.5 * (z**2).sum(-1) / var - 0.5 * self.dim * math.log(2 * math.pi * var)
        return log_prior + log_likelihood
