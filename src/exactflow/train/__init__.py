"""Training: any model, any objective, with safe checkpoints and exact resumption.

:func:`fit` minimizes an objective's mean per-row loss (``ef.objectives.NLL()`` for maximum
likelihood) with Adam or AdamW, an optional cosine or reduce-on-plateau schedule, gradient-norm
clipping and early stopping on the objective's validation metric; the best weights are restored
at the end. Everything a run needs to continue is checkpointed, so ``resume=True`` continues
exactly where the last checkpoint left it.

Modules: :mod:`.config` (:class:`TrainConfig`), :mod:`.fitting` (:func:`fit`), :mod:`.loop` (the
run and its steps), :mod:`.compiled` (the compiled step and whether it paid), :mod:`.state` (run
state and resumption), :mod:`.logs` (``metrics.csv`` columns, TensorBoard), :mod:`.inputs` (data
checks), :mod:`.distributed` (training under ``torchrun``: DDP, batches shared out by rank, rank 0
writes).

Example:
    >>> import torch, exactflow as ef
    >>> from exactflow.train import TrainConfig, fit
    >>> flow = ef.flows.RealNVP(features=2, transforms=2, hidden=(16,))
    >>> x = 3 + 2 * torch.randn(512, 2)
    >>> result = fit(flow, ef.objectives.NLL(), x[:400], TrainConfig(epochs=2), val=x[400:],
    ...              progress=False)
    >>> result.best_epoch in (1, 2)
    True

"""

from .compiled import CompilePayoff
from .config import TrainConfig
from .fitting import FitResult, fit
from .logs import columns
from .loop import NonFiniteLossError, TrainingWorsenedWarning

__all__ = [
    "CompilePayoff",
    "FitResult",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingWorsenedWarning",
    "columns",
    "fit",
]
